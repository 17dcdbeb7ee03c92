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

Reading is the hot path of an unchanged re-run (200,000 records are about 1.2 million rows). The
rows of an object are kept as an Arrow table, in memory while the ledger is open and in a snapshot
file beside it after it closes, each tied to the ledger's content by a stamp that every write
transaction renews (``ledger_snapshot``); only when neither is current are they read from SQLite,
in one query with one ``group_concat`` per column, split in Arrow. ``confirmed`` hands them to
pandas as ``str`` columns without a Python object per value. The tables of this file are written
only through this class: a write that bypasses it would not renew the stamp.

No personal data in clear: the values of a destination's identifying fields (``protect``) are stored
as keyed hashes (``ledger_hashing``); equality is all the diff needs. Statuses stay readable. A ledger
written before holds clear values: ``protect`` hashes them once, in one transaction, and compacts the
file so the clear values do not linger in free pages or in an old snapshot.
The same file also holds side tables that are not confirmed rows and carry no stamp (the standing
failures, the exit guard's history); they are reached through ``db``.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Callable, Iterable, NamedTuple

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from sfmc_pipeline.crm.ledger_hashing import PREFIX, KeyedHasher, is_hashed, key_path
from sfmc_pipeline.crm.ledger_snapshot import (
    KEY,
    ConfirmedTable,
    SnapshotFiles,
    empty_table,
    table_of,
)
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
_STAMPS = """
CREATE TABLE IF NOT EXISTS ledger_stamps (
    target TEXT NOT NULL,
    object TEXT NOT NULL,
    stamp TEXT NOT NULL,           -- random, new in every transaction that changes the object's rows
    PRIMARY KEY (target, object)
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
        self._tables: dict[str, ConfirmedTable] = {}  # object -> its rows as of a stamp (ledger_snapshot)
        self._snapshots = SnapshotFiles(self.path, target)
        self._hasher: KeyedHasher | None = None  # read (or created) when first needed
        self._protected: dict[tuple[str, str], frozenset[str]] = {}  # (object, destination) -> lower-cased fields
        try:
            self._db = open_state_db(self.path)
            self._db.execute(_SCHEMA.format(name="confirmed_fields"))
            self._db.execute(_STAMPS)
            self._keyed_table()
        except (sqlite3.Error, OSError) as exc:
            raise StorageError(
                f"The sync ledger {self.path} cannot be opened ({type(exc).__name__}: {exc}). If the file is damaged, "
                "move it away: the next sync is then a first sync (it re-sends every managed record once). If the "
                "directory is read-only, make it writable or point SFMC_PIPELINE_STORAGE elsewhere."
            ) from None

    def close(self) -> None:
        """Save the snapshot of each object this ledger read and then wrote (when still current), so
        the next run reads it instead of SQLite; a snapshot that cannot be written is skipped (the next
        read is from SQLite)."""
        try:
            for sobject, held in self._tables.items():
                if held.saved or held.stamp is None or held.stamp != self._stamp(sobject):
                    continue
                try:
                    self._snapshots.save(sobject, held.stamp, held.rows())
                except (StorageError, pa.ArrowException):
                    continue
        finally:
            self._tables.clear()
            self._db.close()

    @property
    def db(self) -> sqlite3.Connection:
        """The ledger file's connection, for the side tables kept in the same file (standing failures, the exit
        guard's history). Never for ``confirmed_fields``: its writes go through this class (the stamp)."""
        return self._db

    @property
    def hasher(self) -> KeyedHasher:
        """The keyed hash of this storage directory's ledger (its key beside the ledger, created once)."""
        if self._hasher is None:
            self._hasher = KeyedHasher.load_or_create(key_path(self.path))
        return self._hasher

    def protect(self, sobject: str, destination: str, fields) -> int:
        """Store the values ``destination`` confirms in ``fields`` (API names, any case) as keyed hashes from now
        on, and hash the clear values the ledger already holds for them, once (no re-send: the hashes equal the
        hashes the diff computes). Returns how many values were hashed now."""
        wanted = frozenset(f.lower() for f in fields)
        self._protected[(sobject, destination)] = wanted
        if not wanted:
            return 0
        table = self._rows(sobject)
        if not table.num_rows:
            return 0
        mine = pc.and_(pc.equal(table["destination"], pa.scalar(destination, pa.large_string())),
                       pc.is_in(pc.utf8_lower(table["field"]), value_set=pa.array(sorted(wanted), pa.large_string())))
        values = table["value"].filter(mine.fill_null(False))
        clear = pc.invert(pc.starts_with(values, PREFIX)).fill_null(False)
        if not pc.any(clear).as_py():
            return 0
        return self._hash_clear_values(sobject, destination, wanted)

    def _hash_clear_values(self, sobject: str, destination: str, fields: frozenset[str]) -> int:
        hasher = self.hasher
        self._db.create_function("ledger_keyed_hash", 1, lambda v: None if v is None else hasher.text(v),
                                 deterministic=True)
        marks = ", ".join("?" * len(fields))
        self._db.execute("PRAGMA secure_delete = ON")  # freed cells are zeroed, not left holding clear values
        try:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                changes = self._db.total_changes
                self._db.execute(
                    f"UPDATE confirmed_fields SET value = ledger_keyed_hash(value) WHERE target = ? AND object = ? "
                    f"AND destination = ? AND lower(field) IN ({marks}) AND value IS NOT NULL "
                    f"AND substr(value, 1, {len(PREFIX)}) != ?", (self.target, sobject, destination, *sorted(fields),
                                                                  PREFIX))
                changes = self._db.total_changes - changes
                if changes:
                    self._new_stamp(sobject)
        finally:
            self._tables.pop(sobject, None)  # read again from SQLite (then saved as a new snapshot)
            self._db.execute("PRAGMA secure_delete = OFF")
        if changes:
            self._snapshots.path(sobject).unlink(missing_ok=True)  # it held the clear values
            self._db.execute("VACUUM")  # no page of the file keeps an old value
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return changes

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
        table = self._rows(sobject)
        if destination is not None:
            table = table.filter(pc.equal(table["destination"], pa.scalar(destination, pa.large_string())))
        return pd.DataFrame({c: pd.Series(table[c].combine_chunks(), dtype="str") for c in wanted})

    def _rows(self, sobject: str) -> pa.Table:
        """Every ledger row of ``sobject`` on this target: from the in-memory table or the snapshot
        file when either holds the ledger's current stamp, else from SQLite (``ledger_snapshot``)."""
        stamp = self._stamp(sobject)
        held = self._tables.get(sobject)
        if held is not None and held.stamp == stamp:
            return held.rows()
        table = self._snapshots.load(sobject, stamp, CONFIRMED_COLUMNS) if stamp is not None else None
        saved = table is not None
        if table is None:
            table = self._read_sqlite(sobject)
        self._tables[sobject] = ConfirmedTable(stamp, table, saved=saved)
        return table

    def _read_sqlite(self, sobject: str) -> pa.Table:
        """The rows as one ``group_concat`` per column (one pass over the key index, so in key order;
        no Python object per value), split in Arrow; row by row when the text cannot be split back
        exactly: a value holding the separator (the parts do not add up) or the null marker (more
        markers than nulls)."""
        where, params = "WHERE target = ? AND object = ?", (self.target, sobject)
        parts = [f"group_concat(coalesce({c}, char(30)), char(31))" if c in _NULLABLE else f"group_concat({c}, char(31))"
                 for c in CONFIRMED_COLUMNS]
        counts = [f"count({c})" for c in _NULLABLE]
        query = f"SELECT count(*), {', '.join(counts)}, {', '.join(parts)} FROM confirmed_fields {where}"
        n, *rest = self._db.execute(query, params).fetchone()
        if not n:
            return empty_table(CONFIRMED_COLUMNS)
        present = dict(zip(_NULLABLE, rest[: len(_NULLABLE)]))
        columns = {}
        for name, joined in zip(CONFIRMED_COLUMNS, rest[len(_NULLABLE):]):
            values = pc.split_pattern(pa.array([joined], pa.large_string()), _UNIT).values
            if len(values) != n:
                return self._read_row_by_row(where, params)
            if name in present:
                marked = pc.equal(values, _NULL)
                if (pc.sum(marked).as_py() or 0) != n - present[name]:
                    return self._read_row_by_row(where, params)
                values = pc.if_else(marked, pa.scalar(None, pa.large_string()), values)
            columns[name] = values
        return pa.table(columns)

    def _read_row_by_row(self, where: str, params: tuple) -> pa.Table:
        cast = ", ".join(f"CAST({c} AS TEXT)" for c in CONFIRMED_COLUMNS)
        rows = self._db.execute(f"SELECT {cast} FROM confirmed_fields {where} ORDER BY record_id, field",
                                params).fetchall()
        return table_of(CONFIRMED_COLUMNS, [list(v) for v in zip(*rows)] if rows else [[]] * len(CONFIRMED_COLUMNS))

    def _stamp(self, sobject: str) -> str | None:
        row = self._db.execute("SELECT stamp FROM ledger_stamps WHERE target = ? AND object = ?",
                               (self.target, sobject)).fetchone()
        return row[0] if row else None

    def _new_stamp(self, sobject: str) -> str:
        stamp = uuid.uuid4().hex
        self._db.execute("INSERT INTO ledger_stamps (target, object, stamp) VALUES (?, ?, ?) "
                         "ON CONFLICT (target, object) DO UPDATE SET stamp = excluded.stamp",
                         (self.target, sobject, stamp))
        return stamp

    def _write(self, sobject: str, sql: str, data: list[tuple], action: str,
               journal: Callable[[], list[list]]) -> int:
        """Run ``sql`` over ``data`` in one transaction that also sets a new stamp; keep the in-memory
        table current when it held the stamp this write replaced (``journal``: the written columns,
        built only then). Returns the rows changed."""
        try:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                before, changes = self._stamp(sobject), self._db.total_changes
                self._db.executemany(sql, data)
                changes = self._db.total_changes - changes
                after = self._new_stamp(sobject) if changes else before
        except BaseException:
            self._tables.pop(sobject, None)
            raise
        held = self._tables.get(sobject)
        if held is None or not changes:
            return changes
        try:
            rows = table_of(CONFIRMED_COLUMNS if action == "upsert" else KEY, journal())
        except (pa.ArrowTypeError, pa.ArrowInvalid):  # a value that is not text: read it back from SQLite
            rows = None
        if rows is None or held.stamp != before:
            del self._tables[sobject]
        else:
            held.wrote(action, rows, after)
        return changes

    def record(self, sobject: str, destination: str, run_id: str, rows: Iterable[Confirmed]) -> None:
        """Confirm rows in one transaction (the values of protected fields as keyed hashes)."""
        now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        protected = self._protected.get((sobject, destination), frozenset())
        data = [
            (self.target, sobject, r.record_id, r.field, r.kind, destination, r.profile_key, r.crm_id,
             self._stored(r, protected), run_id, now)
            for r in rows
        ]
        if not data:
            return
        self._write(
            sobject,
            "INSERT INTO confirmed_fields (target, object, record_id, field, kind, destination, profile_key, crm_id, "
            "value, run_id, written_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (target, object, record_id, field) DO UPDATE SET kind = excluded.kind, "
            "destination = excluded.destination, profile_key = excluded.profile_key, crm_id = excluded.crm_id, "
            "value = excluded.value, run_id = excluded.run_id, written_at = excluded.written_at",
            data, "upsert", lambda: [list(column) for column in list(zip(*data))[2:9]],  # CONFIRMED_COLUMNS
        )

    def _stored(self, row: Confirmed, protected: frozenset[str]) -> str:
        text = encode(row.value) if row.encoded is None else row.encoded
        if protected and row.field.lower() in protected and not is_hashed(text):
            return self.hasher.text(text)
        return text

    def forget(self, sobject: str, pairs: Iterable[tuple[str, str]]) -> int:
        """Drop the confirmation of ``(record_id, field)`` pairs (the CRM no longer holds what was
        written), so the next sync sends them again. Returns how many rows were dropped."""
        data = [(self.target, sobject, rid, fld) for rid, fld in pairs]
        if not data:
            return 0
        return self._write(
            sobject, "DELETE FROM confirmed_fields WHERE target = ? AND object = ? AND record_id = ? AND field = ?",
            data, "delete", lambda: [[d[2] for d in data], [d[3] for d in data]],
        )


def encode(value: object) -> str:
    """The ledger's text for a value; decimals keep their exact digits."""
    return json.dumps(value, sort_keys=True, default=_exact)


def _exact(value: object) -> str:
    if isinstance(value, Decimal):
        return format(value, "f")
    raise TypeError(f"cannot record a {type(value).__name__} in the ledger")
