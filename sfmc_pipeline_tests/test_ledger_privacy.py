"""Contract: the sync ledger keeps no personal data in clear. Values of identifying fields (names, email:
columns with an identifying label, and email/phone/name columns by default) are stored as keyed hashes in
the ledger and every byte of its files, whichever path confirmed them (sObject Collections
or Bulk API 2.0); statuses stay readable. The diff compares hashes, so an unchanged re-run sends nothing
and a changed value is sent. A ledger holding clear values is hashed once when opened, without sending
anything again; a lost key makes the next sync write the identifying attributes once more, not fail."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
from contextlib import closing

import pytest

from sfmc_pipeline.crm import sync as sync_module
from sfmc_pipeline.crm.bulk.job_store import BulkJobStore
from sfmc_pipeline.crm.bulk.writer import BulkWriter
from sfmc_pipeline.crm.ledger import SyncLedger
from sfmc_pipeline.datasets.storage import StorageError
from sfmc_pipeline_tests.crm_fixtures import (  # noqa: F401 - org and client are fixtures
    CONTACTS,
    cid,
    client,
    members,
    org,
    profiles,
    run,
    seed,
)
from sfmc_pipeline_tests.segment_fixtures import CONFIG

IDS = [cid(i) for i in range(6)]
PERSONAL = [b"p0@example.com", b"First0", b"Last0", b"p5@example.com", b"Last5"]


def _stored(tmp_path) -> dict[tuple[str, str], str]:
    with closing(sqlite3.connect(tmp_path / "ledger.sqlite")) as db:
        return {(rid, fld): value for rid, fld, value in db.execute("SELECT record_id, field, value FROM confirmed_fields")}


def _bytes_on_disk(tmp_path) -> bytes:
    """Everything the storage holds but the key: the ledger and its journal."""
    return b"".join(p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file() and p.suffix != ".key")


def _writes(org) -> list[dict]:
    return [rec for r in org.api_requests("/composite/sobjects", method="PATCH") for rec in r.json["records"]]


@pytest.fixture()
def seeded(org):
    seed(org, IDS)
    return org


def test_identifying_values_are_stored_as_keyed_hashes_and_statuses_stay_readable(seeded, client, tmp_path):
    out = run(client(), tmp_path, members(IDS), profiles(IDS), run_id="r1")
    assert out.succeeded == len(IDS)
    stored = _stored(tmp_path)
    a = IDS[0]
    assert json.loads(stored[(a, "new_customer__c")]) == "new_customer:realized"  # readable
    for name in ("FirstName", "LastName", "Email"):
        assert stored[(a, name)].startswith("keyed:") and len(stored[(a, name)]) == len("keyed:") + 32
    assert stored[(a, "Email")] != stored[(IDS[1], "Email")]
    on_disk = _bytes_on_disk(tmp_path)
    assert not [value for value in PERSONAL if value in on_disk]  # nowhere in the files

    key = tmp_path / "ledger.key"
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    written = key.read_text()
    again = run(client(), tmp_path, members(IDS), profiles(IDS), run_id="r2")
    assert (again.to_send, again.sent) == (0, 0)  # equal hashes: nothing to send
    assert key.read_text() == written  # created once

    before = len(_writes(seeded))
    changed = run(client(), tmp_path, members(IDS), profiles(IDS, {(a, "Email"): "new@example.com"}), run_id="r3")
    assert changed.succeeded == 1 and _writes(seeded)[before:] == [
        {"attributes": {"type": "Contact"}, "id": a, "Email": "new@example.com"}]
    assert b"new@example.com" not in _bytes_on_disk(tmp_path)


def test_a_ledger_holding_clear_values_is_hashed_once_without_sending_again(seeded, client, tmp_path, monkeypatch):
    with monkeypatch.context() as m:  # a ledger written before values were hashed
        m.setattr(sync_module, "identifying_fields", lambda pipeline, dest: frozenset())
        run(client(), tmp_path, members(IDS), profiles(IDS), run_id="r1")
    assert json.loads(_stored(tmp_path)[(IDS[0], "Email")]) == "p0@example.com"
    assert b"p0@example.com" in _bytes_on_disk(tmp_path)  # in the table

    before = len(_writes(seeded))
    out = run(client(), tmp_path, members(IDS), profiles(IDS), run_id="r2")
    assert (out.to_send, len(_writes(seeded))) == (0, before)  # no re-send storm
    assert all(_stored(tmp_path)[(rid, "Email")].startswith("keyed:") for rid in IDS)
    on_disk = _bytes_on_disk(tmp_path)
    assert not [value for value in PERSONAL if value in on_disk]  # no free page or journal keeps one
    assert run(client(), tmp_path, members(IDS), profiles(IDS), run_id="r3").to_send == 0


def test_a_lost_key_writes_the_identifying_attributes_once_more(seeded, client, tmp_path):
    run(client(), tmp_path, members(IDS), profiles(IDS), run_id="r1")
    (tmp_path / "ledger.key").unlink()
    before = len(_writes(seeded))
    out = run(client(), tmp_path, members(IDS), profiles(IDS), run_id="r2")
    assert out.succeeded == len(IDS) and out.failed_total == 0
    assert {tuple(sorted(rec)) for rec in _writes(seeded)[before:]} == {
        ("Email", "FirstName", "LastName", "attributes", "id")}  # the attributes only; statuses are unchanged
    assert run(client(), tmp_path, members(IDS), profiles(IDS), run_id="r3").to_send == 0


def test_a_damaged_key_names_the_file_and_the_fix(seeded, client, tmp_path):
    run(client(), tmp_path, members(IDS), profiles(IDS), run_id="r1")
    (tmp_path / "ledger.key").write_text("not a key\n")
    with pytest.raises(StorageError) as info:
        run(client(), tmp_path, members(IDS), profiles(IDS), run_id="r2")
    assert str(tmp_path / "ledger.key") in str(info.value) and "move it away" in str(info.value)


def test_values_confirmed_through_bulk_are_hashed_too(seeded, client, tmp_path):
    ids = [cid(i) for i in range(100, 130)]
    seed(seeded, ids)
    pipeline = CONFIG.model_copy(update={"sync": CONFIG.sync.model_copy(update={"bulk_threshold": 20})})
    target = client()
    ledger = SyncLedger(tmp_path / "ledger.sqlite", target.target_id)
    try:
        writer = BulkWriter(target, "Contact", state=BulkJobStore.beside(tmp_path / "ledger.sqlite", target.target_id),
                            destination=CONTACTS.name, poll_timeout_seconds=60, sleep=lambda s: None,
                            confirm=lambda rows: ledger.record("Contact", CONTACTS.name, "b1", rows))
        out = sync_module.DestinationSync.for_pipeline(pipeline, CONTACTS, target, ledger, run_id="b1", bulk=writer
                                                       ).run(members(ids), profiles(ids))
    finally:
        ledger.close()
    assert out.bulk_jobs and out.succeeded == len(ids)
    assert all(_stored(tmp_path)[(rid, "Email")].startswith("keyed:") for rid in ids)
    assert b"@example.com" not in (tmp_path / "ledger.sqlite").read_bytes()
    assert run(client(), tmp_path, members(ids), profiles(ids), run_id="r2").to_send == 0
