"""The sync ledger: what was confirmed written to each (target CRM, object, record, field).

The ledger belongs to the CRM it describes: every row carries the target's identity (a Salesforce
org id, or the local target's own id), and a ``SyncLedger`` only ever reads and writes the rows of
its target. Switching from the local target to an org, or from a sandbox to production, is a first
sync for the new target.

SQLite, one transaction per batch result, so a run killed at any point loses nothing that was
confirmed: on the re-run only the batches that were in flight are sent again (at most
``sync.concurrent_requests``), and an unchanged input sends nothing. Only one thread writes (the
sync records results as they come back, in its own thread). Each row also
records the destination that wrote it, whether the field is a segment status field or a mapped
attribute, and the profile the record belongs to (so an exit can be derived for a profile that is
no longer listed anywhere).

Reading is the hot path of an unchanged re-run (200,000 records are about 1.2 million rows): the
rows are read in one query with one ``group_concat`` per column, split in Arrow and handed to
pandas as ``str`` columns without a Python object per value (``confirmed``).
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from decimal import Decimal
from pathlib import Path
from typing import Iterable, NamedTuple

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from sfmc_pipeline.datasets.storage import StorageError, open_state_db

_SCHEMA = """
CREATE TABLE IF NOT EXISTS {name} (
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
) WITHOUT ROWID
"""
# WITHOUT ROWID: the rows live in the key's B-tree, so reading one destination is one ordered pass
# over it (a third faster than looking every key up in a separate table, and a fifth smaller).
_COLUMN_LIST = "target, object, record_id, field, kind, destination, profile_key, crm_id, value, run_id, written_at"
CONFIRMED_COLUMNS = ["record_id", "field", "kind", "destination", "profile_key", "crm_id", "value"]
_NULLABLE = ("profile_key", "crm_id", "value")
_UNIT, _NULL = "\x1f", "\x1e"  # separator and null marker of the bulk read (checked, see ``_read_columns``)


class Confirmed(NamedTuple):
    record_id: str
    field: str
    kind: str  # "status" or "attribute"
    profile_key: str | None
    crm_id: str | None
    value: object
    encoded: str | None = None  # ``encode(value)`` when the caller already has it (the diff computes it)


class SyncLedger:
    def __init__(self, path: str | Path, target: str):
        self.path = Path(path)
        self.target = target
        try:
            self._db = open_state_db(self.path)
            self._db.execute(_SCHEMA.format(name="confirmed_fields"))
            self._keyed_table()
        except (sqlite3.Error, OSError) as exc:
            raise StorageError(
                f"The sync ledger {self.path} cannot be opened ({type(exc).__name__}: {exc}). If the file is damaged, "
                "move it away: the next sync is then a first sync (it re-sends every managed record once). If the "
                "directory is read-only, make it writable or point SFMC_PIPELINE_STORAGE elsewhere."
            ) from None

    def close(self) -> None:
        self._db.close()

    def _keyed_table(self) -> None:
        """Move a ledger written before the table was ``WITHOUT ROWID`` into that layout, once, in one
        transaction, then compact the file (seconds for a million rows); nothing changes for readers."""
        (sql,) = self._db.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'confirmed_fields'").fetchone()
        if "WITHOUT ROWID" in sql.upper():
            return
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("DROP TABLE IF EXISTS confirmed_fields_keyed")
            self._db.execute(_SCHEMA.format(name="confirmed_fields_keyed"))
            self._db.execute(f"INSERT INTO confirmed_fields_keyed ({_COLUMN_LIST}) SELECT {_COLUMN_LIST} "
                             "FROM confirmed_fields ORDER BY target, object, record_id, field")
            self._db.execute("DROP TABLE confirmed_fields")
            self._db.execute("ALTER TABLE confirmed_fields_keyed RENAME TO confirmed_fields")
        self._db.execute("VACUUM")  # give back the old table's pages (the file would keep both copies' size)
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def confirmed(self, sobject: str, destination: str | None = None, *,
                  columns: list[str] | None = None) -> pd.DataFrame:
        """``CONFIRMED_COLUMNS`` (value as JSON text; or only ``columns``) confirmed on this target for
        ``sobject`` (and ``destination``, when given), in key order (record, field); ``str`` columns,
        NaN for null (what ``pd.read_sql_query`` gives)."""
        wanted = list(columns or CONFIRMED_COLUMNS)
        unknown = set(wanted) - set(CONFIRMED_COLUMNS)
        if unknown:
            raise ValueError(f"no ledger column {sorted(unknown)}; columns are {CONFIRMED_COLUMNS}")
        where = "WHERE target = ? AND object = ?"
        params: tuple = (self.target, sobject)
        if destination is not None:
            where += " AND destination = ?"
            params += (destination,)
        frame = self._read_columns(self._db, where, params, destination, wanted)
        if frame is None:  # a value holds the separator or the null marker: read it row by row
            query = f"SELECT {', '.join(wanted)} FROM confirmed_fields {where} ORDER BY record_id, field"
            frame = pd.read_sql_query(query, self._db, params=params)
        return frame

    def _read_columns(self, db: sqlite3.Connection, where: str, params: tuple, destination: str | None,
                      wanted: list[str]) -> pd.DataFrame | None:
        """The rows as one ``group_concat`` per column (one pass over the key index, so in key order;
        no Python object per value), split in Arrow. None when the text cannot be split back exactly:
        a value holding the separator (the parts do not add up) or the null marker (more markers
        than nulls)."""
        names = [c for c in wanted if not (c == "destination" and destination is not None)]
        parts = [f"group_concat(coalesce({c}, char(30)), char(31))" if c in _NULLABLE else f"group_concat({c}, char(31))"
                 for c in names]
        counts = [f"count({c})" for c in _NULLABLE]
        query = f"SELECT count(*), {', '.join(counts)}, {', '.join(parts)} FROM confirmed_fields {where}"
        n, *rest = db.execute(query, params).fetchone()
        if not n:
            return pd.DataFrame({c: pd.Series([], dtype=object) for c in wanted})
        present = dict(zip(_NULLABLE, rest[: len(_NULLABLE)]))
        columns = {}
        for name, joined in zip(names, rest[len(_NULLABLE):]):
            values = pc.split_pattern(pa.array([joined], pa.large_string()), _UNIT).values
            if len(values) != n:
                return None
            if name in present:
                marked = pc.equal(values, _NULL)
                if (pc.sum(marked).as_py() or 0) != n - present[name]:
                    return None
                values = pc.if_else(marked, pa.scalar(None, pa.large_string()), values)
            columns[name] = pd.Series(values, dtype="str")
        if destination is not None and "destination" in wanted:
            columns["destination"] = pd.Series(pa.repeat(pa.scalar(destination, pa.large_string()), n), dtype="str")
        return pd.DataFrame({c: columns[c] for c in wanted})

    def record(self, sobject: str, destination: str, run_id: str, rows: Iterable[Confirmed]) -> None:
        """Confirm rows in one transaction."""
        now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        data = [
            (self.target, sobject, r.record_id, r.field, r.kind, destination, r.profile_key, r.crm_id,
             encode(r.value) if r.encoded is None else r.encoded, run_id, now)
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
