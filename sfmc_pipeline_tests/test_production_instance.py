"""The production example works as documented, on a real PostgreSQL: with ``deploy/dagster.production.yaml``
as the instance (unchanged), the ``[production]`` extra installed and the documented variables set (the
database's five ``DAGSTER_PG_*``, its port included, and ``SFMC_PIPELINE_STORAGE``), the documented
commands start the daemon and the webserver, and ``dagster job launch`` queues the whole pipeline,
which the daemon runs to success, writing where ``SFMC_PIPELINE_STORAGE`` says. The run reads the tiny sample
(``tiny_sample.py``, through SFMC_PIPELINE_EXTRACT_DIR): the full sample's smoke runs are elsewhere."""

import os
import socket

import dagster as dg
import requests

from sfmc_pipeline.settings import EXTRACT_DIR_ENV, REPO_ROOT
from sfmc_pipeline_tests.dagster_processes import (
    DagsterProcesses,
    instance_home,
    run_status,
    wait_for,
)
from sfmc_pipeline_tests.postgres_fixtures import postgres  # noqa: F401 - the fixture
from sfmc_pipeline_tests.tiny_sample import write_tiny_sample

PRODUCTION_INSTANCE = REPO_ROOT / "deploy" / "dagster.production.yaml"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _server_info(port: int) -> dict | None:
    try:
        response = requests.get(f"http://127.0.0.1:{port}/server_info", timeout=5)
    except requests.ConnectionError:
        return None
    return response.json() if response.status_code == 200 else None


def test_the_production_example_runs_the_pipeline_through_the_queue_on_postgres(postgres, tmp_path,  # noqa: F811
                                                                                 monkeypatch):
    home = instance_home(tmp_path / "home", PRODUCTION_INSTANCE)
    storage = tmp_path / "storage"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SFMC_", "SALESFORCE_", "DAGSTER_"))}
    env.update(postgres.env(), DAGSTER_HOME=str(home), SFMC_PIPELINE_STORAGE=str(storage),
               **{EXTRACT_DIR_ENV: str(write_tiny_sample(tmp_path / "sample"))})
    for name, value in postgres.env().items():
        monkeypatch.setenv(name, value)  # for this test's own view of the instance
    processes = DagsterProcesses(tmp_path / "logs", env)
    port = _free_port()
    instance = None
    try:
        # The production commands of docs/operations.md, from the repository root.
        processes.start("daemon", "dagster-daemon", "run", "-w", "workspace.yaml")
        processes.start("webserver", "dagster-webserver", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port))
        launch = processes.run("launch", "dagster", "job", "launch", "-j", "sfmc_pipeline_job", "-w", "workspace.yaml")
        assert launch.returncode == 0, processes.output()

        instance = dg.DagsterInstance.from_config(str(home))
        [run] = instance.get_runs()
        assert run.job_name == "sfmc_pipeline_job"
        finished = wait_for(lambda: instance.get_run_by_id(run.run_id).is_finished, "the queued run to finish",
                            timeout=150, logs=processes.output)
        assert finished and run_status(instance, run.run_id) == dg.DagsterRunStatus.SUCCESS, processes.output()
        assert (storage / "datasets" / "contacts.parquet").is_file()  # the worker wrote where the daemon was told
        assert (storage / "crm" / "local_crm.sqlite").is_file()
        assert wait_for(lambda: _server_info(port), "the webserver to answer", timeout=60, logs=processes.output)
    finally:
        processes.close()
        if instance is not None:
            instance.dispose()
