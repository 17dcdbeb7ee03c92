"""Contract: a run in which any CRM sync is configured ``dry_run: true`` changes no state. The
segment baseline (``state/segments/``), the sync ledger (``state/crm/ledger.sqlite`` rows) and the
volume-guard counts (``state/datasets/<asset>.json``) are exactly as before the run, the CRM is not
written, and the next real run writes what a clean run would: after a dry run of the whole flow the
first real run writes ``...:realized``, and after a dry run on changed data the real run compares
with the last real evaluation, not with the dry run's. On the tiny sample (``tiny_sample.py``)."""

import csv
import shutil
from pathlib import Path

import pytest

from sfmc_pipeline.datasets.storage import DatasetStore
from sfmc_pipeline_tests.flow_fixtures import (
    asset_metadata,
    ledger_rows,
    local_crm_records,
    run_flow,
)
from sfmc_pipeline_tests.segment_fixtures import CONFIG
from sfmc_pipeline_tests.tiny_sample import write_tiny_sample

DRY_CONTACTS = {"salesforce__contacts": {"config": {"dry_run": True}}}  # the example of docs/crm-sync.md
DRY_ALL = {f"salesforce__{d.name}": {"config": {"dry_run": True}} for d in CONFIG.destinations}


def _run_config(ops: dict | None = None, as_of: str | None = None) -> dict:
    """Run config with ``ops`` and an evaluation date (each run its own day, so no run repeats another)."""
    ops = dict(ops or {})
    if as_of:
        ops["segment_memberships"] = {"config": {"as_of": as_of}}
    return {"ops": ops}


def _state_files(storage: Path) -> dict[str, bytes]:
    """The segment baseline and the volume-guard counts, byte for byte."""
    return {str(p.relative_to(storage)): p.read_bytes()
            for folder in ("segments", "datasets") for p in sorted((storage / "state" / folder).glob("*"))
            if p.is_file()}


def _status_values(records: list[dict]) -> set[str]:
    return {v for r in records for k, v in r.items() if k.endswith("__c") and v}


@pytest.fixture(scope="module")
def dry_then_real(tmp_path_factory):
    """A dry run of the whole flow on fresh storage (the run config of docs/crm-sync.md: the contacts sync dry), then
    the first real run, a day later."""
    base = tmp_path_factory.mktemp("dry_run")
    sample = write_tiny_sample(base / "sample")
    storage = base / "storage"
    storage.mkdir()
    dry = run_flow(sample, storage, _run_config(DRY_CONTACTS))
    after_dry = {"state": _state_files(storage), "ledger": ledger_rows(storage), "crm": local_crm_records(storage)}
    real = run_flow(sample, storage, _run_config(as_of="2026-11-21"))
    return {"sample": sample, "storage": storage, "dry": dry, "after_dry": after_dry, "real": real}


def test_a_dry_run_of_the_whole_flow_leaves_no_baseline_so_the_real_run_writes_realized(dry_then_real):
    dry, after_dry = dry_then_real["dry"], dry_then_real["after_dry"]
    assert after_dry["state"] == {}  # no evaluation committed, no volume count recorded
    assert not _status_values(after_dry["crm"]["Contact"])  # nothing sent to Contacts
    assert asset_metadata(dry, "salesforce/contacts")["dry_run"] is True
    assert asset_metadata(dry, "segment_statuses")["baseline_advanced"] is False

    storage = dry_then_real["storage"]
    real = dry_then_real["real"]
    assert asset_metadata(real, "segment_statuses")["baseline_as_of"] == "(none: first evaluation)"
    statuses = DatasetStore(storage).read_dataset("segment_statuses")
    assert set(statuses["status"]) == {"realized"}  # what a clean first run writes
    new = statuses[(statuses["segment"] == "new_customer") & statuses["profile_key"].str.startswith("003")]
    contacts = local_crm_records(storage)["Contact"]
    written = {r["Id"] for r in contacts if r["new_customer__c"] == "new_customer:realized"}
    assert written == set(new["profile_key"]) and written
    assert {v.split(":")[1] for v in _status_values(contacts)} == {"realized"}
    assert {p.split("/")[-1] for p in _state_files(storage)} >= {"evaluations.json", "contacts.json"}


def test_a_dry_run_writes_no_ledger_rows_for_any_destination(dry_then_real):
    assert not any(dry_then_real["after_dry"]["ledger"].values())
    assert not _status_values(dry_then_real["after_dry"]["crm"]["Lead"])


def test_a_dry_run_on_changed_data_changes_no_state_and_the_next_real_run_compares_with_the_last_real_one(
        dry_then_real, tmp_path):
    sample = Path(shutil.copytree(dry_then_real["sample"], tmp_path / "sample"))
    storage = Path(shutil.copytree(dry_then_real["storage"], tmp_path / "storage"))
    with (sample / "Contacts.csv").open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        header, rows = reader.fieldnames, list(reader)
    contacts = {r["Id"]: r for r in local_crm_records(storage)["Contact"]}
    (moved,) = [r for r in rows if r["SubscriberKey"] in contacts and r["LifecycleStage"] == "new"][:1]
    moved["LifecycleStage"] = "repeat"
    with (sample / "Contacts.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, header)
        writer.writeheader()
        writer.writerows(rows)
    key = moved["SubscriberKey"]
    state, ledger, crm = _state_files(storage), ledger_rows(storage), local_crm_records(storage)

    dry = run_flow(sample, storage, _run_config(DRY_ALL, as_of="2026-11-22"))
    assert _state_files(storage) == state
    assert ledger_rows(storage) == ledger
    assert local_crm_records(storage) == crm
    assert asset_metadata(dry, "segment_statuses")["realized.repeat_buyer"] == 1  # the dry run saw the change
    assert {p.split("/")[-1] for p in state} >= {"evaluations.json", "contacts.json"} and any(ledger.values())

    real = run_flow(sample, storage, _run_config(as_of="2026-11-23"))
    meta = asset_metadata(real, "segment_statuses")
    assert meta["baseline_as_of"] == "2026-11-21"  # the last real evaluation, not the dry run's
    assert (meta["realized.repeat_buyer"], meta["exited.new_customer"], meta["realized.new_customer"]) == (1, 1, 0)
    record = {r["Id"]: r for r in local_crm_records(storage)["Contact"]}[key]
    assert record["new_customer__c"] == "new_customer:exited"
    assert record["repeat_buyer__c"] == "repeat_buyer:realized"
