"""The segment plan as one SQL query for a warehouse (Snowflake), compiled without a connection.

``sql_for(pipeline, "snowflake")`` builds the same plan the engines run (``segments/compile.py``) on
unbound tables named after the datasets, typed as the datasets land (``datasets/conversion.py``), and
prints it in the warehouse's dialect: ``profile_key, segment`` of every configured segment (unordered).
The warehouse reads the datasets where it can reach them (e.g. Snowflake external
tables over a stage holding the parquet files; see docs/segment-engines.md).
"""

from __future__ import annotations

import datetime as dt

import ibis
import pandas as pd
import pyarrow as pa

from sfmc_pipeline.config.data_extensions import DataExtensionConfig
from sfmc_pipeline.config.pipeline import PipelineConfig
from sfmc_pipeline.datasets.conversion import pandas_dtype
from sfmc_pipeline.errors import ConfigurationError
from sfmc_pipeline.segments.compile import LOCAL_TIME, RuleCompiler
from sfmc_pipeline.segments.evaluation_date import resolve_as_of
from sfmc_pipeline.segments.rules import datasets_read

WAREHOUSE_DIALECTS = ("snowflake",)  # the dialects with a LOCAL_TIME entry besides the engines run here


def dataset_schema(extension: DataExtensionConfig) -> pa.Schema:
    """The arrow schema a dataset lands with (its configured columns, typed as the conversion types them)."""
    empty = pd.DataFrame({column.name: pd.Series([], dtype=pandas_dtype(column)) for column in extension.columns})
    return pa.Schema.from_pandas(empty, preserve_index=False).remove_metadata()


def unbound_compiler(pipeline: PipelineConfig, *, dialect: str, as_of: dt.date | None = None,
                     database: str | None = None) -> RuleCompiler:
    """A ``RuleCompiler`` over unbound tables named after the datasets (in ``database``: a schema such as
    ``"SFMC"`` or ``"ANALYTICS.SFMC"``, when given) for ``dialect``'s time-zone function."""
    if dialect not in LOCAL_TIME:
        raise ConfigurationError(
            f"No calendar-day function for SQL dialect {dialect!r}; known: {', '.join(sorted(LOCAL_TIME))}. "
            f"Add its time-zone function to LOCAL_TIME in sfmc_pipeline/segments/compile.py."
        )
    if as_of is None:
        as_of, _ = resolve_as_of(run_config=None, configured=pipeline.evaluation.as_of, sample_anchor=None,
                                 timezone=pipeline.evaluation.timezone)
    used = datasets_read(s.rule for s in pipeline.segments)
    catalog, _, schema_name = (database or "").rpartition(".")

    def table(name: str) -> ibis.Table:
        schema = ibis.schema(dataset_schema(pipeline.extension(name)))
        return ibis.table(schema, name=name, catalog=catalog or None, database=schema_name or None)

    return RuleCompiler(table(pipeline.profiles.dataset), {name: table(name) for name in used},
                        key=pipeline.profile_key, as_of=as_of, timezone=pipeline.evaluation.timezone,
                        backend=dialect)


def sql_for(pipeline: PipelineConfig, dialect: str = "snowflake", *, as_of: dt.date | None = None,
            database: str | None = None) -> str:
    """The memberships of every configured segment as one ``dialect`` query (``as_of``: as the asset
    resolves it from ``evaluation.as_of`` or today in ``evaluation.timezone`` when not given)."""
    compiler = unbound_compiler(pipeline, dialect=dialect, as_of=as_of, database=database)
    plan = compiler.members((s.name, s.rule) for s in pipeline.segments)
    return str(ibis.to_sql(plan, dialect=dialect))
