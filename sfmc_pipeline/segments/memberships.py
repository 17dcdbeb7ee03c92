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
from sfmc_pipeline.segments.engine import SegmentEngine, compiler_for
from sfmc_pipeline.segments.rules import datasets_read


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
    return datasets_read(s.rule for s in pipeline.segments)


def key_table(keys: set[str]) -> ir.Table:
    """A one-column table of profile keys (held profiles, say), portable to every engine."""
    return ibis.memtable(pa.table({PROFILE_KEY: pa.array(sorted(keys), type=pa.string())}))


def profile_keys(table: ir.Table, key: str) -> ir.Table:
    """``table``'s ``key`` column as a ``profile_key`` string table (what memberships call the profile)."""
    return table.select(**{PROFILE_KEY: table[key].cast("string")})


def unknown_keys(rows: ir.Table, valid: ir.Table, held: set[str]) -> ir.Table:
    """The rows of ``rows`` (a ``profile_key`` column) whose key, null included, is neither one of ``valid``
    nor a held profile's: orphan related rows, or members that are not profiles."""
    rows = rows.anti_join(valid, PROFILE_KEY)
    return rows.anti_join(key_table(held), PROFILE_KEY) if held else rows


def write_memberships(engine: SegmentEngine, pipeline: PipelineConfig, as_of: dt.date, held: set[str],
                      target: Path) -> MembershipSummary:
    """Evaluate every segment of ``pipeline`` as of ``as_of`` and write ``profile_key, segment`` to ``target``."""
    key = pipeline.profile_key
    segments = [(s.name, s.rule) for s in pipeline.segments]
    compiler = compiler_for(engine.con, engine.store, pipeline.profiles.dataset, segments, key=key, as_of=as_of,
                            timezone=pipeline.evaluation.timezone)
    engine.write(compiler.members(segments), target)
    written = engine.parquet(target)
    counts = engine.to_pandas(written.group_by(SEGMENT).aggregate(members=written.count()))
    per_segment = dict(zip(counts[SEGMENT].astype(str), counts["members"].astype(int)))
    valid = profile_keys(compiler.profiles, key)
    return MembershipSummary(
        profiles=int(engine.value(compiler.profiles.count())),
        members={name: per_segment.get(name, 0) for name, _ in segments},
        orphans={name: int(engine.value(unknown_keys(profile_keys(table, key), valid, held).count()))
                 for name, table in compiler.related.items()},
    )


def present_keys(engine: SegmentEngine, pipeline: PipelineConfig, keys: set[str]) -> set[str]:
    """Which of ``keys`` are keys of valid rows of the profile dataset."""
    if not keys:
        return set()
    valid = profile_keys(engine.dataset(pipeline.profiles.dataset), pipeline.profile_key)
    found = valid.semi_join(key_table(keys), PROFILE_KEY)
    return set(engine.to_pandas(found)[PROFILE_KEY].astype(str))
