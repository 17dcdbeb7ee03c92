"""A columnar copy of the sync ledger's rows of one (target, object), so a sync does not read the
ledger's SQLite table every time.

Reading 1.2 million ledger rows (200,000 records) out of SQLite takes about a second; reading the
same rows from an Arrow file beside the ledger takes a twentieth of that. The copy is only used
when it is provably current:

- every write transaction of the ledger (``SyncLedger.record`` / ``forget``) sets a new random
  *stamp* for its (target, object) in the same transaction;
- a ``ConfirmedTable`` (in memory) and a snapshot file (on disk) each carry the stamp of the
  ledger content they hold. A read compares it with the ledger's stamp: equal, the copy is used;
  different or missing (another process wrote, the file is damaged or from a restored backup),
  the rows are read from SQLite and the copy rebuilt.
- the ledger's own writes are applied to its in-memory table as they commit (when the stamp it
  replaced is the table's, i.e. nobody else wrote in between), and the table is saved when the
  ledger closes, so the next run starts from a current snapshot.

The table holds ``CONFIRMED_COLUMNS`` as large strings (null for SQL NULL), sorted by
``(record_id, field)`` (SQLite's binary order: the order of the ledger's key).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.feather as feather

from sfmc_pipeline.datasets.storage import atomic_path

KEY = ["record_id", "field"]
_SPLICE_LIMIT = 50_000  # up to this many changed rows are spliced into the table, more are sorted in
SNAPSHOT_VERSION = "1"


def empty_table(columns: list[str]) -> pa.Table:
    return pa.table({c: pa.array([], pa.large_string()) for c in columns})


def table_of(columns: list[str], values: list[list]) -> pa.Table:
    """A table of large-string columns from Python lists (None for null)."""
    return pa.table({c: pa.array(v, pa.large_string()) for c, v in zip(columns, values)})


def _key_codes(table: pa.Table, other: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """One int64 per row of each table for its (record_id, field), equal exactly when the key is and
    ordered as the keys are (each column's dictionary is ranked in byte order, SQLite's binary order):
    a sort on them is a sort by key, without comparing strings again."""
    combined = np.zeros(table.num_rows + other.num_rows, dtype=np.int64)
    for column in KEY:
        values = pa.concat_arrays([*table[column].chunks, *other[column].chunks]) if combined.size else \
            pa.array([], pa.large_string())
        encoded = pc.dictionary_encode(values)
        rank = np.empty(len(encoded.dictionary), dtype=np.int64)
        rank[pc.array_sort_indices(encoded.dictionary).to_numpy()] = np.arange(len(encoded.dictionary))
        combined = combined * max(len(encoded.dictionary), 1) + rank[encoded.indices.to_numpy()]
    return combined[: table.num_rows], combined[table.num_rows :]


def _merged(table: pa.Table, upserts: pa.Table | None, deletes: pa.Table | None) -> pa.Table:
    """``table`` (in key order, one row per key) with the rows of ``upserts`` (in write order; the last
    write of a key wins) replacing or joining its rows, or the keys of ``deletes`` removed; still in key
    order."""
    changes = upserts if upserts is not None else deletes
    if not changes.num_rows:
        return table
    mine, theirs = _key_codes(table, changes)
    if upserts is None:
        keep = ~np.isin(mine, theirs)
        return table.filter(pa.array(keep)) if not keep.all() else table
    order = np.argsort(theirs, kind="stable")  # key order; a key's writes stay in write order
    theirs = theirs[order]
    last = np.ones(len(order), dtype=bool)
    last[:-1] = theirs[1:] != theirs[:-1]  # the last write of each key
    changes = changes.select(table.column_names).combine_chunks().take(order[last])
    theirs = theirs[last]
    if not table.num_rows:
        return changes
    if changes.num_rows > _SPLICE_LIMIT:  # many rows: one sort of both tables
        keep = ~np.isin(mine, theirs)
        kept = table.filter(pa.array(keep)) if not keep.all() else table
        merged = np.argsort(np.concatenate([mine[keep], theirs]), kind="stable")
        return pa.concat_tables([kept, changes]).combine_chunks().take(merged)
    at = np.searchsorted(mine, theirs)  # where each goes: the row it replaces, or the row it precedes
    present = at < len(mine)
    present[present] = mine[at[present]] == theirs[present]
    pieces, start = [], 0
    for i, (position, replaces) in enumerate(zip(at.tolist(), present.tolist())):
        pieces += [table.slice(start, position - start), changes.slice(i, 1)]
        start = position + 1 if replaces else position
    pieces.append(table.slice(start))
    return pa.concat_tables(pieces).combine_chunks()


class ConfirmedTable:
    """The ledger rows of one (target, object) as of ``stamp``, with the ledger's own later writes
    kept as a journal until the next read (``rows``) applies them in one pass."""

    def __init__(self, stamp: str | None, table: pa.Table, *, saved: bool = False):
        self.stamp = stamp
        self._table = table
        self._journal: list[tuple[str, pa.Table]] = []  # ("upsert" | "delete", rows or keys)
        self.saved = saved  # the snapshot file holds this stamp

    def wrote(self, action: str, rows: pa.Table, stamp: str) -> None:
        """The ledger committed ``action`` ("upsert": full rows; "delete": keys), moving to ``stamp``."""
        self._journal.append((action, rows))
        self.stamp, self.saved = stamp, False

    def rows(self) -> pa.Table:
        """The table with the journal applied: runs of upserts at once (the last write of a key wins),
        each delete where it came."""
        if not self._journal:
            return self._table
        table, pending = self._table, []
        for action, rows in [*self._journal, ("end", None)]:
            if action == "upsert":
                pending.append(rows)
                continue
            if pending:
                table = _merged(table, pa.concat_tables(pending), None)
                pending = []
            if action == "delete":
                table = _merged(table, None, rows)
        self._table, self._journal = table.combine_chunks(), []
        return self._table


class SnapshotFiles:
    """Snapshot files of one ledger: ``<ledger stem>.snapshots/<hash of target and object>.arrow``
    beside it (LZ4-compressed Arrow IPC, the stamp in the schema metadata)."""

    def __init__(self, ledger_path: Path, target: str):
        self.folder = ledger_path.parent / f"{ledger_path.stem}.snapshots"
        self.target = target

    def path(self, sobject: str) -> Path:
        digest = hashlib.sha256(f"{self.target}\0{sobject}".encode()).hexdigest()[:24]
        return self.folder / f"{digest}.arrow"

    def load(self, sobject: str, stamp: str, columns: list[str]) -> pa.Table | None:
        """The snapshot of ``sobject`` when it holds exactly ``stamp`` (and this target, object and
        columns); None otherwise, or when the file is missing or unreadable."""
        path = self.path(sobject)
        if not path.exists():
            return None
        try:
            table = feather.read_table(path)
        except (OSError, pa.ArrowException):
            return None
        meta = table.schema.metadata or {}
        expected = {b"stamp": stamp.encode(), b"target": self.target.encode(), b"object": sobject.encode(),
                    b"version": SNAPSHOT_VERSION.encode()}
        if any(meta.get(k) != v for k, v in expected.items()) or table.column_names != columns:
            return None
        if any(t != pa.large_string() for t in table.schema.types):
            return None
        return table.replace_schema_metadata(None)

    def save(self, sobject: str, stamp: str, table: pa.Table) -> None:
        """Write atomically (a reader sees the old file or the new one, never a part)."""
        meta = {"stamp": stamp, "target": self.target, "object": sobject, "version": SNAPSHOT_VERSION}
        with atomic_path(self.path(sobject)) as tmp:
            feather.write_feather(table.replace_schema_metadata(meta), tmp, compression="lz4")
