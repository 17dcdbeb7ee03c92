"""Records the CRM cannot take, so the sync stops sending them again every run.

Salesforce's code says what a failed record needs (``salesforce/rules.py``, ``failure_kind``): a record the
CRM no longer has is marked gone and held back until its profile changes; values Salesforce rejects are
held back until the values to send change; transient failures get no mark. An operator reset (``reset``,
``sfmc-pipeline ledger reset``) sends them again. Marks live in the ledger's file (table
``standing_failures``); Salesforce's message is not kept (it may quote a personal value). Docs:
docs/crm-sync.md, "Standing failures".
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

from sfmc_pipeline.crm.ledger import SyncLedger
from sfmc_pipeline.crm.ledger_hashing import KeyedHasher
from sfmc_pipeline.salesforce.ids import is_valid_id, to_18
from sfmc_pipeline.salesforce.records import RecordError
from sfmc_pipeline.salesforce.rules import (
    RECORD_GONE,
    TRANSIENT,
    VALUE_REJECTED,
    failure_kind,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS standing_failures (
    target TEXT NOT NULL,
    object TEXT NOT NULL,
    destination TEXT NOT NULL,
    record_id TEXT NOT NULL,
    kind TEXT NOT NULL,            -- "record_gone" or "value_rejected" (salesforce/rules.py failure_kind)
    code TEXT NOT NULL,            -- Salesforce's status code, or the client-side check's
    fields TEXT NOT NULL,          -- the fields the error named, comma-separated
    fingerprint TEXT NOT NULL,     -- keyed hash: of the values sent (rejected) or of the record's attributes (gone)
    first_run_id TEXT NOT NULL,
    first_seen TEXT NOT NULL,      -- ISO 8601 UTC
    last_run_id TEXT NOT NULL,
    last_seen TEXT NOT NULL,
    attempts INTEGER NOT NULL,     -- sends (or client-side checks) that failed this way
    PRIMARY KEY (target, object, destination, record_id)
) WITHOUT ROWID
"""
COLUMNS = ["record_id", "kind", "code", "fields", "fingerprint", "first_run_id", "first_seen", "last_run_id",
           "last_seen", "attempts"]


@dataclass(frozen=True)
class Standing:
    """A record's mark (one row of the table)."""

    record_id: str
    kind: str
    code: str
    fields: str
    fingerprint: str
    first_run_id: str = ""
    first_seen: str = ""
    last_run_id: str = ""
    last_seen: str = ""
    attempts: int = 1


def ensure_table(db: sqlite3.Connection) -> None:
    db.execute(_SCHEMA)


class StandingFailures:
    """The marks of one destination on one target: one row per record, with the kind, Salesforce's code and the
    fields it named, the fingerprint, the first and latest run that saw it and how many sends failed this way."""

    def __init__(self, ledger: SyncLedger, sobject: str, destination: str):
        self._db = ledger.db
        self._key = (ledger.target, sobject, destination)
        ensure_table(self._db)

    def load(self) -> dict[str, Standing]:
        rows = self._db.execute(
            f"SELECT {', '.join(COLUMNS)} FROM standing_failures WHERE target = ? AND object = ? AND destination = ?",
            self._key).fetchall()
        return {row[0]: Standing(*row) for row in rows}

    def mark(self, run_id: str, marks: Iterable[Standing], now: dt.datetime) -> None:
        """Mark records (``record_id, kind, code, fields, fingerprint`` of each); a record marked before keeps its
        first run and time, and counts one more attempt."""
        at = now.astimezone(dt.timezone.utc).isoformat(timespec="seconds")
        rows = [(*self._key, m.record_id, m.kind, m.code, m.fields, m.fingerprint, run_id, at, run_id, at)
                for m in marks]
        if not rows:
            return
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(
                "INSERT INTO standing_failures (target, object, destination, record_id, kind, code, fields, "
                "fingerprint, first_run_id, first_seen, last_run_id, last_seen, attempts) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1) "
                "ON CONFLICT (target, object, destination, record_id) DO UPDATE SET kind = excluded.kind, "
                "code = excluded.code, fields = excluded.fields, fingerprint = excluded.fingerprint, "
                "last_run_id = excluded.last_run_id, last_seen = excluded.last_seen, attempts = attempts + 1", rows)

    def clear(self, record_ids: Iterable[str]) -> int:
        """Remove the marks of ``record_ids``; returns how many there were."""
        rows = [(*self._key, rid) for rid in record_ids]
        if not rows:
            return 0
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            before = self._db.total_changes
            self._db.executemany("DELETE FROM standing_failures WHERE target = ? AND object = ? AND destination = ? "
                                 "AND record_id = ?", rows)
            return self._db.total_changes - before


def reset(db: sqlite3.Connection, destination: str, *, record_ids: Iterable[str] = (), kind: str | None = None
          ) -> list[tuple[str, str, str, str]]:
    """Operator reset: remove the marks of ``destination`` (every target) for ``record_ids`` (15- or 18-character
    Ids match), or of one ``kind``, or all when neither is given; the next sync sends those records again.
    Returns the removed ``(target, record_id, kind, code)``."""
    ensure_table(db)
    where, params = ["destination = ?"], [destination]
    wanted = [rid.strip() for rid in record_ids if rid.strip()]
    if wanted:
        keys = sorted({to_18(rid[:15]) if is_valid_id(rid) else rid for rid in wanted})  # the ledger's 18-char form
        where.append(f"record_id IN ({', '.join('?' * len(keys))})")
        params += keys
    if kind is not None:
        where.append("kind = ?")
        params.append(kind)
    clause = " AND ".join(where)
    with db:
        db.execute("BEGIN IMMEDIATE")
        removed = db.execute(f"SELECT target, record_id, kind, code FROM standing_failures WHERE {clause} "
                             "ORDER BY target, record_id", params).fetchall()
        db.execute(f"DELETE FROM standing_failures WHERE {clause}", params)
    return [tuple(row) for row in removed]


def listing(db: sqlite3.Connection, destination: str | None = None) -> list[tuple]:
    """``(target, destination, record_id, kind, code, fields, first_seen, last_seen, attempts)`` of every mark
    (of ``destination``), oldest first."""
    ensure_table(db)
    where, params = ("WHERE destination = ?", [destination]) if destination else ("", [])
    return db.execute(
        "SELECT target, destination, record_id, kind, code, fields, first_seen, last_seen, attempts FROM "
        f"standing_failures {where} ORDER BY destination, first_seen, record_id", params).fetchall()


class StandingScreen:
    """One sync run's use of the marks: which changed records to hold back (``hold_back``), what each result
    means for the marks (``failed``, ``rejected``, ``succeeded``), written per batch (``flush``; nothing in a
    dry run). ``profile_fingerprints``: record ids -> the keyed fingerprint of each record's attributes as the
    run would write them (the sync computes it from its desired values)."""

    def __init__(self, store: StandingFailures, hasher: Callable[[], KeyedHasher], run_id: str, now: dt.datetime, *,
                 dry_run: bool, retry: bool = False,
                 profile_fingerprints: Callable[[list[str]], dict[str, str]] = lambda ids: {}):
        """``hasher``: gives the ledger's keyed hash when a fingerprint is first needed (``SyncLedger.hasher``)."""
        self.store, self._hasher, self.run_id, self.now, self.dry_run = store, hasher, run_id, now, dry_run
        self.known = store.load()
        self.retry = retry  # nothing is held back: every record is sent again, its result settles its mark
        self.profile_fingerprints = profile_fingerprints
        self._marks: list[Standing] = []
        self._cleared: list[str] = []

    @property
    def hasher(self) -> KeyedHasher:
        return self._hasher()

    def change_fingerprint(self, fields: Iterable[str], texts: tuple) -> str:
        """The values a record would be sent with: its changed fields and their ledger texts (keyed hashes for
        identifying fields), in any order."""
        return self.hasher.fingerprint(zip(list(fields)[: len(texts)], texts))

    def hold_back(self, changes: dict[str, dict], encoded: dict[str, tuple], considered: set[str]) -> Counter:
        """Drop from ``changes`` the records whose mark still applies (a gone record whose attributes are unchanged,
        a rejected record whose values to send are the ones rejected); returns code -> records held back. Marks of
        rejected records that are ``considered`` (they have a desired state) but have nothing to send any more (the
        CRM holds what they should hold) are removed."""
        if self.retry:
            return Counter()
        marked = [rid for rid in self.known if rid in changes]
        gone = [rid for rid in marked if self.known[rid].kind == RECORD_GONE]
        profiles = self.profile_fingerprints(gone) if gone else {}
        held: Counter = Counter()
        for rid in marked:
            mark = self.known[rid]
            now = (profiles.get(rid) if mark.kind == RECORD_GONE
                   else self.change_fingerprint(changes[rid], encoded.get(rid, ())))
            if now == mark.fingerprint:
                del changes[rid]
                held[mark.code] += 1
        settled = set(marked)
        self._cleared += [rid for rid, mark in self.known.items()
                          if mark.kind == VALUE_REJECTED and rid in considered and rid not in settled]
        return held

    def failed(self, rid: str, fields: Mapping[str, Any], error: RecordError, texts: tuple) -> bool:
        """A record Salesforce refused: marked when the failure is not transient. Returns whether it had the same
        kind of mark before (a standing failure tried again because its values changed, failing again)."""
        kind = failure_kind(error)
        if kind == TRANSIENT:
            return False
        self._mark(rid, fields, error, texts, kind)
        before = self.known.get(rid)
        return before is not None and before.kind == kind

    def rejected(self, rid: str, fields: Mapping[str, Any], error: RecordError, texts: tuple) -> None:
        """A record the client-side checks refused (always a value rejection)."""
        self._mark(rid, fields, error, texts, VALUE_REJECTED)

    def gone(self, rid: str, error: RecordError) -> None:
        """A record found absent from the CRM another way (the reconciliation's read-back): marked gone."""
        self._mark(rid, {}, error, (), RECORD_GONE)

    def succeeded(self, rids: Iterable[str]) -> None:
        """Records written successfully lose their mark."""
        self._cleared += [rid for rid in rids if rid in self.known]

    def flush(self) -> None:
        """Write this batch's marks and removals (a dry run writes nothing)."""
        marks, cleared = self._marks, self._cleared
        self._marks, self._cleared = [], []
        if self.dry_run:
            return
        self.store.clear(cleared)
        self.store.mark(self.run_id, marks, self.now)

    def _mark(self, rid: str, fields: Mapping[str, Any], error: RecordError, texts: tuple, kind: str) -> None:
        if kind == RECORD_GONE:
            fingerprint = self.profile_fingerprints([rid]).get(rid) or self.hasher.fingerprint([])
        else:
            fingerprint = self.change_fingerprint(fields, texts)
        self._marks.append(Standing(rid, kind, error.status_code, ",".join(error.fields), fingerprint))
