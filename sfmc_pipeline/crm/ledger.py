"""The sync ledger: what was confirmed written to each (target CRM, object, record, field).

The ledger belongs to the CRM it describes: every row carries the target's identity (a Salesforce
org id, or the local target's own id), and a ``SyncLedger`` only ever reads and writes the rows of
its target. Switching from the local target to an org, or from a sandbox to production, is a first
sync for the new target.

SQLite, one transaction per batch, so a run killed at any point loses nothing: on the re-run only
the batch that was in flight is sent again, and an unchanged input sends nothing. Each row also
records the destination that wrote it, whether the field is a segment status field or a mapped
attribute, and the profile the record belongs to (so an exit can be derived for a profile that is
no longer listed anywhere).
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from decimal import Decimal
from pathlib import Path
from typing import Iterable, NamedTuple

import pandas as pd

from sfmc_pipeline.datasets.storage import StorageError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS confirmed_fields (
    target TEXT NOT NULL,          -- "salesforce:<org id>" or "local:<uuid>"
    object TEXT NOT NULL,
    record_id TEXT NOT NULL,       -- the record key: its Id (update) or external id value (upsert)
    field TEXT NOT NULL,           -- API name
    kind TEXT NOT NULL,            -- "status" or "attribute"
    destination TEXT NOT NULL,
    profile_key TEXT,
    crm_id TEXT,                   -- the record's Id in the CRM (an upsert's matched or created record)
    value TEXT,                    -- JSON of the value confirmed written (null: cleared)
    run_id TEXT NOT NULL,
    written_at TEXT NOT NULL,
    PRIMARY KEY (target, object, record_id, field)
)
"""
CONFIRMED_COLUMNS = ["record_id", "field", "kind", "destination", "profile_key", "crm_id", "value"]


class Confirmed(NamedTuple):
    record_id: str
    field: str
    kind: str  # "status" or "attribute"
    profile_key: str | None
    crm_id: str | None
    value: object


class SyncLedger:
    def __init__(self, path: str | Path, target: str):
        self.path = Path(path)
        self.target = target
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise StorageError(
                f"The sync ledger {self.path} cannot be opened ({type(exc).__name__}: {exc}). If the file is damaged, "
                "move it away: the next sync is then a first sync (it re-sends every managed record once). If the "
                "directory is read-only, make it writable or point SFMC_PIPELINE_STORAGE elsewhere."
            ) from None

    def close(self) -> None:
        self._db.close()

    def confirmed(self, sobject: str, destination: str | None = None) -> pd.DataFrame:
        """``CONFIRMED_COLUMNS`` (value as JSON text) confirmed on this target for ``sobject``
        (and ``destination``, when given)."""
        query = f"SELECT {', '.join(CONFIRMED_COLUMNS)} FROM confirmed_fields WHERE target = ? AND object = ?"
        params: tuple = (self.target, sobject)
        if destination is not None:
            query += " AND destination = ?"
            params += (destination,)
        return pd.read_sql_query(query, self._db, params=params)

    def record(self, sobject: str, destination: str, run_id: str, rows: Iterable[Confirmed]) -> None:
        """Confirm rows in one transaction."""
        now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        data = [
            (self.target, sobject, r.record_id, r.field, r.kind, destination, r.profile_key, r.crm_id, encode(r.value),
             run_id, now)
            for r in rows
        ]
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(
                "INSERT INTO confirmed_fields (target, object, record_id, field, kind, destination, profile_key, crm_id, "
                "value, run_id, written_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (target, object, record_id, field) DO UPDATE SET kind = excluded.kind, "
                "destination = excluded.destination, profile_key = excluded.profile_key, crm_id = excluded.crm_id, "
                "value = excluded.value, run_id = excluded.run_id, written_at = excluded.written_at",
                data,
            )

    def forget(self, sobject: str, pairs: Iterable[tuple[str, str]]) -> int:
        """Drop the confirmation of ``(record_id, field)`` pairs (the CRM no longer holds what was
        written), so the next sync sends them again. Returns how many rows were dropped."""
        data = [(self.target, sobject, rid, fld) for rid, fld in pairs]
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            before = self._db.total_changes
            self._db.executemany(
                "DELETE FROM confirmed_fields WHERE target = ? AND object = ? AND record_id = ? AND field = ?", data
            )
            return self._db.total_changes - before


def encode(value: object) -> str:
    """The ledger's text for a value; decimals keep their exact digits."""
    return json.dumps(value, sort_keys=True, default=_exact)


def _exact(value: object) -> str:
    if isinstance(value, Decimal):
        return format(value, "f")
    raise TypeError(f"cannot record a {type(value).__name__} in the ledger")
