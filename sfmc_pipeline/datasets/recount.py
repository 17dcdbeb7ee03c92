"""The proof that an incremental read is complete: the merged dataset's rows, counted by date range
of the incremental column, are what SFMC counts in the same ranges.

A total alone misses a late-arriving row and a deleted one that cancel out (an event log gets both
daily), so the rows (valid + quarantined) are counted per range (``recount_ranges``), in SFMC system
time and inclusive, as SFMC's ``between`` compares them; each range is one ``$pageSize=1`` request
of the source's ``probe``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd

from sfmc_pipeline.config.data_extensions import DataExtensionConfig
from sfmc_pipeline.datasets.date_conversion import (
    sfmc_system_times,
    utc_to_system_times,
)
from sfmc_pipeline.datasets.incremental import INCOMPLETE, to_system_time

RECOUNT_DAYS = 7  # late rows older than this are caught by the periodic full read
EARLIEST = dt.datetime(1753, 1, 1)  # SFMC's earliest storable date
LATEST = dt.datetime(9999, 12, 31, 23, 59, 59)  # ... and latest (the window's open end)
_SECOND = dt.timedelta(seconds=1)


@dataclass(frozen=True)
class DateRange:
    start: dt.datetime  # naive SFMC system time, inclusive
    end: dt.datetime  # inclusive

    @property
    def label(self) -> str:
        if self.end == LATEST:
            return f"at or after {self.start:%Y-%m-%d %H:%M:%S}"
        if self.start == EARLIEST:
            return f"before {self.end + _SECOND:%Y-%m-%d %H:%M:%S}"
        return f"from {self.start:%Y-%m-%d %H:%M:%S} to {self.end:%Y-%m-%d %H:%M:%S}"


def recount_ranges(since: dt.datetime) -> list[DateRange]:
    """The window of a read starting at ``since`` (UTC), each of the ``RECOUNT_DAYS`` days before it
    (where late rows land), and everything older (where retention deletes), in SFMC system time; the
    rows without a date are the rest of the total. A late row and a deleted one then cancel out only
    on the same day and in equal numbers; the periodic full read settles even that."""
    start = to_system_time(since).replace(microsecond=0)
    day = dt.timedelta(days=1)
    ranges = [DateRange(start, LATEST)]
    ranges += [DateRange(start - k * day, start - (k - 1) * day - _SECOND) for k in range(1, RECOUNT_DAYS + 1)]
    ranges.append(DateRange(EARLIEST, start - RECOUNT_DAYS * day - _SECOND))
    return ranges


@dataclass(frozen=True)
class RowCounts:
    total: int
    ranges: tuple[int, ...]  # rows whose incremental column lies in each range

    @property
    def undated(self) -> int:
        return self.total - sum(self.ranges)


def count_times(times: np.ndarray, ranges: list[DateRange]) -> tuple[int, ...]:
    """How many of ``times`` (naive system times, NaT for none) lie in each range."""
    return tuple(int(((times >= np.datetime64(r.start, "us")) & (times <= np.datetime64(r.end, "us"))).sum())
                 for r in ranges)


def merged_counts(valid: pd.DataFrame, quarantine: pd.DataFrame, extension: DataExtensionConfig,
                  ranges: list[DateRange]) -> RowCounts:
    """The merged dataset's rows per range: the valid rows by their typed (UTC) cursor, the quarantined
    ones by their value as served."""
    column = extension.incremental_column
    served = sfmc_system_times(quarantine[column]) if len(quarantine) else np.empty(0, dtype="datetime64[us]")
    times = np.concatenate([utc_to_system_times(valid[column]), served])
    return RowCounts(total=len(valid) + len(quarantine), ranges=count_times(times, ranges))


def completeness_problem(merged: RowCounts, sfmc: RowCounts, ranges: list[DateRange], column: str) -> str | None:
    """Why an incremental read is not complete (the ``full_read_reason`` of the full read that replaces it),
    naming each range whose counts differ; None when every range matches."""
    differences = [f"{column} {r.label}: {m:,} rows, SFMC {s:,}"
                   for r, m, s in zip(ranges, merged.ranges, sfmc.ranges) if m != s]
    if merged.undated != sfmc.undated:
        differences.append(f"no {column}: {merged.undated:,} rows, SFMC {sfmc.undated:,}")
    if merged.total == sfmc.total and not differences:
        return None
    return (f"{INCOMPLETE}: merged dataset {merged.total:,} rows (valid + quarantined), SFMC count {sfmc.total:,}"
            + (f" ({'; '.join(differences)}; system time)" if differences else ""))
