"""The executor of the code location: Dagster's executor (in-process by default) plus what every
run does for itself, however it was launched (the daemon's queue, the UI, ``dg launch``):

- it records its worker process (``runs/worker.py``) for the launcher's health check;
- when some of its steps failed, it posts its failure alert and tags itself
  ``sfmc_pipeline/failure_alert: posted``, so a run without a daemon still alerts and the
  daemon's sensor does not alert twice.
"""

from __future__ import annotations

from typing import Callable, Iterator

import dagster as dg

from sfmc_pipeline.config.pipeline import PipelineConfig
from sfmc_pipeline.defs.automation.failure_alerts import (
    ALERT_POSTED_TAG,
    alert_mask,
    send_alert,
    summarize_failure,
)
from sfmc_pipeline.runs.worker import RunWorker


def reporting_executor(executor_def: dg.ExecutorDefinition, pipeline: PipelineConfig | None = None
                       ) -> dg.ExecutorDefinition:
    """``executor_def`` (same name and config) whose runs record their worker and post their own failure alert."""
    mask = alert_mask(pipeline)

    def create(init_context: dg.InitExecutorContext) -> dg.Executor:
        return _ReportingExecutor(executor_def.executor_creation_fn(init_context), mask)

    return dg.ExecutorDefinition(
        name=executor_def.name,
        config_schema=executor_def.config_schema,
        requirements=executor_def.get_requirements,
        executor_creation_fn=create,
        description=executor_def.description,
    )


class _ReportingExecutor(dg.Executor):
    def __init__(self, inner: dg.Executor, mask: Callable[[str], str]):
        self._inner = inner
        self._mask = mask

    @property
    def retries(self):
        return self._inner.retries

    @property
    def step_dependency_config(self):
        return self._inner.step_dependency_config

    def execute(self, plan_context, execution_plan) -> Iterator[dg.DagsterEvent]:
        run, instance = plan_context.dagster_run, plan_context.instance
        instance.add_run_tags(run.run_id, RunWorker.current().to_tag())
        failures: list[dg.DagsterEvent] = []
        try:
            for event in self._inner.execute(plan_context, execution_plan):
                if event.is_step_failure:
                    failures.append(event)
                yield event
        except Exception as exc:
            self._alert(plan_context, failures, f"the run's executor failed: {type(exc).__name__}: {exc}")
            raise
        if failures:
            self._alert(plan_context, failures, None)

    def _alert(self, plan_context, failures, run_message) -> None:
        run = plan_context.dagster_run
        summary = summarize_failure(run.job_name, run.run_id, failures, run_message, self._mask)
        if send_alert(summary, plan_context.log):
            plan_context.instance.add_run_tags(run.run_id, {ALERT_POSTED_TAG: "posted"})
