"""Contract: the compiled segment plan run on Spark (PySpark, local mode) over the stored parquet datasets
gives exactly the memberships of the pandas evaluator, in the same order, on the tiny sample, the edge
cases and a generated dataset of ``test_segment_engine.py``, in time zones with and without daylight
saving; and ``connect_spark`` names the fix when PySpark or Java is missing.

Spark costs a JVM start and a per-query planning time, so the plans run in ONE test on one session
(``pytest -m "not spark"`` deselects it): under pytest-xdist one test runs on one worker, where a test per
case could start a Spark session on each worker."""

import datetime as dt
import shutil
import sys

import dagster as dg
import pandas as pd
import pytest

from sfmc_pipeline.datasets.storage import DatasetStore
from sfmc_pipeline.defs.assets.datasets import build_dataset_assets
from sfmc_pipeline.defs.assets.segments import build_segment_assets
from sfmc_pipeline.defs.resources.sfmc import SfmcResource
from sfmc_pipeline.defs.resources.storage import StorageResource
from sfmc_pipeline.errors import ConfigurationError
from sfmc_pipeline.segments.compile import RuleCompiler
from sfmc_pipeline.segments.engine import evaluate_members
from sfmc_pipeline_testing.segment_reference import SegmentEvaluator
from sfmc_pipeline.segments.spark import connect_spark
from sfmc_pipeline_tests.segment_fixtures import AS_OF, CONFIG
from sfmc_pipeline_tests.test_segment_engine import (  # noqa: F401 (tiny_store: a fixture)
    ALL_RULES, KEY, RELATED, SHIPPED, _edge_frames, _generated_frames, _store, tiny_store,
)
from sfmc_pipeline_tests.tiny_sample import ANCHOR, write_tiny_sample

# Settings for small test data: one shuffle partition (no sampling job for the ORDER BY), interpreted
# expressions instead of generated code (compiling code for ~40 union branches costs more than running
# them on a few thousand rows) and the JVM's quick compiler only (a short-lived JVM: start and first query
# ~3x faster). They change how Spark runs the plan, not what it returns.
SMALL_DATA = {"spark.sql.codegen.wholeStage": "false", "spark.sql.codegen.factoryMode": "NO_CODEGEN"}
QUICK_JVM = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"


@pytest.fixture(scope="module")
def spark(tmp_path_factory):
    con = connect_spark(DatasetStore(tmp_path_factory.mktemp("spark_storage")), master="local[2]",
                        shuffle_partitions=1, java_options=QUICK_JVM, config=SMALL_DATA)
    yield con
    con.disconnect()


def _mismatch(store: DatasetStore, con, rules, *, as_of: dt.date, timezone: str) -> str | None:
    """None when Spark's memberships equal the pandas evaluator's (same rows, same order), else why not."""
    expected = SegmentEvaluator(store.read_dataset("contacts"), {n: store.read_dataset(n) for n in RELATED},
                                key=KEY, as_of=as_of, timezone=timezone).members(rules)
    actual = evaluate_members(store, "contacts", rules, key=KEY, as_of=as_of, timezone=timezone, con=con)
    try:
        pd.testing.assert_frame_equal(actual, expected)
    except AssertionError as exc:
        wrong = set(map(tuple, actual.values)) ^ set(map(tuple, expected.values))
        segments = sorted({segment for _, segment in wrong})
        return f"as of {as_of} in {timezone}: {len(wrong)} memberships differ, in {segments}: {exc}"
    return None


def _local_days_on_spark(store: DatasetStore, con, column: str, timezone: str) -> pd.Series:
    profiles = con.read_parquet(store.dataset_path("contacts"))
    compiler = RuleCompiler(profiles, {}, key=KEY, as_of=AS_OF, timezone=timezone, backend=con.name)
    days = profiles.select(KEY, day=compiler.local_day(profiles[column])).order_by(KEY)
    return con.to_pyarrow(days)["day"].to_pandas()


def _edges_and_generated(tmp_path) -> DatasetStore:
    """The edge cases and a generated dataset as one store (their keys are distinct), so one plan per zone
    checks both: Spark's cost is per plan (seconds of planning), not per row."""
    edges, generated = _edge_frames(), _generated_frames(1500, 3)
    frames = {name: pd.concat([edges[name], generated[name]], ignore_index=True).astype(edges[name].dtypes)
              for name in edges}
    assert not set(edges["contacts"][KEY]) & set(generated["contacts"][KEY])
    return _store(tmp_path, frames)


@pytest.mark.spark
def test_spark_gives_the_reference_memberships(spark, tiny_store, tmp_path):
    """The shipped segments on the tiny sample; every rule of test_segment_engine.py (shipped segments, every
    operator, `not` over nulls, decimals, date lists, has_related, latest_is_after) on the edge cases with
    the generated data, in a zone with daylight saving and in UTC+14; one plan per dataset and zone."""
    mixed = _edges_and_generated(tmp_path)
    cases = [
        (tiny_store, SHIPPED, ANCHOR, "America/Los_Angeles"),
        (mixed, ALL_RULES, AS_OF, "America/Los_Angeles"),  # 180 days back crosses the end of daylight saving
        (mixed, ALL_RULES, dt.date(2026, 11, 21), "Pacific/Kiritimati"),  # UTC+14: a day ahead of UTC
    ]
    problems = [p for store, rules, as_of, zone in cases
                if (p := _mismatch(store, spark, rules, as_of=as_of, timezone=zone))]
    assert not problems, "\n".join(problems)

    # Spark reads the landed timestamp[us, tz=UTC] columns as instants: their local days are pandas' own
    profiles = mixed.read_dataset("contacts").sort_values(KEY)
    for zone in ("America/Los_Angeles", "Pacific/Kiritimati"):
        expected = profiles["LastPurchaseDate"].dt.tz_convert(zone).dt.date.astype(object).where(
            profiles["LastPurchaseDate"].notna(), None)
        actual = _local_days_on_spark(mixed, spark, "LastPurchaseDate", zone)
        assert actual.tolist() == expected.tolist(), zone


def test_connect_spark_names_the_java_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "no-java"))
    with pytest.raises(ConfigurationError) as raised:
        connect_spark(DatasetStore(tmp_path / "storage"))
    assert "JAVA_HOME" in str(raised.value) and "default-jre-headless" in str(raised.value)
    assert not (tmp_path / "storage").exists()  # refused before anything is started or written


def test_connect_spark_names_the_install_command_without_pyspark(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyspark.sql", None)  # `from pyspark.sql import ...` raises ImportError
    with pytest.raises(ConfigurationError, match=r'pip install -e "\.\[spark\]"'):
        connect_spark(DatasetStore(tmp_path / "storage"))


def _runs(config, days, storage) -> list[pd.DataFrame]:
    """The dataset and segment assets run on ``storage`` for each (sample folder, evaluation date) of ``days``;
    the statuses after each run."""
    assets = [*build_dataset_assets(config), *build_segment_assets(config)]
    statuses = []
    for sample, as_of in days:
        resources = {"sfmc": SfmcResource(sample_dir=str(sample)), "storage": StorageResource(base_dir=str(storage))}
        result = dg.materialize(assets, resources=resources, raise_on_error=False,
                                run_config={"ops": {"segment_memberships": {"config": {"as_of": as_of.isoformat()}}}})
        assert result.success, [e.message for e in result.all_events if e.is_failure]
        frame = DatasetStore(storage).read_dataset("segment_statuses")
        statuses.append(frame[["profile_key", "segment", "status", "held"]].sort_values(["segment", "profile_key"],
                                                                                          ignore_index=True))
    return statuses


@pytest.mark.spark
def test_the_segment_assets_give_the_same_statuses_on_spark_as_on_duckdb(spark, tmp_path):
    """evaluation.engine: spark runs both segment assets (memberships, statuses against the previous evaluation,
    held profiles, the checks) on Spark: over two evaluations they write what DuckDB writes."""
    sample = write_tiny_sample(tmp_path / "sample")
    broken = shutil.copytree(sample, tmp_path / "broken")
    contacts = broken / f"{CONFIG.extension('contacts').key}.csv"
    rows = contacts.read_text().splitlines()
    assert ",new," in rows[1]  # a new customer (in new_customer) ...
    rows[1] = rows[1].replace("@", " at ", 1)  # ... whose email is malformed the second day: held
    contacts.write_text("\n".join(rows) + "\n")
    days = [(sample, ANCHOR), (broken, ANCHOR + dt.timedelta(days=14))]
    on_spark = CONFIG.model_copy(update={"evaluation": CONFIG.evaluation.model_copy(update={"engine": "spark"})})
    runs = {name: _runs(config, days, tmp_path / name) for name, config in (("duckdb", CONFIG), ("spark", on_spark))}
    for duck, spark_statuses in zip(runs["duckdb"], runs["spark"]):
        pd.testing.assert_frame_equal(spark_statuses, duck)
    first, later = runs["duckdb"]
    assert set(first["status"]) == {"realized"} and {"existing", "exited"} <= set(later["status"])
    assert later["held"].any()
