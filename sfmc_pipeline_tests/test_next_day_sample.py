"""The shipped "next day" sample (``data/sample/next_day``, ``SFMC_PIPELINE_SAMPLE=next_day``): the
first day's extracts one day later, written by ``scripts/generate_sample_data.py`` as a mutation of
the first day's rows, with the changes listed in its ``sample.json``.

Contract: the setting picks the folder (an unknown value is an error naming the variable, the value
and the allowed ones); the next day keeps every first-day row and differs only by what its manifest
lists; the generator reproduces both days byte for byte; and the whole flow run on the first day and
then on the next day (one storage directory, the local CRM target) is a second evaluation: most
memberships ``existing``, ``exited`` and ``realized`` where the manifest says, and a sync that writes
only what changed, leaving the local CRM with the next day's statuses and attributes.
"""

import csv
import datetime as dt
import filecmp
import json
import sqlite3
from contextlib import closing
from pathlib import Path

import pandas as pd
import pytest

from sfmc_pipeline import settings
from sfmc_pipeline.cli import main
from sfmc_pipeline.datasets.storage import DatasetStore
from sfmc_pipeline.defs.assets.crm import ledger_path
from sfmc_pipeline.defs.resources.salesforce import SalesforceResource
from sfmc_pipeline.defs.resources.sfmc import SfmcResource
from sfmc_pipeline.defs.resources.storage import StorageResource
from sfmc_pipeline.errors import ConfigurationError
from sfmc_pipeline.salesforce.ids import KEY_PREFIXES
from sfmc_pipeline_tests.flow_fixtures import (
    ASSETS,
    asset_metadata,
    check_evaluations,
    local_crm_records,
    materialize,
    step_failures,
    sync_metadata,
)
from sfmc_pipeline_tests.segment_fixtures import CONFIG
from sfmc_pipeline_tests.shipped_sample import SHIPPED_SAMPLE_DAYS

FIRST_DAY, NEXT_DAY = SHIPPED_SAMPLE_DAYS["first_day"], SHIPPED_SAMPLE_DAYS["next_day"]
MANIFEST = json.loads((NEXT_DAY / "sample.json").read_text(encoding="utf-8"))
CHANGES = {c["name"]: c for c in MANIFEST["changes"]}
FILES = ["Contacts.csv", "CampaignEngagement.csv", "Activities.csv"]


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def _keys(*names: str) -> set[str]:
    return {key for name in names for key in CHANGES[name]["keys"]}


# ------------------------------------------------------------------------------------- the setting


@pytest.mark.parametrize("value, folder", [(None, FIRST_DAY), ("", FIRST_DAY), ("first_day", FIRST_DAY),
                                           (" next_day ", NEXT_DAY), ("next_day", NEXT_DAY)])
def test_the_sample_day_in_the_project_env_file_picks_the_folder(project_env_file, value, folder):
    if value is not None:
        project_env_file.write_text(f"SFMC_CLIENT_ID=\n{settings.SAMPLE_ENV}={value}\n", encoding="utf-8")
    assert settings.sample_data_dir() == folder
    assert all((folder / name).is_file() for name in [*FILES, "sample.json"])


def test_an_unknown_sample_day_is_a_clear_error(project_env_file, tmp_path, monkeypatch):
    shipped = {"first_day": settings.SAMPLE_DATA_DIR, "next_day": settings.SAMPLE_DATA_DIR / "next_day"}
    monkeypatch.setattr(settings, "SAMPLE_DAYS", shipped)  # as the message names them (nothing is read)
    project_env_file.write_text(f"{settings.SAMPLE_ENV}=day_two\n", encoding="utf-8")
    with pytest.raises(ConfigurationError) as raised:
        settings.sample_data_dir()
    message = str(raised.value)
    assert f"SFMC_PIPELINE_SAMPLE='day_two' in {project_env_file}" in message
    assert "first_day (data/sample)" in message and "next_day (data/sample/next_day)" in message
    from sfmc_pipeline.definitions import (
        build_resources,  # the code location loads; its runs fail at the start
    )

    result = materialize(ASSETS, {**build_resources(), "storage": StorageResource(base_dir=str(tmp_path))})
    assert "SFMC_PIPELINE_SAMPLE='day_two'" in step_failures(result)["contacts"]


def test_the_code_location_reads_the_sample_day_when_a_run_starts(project_env_file):
    """What `dg dev` builds at load is what "Materialize all" runs: the sample day comes from .env when the
    run starts, not from whatever the environment held when the code location loaded."""
    from sfmc_pipeline.definitions import build_resources

    sfmc = build_resources()["sfmc"]
    assert sfmc.sample_folder() == FIRST_DAY
    assert main(["sample", "next_day"]) == 0
    assert sfmc.sample_folder() == NEXT_DAY


@pytest.mark.parametrize("in_file", [None, "first_day"])
def test_a_sample_day_set_in_one_shell_only_is_refused_naming_both(project_env_file, monkeypatch, in_file):
    if in_file:
        project_env_file.write_text(f"{settings.SAMPLE_ENV}={in_file}\n", encoding="utf-8")
    monkeypatch.setenv(settings.SAMPLE_ENV, "next_day")  # SFMC_PIPELINE_SAMPLE=next_day dg launch ...
    with pytest.raises(ConfigurationError) as raised:
        settings.sample_data_dir()
    message = str(raised.value)
    assert "SFMC_PIPELINE_SAMPLE='next_day' in this process's environment" in message
    assert str(project_env_file) in message and "`sfmc-pipeline sample next_day`" in message
    project_env_file.write_text(f"{settings.SAMPLE_ENV}=next_day\n", encoding="utf-8")  # as dg loads it
    assert settings.sample_data_dir() == NEXT_DAY


def test_the_sample_command_writes_the_day_to_the_project_env_file(project_env_file, capsys):
    project_env_file.write_text("SFMC_PIPELINE_STORAGE=/srv/storage\n", encoding="utf-8")
    assert main(["sample"]) == 0
    assert capsys.readouterr().out.startswith(f"first_day: {FIRST_DAY}")
    assert main(["sample", "next_day"]) == 0
    assert main(["sample", "next_day"]) == 0  # again: one line, not two
    assert project_env_file.read_text(encoding="utf-8").splitlines() == [
        "SFMC_PIPELINE_STORAGE=/srv/storage", "SFMC_PIPELINE_SAMPLE=next_day"]
    capsys.readouterr()
    assert main(["sample"]) == 0 and capsys.readouterr().out.startswith(f"next_day: {NEXT_DAY}")
    assert main(["sample", "day_two"]) == 2
    assert "'day_two' is not a sample day; use one of: first_day, next_day" in capsys.readouterr().err


# ------------------------------------------------------------------------------------- the files


def test_the_next_day_is_the_first_day_plus_the_listed_changes():
    first_anchor = json.loads((FIRST_DAY / "sample.json").read_text())["anchor_date"]
    assert MANIFEST["anchor_date"] == "2026-11-21" == str(dt.date.fromisoformat(first_anchor) + dt.timedelta(days=1))
    assert MANIFEST["previous_anchor_date"] == first_anchor

    # Contacts: every first-day row in place (the invalid ones too), edited only for the listed keys,
    # the new contacts appended.
    first, nxt = _rows(FIRST_DAY / "Contacts.csv"), _rows(NEXT_DAY / "Contacts.csv")
    edited = {c["name"]: set(c["keys"]) for c in MANIFEST["changes"]
              if c["file"] == "Contacts.csv" and c["name"] != "new_contacts"}
    listed = set().union(*edited.values())
    assert [r["SubscriberKey"] for r in nxt[len(first):]] == CHANGES["new_contacts"]["keys"]
    differing = {}
    for before, after in zip(first, nxt):
        assert before["SubscriberKey"] == after["SubscriberKey"]
        columns = {c for c in before if before[c] != after[c]}
        if columns:
            differing[before["SubscriberKey"]] = columns
    assert set(differing) == listed
    for key in edited["new_to_repeat"] | edited["repeat_to_loyal"] | edited["inactive_to_repeat"]:
        assert differing[key] == {"LifecycleStage", "OrderCount", "TotalSpend", "LastPurchaseDate"}
    for key in edited["first_purchase"] | edited["purchase_after_visit"]:
        assert differing[key] == {"OrderCount", "TotalSpend", "LastPurchaseDate"}
    assert all(differing[k] == {"LifecycleStage"} for k in edited["repeat_to_inactive"])
    for name, column in [("email_change", "Email"), ("last_name_change", "LastName"),
                         ("first_name_change", "FirstName"), ("company_change", "Company")]:
        assert all(differing[k] == {column} for k in edited[name]), name
    stage = {r["SubscriberKey"]: (r["LifecycleStage"], s["LifecycleStage"]) for r, s in zip(first, nxt)}
    for name, change in [("new_to_repeat", ("new", "repeat")), ("repeat_to_loyal", ("repeat", "loyal")),
                         ("inactive_to_repeat", ("inactive", "repeat")), ("repeat_to_inactive", ("repeat", "inactive"))]:
        assert {stage[k] for k in edited[name]} == {change}, name
    assert len(nxt) >= len(first)  # nothing for the volume guard to stop

    # CampaignEngagement: the first day's rows in order, one row edited per listed key, the day's
    # campaign's rows inserted.
    first, nxt = _rows(FIRST_DAY / "CampaignEngagement.csv"), _rows(NEXT_DAY / "CampaignEngagement.csv")
    campaign = max(r["CampaignId"] for r in nxt)
    assert campaign not in {r["CampaignId"] for r in first}
    assert sum(r["CampaignId"] == campaign for r in nxt) == CHANGES["new_campaign"]["rows"]
    kept = [r for r in nxt if r["CampaignId"] != campaign]
    assert len(kept) == len(first)
    edited_keys = [b["SubscriberKey"] for b, a in zip(first, kept) if b != a]
    assert sorted(edited_keys) == sorted(_keys("offer_clicks", "positive_responses", "negative_responses"))

    # Activities: appended only, all on the day that passed.
    first, nxt = _rows(FIRST_DAY / "Activities.csv"), _rows(NEXT_DAY / "Activities.csv")
    assert nxt[:len(first)] == first
    added = nxt[len(first):]
    assert len(added) == CHANGES["day_activities"]["rows"] > 0.03 * len(first)
    assert {r["OccurredAt"].split(" ")[0] for r in added} == {"11/20/2026"}


def test_the_generator_reproduces_both_days():
    out = FIRST_DAY  # what scripts/generate_sample_data.py wrote for this test process (shipped_sample.py)
    shipped_days = [settings.SAMPLE_DATA_DIR, settings.SAMPLE_DATA_DIR / "next_day"]  # the working tree's files
    for folder, shipped in [(out, shipped_days[0]), (out / "next_day", shipped_days[1])]:
        names = sorted(p.name for p in shipped.iterdir() if p.is_file())
        assert names == sorted(p.name for p in folder.iterdir() if p.is_file())
        _, mismatch, errors = filecmp.cmpfiles(shipped, folder, names, shallow=False)
        assert not mismatch and not errors, f"{shipped}: regenerate with scripts/generate_sample_data.py ({mismatch})"


# ------------------------------------------------------------------------------------- two evaluations


def _resources(storage: Path) -> dict:
    """Built the way definitions.py builds them: the sample folder comes from the setting."""
    return {"sfmc": SfmcResource(), "salesforce": SalesforceResource(),
            "storage": StorageResource(base_dir=str(storage))}


def _ledger(storage: Path) -> pd.DataFrame:
    with closing(sqlite3.connect(ledger_path(DatasetStore(storage)))) as db:
        return pd.read_sql_query("SELECT object, record_id, field, kind, value, run_id FROM confirmed_fields", db)


def test_first_day_then_next_day(tmp_path, monkeypatch):
    """The whole flow on the first day, then on the next day, into one storage directory (two runs,
    shared by the checks below so the pair runs once whatever the test distribution)."""
    monkeypatch.delenv("SFMC_PIPELINE_AS_OF", raising=False)
    first = materialize(ASSETS, _resources(tmp_path))
    assert first.success, step_failures(first)
    ledger_after_first = _ledger(tmp_path)
    settings.write_sample_day("next_day")
    second = materialize(ASSETS, _resources(tmp_path))
    assert second.success, step_failures(second)
    days = {"storage": tmp_path, "first": first, "second": second, "ledger_after_first": ledger_after_first,
            "ledger": _ledger(tmp_path),
            "statuses": pd.read_parquet(DatasetStore(tmp_path).dataset_path("segment_statuses"))}
    check_a_second_evaluation(days)
    check_the_statuses_follow_the_listed_changes(days)
    check_the_second_sync_writes_only_what_changed(days)
    check_the_local_crm_holds_the_next_day(days)


def check_a_second_evaluation(days: dict) -> None:
    second = days["second"]
    meta = asset_metadata(second, "segment_statuses")
    assert (meta["as_of"], meta["baseline_as_of"]) == ("2026-11-21", "2026-11-20")
    assert asset_metadata(second, "segment_memberships")["as_of_source"] == "sample data anchor date (embedded mode)"
    realized, existing, exited = (meta[f"{s}.total"] for s in ("realized", "existing", "exited"))
    assert existing > 10 * (realized + exited) and realized >= 100 and exited >= 100
    segments = [s.name for s in CONFIG.segments]
    assert sum(meta[f"exited.{s}"] > 0 for s in segments) >= 5
    assert sum(meta[f"realized.{s}"] > 0 for s in segments) == len(segments)
    assert all(c.passed for c in check_evaluations(second)
               if c.check_name in ("statuses_consistent", "members_are_valid_profiles", "reconciliation"))


def check_the_statuses_follow_the_listed_changes(days: dict) -> None:
    statuses = days["statuses"]
    status = dict(zip(zip(statuses["profile_key"], statuses["segment"]), statuses["status"]))

    def assert_all(names: tuple[str, ...], segment: str, expected: str) -> None:
        keys = _keys(*names)
        got = {k: status.get((k, segment), "(no status)") for k in keys}
        assert keys and set(got.values()) == {expected}, (names, segment, got)

    assert_all(("new_to_repeat",), "new_customer", "exited")
    assert_all(("new_to_repeat", "inactive_to_repeat"), "repeat_buyer", "realized")
    assert_all(("repeat_to_loyal",), "repeat_buyer", "exited")
    assert_all(("repeat_to_loyal",), "loyal_customer", "realized")
    assert_all(("inactive_to_repeat",), "inactive_customer", "exited")
    assert_all(("repeat_to_inactive",), "repeat_buyer", "exited")
    assert_all(("repeat_to_inactive",), "inactive_customer", "existing")
    assert_all(("first_purchase", "purchase_after_visit"), "visited_no_purchase", "exited")
    for segment in ("new_customer", "visited_no_purchase", "form_submitters"):
        assert_all(("new_contacts",), segment, "realized")
    assert_all(("offer_clicks",), "offer_clickers", "realized")
    assert_all(("positive_responses",), "positive_responders", "realized")
    assert_all(("negative_responses",), "negative_responders", "realized")


def check_the_second_sync_writes_only_what_changed(days: dict) -> None:
    second = sync_metadata(days["second"])
    ledger, before = days["ledger"], days["ledger_after_first"]
    written = ledger[ledger["run_id"] == days["second"].run_id]
    previous = dict(zip(zip(before["object"], before["record_id"], before["field"]), before["value"]))
    # Every field the second sync wrote holds something other than what the first one wrote. (Every
    # first-day member's status changes on a second evaluation, realized -> existing or exited, so it
    # writes about as many records as the first sync; what it leaves out is everything unchanged.)
    assert not [r for r in written.itertuples() if previous.get((r.object, r.record_id, r.field)) == r.value]
    assert len(written) < 0.6 * len(before)

    first_contacts, next_contacts = (
        {r["SubscriberKey"]: r for r in _rows(folder / "Contacts.csv")} for folder in (FIRST_DAY, NEXT_DAY))
    for dest in CONFIG.destinations:
        meta, mine = second[dest.name], written[written["object"] == dest.object]
        assert meta["mode"] == "local"
        assert meta["records_sent"] == meta["records_succeeded"] == mine["record_id"].nunique() > 0
        assert meta["records_failed"] == meta["records_rejected"] == 0
        assert meta["records_sent"] + meta["records_unchanged"] == meta["records_considered"]
        # Attributes: a record the first sync wrote gets only the attributes that changed on the day;
        # a record written for the first time (a new contact, or a profile entering its first segment)
        # gets them all.
        managed = set(before.loc[before["object"] == dest.object, "record_id"])
        expected = set()
        for key in set(mine["record_id"]):
            row, old = next_contacts[key], first_contacts.get(key) if key in managed else None
            expected |= {(key, fld) for column, fld in dest.attribute_map.items()
                         if row[column] and (old is None or old[column] != row[column])}
        sent = set(zip(*(mine.loc[mine["kind"] == "attribute", c] for c in ("record_id", "field"))))
        assert sent == expected
        listed = {k for k in _keys("email_change", "last_name_change", "first_name_change", "company_change")
                  if k.startswith(KEY_PREFIXES[dest.object])}
        changed = {k for k, _ in sent if k in managed}
        assert changed == {k for k in listed if any(first_contacts[k][c] != next_contacts[k][c]
                                                    for c in dest.attribute_map)} and changed
        first_attributes = ((before["object"] == dest.object) & (before["kind"] == "attribute")).sum()
        assert len(sent) < 0.05 * first_attributes


def check_the_local_crm_holds_the_next_day(days: dict) -> None:
    crm = local_crm_records(days["storage"])
    statuses = days["statuses"]
    statuses = statuses[~statuses["held"]]
    next_contacts = {r["SubscriberKey"]: r for r in _rows(NEXT_DAY / "Contacts.csv")}
    for dest in CONFIG.destinations:
        records = {r["Id"]: r for r in crm[dest.object]}
        mine = statuses[statuses["profile_key"].str.startswith(KEY_PREFIXES[dest.object])]
        # one segment per status field in the shipped config: the field holds "<segment>:<status>"
        wrong = [(r.profile_key, r.segment, r.status, records.get(r.profile_key, {}).get(dest.segments[r.segment]))
                 for r in mine.itertuples()
                 if records.get(r.profile_key, {}).get(dest.segments[r.segment]) != f"{r.segment}:{r.status}"]
        assert not wrong and len(mine) > 0, wrong[:5]
        for column, fld in dest.attribute_map.items():
            for name in ("email_change", "last_name_change", "first_name_change", "company_change", "new_contacts"):
                for key in CHANGES[name]["keys"]:
                    if key.startswith(KEY_PREFIXES[dest.object]) and next_contacts[key][column]:
                        assert records[key][fld] == next_contacts[key][column], (name, key, fld)
    changed = next(k for k in CHANGES["email_change"]["keys"] if k.startswith(KEY_PREFIXES["Contact"]))
    contact = {r["Id"]: r for r in crm["Contact"]}[changed]
    first_day = {r["SubscriberKey"]: r for r in _rows(FIRST_DAY / "Contacts.csv")}
    assert contact["Email"] == next_contacts[changed]["Email"] != first_day[changed]["Email"]
    moved = next(k for k in CHANGES["new_to_repeat"]["keys"] if k.startswith(KEY_PREFIXES["Contact"]))
    contact = {r["Id"]: r for r in crm["Contact"]}[moved]
    assert (contact["new_customer__c"], contact["repeat_buyer__c"]) == ("new_customer:exited", "repeat_buyer:realized")
