"""The volume guard: an extract that lost most of its rows is a broken read, not a business fact.

An empty extract, or one whose valid rows fall by more than the allowed share below the
**reference**, fails before anything downstream runs (an empty Contacts file would otherwise exit
every segment membership). The reference is the largest valid-row count of the successful
materializations in a rolling window (``settings.guard_window_days``), so two 40% drops are caught
as the 64% drop they add up to; with no success in the window, the last success.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from sfmc_pipeline.datasets.storage import DatasetStore, StorageError, write_json


@dataclass(frozen=True)
class Success:
    """One successful materialization's valid rows."""

    rows_valid: int
    materialized_at: dt.datetime | None  # UTC; None: unknown (a dataset landed before counts were kept)
    run_id: str = ""

    def to_json(self) -> dict:
        at = self.materialized_at.astimezone(dt.timezone.utc).isoformat(timespec="seconds") if self.materialized_at \
            else None
        return {"rows_valid": self.rows_valid, "run_id": self.run_id, "materialized_at": at}

    @classmethod
    def from_json(cls, data: dict) -> "Success":
        at = data.get("materialized_at")
        moment = dt.datetime.fromisoformat(at) if at else None
        if moment is not None and moment.tzinfo is None:
            raise ValueError(f"materialized_at {at!r} has no time zone")
        return cls(int(data["rows_valid"]), moment, str(data.get("run_id") or ""))


@dataclass(frozen=True)
class Reference:
    """What the guard compares with: the largest count in the window (or the last success)."""

    success: Success
    latest: bool  # it is the last successful materialization
    window_days: int

    @property
    def rows_valid(self) -> int:
        return self.success.rows_valid

    def describe(self) -> str:
        if self.latest:
            return f"{self.rows_valid:,} at the last successful materialization"
        when = self.success.materialized_at.strftime("%Y-%m-%d %H:%M UTC")
        return (f"{self.rows_valid:,}, the most valid rows of a successful materialization in the last "
                f"{self.window_days} day(s) (on {when}, run {self.success.run_id[:8] or '?'})")


@dataclass(frozen=True)
class VolumeVerdict:
    rows_valid: int
    reference: Reference | None  # None: no earlier successful materialization
    max_drop: float
    allow_empty: bool
    previous: int | None = None  # valid rows of the last successful materialization

    @property
    def drop(self) -> float:
        """Share of the reference rows that is gone (0 when rows grew or there is no reference)."""
        if self.reference is None or not self.reference.rows_valid:
            return 0.0
        return max(0.0, 1 - self.rows_valid / self.reference.rows_valid)

    @property
    def passed(self) -> bool:
        if self.rows_valid == 0:
            return self.allow_empty
        return self.drop <= self.max_drop

    def summary(self, asset: str) -> str:
        """What the guard found, with both counts (no advice)."""
        before = "no earlier materialization" if self.reference is None else self.reference.describe()
        if self.rows_valid == 0:
            return f"{asset}: the extract has no valid rows ({before})"
        return (
            f"{asset}: {self.rows_valid:,} valid rows against {before}, a drop of {self.drop:.0%}, "
            f"more than the {self.max_drop:.0%} allowed"
        )

    def explain(self, asset: str) -> str:
        """Why the materialization failed and both ways to accept the change."""
        allow = "or set `allow_empty: true`" if self.rows_valid == 0 else "or raise `max_row_drop`"
        return (
            f"{self.summary(asset)}. This looks like an incomplete or wrong extract, so the dataset was not "
            "updated and nothing downstream ran. If the change is real, accept it for one run with run config "
            f"`ops: {{{asset}: {{config: {{accept_volume_change: true}}}}}}` (that run starts a new comparison "
            f"window), {allow} for this Data Extension in the pipeline config."
        )


class VolumeState:
    """The valid-row counts of each dataset's successful materializations, in
    ``state/datasets/<asset>.json``: the last success (``rows_valid``, ``run_id``, ``materialized_at``)
    and ``history``, the successes that can still be a window's largest (a count is dropped once a
    later one is at least as large, or once it is older than the window). It only moves when a
    materialization succeeds outside a dry run; an accepted drop (``accept_volume_change``) starts a
    new window. A file of the old single-count form is read as a history of one."""

    def __init__(self, store: DatasetStore):
        self.store = store

    def _path(self, asset: str):
        return self.store.state_path("datasets") / f"{asset}.json"

    def history(self, asset: str) -> list[Success]:
        """The kept successes, oldest first ([]: there was none). A file that cannot be read is a
        ``StorageError`` naming it and the fix."""
        path = self._path(asset)
        if path.exists():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                kept = [Success.from_json(entry) for entry in data["history"]] if "history" in data else []
                return kept or [Success.from_json(data)]  # the old form: the last count only
            except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
                raise StorageError(
                    f"{path} cannot be read as the volume guard's row count of {asset!r} ({type(exc).__name__}: "
                    f"{exc}). Delete it: the guard then compares with the row count of the landed dataset."
                ) from None
        dataset = self.store.dataset_path(asset)  # landed before counts were kept: its row count
        if not dataset.exists():
            return []
        try:
            return [Success(pq.ParquetFile(dataset).metadata.num_rows, None)]
        except (pa.ArrowException, OSError) as exc:
            raise StorageError(
                f"{dataset} cannot be read as parquet ({type(exc).__name__}: {exc}); it was damaged or written by "
                "something else. Delete it and materialize the asset that writes it again."
            ) from None

    def verdict(self, asset: str, rows_valid: int, *, now: dt.datetime, window_days: int, max_drop: float,
                allow_empty: bool) -> VolumeVerdict:
        kept = self.history(asset)
        return VolumeVerdict(rows_valid=rows_valid, reference=reference(kept, now, window_days), max_drop=max_drop,
                             allow_empty=allow_empty, previous=kept[-1].rows_valid if kept else None)

    def record(self, asset: str, rows_valid: int, run_id: str, *, now: dt.datetime, window_days: int,
               new_window: bool = False) -> None:
        """Add a success; ``new_window``: it starts a new window (an accepted drop), the earlier counts are
        forgotten."""
        added = Success(rows_valid, now, run_id)
        start = now - dt.timedelta(days=window_days)
        kept = [] if new_window else [
            s for s in self.history(asset)
            if s.rows_valid > rows_valid and s.materialized_at is not None and s.materialized_at >= start
        ]  # a count the new one equals or exceeds can never again be a window's largest
        write_json({**added.to_json(), "history": [s.to_json() for s in [*kept, added]]}, self._path(asset))


def reference(kept: list[Success], now: dt.datetime, window_days: int) -> Reference | None:
    """The largest count among ``kept`` dated within ``window_days`` of ``now`` (the latest of equal
    ones), else the last success; None when there is none."""
    if not kept:
        return None
    start = now - dt.timedelta(days=window_days)
    in_window = [s for s in kept if s.materialized_at is not None and s.materialized_at >= start]
    if not in_window:
        return Reference(kept[-1], latest=True, window_days=window_days)
    best = max(reversed(in_window), key=lambda s: s.rows_valid)  # max keeps the first: the latest of equals
    return Reference(best, latest=best is kept[-1], window_days=window_days)
