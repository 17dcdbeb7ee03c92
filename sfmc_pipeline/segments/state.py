"""The previous successful evaluation, persisted with the datasets (``state/segments/``).

``evaluations.json`` names the latest committed evaluation and the one before it, each a members
parquet file; it is replaced atomically after a successful evaluation only. Statuses compare against
the latest, or the one before when a run repeats it exactly (same date, same members), so a re-run
yields the same statuses. An ``as_of`` earlier than the latest is refused (``refuse_earlier``) unless a
run accepts it. The members files are read and compared by the engine, never loaded whole.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import ibis.expr.types as ir

from sfmc_pipeline.datasets.storage import DatasetStore, write_json
from sfmc_pipeline.segments.columns import PROFILE_KEY
from sfmc_pipeline.segments.engine import SegmentEngine
from sfmc_pipeline.segments.statuses import members_only


@dataclass(frozen=True)
class Evaluation:
    as_of: str
    run_id: str
    members_file: str
    committed_at: str
    fingerprint: str = ""  # written by earlier versions; a repeat is now found by comparing the members


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

    def members_path(self, evaluation: Evaluation) -> Path:
        return self.dir / evaluation.members_file

    def members(self, engine: SegmentEngine, evaluation: Evaluation | None) -> ir.Table | None:
        """The evaluation's ``profile_key, segment`` members as an engine table."""
        if evaluation is None:
            return None
        members = engine.parquet(self.members_path(evaluation))
        if PROFILE_KEY not in members.columns:  # written before the key column had its own name
            members = members.rename({PROFILE_KEY: next(c for c in members.columns if c != "segment")})
        return members_only(members)

    def baseline_for(self, engine: SegmentEngine, as_of: dt.date, current: ir.Table) -> tuple[Evaluation | None, bool]:
        """``(baseline evaluation, is_repeat)`` for an evaluation of ``current`` at ``as_of``."""
        latest, previous = self.load()
        if latest is not None and self.is_repeat(engine, latest, as_of, current):
            return previous, True
        return latest, False

    def is_repeat(self, engine: SegmentEngine, latest: Evaluation, as_of: dt.date, current: ir.Table) -> bool:
        """``current`` at ``as_of`` is exactly ``latest``: same date, same (profile, segment) pairs."""
        if latest.as_of != as_of.isoformat():
            return False
        before = self.members(engine, latest)
        now = members_only(current)
        # neither side lists a pair twice (the statuses check holds the current ones to that), so the same
        # number of pairs and none of the current ones missing from the latest means the same pairs
        if engine.value(now.count()) != engine.value(before.count()):
            return False
        return engine.value(now.difference(before, distinct=False).count()) == 0

    def commit(self, engine: SegmentEngine, as_of: dt.date, run_id: str, current: ir.Table, *,
               is_repeat: bool) -> Evaluation:
        """Record ``current`` as the latest successful evaluation (the old latest becomes previous). A repeat
        of the latest evaluation (``baseline_for`` said so) changes nothing."""
        latest, _ = self.load()
        if latest is not None and is_repeat:
            return latest
        evaluation = Evaluation(
            as_of=as_of.isoformat(),
            run_id=run_id,
            members_file=f"members-{run_id}.parquet",
            committed_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        )
        engine.write(members_only(current), self.members_path(evaluation))
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
