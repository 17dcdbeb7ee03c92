"""A dead run frees the queue and alerts. With either instance config the project ships (its own,
on SQLite, and the production example, on a real PostgreSQL), whose run monitoring, health-checked
run launcher and run queue retries are the same, a run whose worker and code server were killed is
marked failed by the daemon, the run queued behind it waits for a code server instead of failing and
starts once the node is back, and the failure alert reaches the webhook once.

A real daemon, the test-only code location ``probe_location.py`` and a webhook on 127.0.0.1. The
shipped timeouts are shortened so the test waits seconds, not minutes."""

import os
import signal

import dagster as dg
import pytest

from sfmc_pipeline.automation.alert_webhook import ALERT_WEBHOOK_ENV
from sfmc_pipeline.settings import REPO_ROOT
from sfmc_pipeline_tests.alert_receiver import receiver  # noqa: F401 - the fixture
from sfmc_pipeline_tests.probe_location import HOLD_DIR_ENV
from sfmc_pipeline_tests.dagster_processes import (
    DagsterProcesses, instance_home, parent_pid, run_status, wait_for, workspace_file,
)
from sfmc_pipeline_tests.postgres_fixtures import postgres  # noqa: F401 - the fixture

INSTANCES = {"project": REPO_ROOT / ".dagster_home" / "dagster.yaml",
             "production": REPO_ROOT / "deploy" / "dagster.production.yaml"}
FAST = {  # the shipped settings, with seconds instead of minutes
    "run_monitoring": {"poll_interval_seconds": 1, "free_slots_after_run_end_seconds": 1},
    "run_queue": {"dequeue_interval_seconds": 1, "user_code_failure_retry_delay": 1,
                  "max_user_code_failure_retries": 1000},
    # one slot per pool: a slot the dead run kept would hold the next run's step forever
    "concurrency": {"pools": {"default_limit": 1}},
}
Status = dg.DagsterRunStatus


@pytest.mark.parametrize("config", INSTANCES)
def test_a_run_whose_worker_died_is_failed_frees_the_queue_and_alerts(config, tmp_path, receiver,  # noqa: F811
                                                                      request, monkeypatch):
    hook = receiver()
    home = instance_home(tmp_path / "home", INSTANCES[config], FAST)
    held = tmp_path / "held"
    held.mkdir()
    workspace = workspace_file(tmp_path, "sfmc_pipeline_tests.probe_location", "held")
    env = {**os.environ, "DAGSTER_HOME": str(home), HOLD_DIR_ENV: str(held), ALERT_WEBHOOK_ENV: hook.url}
    if config == "production":
        for name, value in request.getfixturevalue("postgres").env().items():
            env[name] = value
            monkeypatch.setenv(name, value)  # for this test's own view of the instance
    processes = DagsterProcesses(tmp_path / "logs", env)
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        daemon = processes.start("daemon", "dagster-daemon", "run", "-w", str(workspace))
        # The location's sensor requests two runs; the storage tag lets one of them start.
        started = wait_for(lambda: next(held.glob("*.started"), None), "the first run to start", timeout=60,
                           logs=processes.output)
        first = started.name.removesuffix(".started")
        [second] = wait_for(lambda: [r.run_id for r in instance.get_runs() if r.run_id != first],
                            "the second run to be queued", timeout=20, logs=processes.output)
        assert run_status(instance, first) == Status.STARTED
        assert run_status(instance, second) == Status.QUEUED

        worker = int(started.read_text())
        code_server = parent_pid(worker)
        os.kill(worker, signal.SIGKILL)  # the worker and its code server die; the daemon lives on
        os.kill(code_server, signal.SIGKILL)
        wait_for(lambda: run_status(instance, first) == Status.FAILURE, "the daemon to fail the dead run",
                 timeout=30, logs=processes.output)
        # The queue moves on to the second run; its code server is gone, so it goes back to the queue.
        wait_for(lambda: len(instance.all_logs(second, of_type=dg.DagsterEventType.RUN_ENQUEUED)) >= 2,
                 "the second run to be retried", timeout=30, logs=processes.output)
        assert run_status(instance, second) == Status.QUEUED

        processes.kill(daemon)  # the rest of the node dies too, and the daemon is started again
        processes.start("daemon-again", "dagster-daemon", "run", "-w", str(workspace))
        wait_for(lambda: (held / f"{second}.started").exists(), "the queued run to start", timeout=60,
                 logs=processes.output)
        assert run_status(instance, second) == Status.STARTED
        wait_for(lambda: hook.posts, "the failure alert", timeout=30, logs=processes.output)
        [text] = hook.texts()
        assert f"run {first}" in text and f"worker process (pid {worker} " in text and "is gone" in text
    finally:
        (held / "release").touch()
        processes.close()
        instance.dispose()
