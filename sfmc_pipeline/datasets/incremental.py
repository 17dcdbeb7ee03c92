"""Incremental reads: which rows to fetch (full, or a window on the cursor column) and the mark
that remembers how far the dataset has seen.

An extension with an ``incremental_column`` (a Date that grows when a row is added or changed) and a
primary key is read incrementally once it has a stored mark: the rows at or after ``mark -
settings.incremental_overlap_minutes`` (re-read on purpose: second precision, late commits, clock
skew), merged by key (``merge.py``) and proved complete (``recount.py``). The mark is kept in UTC;
the window goes to SFMC in its system time (UTC-6 all year), as SFMC compares dates.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import zoneinfo
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from sfmc_pipeline.config.data_extensions import DataExtensionConfig, PipelineSettings
from sfmc_pipeline.datasets.conversion import convert_frame, pandas_dtype
from sfmc_pipeline.datasets.date_conversion import SFMC_SYSTEM_TZ
from sfmc_pipeline.datasets.storage import (
    DatasetStore,
    StorageError,
    read_parquet,
    write_json,
)

INCREMENTAL = "incremental"
FULL = "full"

# Why a read is full (metadata ``full_read_reason``).
NO_COLUMN = "no incremental_column"
NO_PRIMARY_KEY = "no primary key to merge on"
REQUESTED = "full_refresh requested"
FIRST_READ = "first read"
STATE_UNREADABLE = "incremental state unreadable"
CONFIG_CHANGED = "extension config changed"
PERIODIC = "periodic full refresh due"
NO_PREVIOUS = "no previous dataset"
INCOMPLETE = "incremental read incomplete"  # followed by the counts: see recount.completeness_problem

# The columns a quarantine has after the configured ones (see quarantine_assembly.py; ``_run_id`` is added
# when a read is landed, reading.py).
QUARANTINE_COLUMNS = ["_row_number", "_reasons", "_checks", "_columns", "_run_id"]


@dataclass(frozen=True)
class IncrementalState:
    high_water_mark: dt.datetime | None  # UTC; None: the dataset had no cursor value
    last_full_read_at: dt.datetime | None  # UTC
    fingerprint: str  # config_fingerprint() of the extension when the state was written
    run_id: str = ""


@dataclass(frozen=True)
class Previous:
    """The dataset and quarantine of the last materialization, as far as they can be read. ``valid`` is the
    dataset itself for an incremental read (the delta is merged into it), or only its row hashes
    (``merge.RowHashes``, for counting changed rows) for a full read, which replaces it."""

    valid: Any  # pd.DataFrame | merge.RowHashes | None
    quarantine: pd.DataFrame | None
    problem: str | None = None  # why not both could be read


@dataclass(frozen=True)
class ReadPlan:
    mode: str  # INCREMENTAL or FULL
    reason: str | None = None  # why FULL (one of the constants above)
    detail: str = ""  # the reason in a sentence, for the log
    since: dt.datetime | None = None  # INCREMENTAL: the window's start (UTC)
    state: IncrementalState | None = None  # what was stored before this run

    @property
    def tracks_mark(self) -> bool:
        """Whether this extension keeps a mark at all (it is incremental-capable)."""
        return self.reason not in (NO_COLUMN, NO_PRIMARY_KEY)


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def config_fingerprint(extension: DataExtensionConfig) -> str:
    """Changes when anything that decides how rows are keyed, typed or validated changes."""
    relevant = extension.model_dump(
        mode="json", include={"key", "primary_key", "columns", "row_checks", "incremental_column"}
    )
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode("utf-8")).hexdigest()[:16]


def plan_read(
    extension: DataExtensionConfig,
    settings: PipelineSettings,
    state: IncrementalState | None,
    *,
    now: dt.datetime,
    full_refresh: bool = False,
    state_problem: str | None = None,
) -> ReadPlan:
    """Full or incremental, and from when. Pure: the caller loads the state (``state_problem`` says
    why it could not be) and, for an incremental plan, the previous dataset (``without_previous``).

    A read is full without an incremental column or a primary key, on the first read (no mark yet),
    when the run asks for it (``full_refresh``), when the last full read is
    ``settings.full_refresh_every_days`` old (so rows deleted in SFMC leave the dataset), and when
    the extension's columns, key or checks changed since the mark (old rows meet the new rules)."""
    def full(reason: str, detail: str) -> ReadPlan:
        return ReadPlan(FULL, reason=reason, detail=detail, state=state)

    if not extension.incremental_column:
        return full(NO_COLUMN, "the extension has no incremental_column")
    if not extension.primary_key:
        return full(NO_PRIMARY_KEY, "rows can only be merged by primary key, and the extension has none")
    if full_refresh:
        return full(REQUESTED, "the run config asked for full_refresh")
    if state_problem:
        return full(STATE_UNREADABLE, state_problem)
    if state is None or state.high_water_mark is None:
        return full(FIRST_READ, "there is no high-water mark yet")
    if state.fingerprint != config_fingerprint(extension):
        return full(CONFIG_CHANGED, "its columns, key or checks changed since the mark was stored, so every "
                                    "row is validated again")
    every = settings.full_refresh_every_days
    if every and (state.last_full_read_at is None or now - state.last_full_read_at >= dt.timedelta(days=every)):
        age = "never" if state.last_full_read_at is None else f"{(now - state.last_full_read_at).days} day(s) ago"
        return full(PERIODIC, f"the last full read was {age} (full_refresh_every_days: {every})")
    since = window_start(state.high_water_mark, settings.incremental_overlap_minutes)
    return ReadPlan(INCREMENTAL, since=since, state=state)


def without_previous(plan: ReadPlan, problem: str) -> ReadPlan:
    """The full read that replaces an incremental ``plan`` whose previous dataset could not be loaded
    (``problem`` says why): the delta would have nothing to be merged into."""
    return ReadPlan(FULL, reason=NO_PREVIOUS, detail=problem, state=plan.state)


def window_start(mark: dt.datetime, overlap_minutes: int) -> dt.datetime:
    """``mark - overlap``, rounded down to the second (SFMC dates have second precision)."""
    return (mark - dt.timedelta(minutes=overlap_minutes)).replace(microsecond=0)


def to_system_time(moment: dt.datetime) -> dt.datetime:
    """A UTC datetime as SFMC system time (UTC-6, no daylight saving), without a time zone."""
    return moment.astimezone(zoneinfo.ZoneInfo(SFMC_SYSTEM_TZ)).replace(tzinfo=None)


def raw_cursor(raw: pd.DataFrame, extension: DataExtensionConfig) -> pd.Series:
    """The incremental column of a raw (string) frame as UTC timestamps (NaT where it is empty or
    not a date), converted exactly as the dataset converts it."""
    column = extension.incremental_column
    if column not in raw:
        return pd.Series(pd.NaT, index=raw.index, dtype="datetime64[us, UTC]")
    only = extension.model_copy(update={"columns": [extension.column(column)]})
    return convert_frame(raw[[column]], only).frame[column]


def high_water_mark(valid: pd.DataFrame, extension: DataExtensionConfig, now: dt.datetime) -> dt.datetime | None:
    """The newest cursor among the dataset's rows that is not later than ``now`` (the read time);
    None without one. Future-dated rows (``future_dated``: a typo year, a scheduled date) are left
    out: they never move the window, so rows that arrive later with real dates are still in the next
    one (and they are read again by every incremental read, which the merge makes harmless)."""
    cursor = valid[extension.incremental_column]
    newest = cursor[~future_dated(valid, extension, now)].max() if len(valid) else pd.NaT
    if pd.isna(newest):
        return None
    return newest.to_pydatetime()


def future_dated(valid: pd.DataFrame, extension: DataExtensionConfig, now: dt.datetime) -> pd.Series:
    """Which rows of a typed frame have a cursor later than ``now`` (the read time): a boolean mask."""
    return (valid[extension.incremental_column] > pd.Timestamp(now)).fillna(False).astype(bool)


# -- stored state ------------------------------------------------------------------------------


def state_path(store: DatasetStore, asset: str) -> Path:
    return store.state_path("datasets") / f"{asset}.incremental.json"


def read_state(store: DatasetStore, asset: str) -> IncrementalState | None:
    """The stored state (None: there is none). A file that cannot be read is a ``StorageError``."""
    path = state_path(store, asset)
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return IncrementalState(
            high_water_mark=_parse_time(data["high_water_mark"]),
            last_full_read_at=_parse_time(data["last_full_read_at"]),
            fingerprint=str(data["config_fingerprint"]),
            run_id=str(data.get("run_id", "")),
        )
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise StorageError(
            f"{path} cannot be read as the incremental state of {asset!r} ({type(exc).__name__}: {exc}); "
            "the extension is read in full and the file is written again"
        ) from None


def stored_state(store: DatasetStore, asset: str) -> tuple[IncrementalState | None, str | None]:
    """``(state, None)``, or ``(None, why)`` when the state file cannot be read."""
    try:
        return read_state(store, asset), None
    except StorageError as exc:
        return None, str(exc)


def record_state(store: DatasetStore, asset: str, state: IncrementalState) -> Path:
    """Store the mark (atomically), after the dataset was written and never in a dry run: a run that
    fails leaves the mark where it was, so the next run's window starts at the same place."""
    return write_json(
        {
            "high_water_mark": _format_time(state.high_water_mark),
            "last_full_read_at": _format_time(state.last_full_read_at),
            "config_fingerprint": state.fingerprint,
            "run_id": state.run_id,
        },
        state_path(store, asset),
    )


def next_state(plan: ReadPlan, valid: pd.DataFrame, extension: DataExtensionConfig, *, now: dt.datetime,
               run_id: str) -> IncrementalState:
    """The state to store once ``valid`` (the whole dataset) has landed."""
    last_full = now if plan.mode == FULL else (plan.state.last_full_read_at if plan.state else None)
    return IncrementalState(
        high_water_mark=high_water_mark(valid, extension, now),
        last_full_read_at=last_full,
        fingerprint=config_fingerprint(extension),
        run_id=run_id,
    )


def load_previous(store: DatasetStore, extension: DataExtensionConfig) -> Previous:
    """The previous dataset and quarantine; one that is missing, unreadable or not of the configured
    columns and types (written before the config changed) is None, with the reason."""
    names = [c.name for c in extension.columns]
    expected = {
        "dataset": (store.dataset_path(extension.asset), {c.name: str(pandas_dtype(c)) for c in extension.columns}),
        "quarantine": (store.quarantine_path(extension.asset), None),
    }
    frames, problems = {}, []
    for name, (path, dtypes) in expected.items():
        frames[name] = None
        if not path.exists():
            problems.append(f"{path} does not exist")
            continue
        try:
            frame = read_parquet(path)
        except StorageError as exc:
            problems.append(str(exc))
            continue
        columns = list(dtypes) if dtypes else [*names, *QUARANTINE_COLUMNS]
        found = {column: str(frame[column].dtype) for column in frame.columns}
        if list(frame.columns) != columns or (dtypes and found != dtypes):
            problems.append(f"{path} does not have the configured columns and types")
            continue
        frames[name] = frame
    return Previous(frames["dataset"], frames["quarantine"], "; ".join(problems) or None)


def _parse_time(value) -> dt.datetime | None:
    if value is None:
        return None
    moment = dt.datetime.fromisoformat(value)
    if moment.tzinfo is None:
        raise ValueError(f"{value!r} has no time zone")
    return moment.astimezone(dt.timezone.utc)


def _format_time(value: dt.datetime | None) -> str | None:
    return None if value is None else value.astimezone(dt.timezone.utc).isoformat()
