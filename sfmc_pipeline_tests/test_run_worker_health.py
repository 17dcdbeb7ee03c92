"""The run launcher's worker health check, path by path, on real processes and a real instance of the
project's config: a run whose recorded worker still exists is running; one whose worker is gone,
or whose pid now belongs to another process, is not; a run on another host is asked of its code
server, and one that cannot be reached means the worker is gone; a run that recorded nothing it can
check is left to the runtime backstop. (The daemon end to end: ``test_run_monitoring.py``.)"""

import dataclasses
import json
import subprocess
import sys

import dagster as dg
import pytest

from sfmc_pipeline.runs.launcher import HealthCheckedRunLauncher
from sfmc_pipeline.runs.worker import RunWorker
from sfmc_pipeline.settings import REPO_ROOT
from sfmc_pipeline_tests.dagster_processes import instance_home

GRPC_INFO_TAG = ".dagster/grpc_info"  # where Dagster's default launcher records the code server of a run


@pytest.fixture
def instance(tmp_path):
    home = instance_home(tmp_path / "home", REPO_ROOT / ".dagster_home" / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        yield instance


def _health(instance, tags: dict[str, str]):
    run = instance.add_run(dg.DagsterRun(job_name="sfmc_pipeline_job", tags=tags))
    return instance.run_launcher.check_run_worker_health(run)


def _process_that_ended() -> RunWorker:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    worker = dataclasses.replace(RunWorker.current(), pid=process.pid)
    process.wait()
    return worker


def test_the_project_instance_monitors_runs_with_this_launcher(instance):
    assert isinstance(instance.run_launcher, HealthCheckedRunLauncher)
    assert instance.run_monitoring_enabled and instance.run_launcher.supports_check_run_worker_health


def test_a_run_whose_worker_process_exists_is_running(instance):
    assert _health(instance, RunWorker.current().to_tag()).status.value == "RUNNING"


def test_a_run_whose_worker_process_is_gone_is_not(instance):
    worker = _process_that_ended()
    result = _health(instance, worker.to_tag())
    assert result.status.value == "NOT_FOUND"
    assert f"worker process (pid {worker.pid} on {worker.host}) is gone" in result.msg


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process start times are read from /proc")
def test_a_pid_now_used_by_another_process_is_not_the_worker(instance):
    worker = RunWorker.current()  # this process, as if it had started at another time
    result = _health(instance, dataclasses.replace(worker, start_ticks=worker.start_ticks + 1).to_tag())
    assert result.status.value == "NOT_FOUND"


def test_a_run_on_another_host_is_asked_of_its_code_server(instance):
    other_host = dataclasses.replace(RunWorker.current(), host="another-node").to_tag()
    unreachable = {GRPC_INFO_TAG: json.dumps({"host": "127.0.0.1", "port": 9})}  # nothing listens on the discard port
    result = _health(instance, {**other_host, **unreachable})
    assert result.status.value == "NOT_FOUND" and "cannot be reached" in result.msg


def test_a_run_with_nothing_to_check_is_left_to_the_runtime_backstop(instance):
    assert _health(instance, {}).status.value == "RUNNING"  # e.g. launched in-process on another machine
