"""The volume guard: an extract that lost most of its rows is a broken read, not a business fact.

An empty extract, or one whose valid rows fall by more than the allowed share (default 20%) below
the last successful materialization, fails before anything downstream runs; otherwise an empty
Contacts file would exit every segment membership and rewrite the whole CRM. The count of the last
successful materialization is kept in ``state/datasets/<asset>.json`` and only moves when a
materialization succeeds outside a dry run.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from sfmc_pipeline.datasets.storage import DatasetStore, StorageError, write_json


@dataclass(frozen=True)
class VolumeVerdict:
    rows_valid: int
    previous: int | None  # valid rows of the last successful materialization (None: first one)
    max_drop: float
    allow_empty: bool

    @property
    def drop(self) -> float:
        """Share of the previous rows that is gone (0 when rows grew or there is no previous count)."""
        if not self.previous:
            return 0.0
        return max(0.0, 1 - self.rows_valid / self.previous)

    @property
    def passed(self) -> bool:
        if self.rows_valid == 0:
            return self.allow_empty
        return self.drop <= self.max_drop

    def summary(self, asset: str) -> str:
        """What the guard found, with both counts (no advice)."""
        before = ("no earlier materialization" if self.previous is None
                  else f"{self.previous:,} at the last successful materialization")
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
            f"`ops: {{{asset}: {{config: {{accept_volume_change: true}}}}}}`, {allow} for this Data Extension in the "
            "pipeline config."
        )


class VolumeState:
    """Valid-row counts of the last successful materialization of each dataset."""

    def __init__(self, store: DatasetStore):
        self.store = store

    def _path(self, asset: str):
        return self.store.state_path("datasets") / f"{asset}.json"

    def last(self, asset: str) -> int | None:
        """The count of the last successful materialization (None: there was none). A file that cannot be
        read is a ``StorageError`` naming it and the fix."""
        path = self._path(asset)
        if path.exists():
            try:
                return int(json.loads(path.read_text(encoding="utf-8"))["rows_valid"])
            except (OSError, ValueError, TypeError, KeyError) as exc:
                raise StorageError(
                    f"{path} cannot be read as the volume guard's row count of {asset!r} ({type(exc).__name__}: "
                    f"{exc}). Delete it: the guard then compares with the row count of the landed dataset."
                ) from None
        dataset = self.store.dataset_path(asset)  # landed before counts were kept: its row count
        if not dataset.exists():
            return None
        try:
            return pq.ParquetFile(dataset).metadata.num_rows
        except (pa.ArrowException, OSError) as exc:
            raise StorageError(
                f"{dataset} cannot be read as parquet ({type(exc).__name__}: {exc}); it was damaged or written by "
                "something else. Delete it and materialize the asset that writes it again."
            ) from None

    def record(self, asset: str, rows_valid: int, run_id: str) -> None:
        at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        write_json({"rows_valid": rows_valid, "run_id": run_id, "materialized_at": at}, self._path(asset))
