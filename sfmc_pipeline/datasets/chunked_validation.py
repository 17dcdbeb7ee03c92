"""Validation batch by batch: type each batch, run the schema's checks on it, keep what passed.

What is kept of a batch: its typed rows that passed (arrow tables), a 64-bit hash of each row's
typed primary key, and the raw values and reasons of the rows that failed. After the last batch,
primary-key duplicates are found on the hashes (every row sharing a key is quarantined, as
pandera's ``unique`` reports them), and the valid rows are checked against the schema's contract.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd
import pandera.pandas as pa
import pyarrow as arrow
import pyarrow.compute as pc

from sfmc_pipeline.config.data_extensions import DataExtensionConfig
from sfmc_pipeline.datasets.conversion import convert_column, convert_columns
from sfmc_pipeline.datasets.memory import KEPT_POOL, release_memory
from sfmc_pipeline.datasets.quarantine_assembly import (
    issue_frame,
    ordered_issues,
    quarantine_rows,
)
from sfmc_pipeline.datasets.raw_batches import (
    STRING,
    RawSpill,
    pandas_strings,
    raw_batches,
)
from sfmc_pipeline.datasets.row_hashes import row_hash
from sfmc_pipeline.datasets.schemas import (
    column_checks,
    contract_schema,
    describe_failure,
    row_checks,
)

COLUMN_THREADS = 2  # columns of a batch converted and checked at once
_LARGE = 8192  # rows from which a batch is worth threads and handing memory back
# Issue groups, in the order pandera's lazy validation reports them (``quarantine_assembly.py``).
_GroupKey = tuple


def validate_batches(pages: Iterable[pd.DataFrame], extension: DataExtensionConfig, batch_rows: int,
                     spill_dir: str | Path | None) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, int]:
    """``(valid, quarantine, issues, rows read)`` of the pages, validated ``batch_rows`` at a time."""
    validator = _Validator(extension, spill_dir)
    try:
        for start, raw in raw_batches(pages, [c.name for c in extension.columns], batch_rows):
            large = raw.num_rows >= _LARGE
            validator.add(start, raw)
            del raw
            if large:
                release_memory()  # a batch's temporaries are freed
        return validator.finish()
    finally:
        validator.close()


class _Validator:
    """The checks of one read, batch by batch: what is kept of each batch, and the result at the end."""

    def __init__(self, extension: DataExtensionConfig, spill_dir):
        self.extension = extension
        self.names = [c.name for c in extension.columns]
        self.key = list(extension.primary_key)
        self.column_checks = [column_checks(col) for col in extension.columns]
        self.row_checks = row_checks(extension)
        self.rows = 0
        self.chunks: list[_Chunk] = []  # one per batch: its typed rows that passed, and its failed rows
        self.key_hashes: list[np.ndarray] = []  # a 64-bit hash of each row's typed primary key
        self.bad_raw: list[pd.DataFrame] = []  # raw values of the rows that failed a batch check
        self.groups: dict[_GroupKey, list[pd.DataFrame]] = {}
        self.empty_typed: pd.DataFrame | None = None
        self.batch_issue_rows: list[np.ndarray] = []  # rows of the issues found in the current batch
        self.spill = RawSpill(spill_dir) if self.key else None
        self.workers = ThreadPoolExecutor(max_workers=COLUMN_THREADS, thread_name_prefix="validate-columns")

    def add(self, start: int, raw_table: arrow.Table) -> None:
        if self.key:
            self.spill.add(start, raw_table)  # the previous batch goes to disk before this one is worked on
        raw = pandas_strings(raw_table, start)
        # Columns are independent until the row checks: two at a time (arrow kernels release the GIL).
        run = self.workers.map if len(raw) >= _LARGE else map
        done = list(run(lambda number: self._column(number, raw), range(len(self.names))))
        typed = {name: series for name, (series, _) in zip(self.names, done)}
        self.batch_issue_rows = []
        for _, found in done:
            for group, frame in found:
                self._issue(group, frame)
        if self.row_checks:
            frame = pd.DataFrame(typed, copy=False)
            for number, check in enumerate(self.row_checks):
                holds = check(frame).check_output.to_numpy(dtype=bool)
                failed = np.flatnonzero(~holds)
                if len(failed):
                    config = self.extension.row_checks[number]
                    text, _ = describe_failure(self.extension, "row_check", None, number, None)
                    rows = frame.index[failed]
                    self._issue(
                        ("c", number),
                        issue_frame(rows, f"{config.column},{config.other_column}", "row_check", [text] * len(rows),
                                order=_first_present(frame.iloc[failed])),
                    )
        bad = np.unique(np.concatenate(self.batch_issue_rows)) if self.batch_issue_rows else np.empty(0, np.int64)
        if len(bad):
            self.bad_raw.append(raw.loc[bad])
        columns = {name: _arrow_column(series) for name, series in typed.items()}
        bad_keys = None
        if self.key:
            keys = [columns[name] for name in self.key]
            self.key_hashes.append(row_hash(keys))
            bad_keys = [key.take(arrow.array(bad - start)) for key in keys]
        # The rows that passed, copied into the pool that holds what is kept for the whole read,
        # so that the default pool only recycles a batch's temporaries (no fragmentation).
        keep = np.ones(raw_table.num_rows, dtype=bool)
        keep[bad - start] = False
        kept = pc.filter(arrow.table(columns), arrow.array(keep), memory_pool=KEPT_POOL)
        self.chunks.append(_Chunk(start, raw_table.num_rows, bad, kept, bad_keys))
        self.rows += raw_table.num_rows
        if self.empty_typed is None:
            self.empty_typed = pd.DataFrame({name: series.iloc[:0] for name, series in typed.items()})

    def _column(self, number: int, raw: pd.DataFrame) -> tuple[pd.Series, list[tuple[_GroupKey, pd.DataFrame]]]:
        """A column of a batch typed, and its issues: type problems, required, column checks."""
        col = self.extension.columns[number]
        series, conversion = convert_column(raw, col)
        found = []
        if conversion is not None:
            found.append((("a", number), conversion))
        if not col.nullable:
            missing = series.index[series.isna().to_numpy()]
            if conversion is not None:  # a value that did not convert is reported already, not as missing
                missing = missing[~np.isin(missing, conversion["row"].to_numpy())]
            if len(missing):
                text, _ = describe_failure(self.extension, "required", col.name, None, None)
                found.append((("d", number, -1), issue_frame(missing, col.name, "required", [text] * len(missing))))
        for check_number, (kind, check) in enumerate(self.column_checks[number]):
            output = check(series).check_output
            failed = output.index[~output.to_numpy(dtype=bool)]
            if len(failed):
                reasons, summaries = [], []
                for raw_value, value in zip(raw[col.name].loc[failed].tolist(), series.loc[failed].tolist()):
                    reason, summary = describe_failure(self.extension, kind, col.name, check_number,
                                                       _as_served(raw_value, value))
                    reasons.append(reason)
                    summaries.append(summary)
                found.append((("d", number, check_number), issue_frame(failed, col.name, kind, reasons, summaries)))
        if len(raw) >= _LARGE:
            arrow.default_memory_pool().release_unused()  # this thread's cached pages
        return series, found

    def _issue(self, group: _GroupKey, frame: pd.DataFrame) -> None:
        self.groups.setdefault(group, []).append(frame)
        self.batch_issue_rows.append(frame["row"].to_numpy(dtype=np.int64))

    def finish(self) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, int]:
        release = release_memory if self.rows >= _LARGE else (lambda: None)
        duplicates = self._duplicate_keys()
        release()
        valid = self._valid(duplicates)
        release()
        issues = ordered_issues(self.groups)
        quarantine = self._quarantine(issues, duplicates)
        if len(valid):
            try:
                contract_schema(self.extension).validate(valid, lazy=True, inplace=True)
            except pa.errors.SchemaErrors as exc:
                # A valid row that breaks the contract (a missing column, a wrong dtype, a null in a
                # required column) is a bug in the conversion step, not bad data.
                broken = exc.failure_cases[["column", "check"]].drop_duplicates()
                raise RuntimeError(
                    f"{self.extension.key}: dataset-level schema failure {broken.to_dict('records')}"
                ) from None
        self.chunks = []
        release()
        return valid, quarantine, issues, self.rows

    def _duplicate_keys(self) -> np.ndarray:
        """Rows sharing their primary key with another row (as pandera's ``unique`` reports them:
        ``DataFrame.duplicated(keep=False)`` on the typed key, nulls equal; a row whose key parts are
        all null is not reported), recorded as issues; returns their row numbers. Found on the key
        hashes; only rows whose hash repeats (the duplicates and rare collisions) are compared by
        value."""
        if not self.key or not self.key_hashes:
            return np.empty(0, dtype=np.int64)
        hashes = np.concatenate(self.key_hashes)
        self.key_hashes = []
        ordered = np.sort(hashes)
        repeated = np.unique(ordered[1:][ordered[1:] == ordered[:-1]])  # hashes of more than one row
        del ordered
        if not len(repeated):
            return np.empty(0, dtype=np.int64)
        at = np.minimum(np.searchsorted(repeated, hashes), len(repeated) - 1)
        candidates = np.flatnonzero(repeated[at] == hashes)
        del hashes, at
        if not len(candidates):
            return np.empty(0, dtype=np.int64)
        keys = self._key_values(candidates)
        shared = keys.duplicated(keep=False).to_numpy()
        present = keys.notna().to_numpy()
        reported = np.flatnonzero(shared & present.any(axis=1))
        if not len(reported):
            return np.empty(0, dtype=np.int64)
        rows = candidates[reported]
        text, _ = describe_failure(self.extension, "primary_key", None, None, None)
        self._issue(("b",), issue_frame(rows, ",".join(self.key), "primary_key", [text] * len(rows),
                                    order=present[reported].argmax(axis=1)))
        return rows.astype(np.int64)

    def _key_values(self, rows: np.ndarray) -> pd.DataFrame:
        """The typed primary key of these rows (row numbers, ascending)."""
        pieces: list[tuple[np.ndarray, list[arrow.Array]]] = []
        for chunk in self.chunks:
            local = rows[(rows >= chunk.start) & (rows < chunk.start + chunk.rows)]
            if not len(local):
                continue
            failed = np.isin(local, chunk.bad)
            if failed.any():
                at = arrow.array(np.searchsorted(chunk.bad, local[failed]))
                pieces.append((local[failed], [key.take(at) for key in chunk.bad_keys]))
            if (~failed).any():
                at = arrow.array(chunk.kept_position(local[~failed]))
                pieces.append((local[~failed], [chunk.kept.column(name).take(at) for name in self.key]))
        order = arrow.array(np.argsort(np.concatenate([found for found, _ in pieces]), kind="stable"))
        table = arrow.table({
            name: arrow.chunked_array([keys[i] for _, keys in pieces]).combine_chunks().take(order)
            for i, name in enumerate(self.key)
        })
        return table.to_pandas(types_mapper=self._dtype_of)

    def _valid(self, duplicates: np.ndarray) -> pd.DataFrame:
        """The typed rows that passed every check, in order, as the dataset's dtypes."""
        kept = []
        for chunk in self.chunks:
            table = chunk.kept
            rows = duplicates[(duplicates >= chunk.start) & (duplicates < chunk.start + chunk.rows)]
            rows = rows[~np.isin(rows, chunk.bad)]
            if len(rows):  # primary-key duplicates that passed their batch's checks
                keep = np.ones(table.num_rows, dtype=bool)
                keep[chunk.kept_position(rows)] = False
                table = pc.filter(table, arrow.array(keep), memory_pool=KEPT_POOL)
            chunk.kept = None
            if table.num_rows:
                kept.append(table)
        if not kept:
            return self._empty_typed()
        table = kept[0] if len(kept) == 1 else arrow.concat_tables(kept)
        del kept
        # Columns that pandas holds in numpy (Int64, timestamps, booleans) are copied; their arrow
        # buffers are freed column by column as they are (strings and decimals stay shared).
        return table.to_pandas(types_mapper=self._dtype_of, self_destruct=True, split_blocks=True)

    def _dtype_of(self, arrow_type: arrow.DataType):
        """The pandas dtype an arrow column of the typed chunks comes back as (``pandas_dtype``)."""
        if arrow.types.is_string(arrow_type) or arrow.types.is_large_string(arrow_type):
            return STRING
        if arrow.types.is_decimal(arrow_type):
            return pd.ArrowDtype(arrow_type)
        if arrow.types.is_integer(arrow_type):
            return pd.Int64Dtype()
        if arrow.types.is_boolean(arrow_type):
            return pd.BooleanDtype()
        return None  # timestamps: datetime64[us, UTC]

    def _empty_typed(self) -> pd.DataFrame:
        if self.empty_typed is None:
            empty = pd.DataFrame({name: pd.Series(dtype="string") for name in self.names})
            self.empty_typed = pd.DataFrame(convert_columns(empty, self.extension)[0])
        return self.empty_typed.reset_index(drop=True)


    def _quarantine(self, issues: pd.DataFrame, duplicates: np.ndarray) -> pd.DataFrame:
        """The failed rows' raw values: kept with their batch, or (a duplicate that passed its batch's
        checks) read back from the spill."""
        raw_parts = list(self.bad_raw)
        already = np.concatenate([chunk.bad for chunk in self.chunks]) if self.chunks else np.empty(0, np.int64)
        newly = np.setdiff1d(duplicates, already)
        if len(newly):
            raw_parts.append(self.spill.take(newly))
        return quarantine_rows(issues, raw_parts, self.names)

    def close(self) -> None:
        self.workers.shutdown(wait=True)
        if self.spill is not None:
            self.spill.close()


@dataclass
class _Chunk:
    """One batch, as kept: rows ``start`` to ``start + rows``; ``bad`` the row numbers that failed a
    check of the batch (sorted), ``kept`` the typed rows that did not (in order), ``bad_keys`` the
    typed primary key of the failed rows (for the duplicate check)."""

    start: int
    rows: int
    bad: np.ndarray
    kept: arrow.Table | None
    bad_keys: list[arrow.Array] | None

    def kept_position(self, rows: np.ndarray) -> np.ndarray:
        """Where rows that did not fail (row numbers) are in ``kept``."""
        return rows - self.start - np.searchsorted(self.bad, rows)


def _arrow_column(series: pd.Series) -> arrow.Array:
    """A typed column as one arrow array (strings as ``large_string``, as pandas holds them)."""
    array = arrow.array(series.array)
    if isinstance(array, arrow.ChunkedArray):
        array = array.combine_chunks()
    return array.cast(arrow.large_string()) if arrow.types.is_string(array.type) else array


def _first_present(frame: pd.DataFrame) -> np.ndarray:
    """Per row, the position of its first non-null column: pandera lists a dataframe-level failure
    column by column, so a row whose first columns are null comes later."""
    return frame.notna().to_numpy().argmax(axis=1)


def _as_served(raw_value, typed_value):
    """The value a reason quotes: the source's string (stripped, as converted), not its typed form
    (``'-03'``, not ``-3``; the 15-character Id, not its 18-character form)."""
    if isinstance(raw_value, str) and raw_value.strip():
        return raw_value.strip()
    return typed_value
