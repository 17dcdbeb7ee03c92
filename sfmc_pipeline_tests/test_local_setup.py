"""Contract: in local mode the local target is set up like the org a destination expects: it creates the status
fields and every mapped custom attribute field (``__c``, typed for its column), refuses a mapped standard field it
lacks with the list of fields it has, and ``sfmc-pipeline check`` runs that same setup and the sync's own preflight
on an in-memory copy (creating nothing), so it refuses exactly what the run refuses and passes what the run writes."""

from __future__ import annotations

import sqlite3

import pytest

from sfmc_pipeline.cli import main
from sfmc_pipeline.crm.local.setup import prepare_local_target
from sfmc_pipeline.crm.local.target import LocalCrmTarget
from sfmc_pipeline.crm.preflight import PreflightError, preflight_destination
from sfmc_pipeline.datasets.storage import DatasetStore
from sfmc_pipeline_tests.crm_fixtures import cid, members, profiles, run
from sfmc_pipeline_tests.flow_fixtures import (
    edited_config,
    flow_assets,
    local_resources,
    materialize,
    step_failures,
)
from sfmc_pipeline_tests.tiny_sample import write_tiny_sample

CUSTOM = {"OrderCount": "Order_Count__c", "LastPurchaseDate": "Last_Purchase__c", "Company": "Company_Name__c"}
TITLE_REFUSED = "Lead.Title: the local target has no such standard field (mapped from 'FirstName')"


def _config(tmp_path, *, lead_title: bool):
    def edit(raw):
        contacts, leads = raw["destinations"]
        contacts["attributes"].update(CUSTOM)
        if lead_title:
            leads["attributes"]["FirstName"] = "Title"  # a standard Lead field the local target does not have
    return edited_config(tmp_path, edit)


def _columns(config):
    return {c.name: c for c in config.extension(config.profiles.dataset).columns}


def test_mapped_custom_fields_are_created_typed_for_their_columns(tmp_path):
    config = _config(tmp_path, lead_title=False)
    dest = config.destination("contacts")
    with LocalCrmTarget(tmp_path / "crm.sqlite") as target:
        prepare_local_target(target, dest, _columns(config))
        describe, resolved = preflight_destination(target, dest, {}, _columns(config))
        made = {name: (describe.find(name).type, describe.find(name).length, describe.find(name).custom)
                for name in CUSTOM.values()}
        assert made == {"Order_Count__c": ("double", 0, True), "Last_Purchase__c": ("datetime", 0, True),
                        "Company_Name__c": ("string", 255, True)}
        assert set(CUSTOM.values()) <= set(resolved.api_names.values())

        ids = [cid(i) for i in range(2)]
        target.seed("Contact", [{"Id": rid, "LastName": "x"} for rid in ids])
        frame = profiles(ids)
        frame["OrderCount"] = [3, 5]
        frame["LastPurchaseDate"] = None
        out = run(target, tmp_path, members(ids), frame, dest=dest, pipeline=config)
        assert out.succeeded == 2 and out.failed_total == 0
        assert [(r["Order_Count__c"], r["Company_Name__c"]) for r in target.read("Contact")] == [("3", "Co0"),
                                                                                                ("5", "Co1")]


def test_a_standard_field_the_local_target_lacks_is_refused_with_the_fields_it_has(tmp_path):
    config = _config(tmp_path, lead_title=True)
    with LocalCrmTarget(tmp_path / "crm.sqlite") as target, pytest.raises(PreflightError) as info:
        prepare_local_target(target, config.destination("leads"), _columns(config))
    (problem,) = info.value.problems
    assert problem.startswith(TITLE_REFUSED + "; it has Id, FirstName, LastName, Company, Email and the custom "
                              "fields it creates (form_submitters__c, ")
    assert "to a custom field (an API name ending in __c, which the local target creates)" in problem
    assert "set the SALESFORCE_* variables to write to an org that has Title" in problem


def test_a_snapshot_sees_the_file_and_never_writes_it(tmp_path):
    path = tmp_path / "crm.sqlite"
    assert LocalCrmTarget.snapshot(path).describe  # no file: an empty copy...
    assert not path.exists()  # ...and still no file
    with LocalCrmTarget(path) as target:
        target.ensure_object("Contact", status_fields=["seg__c"])
        target.seed("Contact", [{"Id": cid(1), "LastName": "x"}])
    before = path.read_bytes()
    copy = LocalCrmTarget.snapshot(path)
    copy.ensure_object("Contact", custom_fields={"Extra__c": ("string", 10)})
    copy.update([{"attributes": {"type": "Contact"}, "Id": cid(1), "seg__c": "seg:realized", "Extra__c": "y"}])
    assert [(r["Id"], r["seg__c"], r["Extra__c"]) for r in copy.read("Contact")] == [(cid(1), "seg:realized", "y")]
    copy.close()
    assert path.read_bytes() == before
    with sqlite3.connect(path) as conn:
        assert "Extra__c" not in [row[1] for row in conn.execute('PRAGMA table_info("Contact")')]


def test_check_refuses_what_the_run_refuses_and_passes_what_it_writes(capsys, monkeypatch, tmp_path):
    for name in ("SALESFORCE_DOMAIN", "SALESFORCE_LOGIN_URL", "SALESFORCE_CLIENT_ID", "SALESFORCE_CLIENT_SECRET",
                 "SALESFORCE_USERNAME", "SALESFORCE_PASSWORD", "SALESFORCE_PRIVATE_KEY_FILE", "SALESFORCE_PRIVATE_KEY",
                 "SFMC_CLIENT_ID", "SFMC_CLIENT_SECRET", "SFMC_AUTH_BASE_URI", "SFMC_PIPELINE_SAMPLE"):
        monkeypatch.delenv(name, raising=False)
    storage = tmp_path / "storage"
    config = _config(tmp_path, lead_title=True)
    monkeypatch.setenv("SFMC_PIPELINE_STORAGE", str(storage))
    monkeypatch.setenv("SFMC_PIPELINE_CONFIG", str(tmp_path / "pipeline.yaml"))

    assert main(["check"]) == 1
    lines = capsys.readouterr().out.splitlines()
    (contacts,) = [line for line in lines if "preflight contacts" in line]
    (leads,) = [line for line in lines if "preflight leads" in line]
    assert contacts.startswith("OK     preflight contacts: Contact in the local target (the sync creates the custom "
                               "ones): the 15 mapped fields exist")
    assert leads.startswith(f"FAILED preflight leads: {TITLE_REFUSED} -> it has Id, FirstName, LastName, Company, "
                            "Email and the custom fields it creates")
    assert not storage.exists()  # the check created nothing

    result = materialize(flow_assets(config), local_resources(storage, write_tiny_sample(tmp_path / "sample")))
    failures = step_failures(result)
    assert set(failures) == {"salesforce__leads"} and TITLE_REFUSED in failures["salesforce__leads"]
    with LocalCrmTarget(storage / "crm" / "local_crm.sqlite") as target:
        written = [r for r in target.read("Contact") if r.get("Order_Count__c") is not None]
    statuses = DatasetStore(storage).read_dataset("segment_statuses")
    assert len(written) == statuses[statuses["profile_key"].str.startswith("003")]["profile_key"].nunique()
