"""Contract (compile-only, no network): the shipped segments' plan printed for Snowflake by
``segments/warehouse_sql.sql_for`` is valid Snowflake SQL that computes calendar days as the engines
do: day windows as UTC timestamp literals of the local midnights (no per-row conversion), the
warehouse's time-zone function only for ``latest_is_after``, ``has_related`` as ``IN (subquery)``
semi-joins, and only the columns the rules read."""

import datetime as dt

import ibis
import pyarrow.parquet as pq
import pytest
import sqlglot
from sqlglot import exp
from sqlglot.optimizer.pushdown_projections import pushdown_projections
from sqlglot.optimizer.qualify import qualify
from sqlglot.optimizer.scope import traverse_scope
from sqlglot.schema import MappingSchema

from sfmc_pipeline.datasets.storage import DatasetStore
from sfmc_pipeline.errors import ConfigurationError
from sfmc_pipeline.segments.compile import local_midnight
from sfmc_pipeline.segments.rules import Compare, HasRelated, Not, columns_read
from sfmc_pipeline.segments.warehouse_sql import dataset_schema, sql_for
from sfmc_pipeline_tests.segment_fixtures import AS_OF, CONFIG, activity, contact, engagement, typed

ZONE = "America/Los_Angeles"  # 180 days before 20 Nov 2026 is in daylight saving time: UTC-7, not -8
PIPELINE = CONFIG.model_copy(update={"evaluation": CONFIG.evaluation.model_copy(update={"timezone": ZONE})})
DATASETS = ("contacts", "campaign_engagement", "activities")
KEY = PIPELINE.profile_key


def _rules(rule):
    yield rule
    for child in getattr(rule, "rules", ()) or ([rule.rule] if isinstance(rule, Not) else []):
        yield from _rules(child)
    if isinstance(rule, HasRelated) and rule.where is not None:
        yield from _rules(rule.where)


ALL_NODES = [node for segment in PIPELINE.segments for node in _rules(segment.rule)]
RELATED = [node for node in ALL_NODES if isinstance(node, HasRelated)]
LATEST = [node for node in RELATED if node.latest_is_after is not None]


@pytest.fixture(scope="module")
def sql() -> str:
    return sql_for(PIPELINE, "snowflake", as_of=AS_OF)


@pytest.fixture(scope="module")
def tree(sql) -> exp.Expression:
    return sqlglot.parse_one(sql, read="snowflake")


def test_the_plan_is_snowflake_sql_returning_memberships(sql, tree):
    assert isinstance(tree, exp.Query)
    branches = [s for s in tree.find_all(exp.Select) if s.named_selects == ["profile_key", "segment"]]
    assert len(branches) == len(PIPELINE.segments)  # one SELECT per segment ...
    assert all(not union.args.get("distinct") for union in tree.find_all(exp.Union))  # ... as UNION ALL
    segments = {literal.this for literal in tree.find_all(exp.Literal) if literal.is_string}
    assert {s.name for s in PIPELINE.segments} <= segments
    assert sqlglot.parse_one(tree.sql(dialect="snowflake"), read="snowflake") == tree  # it round-trips


def test_day_windows_are_utc_literals_of_local_midnights(tree):
    """``within_last_days N`` / ``older_than_days N`` compare the raw column with the UTC instant the local
    day began (N days before as_of, and the day after as_of), in daylight saving time or not."""
    days = {node.value for node in ALL_NODES
            if isinstance(node, Compare) and node.op in ("within_last_days", "older_than_days")}
    assert days  # the shipped segments have date windows
    expected = {local_midnight(AS_OF - dt.timedelta(days=int(n)), ZONE) for n in days}
    expected.add(local_midnight(AS_OF + dt.timedelta(days=1), ZONE))
    literals = set()
    for node in tree.find_all(exp.TimestampTzFromParts):
        assert node.args["zone"].this == "UTC" and int(node.args["nano"].this) == 0
        parts = [int(node.args[part].this) for part in ("year", "month", "day", "hour", "min", "sec")]
        literals.add(dt.datetime(*parts, tzinfo=dt.timezone.utc))
    assert literals == expected
    assert dt.datetime(2026, 5, 24, 7, tzinfo=dt.timezone.utc) in literals  # 180 days: midnight in PDT


def test_only_latest_is_after_converts_rows_to_local_days_with_convert_timezone(tree):
    assert LATEST  # the shipped segments have one
    conversions = list(tree.find_all(exp.ConvertTimezone))
    assert len(conversions) == 2 * len(LATEST)  # the profile's date and the latest related date
    assert {node.args["target_tz"].this for node in conversions} == {ZONE}
    assert all(isinstance(node.parent, exp.TsOrDsToDate) for node in conversions)  # compared as dates
    assert len(list(tree.find_all(exp.TsOrDsToDate))) == 2 * len(LATEST)


def test_has_related_is_a_semi_join(tree):
    semi_joins = [node for node in tree.find_all(exp.In) if node.args.get("query") is not None]
    assert len(semi_joins) == len(RELATED)
    assert len(list(tree.find_all(exp.Join))) == len(LATEST)  # the latest date joined to the profile's


def test_only_the_columns_the_rules_read_are_read(sql):
    """After the column pruning any planner does, each dataset is read for the key and the columns its
    rules read, nothing else."""
    schema = MappingSchema({name: {field.name: "VARCHAR" for field in dataset_schema(PIPELINE.extension(name))}
                            for name in DATASETS}, dialect="snowflake", normalize=False)
    pruned = pushdown_projections(qualify(sqlglot.parse_one(sql, read="snowflake"), schema=schema,
                                          dialect="snowflake"))
    read: dict[str, set[str]] = {}
    for scope in traverse_scope(pruned):
        for alias, (_, source) in scope.selected_sources.items():
            if isinstance(source, exp.Table):
                read.setdefault(source.name, set()).update(c.name for c in scope.columns if c.table == alias)
    expected: dict[str, set[str]] = {}
    for segment in PIPELINE.segments:
        for dataset, column in columns_read(segment.rule, "contacts"):
            expected.setdefault(dataset, {KEY}).add(column)
    assert read == expected
    assert "Email" not in read["contacts"]  # a column the shipped rules never read


def test_the_tables_have_the_landed_datasets_types(tmp_path):
    """The unbound tables are typed as the datasets land (so the warehouse tables are defined alike)."""
    store = DatasetStore(tmp_path)
    rows = {"contacts": [contact(1, LastPurchaseDate="11/1/2026 9:00:00 AM")],
            "campaign_engagement": [engagement(1, "C1")], "activities": [activity(1, 1, "web_visit", 2)]}
    for name in DATASETS:
        store.write_dataset(name, typed(name, rows[name]))
        landed = ibis.schema(pq.read_schema(store.dataset_path(name)).remove_metadata())
        assert ibis.schema(dataset_schema(PIPELINE.extension(name))) == landed, name


def test_the_tables_can_be_qualified_with_a_database_and_schema():
    sql = sql_for(PIPELINE, "snowflake", as_of=AS_OF, database="ANALYTICS.SFMC")
    tables = {table.sql(dialect="snowflake") for table in sqlglot.parse_one(sql, read="snowflake").find_all(exp.Table)}
    assert {t.split(" AS ")[0] for t in tables} == {f'"ANALYTICS"."SFMC"."{name}"' for name in DATASETS}


def test_a_dialect_without_a_time_zone_function_is_refused_naming_where_to_add_it():
    with pytest.raises(ConfigurationError, match="LOCAL_TIME in sfmc_pipeline/segments/compile.py"):
        sql_for(PIPELINE, "oracle", as_of=AS_OF)

