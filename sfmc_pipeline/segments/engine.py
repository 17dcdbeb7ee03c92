"""The engine the segment step runs on: an Ibis connection over the storage's parquet datasets.

DuckDB (embedded, the default) runs in UTC (the plan's instants are UTC), under a memory limit,
spilling to ``state/engine-spill`` in the storage: a larger org is slower, not killed. Spark is chosen
with ``evaluation.engine: spark``. Only the columns the rules read are scanned; results are written
as parquet by the engine, and only small results (counts, samples) reach Python.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, Iterable, Mapping

import ibis
import ibis.expr.types as ir
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from sfmc_pipeline.config.segments import EvaluationConfig
from sfmc_pipeline.datasets.storage import (
    DatasetStore,
    StorageError,
    as_pandas,
    atomic_path,
    unreadable_parquet,
)
from sfmc_pipeline.segments.columns import PROFILE_KEY, SEGMENT
from sfmc_pipeline.segments.compile import RuleCompiler
from sfmc_pipeline.segments.rules import Rule, datasets_read

DEFAULT_MEMORY_LIMIT = EvaluationConfig.model_fields["memory_limit"].default


def connect_duckdb(store: DatasetStore | None, *, memory_limit: str = DEFAULT_MEMORY_LIMIT,
                   threads: int | None = None):
    """An Ibis DuckDB connection in UTC, with the memory limit and (given a storage) its spill directory."""
    con = ibis.duckdb.connect()
    con.raw_sql("SET TimeZone = 'UTC'")
    con.raw_sql(f"SET memory_limit = '{memory_limit}'")
    if store is not None:
        spill = store.state_path("engine-spill")
        spill.mkdir(parents=True, exist_ok=True)
        con.raw_sql(f"SET temp_directory = '{spill}'")
    con.raw_sql("SET preserve_insertion_order = false")
    if threads:
        con.raw_sql(f"SET threads = {int(threads)}")
    return con


class SegmentEngine:
    """The storage's datasets as engine tables, and writing results back as parquet datasets."""

    def __init__(self, con, store: DatasetStore | None):
        self.con = con
        self.store = store

    @classmethod
    def open(cls, store: DatasetStore, evaluation: EvaluationConfig) -> "SegmentEngine":
        if evaluation.engine == "spark":
            from sfmc_pipeline.segments.spark import connect_spark  # pyspark is an optional extra

            return cls(connect_spark(store, master=evaluation.spark_master or "local[*]"), store)
        return cls(connect_duckdb(store, memory_limit=evaluation.memory_limit), store)

    @classmethod
    def in_memory(cls) -> "SegmentEngine":
        """A DuckDB engine for frames held in memory (segment examples, small checks)."""
        return cls(connect_duckdb(None), None)

    @property
    def backend(self) -> str:
        return self.con.name

    def close(self) -> None:
        """Close an embedded DuckDB; a Spark session stays up for the next step of the process (starting one
        takes seconds), and ends with the process."""
        if self.backend == "duckdb":
            self.con.disconnect()

    def __enter__(self) -> "SegmentEngine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- reading -------------------------------------------------------------------------------------

    def dataset(self, name: str) -> ir.Table:
        path = self.store.dataset_path(name)
        if not path.exists():
            raise StorageError(f"Dataset {name!r} has not been materialized yet ({path} does not exist); "
                               f"materialize the asset {name!r} first.")
        return self.parquet(path)

    def parquet(self, path: Path) -> ir.Table:
        try:
            return self.con.read_parquet(path)
        except Exception as exc:  # the backend's own error type: DuckDB's, Spark's
            raise unreadable_parquet(path, exc) from None

    @staticmethod
    def frame(frame: pd.DataFrame) -> ir.Table:
        """An in-memory frame as a table any engine reads."""
        return ibis.memtable(pa.Table.from_pandas(frame, preserve_index=False))

    def to_pandas(self, rows: ir.Table) -> pd.DataFrame:
        """A small result (counts, samples) as pandas, strings as arrow strings."""
        return as_pandas(self.con.to_pyarrow(rows))

    def value(self, scalar: ir.Scalar) -> Any:
        return self.con.to_pyarrow(scalar).as_py()

    # --- writing -------------------------------------------------------------------------------------

    def write(self, rows: ir.Table, target: Path) -> Path:
        """Write ``rows`` as one parquet file, atomically (an interrupted write leaves the old file)."""
        with atomic_path(target) as tmp:
            if self.backend == "duckdb":  # DuckDB streams the query into the file itself
                self.con.to_parquet(rows, tmp)
            else:
                batches = self.con.to_pyarrow_batches(rows)
                with pq.ParquetWriter(tmp, batches.schema) as writer:
                    for batch in batches:
                        writer.write_batch(batch)
        return target


def compiler_for(con, store: DatasetStore, profile_dataset: str, segments: list[tuple[str, Rule]], *, key: str,
                 as_of: dt.date, timezone: str) -> RuleCompiler:
    """The rule compiler over the storage's datasets: the profiles and every related dataset a rule reads."""
    engine = SegmentEngine(con, store)
    profiles = engine.dataset(profile_dataset)  # first: a missing or damaged profile dataset is named first
    related = {name: engine.dataset(name) for name in datasets_read(rule for _, rule in segments)}
    return RuleCompiler(profiles, related, key=key, as_of=as_of, timezone=timezone, backend=con.name)


def evaluate_frames(profiles: pd.DataFrame, related: Mapping[str, pd.DataFrame], segments: Iterable[tuple[str, Rule]],
                    *, key: str, as_of: dt.date, timezone: str = "UTC") -> pd.DataFrame:
    """``profile_key, segment`` members of every segment over frames in memory, in the segments' order then
    by key."""
    segments = list(segments)
    with SegmentEngine.in_memory() as engine:
        compiler = RuleCompiler(engine.frame(profiles), {name: engine.frame(frame) for name, frame in related.items()},
                                key=key, as_of=as_of, timezone=timezone, backend=engine.backend)
        return _strings(engine.con.to_pyarrow(_ordered(compiler.members(segments), segments)))


def evaluate_members(store: DatasetStore, profile_dataset: str, segments: Iterable[tuple[str, Rule]], *, key: str,
                     as_of: dt.date, timezone: str = "UTC", con=None) -> pd.DataFrame:
    """``profile_key, segment`` members of every segment over the stored datasets, as a frame in the segments'
    order then by key (tests, small storages; the segment asset writes them with ``SegmentEngine.write``)."""
    segments = list(segments)
    con = con or connect_duckdb(store)
    plan = compiler_for(con, store, profile_dataset, segments, key=key, as_of=as_of, timezone=timezone)
    return _strings(con.to_pyarrow(_ordered(plan.members(segments), segments)))


def _ordered(members: ir.Table, segments: list[tuple[str, Rule]]) -> ir.Table:
    if not segments:
        return members
    position = ibis.cases(*((members[SEGMENT] == name, i) for i, (name, _) in enumerate(segments)), else_=len(segments))
    return members.order_by([position, members[PROFILE_KEY]])


def _strings(table: pa.Table) -> pd.DataFrame:
    return pd.DataFrame({
        name: pd.Series(pd.arrays.ArrowStringArray(table[name].cast(pa.string()).combine_chunks()))
        for name in (PROFILE_KEY, SEGMENT)
    })
