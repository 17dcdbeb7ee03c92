"""The sync ledger's reads: whichever copy serves them (SQLite, the in-memory table, the snapshot file
beside the ledger), they give exactly the rows SQLite holds; a stale copy is never used."""

from __future__ import annotations

import random
import shutil
import sqlite3
from contextlib import closing

import pandas as pd
import pandas.testing as pdt
import pytest

from sfmc_pipeline.crm import ledger_snapshot
from sfmc_pipeline.crm.ledger import CONFIRMED_COLUMNS, Confirmed, SyncLedger

TARGET = "salesforce:00D000000000001EAA"


def in_sqlite(path, target=TARGET, sobject="Contact", destination=None) -> pd.DataFrame:
    """What the ledger's table holds, read directly (the reference every read path must equal)."""
    query = f"SELECT {', '.join(CONFIRMED_COLUMNS)} FROM confirmed_fields WHERE target = ? AND object = ?"
    params = [target, sobject]
    if destination is not None:
        query += " AND destination = ?"
        params.append(destination)
    with closing(sqlite3.connect(path)) as db:
        frame = pd.read_sql_query(query + " ORDER BY record_id, field", db, params=params)
    return pd.DataFrame({c: pd.Series(frame[c].tolist(), dtype="str") for c in CONFIRMED_COLUMNS})


def assert_reads_match(ledger: SyncLedger, path) -> None:
    pdt.assert_frame_equal(ledger.confirmed("Contact"), in_sqlite(path))
    for destination in ("contacts", "vip_contacts"):
        pdt.assert_frame_equal(ledger.confirmed("Contact", destination),
                               in_sqlite(path, destination=destination).reset_index(drop=True))


def row(rid: str, fld: str, value, profile: str | None = "P1", kind: str = "status") -> Confirmed:
    return Confirmed(rid, fld, kind, profile, rid if profile else None, value)


def statements(ledger: SyncLedger) -> list[str]:
    seen: list[str] = []
    ledger._db.set_trace_callback(seen.append)
    return seen


@pytest.mark.parametrize("splice_limit", [ledger_snapshot._SPLICE_LIMIT, 0], ids=["spliced", "sorted in"])
def test_every_read_equals_what_sqlite_holds_through_writes_from_two_connections(tmp_path, monkeypatch, splice_limit):
    """Random upserts (overwrites, nulls, values holding the read's separator and null marker) and
    forgets from two ledgers on one file: after each, both ledgers and a freshly opened one read
    exactly the table's rows. A copy that missed the other connection's write would differ. Both
    ways of applying a write to the in-memory table (spliced in, sorted in) are exercised."""
    monkeypatch.setattr(ledger_snapshot, "_SPLICE_LIMIT", splice_limit)
    path = tmp_path / "ledger.sqlite"
    rng = random.Random(11)
    ids = [f"003{n:015d}" for n in range(40)]
    fields = ["Seg_A__c", "Seg_B__c", "Email"]
    values = ["realized:a", "exited:b", None, "x\x1fy", "\x1e", "", "ünï"]
    a, b = SyncLedger(path, TARGET), SyncLedger(path, TARGET)
    try:
        for step in range(60):
            writer = a if rng.random() < 0.6 else b
            if rng.random() < 0.8:
                rows = [row(rng.choice(ids), rng.choice(fields), rng.choice(values),
                            rng.choice(["P1", "P2", None]), rng.choice(["status", "attribute"]))
                        for _ in range(rng.randint(1, 25))]
                writer.record("Contact", rng.choice(["contacts", "vip_contacts"]), f"run-{step}", rows)
            else:
                writer.forget("Contact", [(rng.choice(ids), rng.choice(fields)) for _ in range(rng.randint(1, 8))])
            for ledger in (a, b):
                assert_reads_match(ledger, path)
            if step % 10 == 9:  # a closed ledger saves its snapshot; a new one starts from it
                a.close()
                a = SyncLedger(path, TARGET)
                assert_reads_match(a, path)
        assert len(in_sqlite(path)) > 50  # the sequence did build up a ledger
    finally:
        a.close()
        b.close()


def test_a_current_snapshot_is_read_without_querying_the_ledger_table(tmp_path):
    path = tmp_path / "ledger.sqlite"
    first = SyncLedger(path, TARGET)
    first.confirmed("Contact")
    first.record("Contact", "contacts", "run-1", [row("003000000000000001", "Seg_A__c", "realized:a")])
    first.close()

    second = SyncLedger(path, TARGET)
    seen = statements(second)
    assert second.confirmed("Contact")["value"].tolist() == ['"realized:a"']
    assert not [s for s in seen if "confirmed_fields" in s]  # served by the snapshot file

    other = SyncLedger(path, TARGET)  # another process writes: the snapshot is no longer current
    other.record("Contact", "contacts", "run-2", [row("003000000000000001", "Seg_A__c", "existing:a")])
    other.close()
    seen.clear()
    assert second.confirmed("Contact")["value"].tolist() == ['"existing:a"']
    assert [s for s in seen if "confirmed_fields" in s]
    second.close()


def test_a_damaged_snapshot_or_one_from_another_ledger_state_is_not_used(tmp_path):
    path = tmp_path / "ledger.sqlite"
    ledger = SyncLedger(path, TARGET)
    ledger.confirmed("Contact")  # a sync reads, then writes: its close saves the snapshot
    ledger.record("Contact", "contacts", "run-1", [row("003000000000000001", "Seg_A__c", "realized:a")])
    ledger.close()
    backup = tmp_path / "backup.sqlite"
    shutil.copy(path, backup)  # the ledger as of run-1 (closed: no WAL beside it)

    ledger = SyncLedger(path, TARGET)
    ledger.confirmed("Contact")
    ledger.record("Contact", "contacts", "run-2", [row("003000000000000002", "Seg_A__c", "realized:a")])
    ledger.close()
    (snapshot,) = (tmp_path / "ledger.snapshots").iterdir()

    shutil.copy(backup, path)  # restored from the backup; the snapshot beside it is of run-2
    restored = SyncLedger(path, TARGET)
    assert restored.confirmed("Contact")["record_id"].tolist() == ["003000000000000001"]
    restored.close()

    snapshot.write_bytes(b"not an arrow file")
    damaged = SyncLedger(path, TARGET)
    pdt.assert_frame_equal(damaged.confirmed("Contact"), in_sqlite(path))
    damaged.close()


def test_each_target_reads_only_its_own_rows_through_its_snapshot(tmp_path):
    path = tmp_path / "ledger.sqlite"
    for target, rid in ((TARGET, "003000000000000001"), ("local:5f3c", "003000000000000009")):
        ledger = SyncLedger(path, target)
        ledger.confirmed("Contact")
        ledger.record("Contact", "contacts", "run-1", [row(rid, "Seg_A__c", "realized:a")])
        ledger.close()
    for target, rid in ((TARGET, "003000000000000001"), ("local:5f3c", "003000000000000009")):
        ledger = SyncLedger(path, target)
        assert ledger.confirmed("Contact")["record_id"].tolist() == [rid]
        pdt.assert_frame_equal(ledger.confirmed("Contact"), in_sqlite(path, target=target))
        ledger.close()
