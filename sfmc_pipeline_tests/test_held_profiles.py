"""Contract: held profiles. A profile whose own row is quarantined (a malformed Email in
Contacts.csv, say) holds its previous statuses: it neither exits its segments nor enters new ones
until its row is valid again; ``segment_statuses`` marks it in a ``held`` column and counts it in
the ``held_profiles`` / ``held_profiles_sample`` metadata; the CRM keeps its last confirmed values
(nothing becomes ``...:exited``); its related rows are not counted as orphans. Once its row is
valid again it gets ``existing`` / ``exited`` normally, against the memberships it held. On the tiny sample
(``tiny_sample.py``)."""

import csv
import shutil
from pathlib import Path

import pandas as pd
import pytest

from sfmc_pipeline.datasets.storage import DatasetStore
from sfmc_pipeline.segments.held import quarantined_profile_keys
from sfmc_pipeline_tests.flow_fixtures import (
    asset_metadata,
    local_crm_records,
    run_flow,
)
from sfmc_pipeline_tests.segment_fixtures import CONFIG, key
from sfmc_pipeline_tests.tiny_sample import write_tiny_sample

KEY = "profile_key"


def _orphans(result) -> dict:
    return {k: v for k, v in asset_metadata(result, "segment_memberships").items() if k.startswith("orphans.")}


def _read_contacts(sample: Path) -> tuple[list[str], list[dict]]:
    with (sample / "Contacts.csv").open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames), list(reader)


def _write_contacts(sample: Path, header: list[str], rows: list[dict]) -> None:
    with (sample / "Contacts.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, header)
        writer.writeheader()
        writer.writerows(rows)


def _edit(sample: Path, changes: dict[str, dict]) -> None:
    header, rows = _read_contacts(sample)
    for row in rows:
        row.update(changes.get(row["SubscriberKey"], {}))
    _write_contacts(sample, header, rows)


def _contact_record(storage: Path, record_id: str) -> dict:
    (record,) = [r for r in local_crm_records(storage)["Contact"] if r["Id"] == record_id]
    return record


def _statuses_of(storage: Path, profile: str) -> dict[str, tuple[str, bool]]:
    statuses = DatasetStore(storage).read_dataset("segment_statuses")
    mine = statuses[statuses[KEY] == profile]
    rows = mine[["segment", "status", "held"]].itertuples(index=False)
    return {segment: (status, bool(held)) for segment, status, held in rows}


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    """One full run on the tiny sample, and a new customer (a Contact) in several segments with related rows in
    both related datasets, plus another new customer whose change keeps later runs from repeating this one."""
    base = tmp_path_factory.mktemp("held")
    sample = write_tiny_sample(base / "sample")
    storage = base / "storage"
    storage.mkdir()
    result = run_flow(sample, storage)
    store = DatasetStore(storage)
    statuses = store.read_dataset("segment_statuses")
    segments = statuses.groupby(KEY)["segment"].apply(set)
    related = set(store.read_dataset("activities")["SubscriberKey"]) & set(
        store.read_dataset("campaign_engagement")["SubscriberKey"])
    _, rows = _read_contacts(sample)
    new = [r["SubscriberKey"] for r in rows if r["SubscriberKey"].startswith("003") and r["LifecycleStage"] == "new"
           and r["SubscriberKey"] in segments.index and r["SubscriberKey"] in related]
    profile = next(k for k in new if len(segments[k]) >= 3)
    other = next(k for k in new if k != profile)
    return {"sample": sample, "storage": storage, "result": result, "profile": profile, "other": other,
            "segments": segments[profile]}


def test_a_quarantined_profile_holds_its_statuses_until_its_row_is_valid_again(first_run, tmp_path):
    sample = Path(shutil.copytree(first_run["sample"], tmp_path / "sample"))
    storage = Path(shutil.copytree(first_run["storage"], tmp_path / "storage"))
    profile, other, segments = first_run["profile"], first_run["other"], first_run["segments"]
    record_before = _contact_record(storage, profile)
    assert {f"{s}__c" for s in segments} <= {f for f, v in record_before.items() if v and v.endswith(":realized")}
    first_statuses = asset_metadata(first_run["result"], "segment_statuses")

    # Run 2: the profile's email is malformed (its row is quarantined); another customer changes, so this is a
    # new evaluation that is committed.
    _edit(sample, {profile: {"Email": "not-an-email.example.com"}, other: {"LifecycleStage": "repeat"}})
    second = run_flow(sample, storage)
    held = _statuses_of(storage, profile)
    assert set(held) == segments  # neither exited nor entered anything
    assert all(is_held and status != "exited" for status, is_held in held.values())
    assert not any(is_held for _, is_held in _statuses_of(storage, other).values())
    meta = asset_metadata(second, "segment_statuses")
    assert meta["held_profiles"] == first_statuses["held_profiles"] + 1
    assert profile in meta["held_profiles_sample"].split(", ")
    assert meta["baseline_as_of"] != "(none: first evaluation)" and meta["repeat_of_latest_evaluation"] is False
    assert _orphans(second) == _orphans(first_run["result"])  # its activities and engagement are not orphans
    record = _contact_record(storage, profile)
    assert record == record_before  # the CRM keeps its last confirmed values
    assert not any(str(v).endswith(":exited") for v in record.values())

    # Run 3: the row is valid again, and the customer moved from "new" to "repeat".
    _edit(sample, {profile: {"Email": record_before["Email"], "LifecycleStage": "repeat"}})
    run_flow(sample, storage)
    statuses = _statuses_of(storage, profile)
    expected = {s: ("existing", False) for s in segments - {"new_customer"}}
    expected |= {"new_customer": ("exited", False), "repeat_buyer": ("realized", False)}
    assert statuses == expected  # against the memberships it held in run 2
    record = _contact_record(storage, profile)
    assert record["new_customer__c"] == "new_customer:exited" and record["repeat_buyer__c"] == "repeat_buyer:realized"
    for segment in segments - {"new_customer"}:
        assert record[f"{segment}__c"] == f"{segment}:existing"


def test_held_keys_are_typed_like_the_dataset_and_need_only_the_key_column():
    """A quarantine written before a column was added to the config still yields its held profiles, as the
    18-character Ids the dataset holds, and a malformed key names no profile to hold (a key that also has a valid
    row is dropped by the segment step: see the test below)."""
    contacts = CONFIG.extension("contacts")
    quarantine = pd.DataFrame({"SubscriberKey": [key(1)[:15], key(2), " ", "003notAnId"], "Email": ["x", "y", "z", "w"],
                               "_row_number": [2, 3, 4, 5], "_reasons": ["Email: bad"] * 4}, dtype="string")
    assert quarantined_profile_keys(quarantine, contacts, "SubscriberKey") == {key(1), key(2)}
    assert quarantined_profile_keys(quarantine.iloc[0:0], contacts, "SubscriberKey") == set()
    assert quarantined_profile_keys(None, contacts, "SubscriberKey") == set()
