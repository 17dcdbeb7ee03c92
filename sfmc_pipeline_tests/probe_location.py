"""A test-only code location, for tests that run jobs through real Dagster machinery:

- ``held_job`` (``test_run_monitoring.py``): its one step holds a slot of the ``sfmc_api`` pool and
  waits until the test releases it; the sensor ``two_held_runs`` requests two such runs, once.
- ``broken_job`` (``test_failure_alerts.py``): its one step fails, naming a secret it was given.

Both carry what the project's jobs carry: the storage tag (runs queue one at a time) and the
project's executor (a run records its worker and posts its own failure alert). The project's failure
alert sensor watches them, ticking every second."""

import os
import time
from pathlib import Path

import dagster as dg

from sfmc_pipeline.defs.automation.failure_alerts import build_failure_alerts
from sfmc_pipeline.defs.jobs import STORAGE_TAG
from sfmc_pipeline.runs.executor import reporting_executor

HOLD_DIR_ENV = "SFMC_PIPELINE_TEST_HOLD_DIR"
HOLD_LIMIT_SECONDS = 120  # a forgotten run ends by itself


@dg.op(pool="sfmc_api")
def hold(context: dg.OpExecutionContext) -> None:
    """Writes ``<run id>.started`` (holding this process's pid), then waits for a ``release`` file."""
    folder = Path(os.environ[HOLD_DIR_ENV])
    (folder / f"{context.run_id}.pid").write_text(str(os.getpid()), encoding="ascii")
    (folder / f"{context.run_id}.pid").rename(folder / f"{context.run_id}.started")  # whole, or not there
    deadline = time.monotonic() + HOLD_LIMIT_SECONDS
    while not (folder / "release").exists() and time.monotonic() < deadline:
        time.sleep(0.2)


@dg.job(tags=STORAGE_TAG, executor_def=reporting_executor(dg.in_process_executor))
def held_job():
    hold()


@dg.op
def write_segments() -> None:
    raise dg.Failure(description=f"login failed with {os.environ.get('SALESFORCE_CLIENT_SECRET', 'no secret')}")


@dg.job(tags=STORAGE_TAG, executor_def=reporting_executor(dg.in_process_executor))
def broken_job():
    write_segments()


@dg.sensor(job=held_job, minimum_interval_seconds=1, default_status=dg.DefaultSensorStatus.RUNNING)
def two_held_runs():
    """Requests the same two runs on every tick; their run keys make them two runs in all."""
    return [dg.RunRequest(run_key="first"), dg.RunRequest(run_key="second")]


defs = dg.Definitions(jobs=[held_job, broken_job],
                      sensors=[two_held_runs, build_failure_alerts(minimum_interval_seconds=1)])
