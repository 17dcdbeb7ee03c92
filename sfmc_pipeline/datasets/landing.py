"""Land a read: the quarantine threshold and the volume guard decide whether it replaces the dataset.

A landing that passes writes the quarantine and the dataset (each atomically) and, outside a dry
run, records the volume guard's count and the incremental state. A refused one writes only the
quarantine it would have landed, to ``quarantine/rejected/`` (never the base of a later merge), and
leaves the dataset and its quarantine in place. A read during which another run landed the dataset
is not merged into it: it fails, retryably.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from sfmc_pipeline.config.data_extensions import DataExtensionConfig
from sfmc_pipeline.datasets.incremental import (
    IncrementalState,
    next_state,
    record_state,
    stored_state,
)
from sfmc_pipeline.datasets.reading import LandedRead
from sfmc_pipeline.datasets.storage import DatasetStore
from sfmc_pipeline.datasets.volume import VolumeState, VolumeVerdict
from sfmc_pipeline.sfmc.source import ExtractError


@dataclass(frozen=True)
class LandingRules:
    """What a landing must meet: the extension's quarantine threshold and volume guard."""

    extension: DataExtensionConfig
    threshold: float  # the largest quarantined share that lands
    max_drop: float  # the largest drop in valid rows that lands
    window_days: int  # the volume guard's comparison window

    def volume(self, store: DatasetStore, rows_valid: int, now: dt.datetime) -> VolumeVerdict:
        """The volume guard's verdict on ``rows_valid`` valid rows."""
        return VolumeState(store).verdict(self.extension.asset, rows_valid, now=now, window_days=self.window_days,
                                          max_drop=self.max_drop, allow_empty=self.extension.allow_empty)


@dataclass(frozen=True)
class QuarantineShare:
    """Quarantined rows among all the rows the dataset stands for (its valid rows and its quarantine). For a
    full read that is the extract; for an incremental read the merged dataset, so the threshold means the same
    whatever the size of the delta (one bad row in a 10-row delta is not 10% of the Data Extension)."""

    quarantined: int
    rows: int

    @property
    def value(self) -> float:
        return self.quarantined / self.rows if self.rows else 0.0


@dataclass(frozen=True)
class InPlace:
    """The dataset and quarantine that stay in place when a run fails, as counted from their files."""

    rows_valid: int
    rows_quarantined: int

    @property
    def share(self) -> QuarantineShare:
        return QuarantineShare(self.rows_quarantined, self.rows_valid + self.rows_quarantined)

    @classmethod
    def load(cls, store: DatasetStore, asset: str) -> "InPlace | None":
        """The landed dataset's counts (a missing quarantine holds none); None when there is no dataset, or
        it cannot be read: nothing to describe."""
        if not store.dataset_path(asset).exists():
            return None
        counts = []
        for path in (store.dataset_path(asset), store.quarantine_path(asset)):
            try:
                counts.append(pq.ParquetFile(path).metadata.num_rows if path.exists() else 0)
            except (pa.ArrowException, OSError):
                return None
        return cls(*counts)


@dataclass(frozen=True)
class Refusal:
    """Why a read did not land, and what stays in place."""

    over_threshold: bool  # the quarantined share was above the threshold (else: the volume guard)
    in_place: InPlace | None  # the dataset that stays in place (None: there is none)
    rejected: Path  # the quarantine the read would have landed


@dataclass(frozen=True)
class Landed:
    """The outcome of ``land_read``: the figures it was judged on, and where it landed or why not."""

    share: QuarantineShare
    volume: VolumeVerdict
    accepted: bool  # a volume verdict that failed, accepted by the run config
    state: IncrementalState | None  # the incremental state it stores (None: no mark kept)
    refusal: Refusal | None = None
    quarantine_path: Path | None = None
    dataset_path: Path | None = None


def land_read(store: DatasetStore, read: LandedRead, rules: LandingRules, *, accept_volume_change: bool,
              dry_run: bool, now: dt.datetime, run_id: str) -> Landed:
    """Land ``read`` in ``store`` unless the threshold or the volume guard refuses it (see the module
    docstring); the caller holds the storage lease."""
    plan, landing, asset = read.plan, read.landing, rules.extension.asset
    if plan.tracks_mark and stored_state(store, asset) != read.stored:
        raise ExtractError(
            f"{asset}: another run landed this dataset while this run read {rules.extension.key!r}, so this read "
            "is not merged into it; the step is tried again.",
            retryable=True,
        )
    share = QuarantineShare(len(landing.quarantine), len(landing.valid) + len(landing.quarantine))
    volume_state = VolumeState(store)
    volume = rules.volume(store, len(landing.valid), now)
    accepted = accept_volume_change and not volume.passed
    state = next_state(plan, landing.valid, rules.extension, now=now, run_id=run_id) if plan.tracks_mark else None
    over_threshold = share.value > rules.threshold
    if over_threshold or not (volume.passed or accepted):
        in_place = InPlace.load(store, asset)  # before anything is written
        rejected = store.write_rejected_quarantine(asset, landing.quarantine)
        return Landed(share, volume, accepted, state, refusal=Refusal(over_threshold, in_place, rejected))
    store.remove_rejected_quarantine(asset)
    quarantine_path = store.write_quarantine(asset, landing.quarantine)
    dataset_path = store.write_dataset(asset, landing.valid)
    if not dry_run:
        volume_state.record(asset, len(landing.valid), run_id, now=now, window_days=rules.window_days,
                            new_window=accepted)
        if plan.tracks_mark:
            record_state(store, asset, state)
    return Landed(share, volume, accepted, state, quarantine_path=quarantine_path, dataset_path=dataset_path)
