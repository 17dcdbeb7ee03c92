"""The previous successful evaluation, persisted with the datasets (``state/segments/``).

``evaluations.json`` names the latest committed evaluation and the one before it, each a members
parquet file; it is replaced atomically after a successful evaluation only. Statuses compare against
the latest, or the one before when a run repeats it exactly, so a re-run yields the same statuses.
An ``as_of`` earlier than the latest is refused (``refuse_earlier``) unless a run accepts it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import asdict, dataclass

import pandas as pd

from sfmc_pipeline.datasets.storage import (
    DatasetStore,
    read_parquet,
    write_json,
    write_parquet,
)
from sfmc_pipeline.segments.evaluate import MEMBERSHIP_COLUMNS, PROFILE_KEY


@dataclass(frozen=True)
class Evaluation:
    as_of: str
    run_id: str
    fingerprint: str
    members_file: str
    committed_at: str


def fingerprint(as_of: dt.date, members: pd.DataFrame) -> str:
    ordered = members[MEMBERSHIP_COLUMNS].sort_values(MEMBERSHIP_COLUMNS[::-1], ignore_index=True)
    digest = hashlib.sha256(as_of.isoformat().encode())
    digest.update(pd.util.hash_pandas_object(ordered, index=False).to_numpy().tobytes())
    return digest.hexdigest()


class SegmentStateStore:
    def __init__(self, store: DatasetStore):
        self.dir = store.state_path("segments")
        self.index_path = self.dir / "evaluations.json"

    def load(self) -> tuple[Evaluation | None, Evaluation | None]:
        """``(latest, previous)`` committed evaluations."""
        if not self.index_path.exists():
            return None, None
        data = json.loads(self.index_path.read_text(encoding="utf-8"))
        return tuple(Evaluation(**data[k]) if data.get(k) else None for k in ("latest", "previous"))  # type: ignore[return-value]

    def baseline_for(self, as_of: dt.date, members: pd.DataFrame) -> tuple[Evaluation | None, bool]:
        """``(baseline evaluation, is_repeat)`` for an evaluation of ``members`` at ``as_of``."""
        latest, previous = self.load()
        if latest is not None and latest.as_of == as_of.isoformat() and latest.fingerprint == fingerprint(as_of, members):
            return previous, True
        return latest, False

    def members(self, evaluation: Evaluation | None) -> pd.DataFrame | None:
        if evaluation is None:
            return None
        members = read_parquet(self.dir / evaluation.members_file)
        if PROFILE_KEY not in members:  # written before the key column had its own name
            members = members.rename(columns={c: PROFILE_KEY for c in members.columns if c != "segment"})
        return members

    def commit(self, as_of: dt.date, run_id: str, members: pd.DataFrame) -> Evaluation:
        """Record ``members`` as the latest successful evaluation (the old latest becomes previous).
        A repeat of the latest evaluation changes nothing."""
        latest, previous = self.load()
        fp = fingerprint(as_of, members)
        if latest is not None and latest.as_of == as_of.isoformat() and latest.fingerprint == fp:
            return latest
        evaluation = Evaluation(
            as_of=as_of.isoformat(),
            run_id=run_id,
            fingerprint=fp,
            members_file=f"members-{run_id}.parquet",
            committed_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        )
        write_parquet(members[MEMBERSHIP_COLUMNS], self.dir / evaluation.members_file)
        write_json({"latest": asdict(evaluation), "previous": asdict(latest) if latest else None}, self.index_path)
        keep = {evaluation.members_file} | ({latest.members_file} if latest else set())
        for stale in self.dir.glob("members-*.parquet"):
            if stale.name not in keep:
                stale.unlink()
        return evaluation


ACCEPT_EARLIER_CONFIG = "ops: {segment_memberships: {config: {accept_earlier_as_of: true}}}"


def refuse_earlier(as_of: dt.date, source: str, latest: Evaluation | None) -> str | None:
    """Why an evaluation as of ``as_of`` (from ``source``) may not run after ``latest``, or None when it may:
    statuses against an older view would write older memberships to the CRM (the same date is a repeat)."""
    if latest is None or as_of.isoformat() >= latest.as_of:
        return None
    return (
        f"Segment evaluation as of {as_of} ({source}) is earlier than the last successful evaluation, as of "
        f"{latest.as_of} (run {latest.run_id}, committed {latest.committed_at}). Evaluations only move forward: "
        "statuses against an older view would write older memberships to the CRM, so nothing was written. Check "
        "the evaluation date (run config as_of, SFMC_PIPELINE_AS_OF, evaluation.as_of in pipeline.yaml, or the "
        f"embedded sample day). To evaluate {as_of} on purpose and make it the new baseline, run once with run "
        f"config `{ACCEPT_EARLIER_CONFIG}`."
    )
