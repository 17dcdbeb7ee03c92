"""Failure alerts: every failed pipeline run is summarised in the log and, when
``SFMC_PIPELINE_ALERT_WEBHOOK`` is set, posted there as a Slack-compatible ``{"text": ...}`` message.

The summary names the job, the run, each failed step with its error and fix; secrets are redacted
and emails masked. One alert per run: a run posts its own (``runs/executor.py``) and tags itself
``sfmc_pipeline/failure_alert: posted``; this sensor (on by default, it only reports) alerts for the
others: dead or timed-out workers, runs that failed before a step, posts that did not get through.
"""

from __future__ import annotations

from typing import Callable, Sequence

import dagster as dg

from sfmc_pipeline.config.pipeline import PipelineConfig
from sfmc_pipeline.defs.automation.alert_webhook import post_alert, webhook_url
from sfmc_pipeline.governance.masking import Masker, mask_emails_in_text
from sfmc_pipeline.settings import ALERT_WEBHOOK_ENV, secret_redactor

__all__ = ["ALERT_SENSOR_NAME", "ALERT_POSTED_TAG", "build_failure_alerts", "failure_summary"]

ALERT_SENSOR_NAME = "sfmc_pipeline_failure_alerts"
ALERT_POSTED_TAG = "sfmc_pipeline/failure_alert"  # "posted": the run's own alert reached the webhook
MAX_ERROR_CHARS = 600


def summarize_failure(job_name: str, run_id: str, step_failures: Sequence[dg.DagsterEvent], run_message: str | None,
                      mask: Callable[[str], str] = mask_emails_in_text) -> str:
    """The alert text: the run, each failed step with its error, or the run's own failure message when no step
    failed. ``mask`` is applied to the text (by default every email in it is masked); secrets are redacted."""
    lines = [f"Pipeline run failed: job {job_name}, run {run_id}"]
    for event in step_failures:
        message = _error_text(event.step_failure_data.error) or event.message or ""
        if len(message) > MAX_ERROR_CHARS:
            message = message[:MAX_ERROR_CHARS].rstrip() + " ..."
        lines.append(f"- step {event.step_key}: {message}")
    if len(lines) == 1:  # no step failed: the run itself did (it could not start, its worker died, ...)
        lines.append(f"- {run_message or 'the run failed before any step ran'}")
    return mask(secret_redactor(webhook_url() or None)("\n".join(lines)))


def failure_summary(context: dg.RunFailureSensorContext, mask: Callable[[str], str] = mask_emails_in_text) -> str:
    run = context.dagster_run
    return summarize_failure(run.job_name, run.run_id, context.get_step_failure_events(),
                             context.failure_event.message, mask)


def send_alert(summary: str, log) -> bool:
    """Log ``summary`` as an error and post it to the webhook when one is set; True when it was posted."""
    log.error(summary)
    url = webhook_url()
    if url and post_alert(url, summary, log):
        log.info(f"Alert posted to the webhook in {ALERT_WEBHOOK_ENV}.")
        return True
    return False


def _error_text(error) -> str:
    """The error's own message: ``Failure: <description>`` becomes the description, other errors keep their
    class name without its module path (``ApiError: ...``)."""
    if error is None:
        return ""
    message = error.message.strip()
    head, sep, rest = message.partition(": ")
    if sep and head.split(".")[-1] == error.cls_name:
        message = rest if error.cls_name == "Failure" else f"{error.cls_name}: {rest}"
    return message


def alert_mask(pipeline: PipelineConfig | None) -> Callable[[str], str]:
    """Masking as ``pipeline`` says (``show_personal_data``); without a config emails are masked."""
    return Masker.for_pipeline(pipeline).text if pipeline is not None else mask_emails_in_text


def build_failure_alerts(pipeline: PipelineConfig | None = None, *, minimum_interval_seconds: int = 30
                         ) -> dg.SensorDefinition:
    """The sensor, masking as ``pipeline`` says; it looks for failed runs every ``minimum_interval_seconds``."""
    mask = alert_mask(pipeline)

    @dg.run_failure_sensor(
        name=ALERT_SENSOR_NAME,
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=minimum_interval_seconds,
        description=(
            f"Logs a summary of every failed run (job, failed steps, errors) and posts it to ${ALERT_WEBHOOK_ENV} "
            "(Slack-compatible JSON) when that is set, unless the run posted its own alert."
        ),
    )
    def failure_alerts(context: dg.RunFailureSensorContext) -> None:
        run = context.dagster_run
        if run.tags.get(ALERT_POSTED_TAG) == "posted":
            context.log.info(f"Run {run.run_id} failed and posted its own alert; not sending it twice.")
            return
        send_alert(failure_summary(context, mask), context.log)

    return failure_alerts


failure_alerts = build_failure_alerts()
