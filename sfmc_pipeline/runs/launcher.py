"""The run launcher of the project's Dagster instances: Dagster's ``DefaultRunLauncher`` plus the
worker health check the daemon's run monitoring needs to fail a run whose worker died.

Without it a run whose code server died with its worker stays STARTED forever: the run queue never
moves and no alert fires. A run is alive while its recorded worker process (``runs/worker.py``)
exists on this host, else while the code server that started it still runs it; a run with neither
is assumed running (``run_monitoring.max_runtime_seconds`` is the backstop).
"""

from __future__ import annotations

import dagster as dg

# Private on purpose: Dagster 1.13 exports no public health-check result type nor gRPC cancel-check wrapper.
from dagster._core.launcher.base import CheckRunHealthResult, WorkerStatus
from dagster._grpc.types import CanCancelExecutionRequest, CanCancelExecutionResult

from sfmc_pipeline.runs.worker import RunWorker

HEALTH_CHECK_TIMEOUT_SECONDS = 15


class HealthCheckedRunLauncher(dg.DefaultRunLauncher):
    """``DefaultRunLauncher`` with a worker health check for run monitoring (configured in ``dagster.yaml``
    as ``run_launcher: {module: sfmc_pipeline.runs.launcher, class: HealthCheckedRunLauncher}``)."""

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: dg.DagsterRun) -> CheckRunHealthResult:
        worker = RunWorker.from_tags(run.tags)
        if worker is not None and worker.is_on_this_host():
            if worker.is_alive():
                return CheckRunHealthResult(WorkerStatus.RUNNING)
            return CheckRunHealthResult(
                WorkerStatus.NOT_FOUND,
                f"the run's worker process (pid {worker.pid} on {worker.host}) is gone: it was killed or its machine "
                "stopped before the run finished. Nothing after its last completed step ran; launch the job again.",
            )
        return self._ask_code_server(run)

    def _ask_code_server(self, run: dg.DagsterRun) -> CheckRunHealthResult:
        # The parent's helper builds a client for the code server recorded on the run (its gRPC tag).
        client = self._get_grpc_client_for_termination(run.run_id)
        if client is None:  # launched in-process elsewhere: nothing to ask; max_runtime_seconds applies
            return CheckRunHealthResult(WorkerStatus.RUNNING, "no code server or worker recorded on this host")
        try:
            result = dg.deserialize_value(
                client.can_cancel_execution(CanCancelExecutionRequest(run_id=run.run_id),
                                            timeout=HEALTH_CHECK_TIMEOUT_SECONDS),
                CanCancelExecutionResult,
            )
        except Exception as exc:  # noqa: BLE001 - any failure to reach the server means the same here
            return CheckRunHealthResult(
                WorkerStatus.NOT_FOUND,
                f"the code server that ran it cannot be reached ({type(exc).__name__}): it stopped, with the run's "
                "worker, before the run finished. Launch the job again.",
            )
        if result.can_cancel:
            return CheckRunHealthResult(WorkerStatus.RUNNING)
        return CheckRunHealthResult(
            WorkerStatus.NOT_FOUND,
            "the code server that ran it no longer runs it: its worker stopped before the run finished. "
            "Launch the job again.",
        )
