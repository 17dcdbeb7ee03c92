"""Who is in each segment now: the compiled rules run on the engine over the stored datasets, the
memberships written as a parquet dataset by the engine, and the figures a user reads (profiles, members
per segment, orphan related rows) computed by the engine too."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import ibis
import ibis.expr.types as ir
import pyarrow as pa

from sfmc_pipeline.config.pipeline import PipelineConfig
from sfmc_pipeline.segments.columns import PROFILE_KEY, SEGMENT
from sfmc_pipeline.segments.compile import RuleCompiler
from sfmc_pipeline.segments.engine import SegmentEngine
from sfmc_pipeline.segments.rules import related_datasets


@dataclass(frozen=True)
class MembershipSummary:
    profiles: int
    members: dict[str, int]  # per segment, in the config's order, zeros included
    orphans: dict[str, int]  # per related dataset: rows whose key is neither a valid nor a held profile

    @property
    def total(self) -> int:
        return sum(self.members.values())


def used_datasets(pipeline: PipelineConfig) -> list[str]:
    """The related datasets the segment rules read (``has_related``)."""
    return sorted(set().union(*(related_datasets(s.rule) for s in pipeline.segments)) if pipeline.segments else set())


def key_table(keys: set[str]) -> ir.Table:
    """A one-column table of profile keys (held profiles, say), portable to every engine."""
    return ibis.memtable(pa.table({PROFILE_KEY: pa.array(sorted(keys), type=pa.string())}))


def write_memberships(engine: SegmentEngine, pipeline: PipelineConfig, as_of: dt.date, held: set[str],
                      target: Path) -> MembershipSummary:
    """Evaluate every segment of ``pipeline`` as of ``as_of`` and write ``profile_key, segment`` to ``target``."""
    key = pipeline.profile_key
    profiles = engine.dataset(pipeline.profiles.dataset)
    related = {name: engine.dataset(name) for name in used_datasets(pipeline)}
    compiler = RuleCompiler(profiles, related, key=key, as_of=as_of, timezone=pipeline.evaluation.timezone,
                            backend=engine.backend)
    engine.write(compiler.members((s.name, s.rule) for s in pipeline.segments), target)
    written = engine.parquet(target)
    counts = engine.to_pandas(written.group_by(SEGMENT).aggregate(members=written.count()))
    per_segment = dict(zip(counts[SEGMENT].astype(str), counts["members"].astype(int)))
    valid_keys = profiles.select(**{PROFILE_KEY: profiles[key].cast("string")})
    orphans = {name: orphan_rows(table, key, valid_keys, held) for name, table in related.items()}
    return MembershipSummary(
        profiles=int(engine.value(profiles.count())),
        members={s.name: per_segment.get(s.name, 0) for s in pipeline.segments},
        orphans={name: int(engine.value(count)) for name, count in orphans.items()},
    )


def orphan_rows(related: ir.Table, key: str, valid_keys: ir.Table, held: set[str]) -> ir.Scalar:
    """Related rows whose key (null included) is neither a valid profile nor a held one: they never match."""
    rows = related.select(**{PROFILE_KEY: related[key].cast("string")})
    rows = rows.anti_join(valid_keys, PROFILE_KEY)
    if held:
        rows = rows.anti_join(key_table(held), PROFILE_KEY)
    return rows.count()


def present_keys(engine: SegmentEngine, pipeline: PipelineConfig, keys: set[str]) -> set[str]:
    """Which of ``keys`` are keys of valid rows of the profile dataset."""
    if not keys:
        return set()
    profiles = engine.dataset(pipeline.profiles.dataset)
    valid = profiles.select(**{PROFILE_KEY: profiles[pipeline.profile_key].cast("string")})
    found = valid.semi_join(key_table(keys), PROFILE_KEY)
    return set(engine.to_pandas(found)[PROFILE_KEY].astype(str))
