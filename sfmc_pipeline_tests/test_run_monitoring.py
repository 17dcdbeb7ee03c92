"""A dead run frees the queue and alerts. With either instance config the project ships (its own,
on SQLite, and the production example, on a real PostgreSQL), whose run monitoring, health-checked
run launcher and run queue retries are the same: when the code server running a run dies with the
run's worker (their node stopped), the daemon marks the run failed, the run queued behind it waits
for a code server instead of failing and starts once one is back, and the failure alert reaches the
webhook once.

A real daemon, a real code server (``dagster api grpc``) serving the test-only code location
``probe_location.py``, and a webhook on 127.0.0.1. The shipped timeouts are shortened so the test
waits seconds, not minutes."""

import os
import socket

import dagster as dg
import pytest
import yaml

from sfmc_pipeline.settings import ALERT_WEBHOOK_ENV, REPO_ROOT
from sfmc_pipeline_tests.alert_receiver import receiver  # noqa: F401 - the fixture
from sfmc_pipeline_tests.dagster_processes import (
    DagsterProcesses,
    instance_home,
    run_status,
    wait_for,
)
from sfmc_pipeline_tests.postgres_fixtures import postgres  # noqa: F401 - the fixture
from sfmc_pipeline_tests.probe_location import HOLD_DIR_ENV

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
PATIENCE = 120  # seconds before a wait gives up; a passing run waits only as long as each state takes to appear


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("config", INSTANCES)
def test_a_run_whose_worker_died_is_failed_frees_the_queue_and_alerts(config, tmp_path, receiver,  # noqa: F811
                                                                      request, monkeypatch):
    hook = receiver()
    home = instance_home(tmp_path / "home", INSTANCES[config], FAST)
    held = tmp_path / "held"
    held.mkdir()
    port = _free_port()
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text(yaml.safe_dump({"load_from": [{"grpc_server": {
        "host": "127.0.0.1", "port": port, "location_name": "held"}}]}), encoding="utf-8")
    env = {**os.environ, "DAGSTER_HOME": str(home), HOLD_DIR_ENV: str(held), ALERT_WEBHOOK_ENV: hook.url}
    if config == "production":
        for name, value in request.getfixturevalue("postgres").env().items():
            env[name] = value
            monkeypatch.setenv(name, value)  # for this test's own view of the instance
    processes = DagsterProcesses(tmp_path / "logs", env)
    code_server = ("api", "grpc", "-m", "sfmc_pipeline_tests.probe_location", "-h", "127.0.0.1", "-p", str(port))
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        node = processes.start("code-server", "dagster", *code_server)
        wait_for(lambda: _listening(port), "the code server", timeout=PATIENCE, logs=processes.output)
        processes.start("daemon", "dagster-daemon", "run", "-w", str(workspace))
        # The location's sensor requests two runs; the storage tag lets one of them start.
        started = wait_for(lambda: next(held.glob("*.started"), None), "the first run to start", timeout=PATIENCE,
                           logs=processes.output)
        first, worker = started.name.removesuffix(".started"), int(started.read_text())
        [second] = wait_for(lambda: [r.run_id for r in instance.get_runs(filters=dg.RunsFilter(
            statuses=[Status.QUEUED]))], "the second run to wait in the queue", timeout=PATIENCE, logs=processes.output)
        assert run_status(instance, first) == Status.STARTED

        processes.kill(node)  # the code server and the run's worker die (SIGKILL); the daemon lives on
        wait_for(lambda: run_status(instance, first) == Status.FAILURE, "the daemon to fail the dead run",
                 timeout=PATIENCE, logs=processes.output)
        # The queue moves on to the second run; with no code server to take it, it goes back to the queue.
        wait_for(lambda: len(instance.all_logs(second, of_type=dg.DagsterEventType.RUN_ENQUEUED)) >= 2,
                 "the second run to be retried", timeout=PATIENCE, logs=processes.output)
        assert run_status(instance, second) in (Status.QUEUED, Status.STARTING)  # tried again, not failed

        processes.start("code-server-again", "dagster", *code_server)  # the node is back
        wait_for(lambda: (held / f"{second}.started").exists(), "the queued run to start", timeout=PATIENCE,
                 logs=processes.output)
        assert run_status(instance, second) == Status.STARTED
        wait_for(lambda: hook.posts, "the failure alert", timeout=PATIENCE, logs=processes.output)
        [text] = hook.texts()
        assert f"run {first}" in text and f"worker process (pid {worker} " in text and "is gone" in text
    finally:
        (held / "release").touch()
        processes.close()
        instance.dispose()
