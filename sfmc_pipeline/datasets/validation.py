"""Type and validate a raw Data Extension extract; split it into valid rows and a quarantine.

Invariant: every input row ends up in exactly one of ``valid`` and ``quarantine``.
A quarantined row keeps its original (raw string) values plus the reasons in plain words.

**Page by page** (``validate_pages``). Pages are gathered into batches of about ``BATCH_ROWS`` rows
(a page of the REST source is 2,500 rows; per-batch work is vectorised, so a batch amortises its
fixed costs) and each batch is handled as it arrives: its values are typed (``conversion.py``), and
the checks of the schema generated from the config (``schemas.py``: required values, the pandera
column checks, the row checks) are evaluated on the typed batch. What is kept of a batch: its typed
rows that passed (arrow tables), a 64-bit hash of every row's typed primary key, and the raw values
and reasons of the rows that failed. After the last page, primary-key duplicates are found on the
keys alone: every row sharing a key is quarantined, as the pandera ``unique`` check reports them
(rows whose key is entirely null are left to the ``required`` check). The raw values of a duplicate
that passed everything else are read back from a spill of the raw batches to a temporary Arrow IPC
file (written in the background, deleted at the end), so the raw pages are never all in memory.
The valid rows (one frame; string and decimal columns share the kept tables' buffers) are finally
validated against the schema's contract (columns, dtypes, nullability) with pandera.

Row numbers (``_row_number``, ``issues.row``) count across pages; reasons, their order within a
row and the order of ``issues`` are those of pandera's lazy validation of the whole extract (type
problems column by column, then the primary key, the row checks, then each column's required and
value checks), checked against a copy of that implementation in ``test_chunked_validation.py``.

Memory: the typed rows kept for the whole read are copied, batch by batch, into the system
allocator's pool (``_KEPT``), apart from the default arrow pool that serves each batch's temporaries;
after a large batch the freed memory is handed back to the operating system (``release_memory``).
So the resident size follows what is kept (about the final dataset's arrow size) rather than what
was ever allocated. The primary key is kept as a 64-bit hash per row (8 bytes); only rows whose
hash repeats are compared by value. Two columns of a large batch are converted at once (threads:
the arrow kernels release the GIL).
"""

from __future__ import annotations

import ctypes
import os
import sys
import tempfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pandas as pd
import pandera.pandas as pa
import pyarrow as arrow
import pyarrow.compute as pc

from sfmc_pipeline.config.data_extensions import DataExtensionConfig
from sfmc_pipeline.datasets.conversion import (
    ISSUE_COLUMNS,
    convert_column,
    convert_columns,
    empty_issues,
)
from sfmc_pipeline.datasets.schemas import (
    column_checks,
    contract_schema,
    describe_failure,
    row_checks,
)

BATCH_ROWS = 65_536  # rows converted at once; pages are gathered (or a large frame sliced) to about this many
COLUMN_THREADS = 2  # columns of a batch converted and checked at once
_LARGE = 8192  # rows from which a batch is worth threads and handing memory back


@dataclass(frozen=True)
class ValidationResult:
    valid: pd.DataFrame  # typed, valid rows in source order, fresh RangeIndex
    quarantine: pd.DataFrame  # raw values of the configured columns + _row_number, _reasons, _checks, _columns
    issues: pd.DataFrame  # ISSUE_COLUMNS, one row per failed check of a row
    rows_read: int

    @property
    def rows_valid(self) -> int:
        return len(self.valid)

    @property
    def rows_quarantined(self) -> int:
        return len(self.quarantine)

    @property
    def quarantined_share(self) -> float:
        return self.rows_quarantined / self.rows_read if self.rows_read else 0.0

    def top_reasons(self, limit: int = 5) -> list[tuple[str, int]]:
        """The most frequent problems, counted in rows: ``[("Email: not a valid email address", 3), ...]``."""
        per_row = self.issues.drop_duplicates(["row", "summary"])
        return Counter(per_row["summary"]).most_common(limit)


def validate_extract(raw: pd.DataFrame, extension: DataExtensionConfig) -> ValidationResult:
    """``raw`` holds string values under the configured column names, one row per source row."""
    return validate_pages([raw], extension)


def validate_pages(
    pages: Iterable[pd.DataFrame],
    extension: DataExtensionConfig,
    *,
    batch_rows: int = BATCH_ROWS,
    spill_dir: str | Path | None = None,
) -> ValidationResult:
    """Validate an extract served as pages (string values under the configured column names, in
    order), converting them batch by batch as they arrive (see the module docstring). The result is
    the one ``validate_extract`` gives for the pages concatenated. ``spill_dir``: where the raw
    batches are spilled (default: the system's temporary directory)."""
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be at least 1, got {batch_rows}")
    validator = _Validator(extension, spill_dir)
    try:
        for start, raw in _batches(pages, [c.name for c in extension.columns], batch_rows):
            large = raw.num_rows >= _LARGE
            validator.add(start, raw)
            del raw
            if large:
                release_memory()  # a batch's temporaries are freed
        return validator.finish()
    finally:
        validator.close()


# -- batches -----------------------------------------------------------------------------------


def _batches(pages: Iterable[pd.DataFrame], names: list[str], batch_rows: int) -> Iterator[tuple[int, arrow.Table]]:
    """``(first row number, raw batch)``: the configured columns as one arrow table of strings."""
    pending: list[arrow.Table] = []
    held = start = 0
    for page in pages:
        table = _raw_table(page, names)
        for offset in range(0, table.num_rows, batch_rows):
            piece = table.slice(offset, batch_rows)
            pending.append(piece)
            held += piece.num_rows
            if held >= batch_rows:
                yield start, arrow.concat_tables(pending)  # the pages' columns, not copied
                start, pending, held = start + held, [], 0
    if pending:
        yield start, arrow.concat_tables(pending)


def _raw_table(page: pd.DataFrame, names: list[str]) -> arrow.Table:
    """The configured columns of a page as arrow strings (no copy for a page the sources' way:
    exactly these columns, ``string`` dtype). A column the page lacks is empty (``""``), as in the
    quarantine (its typed value is null either way)."""
    columns = {}
    for name in names:
        if name in page:
            values = page[name]
            if values.dtype != _STRING:
                values = values.astype(_STRING)
            array = arrow.array(values.array)
        else:
            array = arrow.array([""] * len(page), type=arrow.large_string())
        columns[name] = array.cast(arrow.large_string()) if array.type != arrow.large_string() else array
    return arrow.table(columns)


def _pandas_strings(table: arrow.Table, start: int) -> pd.DataFrame:
    """A raw arrow batch as a frame of ``string`` columns indexed by row number (no copy)."""
    frame = table.to_pandas(types_mapper=lambda _: _STRING)
    return frame.set_axis(pd.RangeIndex(start, start + table.num_rows))


_STRING = pd.StringDtype()


# -- the validator -------------------------------------------------------------------------------

# Issue groups, in the order pandera's lazy validation reports them (``issues`` order):
# ("a", column) type problems; ("b",) primary key; ("c", check) row checks;
# ("d", column, -1) required; ("d", column, check) column checks.
_GroupKey = tuple


class _Validator:
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
        self.spill = _RawSpill(spill_dir) if self.key else None
        self.workers = ThreadPoolExecutor(max_workers=COLUMN_THREADS, thread_name_prefix="validate-columns")

    def add(self, start: int, raw_table: arrow.Table) -> None:
        if self.key:
            self.spill.add(start, raw_table)  # the previous batch goes to disk before this one is worked on
        raw = _pandas_strings(raw_table, start)
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
                        _issues(rows, f"{config.column},{config.other_column}", "row_check", [text] * len(rows),
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
        kept = pc.filter(arrow.table(columns), arrow.array(keep), memory_pool=_KEPT)
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
                found.append((("d", number, -1), _issues(missing, col.name, "required", [text] * len(missing))))
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
                found.append((("d", number, check_number), _issues(failed, col.name, kind, reasons, summaries)))
        if len(raw) >= _LARGE:
            arrow.default_memory_pool().release_unused()  # this thread's cached pages
        return series, found

    def _issue(self, group: _GroupKey, frame: pd.DataFrame) -> None:
        self.groups.setdefault(group, []).append(frame)
        self.batch_issue_rows.append(frame["row"].to_numpy(dtype=np.int64))

    def finish(self) -> ValidationResult:
        release = release_memory if self.rows >= _LARGE else (lambda: None)
        duplicates = self._duplicate_keys()
        release()
        valid = self._valid(duplicates)
        release()
        issues = self._all_issues()
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
        return ValidationResult(valid=valid, quarantine=quarantine, issues=issues, rows_read=self.rows)

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
        self._issue(("b",), _issues(rows, ",".join(self.key), "primary_key", [text] * len(rows),
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
                table = pc.filter(table, arrow.array(keep), memory_pool=_KEPT)
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
            return _STRING
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

    def _all_issues(self) -> pd.DataFrame:
        ordered = []
        for group in sorted(self.groups):
            frames = self.groups[group]
            frame = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
            if "_order" in frame:
                frame = frame.sort_values("_order", kind="stable").drop(columns="_order")
            ordered.append(frame)
        if not ordered:
            return empty_issues()
        return pd.concat(ordered, ignore_index=True)[ISSUE_COLUMNS]

    def _quarantine(self, issues: pd.DataFrame, duplicates: np.ndarray) -> pd.DataFrame:
        bad_rows = np.unique(issues["row"].to_numpy(dtype=np.int64))
        raw_parts = list(self.bad_raw)
        already = np.concatenate([chunk.bad for chunk in self.chunks]) if self.chunks else np.empty(0, np.int64)
        newly = np.setdiff1d(duplicates, already)
        if len(newly):
            raw_parts.append(self.spill.take(newly))
        if raw_parts:
            raw = pd.concat(raw_parts) if len(raw_parts) > 1 else raw_parts[0]
            out = raw.loc[bad_rows].astype("string")
        else:
            out = pd.DataFrame({name: pd.Series(dtype="string") for name in self.names})
        reasons: dict[int, list[str]] = {}
        checks: dict[int, dict[str, None]] = {}
        columns: dict[int, dict[str, None]] = {}
        for row, column, check, reason in zip(issues["row"].tolist(), issues["column"].tolist(),
                                              issues["check"].tolist(), issues["reason"].tolist()):
            reasons.setdefault(row, []).append(reason)
            checks.setdefault(row, {})[check] = None
            names = columns.setdefault(row, {})
            for name in column.split(","):
                names[name] = None
        order = bad_rows.tolist()
        out["_row_number"] = (bad_rows + 1).astype("int64")
        # plain strings: the column dtype pandas infers for them (``str``), as before
        out["_reasons"] = np.array(["; ".join(reasons[row]) for row in order], dtype=object)
        out["_checks"] = np.array([",".join(checks[row]) for row in order], dtype=object)
        out["_columns"] = np.array([",".join(columns[row]) for row in order], dtype=object)
        return out.reset_index(drop=True)

    def close(self) -> None:
        self.workers.shutdown(wait=True)
        if self.spill is not None:
            self.spill.close()


def release_memory() -> None:
    """Hand memory that was freed back to the operating system: the arrow pool's cached pages and
    the C heap's free pages (glibc keeps freed memory of large frames in its heap, where it counts
    as resident; ``malloc_trim`` returns it). Without it the resident size of a read grows with
    what was once allocated rather than with what is live."""
    arrow.default_memory_pool().release_unused()
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def _malloc_trim():
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to trim
        return None


_MALLOC_TRIM = _malloc_trim()


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


_SPILL_BATCH_ROWS = 8192

# What is kept for the whole read (the typed rows) lives in the system allocator's pool, apart
# from the default pool's per-batch temporaries.
_KEPT = arrow.system_memory_pool()


def _issues(rows, column: str, check: str, reasons: list[str], summaries: list[str] | None = None,
            order: np.ndarray | None = None) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "row": np.asarray(rows, dtype=np.int64),
            "column": column,
            "check": check,
            "reason": reasons,
            "summary": reasons if summaries is None else summaries,
        }
    )
    if order is not None:
        frame["_order"] = order
    return frame


def _arrow_column(series: pd.Series) -> arrow.Array:
    """A typed column as one arrow array (strings as ``large_string``, as pandas holds them)."""
    array = arrow.array(series.array)
    if isinstance(array, arrow.ChunkedArray):
        array = array.combine_chunks()
    return array.cast(arrow.large_string()) if arrow.types.is_string(array.type) else array


_MIX = np.uint64(0x9E3779B97F4A7C15)
_NULL_HASH = np.uint64(0x2545F4914F6CDD1D)


def row_hash(parts: Iterable[arrow.Array | arrow.ChunkedArray]) -> np.ndarray:
    """A 64-bit hash of each row of these columns: equal rows (null equal to null) hash equally,
    different ones almost never (the primary-key check compares the rows whose hash repeats).
    Columns are hashed one at a time, chunk by chunk (nothing is concatenated)."""
    combined = None
    with np.errstate(over="ignore"):
        for part in parts:
            chunks = part.chunks if isinstance(part, arrow.ChunkedArray) else [part]
            hashed = (np.concatenate([_column_hash(chunk) for chunk in chunks]) if chunks
                      else np.empty(0, dtype=np.uint64))
            combined = (np.zeros(len(hashed), dtype=np.uint64) if combined is None else combined)
            combined = (combined ^ hashed) * _MIX + np.uint64(1)
    return np.empty(0, dtype=np.uint64) if combined is None else combined


def _column_hash(array: arrow.Array) -> np.ndarray:
    """A 64-bit hash of each value: strings by their bytes and length, decimals by their 16 bytes,
    integers, timestamps, booleans and floats by their value; nulls share one hash."""
    n = len(array)
    valid = np.asarray(array.is_valid())
    with np.errstate(over="ignore"):
        if arrow.types.is_large_string(array.type) or arrow.types.is_string(array.type):
            hashed = _string_hash(array, valid)
        else:
            if arrow.types.is_decimal128(array.type):
                words = np.frombuffer(array.buffers()[1], dtype=np.uint64)[2 * array.offset : 2 * (array.offset + n)]
                words = words.reshape(n, 2).T
            elif arrow.types.is_floating(array.type):
                words = [np.asarray(array.fill_null(0).cast(arrow.float64())).view(np.uint64)]
            elif (arrow.types.is_integer(array.type) or arrow.types.is_temporal(array.type)
                  or arrow.types.is_boolean(array.type)):
                words = [np.asarray(array.fill_null(0).cast(arrow.int64())).view(np.uint64)]
            else:  # anything else: pandas' hash of the values
                words = [pd.util.hash_array(np.asarray(array.to_pandas(), dtype=object))]
            hashed = np.zeros(n, dtype=np.uint64)
            for word in words:
                hashed = _mix(hashed, word)
    return np.where(valid, hashed, _NULL_HASH)


def _string_hash(array: arrow.Array, valid: np.ndarray) -> np.ndarray:
    """A hash of each value's UTF-8 bytes and length: the values of one length at a time, as a
    byte matrix read from the arrow data buffer, 8 bytes (one word) at a time."""
    array = array.cast(arrow.large_string()) if arrow.types.is_string(array.type) else array
    lengths = np.diff(_offsets(array))
    hashed = np.zeros(len(array), dtype=np.uint64)
    for length in np.unique(lengths[valid]).tolist():
        rows = np.flatnonzero(valid & (lengths == length))
        group = array if len(rows) == len(array) else array.take(arrow.array(rows))
        start = int(_offsets(group)[0])
        data = group.buffers()[2]
        chars = (np.frombuffer(data, dtype=np.uint8)[start : start + len(rows) * length] if length
                 else np.empty(0, dtype=np.uint8)).reshape(len(rows), length)
        h = np.full(len(rows), np.uint64(length), dtype=np.uint64)
        whole = length // 8 * 8
        if whole:
            for word in chars[:, :whole].view(np.uint64).T:
                h = _mix(h, word)
        if length > whole:  # the last 1-7 bytes, as one word
            tail = np.zeros(len(rows), dtype=np.uint64)
            for shift, column in enumerate(chars[:, whole:].T):
                tail |= column.astype(np.uint64) << np.uint64(8 * shift)
            h = _mix(h, tail)
        hashed[rows] = h
    return hashed


def _offsets(array: arrow.Array) -> np.ndarray:
    """The value offsets of a ``large_string`` array (``len + 1`` of them)."""
    return np.frombuffer(array.buffers()[1], dtype=np.int64)[array.offset : array.offset + len(array) + 1]


def _mix(hashed: np.ndarray, word: np.ndarray) -> np.ndarray:
    hashed = (hashed ^ word) * _MIX
    return hashed ^ (hashed >> np.uint64(31))


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


class _RawSpill:
    """The raw batches of a read, kept for the rows that turn out to share a primary key with a
    later row. The newest batch stays in memory; earlier ones go to a temporary Arrow IPC file
    (written in the background as they are replaced, one write at a time, read back by row number,
    deleted by ``close``)."""

    def __init__(self, directory):
        self.directory = directory
        self.held: tuple[int, arrow.Table] | None = None
        self.path: str | None = None
        self.writer = None
        self.background: ThreadPoolExecutor | None = None
        self.writing = None  # the write in progress (a Future)

    def add(self, start: int, raw: arrow.Table) -> None:
        if self.held is not None:
            self._wait()
            if self.background is None:
                self.background = ThreadPoolExecutor(max_workers=1, thread_name_prefix="validate-spill")
            self.writing = self.background.submit(self._write, self.held[1])
        self.held = (start, raw)

    def _wait(self) -> None:
        if self.writing is not None:
            writing, self.writing = self.writing, None
            writing.result()  # a failed write fails the read here

    def _write(self, raw: arrow.Table) -> None:
        if self.writer is None:
            fd, self.path = tempfile.mkstemp(prefix="sfmc-raw-", suffix=".arrow", dir=self.directory)
            os.close(fd)
            self.writer = arrow.ipc.new_file(self.path, raw.schema)
        self.writer.write_table(raw, max_chunksize=_SPILL_BATCH_ROWS)  # read back a small batch at a time

    def take(self, rows: np.ndarray) -> pd.DataFrame:
        """The raw values of these rows (row numbers of the read, ascending) as ``string`` columns."""
        self._wait()
        if self.writer is None:  # one batch: it is still here
            start, table = self.held
            picked = table.take(arrow.array(rows - start))
        else:
            if self.held is not None:
                self._write(self.held[1])
                self.held = None
            self.writer.close()
            self.writer = None
            pieces, first = [], 0
            # one record batch in memory at a time (a memory map would end up resident whole)
            with arrow.OSFile(self.path) as source:
                reader = arrow.ipc.open_file(source)
                for number in range(reader.num_record_batches):
                    batch = reader.get_batch(number)
                    local = rows[(rows >= first) & (rows < first + batch.num_rows)] - first
                    if len(local):
                        pieces.append(batch.take(arrow.array(local)))
                    first += batch.num_rows
            picked = arrow.Table.from_batches(pieces)
        return picked.to_pandas(types_mapper=lambda _: _STRING).set_axis(pd.Index(rows))

    def close(self) -> None:
        self.held = None
        failing = sys.exc_info()[0] is not None  # closing because the read failed: keep that error
        try:
            self._wait()
        except Exception:
            if not failing:
                raise
        finally:
            if self.background is not None:
                self.background.shutdown(wait=True)
                self.background = None
            if self.writer is not None:
                self.writer.close()
                self.writer = None
            if self.path is not None:
                Path(self.path).unlink(missing_ok=True)
                self.path = None
