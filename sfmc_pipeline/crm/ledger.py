"""The sync ledger: what was confirmed written to each (target CRM, object, record, field), in SQLite.

Every row carries the target's identity (an org id, or the local target's id), and a ``SyncLedger`` only
reads and writes its target's rows: a new target is a first sync. One transaction per batch result, so a
killed run loses nothing confirmed and an unchanged input sends nothing. Each row also records the
destination, the kind (status or attribute) and the profile (so an exit can be derived for a profile no
longer listed). Identifying values are stored as keyed hashes (``protect``, ``ledger_hashing``). The file
also holds side tables (standing failures, the exit guard's history), reached through ``db``.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import sqlite3
from decimal import Decimal
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from sfmc_pipeline.crm.ledger_hashing import PREFIX, KeyedHasher, is_hashed, key_path
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
# WITHOUT ROWID: the rows live in the key's B-tree, so reading one object is one ordered pass over it.
_COLUMN_LIST = "target, object, record_id, field, kind, destination, profile_key, crm_id, value, run_id, written_at"
CONFIRMED_COLUMNS = ["record_id", "field", "kind", "destination", "profile_key", "crm_id", "value"]
_NULLABLE = ("profile_key", "crm_id", "value")
RecordRange = tuple[str | None, str | None]  # record ids first <= id < stop (None: unbounded on that side)
READ_PAGE_ROWS = 500_000  # ledger rows read at once (bounded text per read, below SQLite's string limit)
_UNIT, _NULL = "\x1f", "\x1e"  # separator and null marker of the bulk read (checked, see ``_read``)


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
        self._hasher: KeyedHasher | None = None  # read (or created) when first needed
        self._protected: dict[tuple[str, str], frozenset[str]] = {}  # (object, destination) -> lower-cased fields
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
        # copies of the rows an earlier version kept beside the ledger: nothing reads them any more
        shutil.rmtree(self.path.parent / f"{self.path.stem}.snapshots", ignore_errors=True)

    def close(self) -> None:
        self._db.close()

    @property
    def db(self) -> sqlite3.Connection:
        """The ledger file's connection, for the side tables kept in the same file (standing failures, the exit
        guard's history). Never for ``confirmed_fields``: its rows are written through this class."""
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
        where, params = self._clear_values(sobject, destination, wanted)
        if self._db.execute(f"SELECT 1 FROM confirmed_fields WHERE {where} LIMIT 1", params).fetchone() is None:
            return 0
        return self._hash_clear_values(where, params)

    def _clear_values(self, sobject: str, destination: str, fields: frozenset[str]) -> tuple[str, tuple]:
        """The ``WHERE`` clause (and its parameters) of the clear values of ``fields``."""
        marks = ", ".join("?" * len(fields))
        return (f"target = ? AND object = ? AND destination = ? AND lower(field) IN ({marks}) AND value IS NOT NULL "
                f"AND substr(value, 1, {len(PREFIX)}) != ?", (self.target, sobject, destination, *sorted(fields),
                                                               PREFIX))

    def _hash_clear_values(self, where: str, params: tuple) -> int:
        hasher = self.hasher
        self._db.create_function("ledger_keyed_hash", 1, lambda v: None if v is None else hasher.text(v),
                                 deterministic=True)
        self._db.execute("PRAGMA secure_delete = ON")  # freed cells are zeroed, not left holding clear values
        try:
            changes = self._write(f"UPDATE confirmed_fields SET value = ledger_keyed_hash(value) WHERE {where}",
                                  [params])
        finally:
            self._db.execute("PRAGMA secure_delete = OFF")
        if changes:
            self._db.execute("VACUUM")  # no page of the file keeps an old value
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return changes

    def _keyed_table(self) -> None:
        """Move a ledger written before the table was ``WITHOUT ROWID`` into that layout, once, in one
        transaction, then compact the file; nothing changes for readers."""
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
                  columns: list[str] | None = None, kind: str | None = None,
                  records: RecordRange | None = None) -> pd.DataFrame:
        """``CONFIRMED_COLUMNS`` (value as JSON text; or only ``columns``) confirmed on this target for
        ``sobject`` (and ``destination``, ``kind``, ``records`` when given), in key order (record, field); ``str``
        columns, NaN for null (what ``pd.read_sql_query`` gives). ``records``: ``(first, stop)``, the record ids
        ``first <= id < stop`` (None: unbounded on that side)."""
        wanted, where, params = self._selection(sobject, destination, columns, kind, records)
        pages = [page.select(wanted) for page in self._pages(where, params, wanted)]
        if not pages:
            pages = [_table([[]] * len(CONFIRMED_COLUMNS)).select(wanted)]
        columns = {}
        for name in wanted:  # one column at a time, each page's copy let go of once joined (a large ledger)
            columns[name] = pd.Series(pa.chunked_array([page[name] for page in pages]).combine_chunks(), dtype="str")
            pages = [page.drop_columns([name]) for page in pages]
        return pd.DataFrame(columns)

    def confirmed_pages(self, sobject: str, destination: str | None = None, *, columns: list[str] | None = None,
                        kind: str | None = None, records: RecordRange | None = None) -> Iterator[pd.DataFrame]:
        """What ``confirmed`` returns, a page (``READ_PAGE_ROWS`` rows, key order) at a time: a pass over a large
        ledger holds one page. A ``(record_id, field)`` is in exactly one page."""
        wanted, where, params = self._selection(sobject, destination, columns, kind, records)
        for page in self._pages(where, params, wanted):
            yield pd.DataFrame({name: pd.Series(page[name], dtype="str") for name in wanted})

    def _selection(self, sobject: str, destination: str | None, columns: list[str] | None, kind: str | None,
                   records: RecordRange | None = None) -> tuple[list[str], str, tuple]:
        """The columns wanted, and the ``WHERE`` clause (and its parameters) of a read of ``confirmed``."""
        wanted = list(columns or CONFIRMED_COLUMNS)
        unknown = set(wanted) - set(CONFIRMED_COLUMNS)
        if unknown:
            raise ValueError(f"no ledger column {sorted(unknown)}; columns are {CONFIRMED_COLUMNS}")
        where, params = "target = ? AND object = ?", (self.target, sobject)
        if destination is not None:
            where, params = where + " AND destination = ?", (*params, destination)
        if kind is not None:
            where, params = where + " AND kind = ?", (*params, kind)
        first, stop = records or (None, None)
        if first is not None:  # a range of the key: one ordered pass over that part of the index
            where, params = where + " AND record_id >= ?", (*params, first)
        if stop is not None:
            where, params = where + " AND record_id < ?", (*params, stop)
        return wanted, where, params

    def _pages(self, where: str, params: tuple, wanted: list[str]):
        """The rows in key order, ``READ_PAGE_ROWS`` at a time (from the key after the last one read), so a
        read holds one page's text at a time, whatever the ledger's size."""
        after: tuple = ()
        while True:
            condition = f"{where} AND (record_id, field) > (?, ?)" if after else where
            page = self._read(condition, (*params, *after), wanted)
            if page.num_rows:
                yield page
            if page.num_rows < READ_PAGE_ROWS:
                return
            after = (page["record_id"][-1].as_py(), page["field"][-1].as_py())

    def _read(self, where: str, params: tuple, wanted: list[str]) -> pa.Table:
        """One page of rows as one ``group_concat`` per column (one pass over the key index, so in key
        order; no Python object per value), split in Arrow; row by row when the text cannot be split back
        exactly: a value holding the separator (the parts do not add up) or the null marker (more
        markers than nulls). ``wanted``: the columns needed (the keys are always read)."""
        names = [c for c in CONFIRMED_COLUMNS if c in ("record_id", "field") or c in wanted]
        parts = [f"group_concat(coalesce({c}, char(30)), char(31))" if c in _NULLABLE else f"group_concat({c}, char(31))"
                 for c in names]
        counts = [f"count({c})" for c in _NULLABLE]
        query = (f"SELECT count(*), {', '.join(counts)}, {', '.join(parts)} FROM (SELECT {', '.join(CONFIRMED_COLUMNS)} "
                 f"FROM confirmed_fields WHERE {where} ORDER BY record_id, field LIMIT {READ_PAGE_ROWS})")
        n, *rest = self._db.execute(query, params).fetchone()
        if not n:
            return _table([[]] * len(CONFIRMED_COLUMNS))
        present = dict(zip(_NULLABLE, rest[: len(_NULLABLE)]))
        columns = {}
        for name, joined in zip(names, rest[len(_NULLABLE):]):
            values = pc.split_pattern(pa.array([joined], pa.large_string()), _UNIT).values
            if len(values) != n:
                return self._read_row_by_row(where, params)
            if name in present:
                marked = pc.equal(values, _NULL)
                if (pc.sum(marked).as_py() or 0) != n - present[name]:
                    return self._read_row_by_row(where, params)
                values = pc.if_else(marked, pa.scalar(None, pa.large_string()), values)
            columns[name] = values
        for name in CONFIRMED_COLUMNS:  # columns not read: nulls (never selected by the caller)
            columns.setdefault(name, pa.nulls(n, pa.large_string()))
        return pa.table({c: columns[c] for c in CONFIRMED_COLUMNS})

    def _read_row_by_row(self, where: str, params: tuple) -> pa.Table:
        cast = ", ".join(f"CAST({c} AS TEXT)" for c in CONFIRMED_COLUMNS)
        rows = self._db.execute(f"SELECT {cast} FROM confirmed_fields WHERE {where} ORDER BY record_id, field "
                                f"LIMIT {READ_PAGE_ROWS}", params).fetchall()
        return _table([list(v) for v in zip(*rows)] if rows else [[]] * len(CONFIRMED_COLUMNS))

    def _write(self, sql: str, data: list[tuple]) -> int:
        """Run ``sql`` over ``data`` in one transaction; returns the rows changed."""
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            changes = self._db.total_changes
            self._db.executemany(sql, data)
            return self._db.total_changes - changes

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
            "INSERT INTO confirmed_fields (target, object, record_id, field, kind, destination, profile_key, crm_id, "
            "value, run_id, written_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (target, object, record_id, field) DO UPDATE SET kind = excluded.kind, "
            "destination = excluded.destination, profile_key = excluded.profile_key, crm_id = excluded.crm_id, "
            "value = excluded.value, run_id = excluded.run_id, written_at = excluded.written_at",
            data,
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
            "DELETE FROM confirmed_fields WHERE target = ? AND object = ? AND record_id = ? AND field = ?", data)


def encode(value: object) -> str:
    """The ledger's text for a value; decimals keep their exact digits."""
    return json.dumps(value, sort_keys=True, default=_exact)


def _exact(value: object) -> str:
    if isinstance(value, Decimal):
        return format(value, "f")
    raise TypeError(f"cannot record a {type(value).__name__} in the ledger")


def _table(values: list[list]) -> pa.Table:
    """A table of ``CONFIRMED_COLUMNS`` as large strings from Python lists (None for null)."""
    return pa.table({c: pa.array(v, pa.large_string()) for c, v in zip(CONFIRMED_COLUMNS, values)})
