"""The sync ledger's reads give exactly the rows SQLite holds, whatever another connection wrote, and only
the rows of the ledger's own target."""

from __future__ import annotations

import random
import sqlite3
from contextlib import closing

import pandas as pd
import pandas.testing as pdt

from sfmc_pipeline.crm import ledger as ledger_module
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


def test_every_read_equals_what_sqlite_holds_through_writes_from_two_connections(tmp_path):
    """Random upserts (overwrites, nulls, values holding the read's separator and null marker) and
    forgets from two ledgers on one file: after each, both ledgers and a freshly opened one read
    exactly the table's rows."""
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
            if step % 10 == 9:
                a.close()
                a = SyncLedger(path, TARGET)
                assert_reads_match(a, path)
        assert len(in_sqlite(path)) > 50  # the sequence did build up a ledger
    finally:
        a.close()
        b.close()


def test_a_read_in_pages_gives_every_row_once_in_key_order_and_only_the_kind_asked_for(tmp_path, monkeypatch):
    """A large ledger is read a page at a time (bounded memory): with pages of 7 rows, the rows of 30 records
    (several pages, a record's fields split over two pages, separators and nulls in values) read exactly what
    SQLite holds; a read of one kind gives exactly that kind's rows, and a read of some columns those columns."""
    monkeypatch.setattr(ledger_module, "READ_PAGE_ROWS", 7)
    path = tmp_path / "ledger.sqlite"
    values = ["realized:a", None, "x\x1fy", "\x1e", "ünï"]
    rows = [row(f"003{n:015d}", fld, values[(n + i) % len(values)], kind="status" if i < 2 else "attribute")
            for n in range(30) for i, fld in enumerate(["Seg_A__c", "Seg_B__c", "Email"])]
    with closing(SyncLedger(path, TARGET)) as ledger:
        ledger.record("Contact", "contacts", "run-1", rows)
        assert_reads_match(ledger, path)
        everything = in_sqlite(path)
        statuses = everything[everything["kind"] == "status"].reset_index(drop=True)
        pdt.assert_frame_equal(ledger.confirmed("Contact", "contacts", kind="status"), statuses)
        pdt.assert_frame_equal(ledger.confirmed("Contact", kind="status", columns=["record_id", "value"]),
                               statuses[["record_id", "value"]])
        pages = list(ledger.confirmed_pages("Contact", "contacts", columns=["record_id", "field", "value"]))
        assert [len(page) for page in pages] == [7] * 12 + [6]
        pdt.assert_frame_equal(pd.concat(pages, ignore_index=True), everything[["record_id", "field", "value"]])


def test_snapshots_an_earlier_version_kept_beside_the_ledger_are_removed(tmp_path):
    """An earlier version kept Arrow copies of the rows in ``ledger.snapshots/``; nothing reads them now."""
    path = tmp_path / "ledger.sqlite"
    (tmp_path / "ledger.snapshots").mkdir()
    (tmp_path / "ledger.snapshots" / "0123.arrow").write_bytes(b"old copy")
    SyncLedger(path, TARGET).close()
    assert not (tmp_path / "ledger.snapshots").exists()


def test_each_target_reads_only_its_own_rows(tmp_path):
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
