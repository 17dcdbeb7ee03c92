"""Run the compiled segment plan on an embedded DuckDB over the storage's parquet datasets.

The connection runs in UTC (the plan's instants are UTC), under a memory limit, spilling to
``state/engine-spill`` in the storage: a larger org is slower, not killed. Only the columns the
rules read are scanned (DuckDB pushes the projection and the filters into the parquet scan).
"""

from __future__ import annotations

import datetime as dt
from typing import Iterable

import ibis
import pandas as pd
import pyarrow as pa

from sfmc_pipeline.datasets.storage import DatasetStore
from sfmc_pipeline.segments.compile import PROFILE_KEY, SEGMENT, RuleCompiler
from sfmc_pipeline.segments.rules import Rule, related_datasets

DEFAULT_MEMORY_LIMIT = "2GB"


def connect_duckdb(store: DatasetStore, *, memory_limit: str = DEFAULT_MEMORY_LIMIT, threads: int | None = None):
    """An Ibis DuckDB connection in UTC, with the memory limit and the spill directory in the storage."""
    spill = store.state_path("engine-spill")
    spill.mkdir(parents=True, exist_ok=True)
    con = ibis.duckdb.connect()
    con.raw_sql("SET TimeZone = 'UTC'")
    con.raw_sql(f"SET memory_limit = '{memory_limit}'")
    con.raw_sql(f"SET temp_directory = '{spill}'")
    con.raw_sql("SET preserve_insertion_order = false")
    if threads:
        con.raw_sql(f"SET threads = {int(threads)}")
    return con


def compiler_for(con, store: DatasetStore, profile_dataset: str, segments: list[tuple[str, Rule]], *, key: str,
                 as_of: dt.date, timezone: str) -> RuleCompiler:
    used = sorted(set().union(*(related_datasets(rule) for _, rule in segments))) if segments else []
    profiles = con.read_parquet(store.dataset_path(profile_dataset))
    related = {name: con.read_parquet(store.dataset_path(name)) for name in used}
    return RuleCompiler(profiles, related, key=key, as_of=as_of, timezone=timezone, backend=con.name)


def evaluate_members(store: DatasetStore, profile_dataset: str, segments: Iterable[tuple[str, Rule]], *, key: str,
                     as_of: dt.date, timezone: str = "UTC", con=None) -> pd.DataFrame:
    """``profile_key, segment`` members of every segment, as ``SegmentEvaluator.members`` gives them."""
    segments = list(segments)
    con = con or connect_duckdb(store)
    plan = compiler_for(con, store, profile_dataset, segments, key=key, as_of=as_of, timezone=timezone)
    table = con.to_pyarrow(plan.members(segments))
    return pd.DataFrame({
        name: pd.Series(pd.arrays.ArrowStringArray(table[name].cast(pa.string()).combine_chunks()))
        for name in (PROFILE_KEY, SEGMENT)
    })
