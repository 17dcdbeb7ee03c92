"""Land a read in memory: a full read replaces the dataset and quarantine, an incremental one (a
delta) is merged into them by primary key (``merge_delta``).

A full read needs of the previous dataset only which rows it held (``rows_changed``): their row
hashes, read row group by row group, so a full read holds one dataset in memory, not two. The
quarantine of a failed run never becomes the base of a merge (``landing.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import reduce

import numpy as np
import pandas as pd
import pyarrow as pa

from sfmc_pipeline.config.data_extensions import DataExtensionConfig
from sfmc_pipeline.datasets.conversion import clean_values, convert_frame, pandas_dtype
from sfmc_pipeline.datasets.incremental import (
    INCREMENTAL,
    Previous,
    ReadPlan,
    raw_cursor,
)
from sfmc_pipeline.datasets.memory import release_memory
from sfmc_pipeline.datasets.row_hashes import row_hash
from sfmc_pipeline.datasets.storage import DatasetStore, as_pandas, iter_parquet

_SEPARATOR = "\x1f"  # between the parts of a composite key


@dataclass(frozen=True)
class Landing:
    valid: pd.DataFrame  # the dataset to write
    quarantine: pd.DataFrame  # its quarantine
    rows_changed: int  # rows of ``valid`` that are new or differ from the previous dataset


def land(plan: ReadPlan, valid: pd.DataFrame, quarantine: pd.DataFrame, previous: Previous,
         extension: DataExtensionConfig) -> Landing:
    """What this read lands: merged into the previous dataset (incremental) or instead of it (full).
    ``valid`` and ``quarantine`` are the read's validation result."""
    if plan.mode == INCREMENTAL:
        return merge_delta(previous.valid, previous.quarantine, valid, quarantine, extension)
    return Landing(valid, quarantine, count_changed(previous.valid, valid))  # a full read replaces both files


def merge_delta(previous_valid: pd.DataFrame, previous_quarantine: pd.DataFrame, delta_valid: pd.DataFrame,
                delta_quarantine: pd.DataFrame, extension: DataExtensionConfig) -> Landing:
    """Merge a validated delta into the previous dataset and quarantine.

    A key the delta holds, valid or quarantined, takes the delta's row, unless the stored row's cursor
    is newer (a tie, or a cursor that is not a date, goes to the delta); every other stored row is
    kept where it is. So a quarantined row absent from the delta stays quarantined (its profile stays
    *held*), and a delta row replaces the stored one wherever it was. Keys are compared as the dataset
    holds them (stripped, 18-character Salesforce Ids); a key part that does not convert, as served."""
    column = extension.incremental_column
    stored_keys, held_keys = typed_keys(previous_valid, extension), raw_keys(previous_quarantine, extension)
    valid_keys, bad_keys = typed_keys(delta_valid, extension), raw_keys(delta_quarantine, extension)
    stored = _newest(
        previous_valid[column].set_axis(stored_keys), raw_cursor(previous_quarantine, extension).set_axis(held_keys)
    )
    fetched = _newest(
        delta_valid[column].set_axis(valid_keys), raw_cursor(delta_quarantine, extension).set_axis(bad_keys)
    )
    older = (stored.reindex(fetched.index) > fetched).fillna(False).astype(bool)
    winners = fetched.index[~older.to_numpy()]

    new_valid = delta_valid[valid_keys.isin(winners)]
    new_bad = delta_quarantine[bad_keys.isin(winners)]
    valid = _concat(previous_valid[~stored_keys.isin(winners)], new_valid, like=delta_valid)
    quarantine = _concat(previous_quarantine[~held_keys.isin(winners)], new_bad, like=delta_quarantine)
    return Landing(valid, quarantine, count_changed(previous_valid, new_valid))


@dataclass(frozen=True)
class RowHashes:
    """Rows of a frame as far as ``count_changed`` needs them: the column names and a 64-bit hash
    of each row (``frame_row_hashes``; in no particular order)."""

    columns: list[str]
    hashes: np.ndarray

    def __len__(self) -> int:
        return len(self.hashes)


def count_changed(previous: pd.DataFrame | RowHashes | None, current: pd.DataFrame) -> int:
    """Rows of ``current`` with no identical row in ``previous`` (new or changed rows)."""
    if previous is None or len(previous) == 0 or list(previous.columns) != list(current.columns):
        return len(current)
    if len(current) == 0:
        return 0
    seen = previous.hashes if isinstance(previous, RowHashes) else frame_row_hashes(previous)
    seen.sort()  # in place: only membership matters
    now = frame_row_hashes(current)
    changed = 0
    for start in range(0, len(now), 1 << 17):  # small temporaries
        part = now[start : start + (1 << 17)]
        changed += int((seen[np.minimum(np.searchsorted(seen, part), len(seen) - 1)] != part).sum())
    return changed


def frame_row_hashes(frame: pd.DataFrame, rows: int = 1 << 17) -> np.ndarray:
    """A 64-bit hash of each row of ``frame`` (its values, not its index): equal rows hash equally.
    Computed ``rows`` rows and one column at a time (arrow views of the frame's own buffers for
    strings), so the temporaries stay small."""
    if not len(frame.columns):
        return np.zeros(len(frame), dtype=np.uint64)
    parts = []
    for start in range(0, len(frame), rows):
        piece = frame.iloc[start : start + rows]
        parts.append(row_hash(pa.array(piece[name].array) for name in piece.columns))
    return np.concatenate(parts) if parts else np.empty(0, dtype=np.uint64)


def previous_for_full_read(store: DatasetStore, extension: DataExtensionConfig) -> Previous:
    """What a full read needs of the last materialization (``load_previous``'s checks): the dataset
    as ``RowHashes`` (``valid``), read a row group at a time; None when it is missing, unreadable or
    not of the configured columns and types. (A full read replaces the quarantine, so it does not
    need it.)"""
    problems: list[str] = []
    hashes = _dataset_row_hashes(store.dataset_path(extension.asset), extension, problems)
    return Previous(hashes, None, "; ".join(problems) or None)


def as_row_hashes(frame: pd.DataFrame) -> RowHashes:
    """A dataset frame as ``RowHashes`` (what a full read keeps of the previous dataset)."""
    return RowHashes(list(frame.columns), frame_row_hashes(frame))


def _dataset_row_hashes(path, extension: DataExtensionConfig, problems: list[str]) -> RowHashes | None:
    if not path.exists():
        problems.append(f"{path} does not exist")
        return None
    expected = {c.name: str(pandas_dtype(c)) for c in extension.columns}
    unusable = f"{path} does not have the configured columns and types"
    try:
        hashes = []
        for number, table in enumerate(iter_parquet(path, rows=1 << 15)):  # small slices: small temporaries
            if number == 0:  # the columns and their dtypes, as load_previous checks them
                frame = as_pandas(table.slice(0, 0))
                if list(frame.columns) != list(expected) or {c: str(t) for c, t in frame.dtypes.items()} != expected:
                    problems.append(unusable)
                    return None
            hashes.append(row_hash(table.column(name) for name in expected))  # the values, as frame_row_hashes
            del table
            release_memory()  # one slice of the file at a time
    except (pa.ArrowException, OSError) as exc:
        problems.append(f"{path} cannot be read as parquet ({type(exc).__name__}: {exc})")
        return None
    return RowHashes(list(expected), np.concatenate(hashes) if hashes else np.empty(0, dtype=np.uint64))


def typed_keys(frame: pd.DataFrame, extension: DataExtensionConfig) -> pd.Series:
    """The primary key of each row of a typed (dataset) frame, as one string."""
    return _join([frame[name].astype("string") for name in extension.primary_key], frame.index)


def raw_keys(frame: pd.DataFrame, extension: DataExtensionConfig) -> pd.Series:
    """The primary key of each row of a raw (quarantine) frame, converted as the dataset converts it;
    a part that does not convert is taken as served (stripped)."""
    names = list(extension.primary_key)
    key_only = extension.model_copy(update={"columns": [extension.column(name) for name in names]})
    typed = convert_frame(frame[names].astype("string"), key_only).frame
    parts = [typed[name].astype("string").fillna(clean_values(frame[name]).fillna("")) for name in names]
    return _join(parts, frame.index)


def _join(parts: list[pd.Series], index: pd.Index) -> pd.Series:
    if not parts:
        return pd.Series("", index=index, dtype="string")
    return reduce(lambda left, right: left + _SEPARATOR + right, parts).fillna("")


def _newest(*cursors: pd.Series) -> pd.Series:
    """The newest cursor per key (NaT when a key has none that is a date)."""
    combined = pd.concat(cursors)
    return combined.groupby(level=0, sort=False).max()


def _concat(kept: pd.DataFrame, added: pd.DataFrame, *, like: pd.DataFrame) -> pd.DataFrame:
    """Stored rows then new ones, with the new frame's column types and a fresh index."""
    if len(kept) == 0:
        return added.reset_index(drop=True)
    frame = pd.concat([kept, added], ignore_index=True) if len(added) else kept.reset_index(drop=True)
    return frame.astype(like.dtypes.to_dict())
