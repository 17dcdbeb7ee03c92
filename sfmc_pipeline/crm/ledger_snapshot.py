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
SNAPSHOT_VERSION = "1"


def empty_table(columns: list[str]) -> pa.Table:
    return pa.table({c: pa.array([], pa.large_string()) for c in columns})


def table_of(columns: list[str], values: list[list]) -> pa.Table:
    """A table of large-string columns from Python lists (None for null)."""
    return pa.table({c: pa.array(v, pa.large_string()) for c, v in zip(columns, values)})


def key_order(table: pa.Table) -> pa.Table:
    return table.sort_by([(c, "ascending") for c in KEY]) if table.num_rows > 1 else table


def _last_per_key(table: pa.Table) -> pa.Table:
    """The last row of each (record_id, field) (what a sequence of upserts leaves)."""
    numbered = table.append_column("__row", pa.array(range(table.num_rows), pa.int64()))
    last = numbered.group_by(KEY, use_threads=False).aggregate([("__row", "max")])["__row_max"]
    return table.take(np.sort(last.to_numpy()))  # the kept rows, in their original order


def _without_keys(table: pa.Table, keys: pa.Table) -> pa.Table:
    """The rows of ``table`` whose (record_id, field) is not in ``keys`` (an exact anti-join)."""
    if not table.num_rows or not keys.num_rows:
        return table
    return table.join(keys.select(KEY), keys=KEY, join_type="left anti", use_threads=False)


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
                upserts = _last_per_key(pa.concat_tables(pending))
                table = pa.concat_tables([_without_keys(table, upserts).select(table.column_names),
                                          upserts.select(table.column_names)])
                pending = []
            if action == "delete":
                table = _without_keys(table, rows).select(table.column_names)
        self._table, self._journal = key_order(table.combine_chunks()), []
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
