"""Where datasets, quarantines and state files live, and how they are written: atomically.

A write goes to a temporary file in the target directory and is renamed over the target, so a
crash never leaves a half-written dataset and a re-run replaces instead of appending twice. Frames
are written a row group (``ROW_GROUP_ROWS``) at a time, and ``iter_parquet`` reads a file back a
slice at a time, so neither holds a second copy of a large dataset.
"""

from __future__ import annotations

import glob
import json
import os
import sqlite3
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from sfmc_pipeline.errors import ConfigurationError
from sfmc_pipeline.settings import STORAGE_ENV


class StorageError(ConfigurationError):
    """The storage directory (or a file in it) cannot be used; the message names the path and the fix."""


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; on success it replaces ``target``. Temporary files
    of this target left behind by a killed write (``.<name>.<random>.tmp``) are removed first. A
    file-system failure (directory missing or read-only, a file where a directory should be, disk
    full) is a ``StorageError`` naming the path and the fix."""
    tmp: Path | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temporaries(target)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        yield tmp
        os.replace(tmp, target)
    except OSError as exc:
        raise StorageError(
            f"Cannot write {target} ({exc.strerror or exc}). Make sure {target.parent} is a writable directory "
            f"with free space (not a file), or point {STORAGE_ENV} at a directory that is."
        ) from None
    finally:
        if tmp is not None and tmp.exists():
            tmp.unlink()


def _remove_stale_temporaries(target: Path) -> None:
    """Delete ``.<name>.<random>.tmp`` files of ``target`` (never another target's: the random part of
    ``mkstemp`` has no dot, so ``.x.parquet.bak.<random>.tmp`` is not one of ``x.parquet``'s)."""
    prefix = f".{target.name}."
    for stale in target.parent.glob(f"{glob.escape(prefix)}*.tmp"):
        random_part = stale.name[len(prefix):-len(".tmp")]
        if random_part and "." not in random_part and stale.is_file():
            stale.unlink(missing_ok=True)


ROW_GROUP_ROWS = 131_072  # rows per parquet row group: a frame is converted and written a row group at a time


def write_parquet(frame: pd.DataFrame, target: Path) -> Path:
    """Write ``frame`` (without its index, pandas dtypes kept in the file's metadata) atomically, one
    row group of ``ROW_GROUP_ROWS`` at a time: only that slice is converted to arrow at once."""
    with atomic_path(target) as tmp:
        schema = pa.Schema.from_pandas(frame, preserve_index=False)
        with pq.ParquetWriter(tmp, schema) as writer:
            for start in range(0, max(len(frame), 1), ROW_GROUP_ROWS):
                piece = pa.Table.from_pandas(frame.iloc[start : start + ROW_GROUP_ROWS], schema=schema,
                                             preserve_index=False)
                writer.write_table(piece, row_group_size=ROW_GROUP_ROWS)
    return target


def read_parquet(path: Path, columns: list[str] | None = None, categories: list[str] | None = None) -> pd.DataFrame:
    """Read a dataset back with the dtypes it was written with (decimals stay exact arrow decimals); with
    ``columns``, only those the file has (in the file's order); ``categories``: text columns of few distinct values
    read as pandas categoricals (a code per row instead of a string). A file that is not a readable parquet file
    is a ``StorageError`` naming it and the fix."""
    if path.is_dir():
        raise StorageError(f"{path} is a directory, not a parquet file written by this pipeline. {_REWRITE}")
    try:
        if columns is not None:
            columns = [name for name in pq.read_schema(path).names if name in set(columns)]
        table = pq.read_table(path, columns=columns, read_dictionary=categories)
    except (pa.ArrowException, OSError) as exc:
        raise unreadable_parquet(path, exc) from None
    return as_pandas(table)


_REWRITE = "Delete it and materialize the asset that writes it again."


def unreadable_parquet(path: Path, exc: Exception) -> StorageError:
    """The error for a dataset file a reader (pyarrow, the segment engine) could not read as parquet."""
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return StorageError(
        f"{path} cannot be read as parquet ({type(exc).__name__}: {reason}); it was damaged or written by "
        f"something else. {_REWRITE}"
    )


def iter_parquet(path: Path, rows: int = ROW_GROUP_ROWS) -> Iterator[pa.Table]:
    """The file's rows as arrow tables of about ``rows`` rows (one in memory at a time, with the
    file's schema and its pandas metadata: ``as_pandas`` gives ``read_parquet``'s dtypes). Raises
    ``pyarrow.ArrowException`` / ``OSError`` for a file that is not readable parquet."""
    parquet = pq.ParquetFile(path, pre_buffer=False)  # read as decoded, not a row group ahead
    if parquet.metadata.num_rows == 0:
        yield parquet.read()
        return
    for batch in parquet.iter_batches(batch_size=rows, use_threads=False):
        yield pa.Table.from_batches([batch])


def as_pandas(table: pa.Table) -> pd.DataFrame:
    """An arrow table read from a dataset file as ``read_parquet`` gives it."""
    return table.to_pandas(types_mapper=_keep_decimals)


def _keep_decimals(arrow_type: pa.DataType):
    return pd.ArrowDtype(arrow_type) if pa.types.is_decimal(arrow_type) else None


def open_state_db(path: Path) -> sqlite3.Connection:
    """A state database of the storage directory (the sync ledger, the Bulk job store): its folder created,
    autocommit (callers open their own transactions), write-ahead log so readers never block the writer,
    a minute's wait for another process's lock. Raises ``sqlite3.Error`` / ``OSError`` for the caller to
    explain with its own fix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, timeout=60, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    return db


def write_json(data: Any, target: Path) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str), encoding="utf-8")
    return target


def open_store(base_dir: str | Path, *, setting: str) -> "DatasetStore":
    """A ``DatasetStore`` on ``base_dir`` once it exists (created if only it is missing, not its parent)
    and is writable; otherwise ``StorageError`` naming the path, the setting and the fix."""
    base = Path(base_dir).expanduser()
    if not base.exists():
        if base.parent.exists() and not base.parent.is_dir():
            raise StorageError(
                f"Storage directory {base} cannot be created: its parent {base.parent} is a file, not a directory. "
                f"Point {setting} at a directory (unset, it is data/storage in the repository)."
            )
        if not base.parent.is_dir():
            raise StorageError(
                f"Storage directory {base} does not exist, nor does its parent {base.parent}. Create it, or point "
                f"{setting} at an existing directory (unset, it is data/storage in the repository)."
            )
        try:
            base.mkdir()
        except OSError as exc:
            raise _unwritable(base, setting, exc) from None
    if not base.is_dir():
        raise StorageError(f"Storage path {base} is not a directory; point {setting} at a directory.")
    try:
        with tempfile.NamedTemporaryFile(prefix=".write-check.", dir=base):
            pass
    except OSError as exc:
        raise _unwritable(base, setting, exc) from None
    return DatasetStore(base)


def _unwritable(base: Path, setting: str, exc: OSError) -> StorageError:
    return StorageError(
        f"Cannot write to the storage directory {base} ({exc.strerror or exc}). Make it writable for this user, "
        f"or point {setting} at a writable directory."
    )


class DatasetStore:
    """Paths under the storage directory: ``datasets/``, ``quarantine/`` (``quarantine/rejected/``: of
    failed runs), ``state/``."""

    def __init__(self, base_dir: str | Path):
        self.base_dir = Path(base_dir)

    def dataset_path(self, name: str) -> Path:
        return self.base_dir / "datasets" / f"{name}.parquet"

    def quarantine_path(self, name: str) -> Path:
        return self.base_dir / "quarantine" / f"{name}.parquet"

    def rejected_quarantine_path(self, name: str) -> Path:
        """The quarantine a failed materialization would have landed, kept for inspection only: the
        landed quarantine belongs to the dataset that stays in place."""
        return self.base_dir / "quarantine" / "rejected" / f"{name}.parquet"

    def state_path(self, name: str) -> Path:
        return self.base_dir / "state" / name

    def write_dataset(self, name: str, frame: pd.DataFrame) -> Path:
        return write_parquet(frame, self.dataset_path(name))

    def write_quarantine(self, name: str, frame: pd.DataFrame) -> Path:
        return write_parquet(frame, self.quarantine_path(name))

    def write_rejected_quarantine(self, name: str, frame: pd.DataFrame) -> Path:
        return write_parquet(frame, self.rejected_quarantine_path(name))

    def remove_rejected_quarantine(self, name: str) -> None:
        """Forget a failed run's rejected quarantine once a materialization has succeeded."""
        path = self.rejected_quarantine_path(name)
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise StorageError(
                f"Cannot remove {path} ({exc.strerror or exc}), the quarantine of a failed run that a later run "
                f"replaced. Make {path.parent} writable, or delete the file."
            ) from None

    def read_dataset(self, name: str, columns: list[str] | None = None, categories: list[str] | None = None
                     ) -> pd.DataFrame:
        """The dataset ``name`` (only ``columns``, those it has, when given; ``categories``: ``read_parquet``)."""
        path = self.dataset_path(name)
        if not path.exists():
            raise StorageError(
                f"Dataset {name!r} has not been materialized yet ({path} does not exist); "
                f"materialize the asset {name!r} first."
            )
        return read_parquet(path, columns, categories)
