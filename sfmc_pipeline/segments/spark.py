"""Run the compiled segment plan on Spark (PySpark), for orgs beyond what one machine's DuckDB does.

``connect_spark(store)`` gives an Ibis PySpark connection whose session runs in UTC (the plan's
instants are UTC, and Spark reads the datasets' ``timestamp[us, tz=UTC]`` columns as instants), with
its scratch, spill and warehouse directories under ``state/spark`` in the storage and its log quiet.
``engine.compiler_for`` and ``engine.evaluate_members`` take it as they take the DuckDB connection:
the datasets are read with ``con.read_parquet(store.dataset_path(name))``, so on a cluster the storage
must be a path every Spark worker reads (a shared file system or an object store URL Spark knows).

A Spark session is one per process (one JVM): a second ``connect_spark`` in the same process reuses
the running session, its master and directories included; ``con.disconnect()`` stops it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Mapping

from sfmc_pipeline.datasets.storage import DatasetStore
from sfmc_pipeline.errors import ConfigurationError

DEFAULT_MASTER = "local[2]"
DEFAULT_DRIVER_MEMORY = "2g"
SPARK_STATE = "spark"  # state/spark in the storage: scratch (shuffle, spill), warehouse, the log settings
INSTALL_SPARK = 'pip install -e ".[spark]"'
INSTALL_JAVA = ("install a Java runtime (17 or 21; Debian/Ubuntu: sudo apt-get install default-jre-headless) "
                "or set JAVA_HOME to one")

# Spark's own log: errors only, to stderr (its default prints every stage's progress and start-up warnings)
_LOG_SETTINGS = """\
rootLogger.level = error
rootLogger.appenderRef.stderr.ref = console
logger.gateway.name = org.apache.spark.api.python.PythonGatewayServer
logger.gateway.level = error
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{yy/MM/dd HH:mm:ss} %p %c{1}: %m%n
"""


def java_executable() -> str | None:
    """The ``java`` Spark will start: ``$JAVA_HOME/bin/java`` when JAVA_HOME is set, else the one on PATH."""
    home = os.environ.get("JAVA_HOME")
    if home:
        candidate = Path(home) / "bin" / "java"
        return str(candidate) if candidate.is_file() and os.access(candidate, os.X_OK) else None
    return shutil.which("java")


def _require_spark():
    try:
        import ibis
        from pyspark.sql import SparkSession
    except ImportError as exc:
        raise ConfigurationError(
            f"evaluation.engine: spark needs PySpark and Ibis's PySpark backend, which are not installed ({exc}). "
            f"Install them with {INSTALL_SPARK} (or use evaluation.engine: duckdb)."
        ) from None
    if java_executable() is None:
        where = f"JAVA_HOME={os.environ['JAVA_HOME']} has no bin/java" if os.environ.get("JAVA_HOME") else (
            "no `java` on PATH")
        raise ConfigurationError(
            f"evaluation.engine: spark needs Java, and {where}: {INSTALL_JAVA} (or use evaluation.engine: duckdb)."
        )
    return ibis, SparkSession


def spark_settings(store: DatasetStore, *, master: str, driver_memory: str, shuffle_partitions: int | None,
                   java_options: str = "") -> dict[str, str]:
    """The session's settings: UTC, the storage's directories, no web UI, Arrow for the results."""
    base = store.state_path(SPARK_STATE)
    scratch, warehouse, log_settings = base / "scratch", base / "warehouse", base / "log4j2.properties"
    try:
        for folder in (scratch, warehouse):
            folder.mkdir(parents=True, exist_ok=True)
        log_settings.write_text(_LOG_SETTINGS)
    except OSError as exc:
        raise ConfigurationError(
            f"Cannot prepare Spark's directories in the storage ({base}: {exc.strerror or exc}); make the storage "
            f"directory writable."
        ) from None
    java_options = " ".join(
        [f"-Djava.io.tmpdir={scratch}", f"-Dlog4j2.configurationFile={log_settings.as_uri()}", *java_options.split()])
    settings = {
        "spark.master": master,
        "spark.app.name": "sfmc-pipeline segments",
        "spark.sql.session.timeZone": "UTC",
        "spark.local.dir": str(scratch),  # shuffle files and spills
        "spark.sql.warehouse.dir": str(warehouse),
        "spark.driver.memory": driver_memory,
        "spark.driver.extraJavaOptions": java_options,  # local mode: the executors run in the driver's JVM
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.execution.arrow.pyspark.enabled": "true",  # results to Python through Arrow
        "spark.sql.adaptive.enabled": "true",
    }
    if shuffle_partitions:
        settings["spark.sql.shuffle.partitions"] = str(int(shuffle_partitions))
    return settings


def connect_spark(store: DatasetStore, *, master: str = DEFAULT_MASTER, driver_memory: str = DEFAULT_DRIVER_MEMORY,
                  shuffle_partitions: int | None = None, java_options: str = "",
                  config: Mapping[str, str] | None = None):
    """An Ibis PySpark connection in UTC over a Spark session (``master``: ``local[2]``, ``local[*]`` or a
    cluster such as ``spark://host:7077``) whose scratch and warehouse directories are in the storage.
    ``java_options`` are added to the driver JVM's options; ``config`` adds or overrides Spark settings.
    Raises ``ConfigurationError`` naming the fix when PySpark or Java is missing or the session does not
    start."""
    ibis, SparkSession = _require_spark()
    settings = spark_settings(store, master=master, driver_memory=driver_memory, shuffle_partitions=shuffle_partitions,
                              java_options=java_options) | dict(config or {})
    builder = SparkSession.builder
    for name, value in settings.items():
        builder = builder.config(name, value)
    try:
        session = builder.getOrCreate()
    except Exception as exc:  # the JVM did not start: PySparkRuntimeError JAVA_GATEWAY_EXITED and the like
        raise ConfigurationError(
            f"evaluation.engine: spark could not start a Spark session (master {master!r}, java "
            f"{java_executable()}): {exc}. Check that Java 17 or 21 runs (`java -version`) or {INSTALL_JAVA}, and "
            f"that {store.state_path(SPARK_STATE)} is writable."
        ) from None
    session.sparkContext.setLogLevel("ERROR")
    return ibis.pyspark.connect(session)
