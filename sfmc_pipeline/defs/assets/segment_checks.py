"""The blocking checks of ``segment_statuses``, computed by the engine on the statuses written for this
evaluation before they replace the dataset: one status per (profile, segment) consistent with the current and
previous memberships, and every current member a valid (or held) profile."""

from __future__ import annotations

from typing import Callable

import dagster as dg
import ibis.expr.types as ir
import pandas as pd

from sfmc_pipeline.segments.columns import PROFILE_KEY
from sfmc_pipeline.segments.engine import SegmentEngine
from sfmc_pipeline.segments.memberships import profile_keys, unknown_keys
from sfmc_pipeline.segments.statuses import consistency_problems, members_only


def status_checks(engine: SegmentEngine, counts: pd.DataFrame, current: ir.Table, previous: ir.Table | None,
                  profiles: ir.Table, key: str, held: set[str],
                  shown_keys: Callable[[list], list[str]]) -> list[dg.AssetCheckResult]:
    """``counts``: the written statuses per (segment, status), with their count ``n``."""
    rows = {name: int(engine.value(table.count())) if table is not None else 0
            for name, table in (("current", current), ("previous", previous))}
    problems = consistency_problems(counts, rows["current"], rows["previous"])
    consistency = dg.AssetCheckResult(check_name="statuses_consistent", passed=not any(problems.values()),
                                      metadata=problems)
    return [consistency, valid_profiles_check(engine, current, profiles, key, held, shown_keys)]


def valid_profiles_check(engine: SegmentEngine, current: ir.Table, profiles: ir.Table, key: str, held: set[str],
                         shown_keys: Callable[[list], list[str]]) -> dg.AssetCheckResult:
    """Every current member is a valid profile, or a held one (its row quarantined, its statuses kept)."""
    unknown = unknown_keys(members_only(current), profile_keys(profiles, key), held)
    count = int(engine.value(unknown.count()))
    sample = engine.to_pandas(unknown.select(PROFILE_KEY).limit(5))[PROFILE_KEY].tolist() if count else []
    return dg.AssetCheckResult(
        check_name="members_are_valid_profiles",
        passed=count == 0,
        metadata={"unknown_members": count, "sample": ", ".join(shown_keys(sample))},
    )
