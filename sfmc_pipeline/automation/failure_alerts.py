"""Failure alerts: every failed pipeline run is summarised in the log and, when
``SFMC_PIPELINE_ALERT_WEBHOOK`` is set, posted to that webhook as a Slack-compatible message
(``{"text": ...}``; Slack incoming webhooks, Microsoft Teams workflows and most chat tools take it).

The summary names the job, the run, each failed step and its error (first lines), and the fix
the error itself gives. Checks that must stop a run (volume guard, quarantine threshold, exit
guard, reconciliation, failure share) fail their step, so they arrive here too. Known secret
values are redacted from the text, emails in it are masked (``a***@example.com``, unless
``governance > masking > show_personal_data``), and the webhook URL (a secret itself) is never
logged. A webhook that cannot be reached is logged as such; it never fails the sensor.

The sensor runs by default: it only reports.
"""

from __future__ import annotations

import os
from typing import Callable
from urllib.parse import urlsplit

import dagster as dg
import requests

from sfmc_pipeline.config.models import PipelineConfig
from sfmc_pipeline.governance.masking import Masker, mask_emails_in_text
from sfmc_pipeline.settings import secret_redactor
from sfmc_pipeline.transport import LOOPBACK_HOSTS

ALERT_WEBHOOK_ENV = "SFMC_PIPELINE_ALERT_WEBHOOK"
ALERT_SENSOR_NAME = "sfmc_pipeline_failure_alerts"
WEBHOOK_TIMEOUT_SECONDS = 10.0
MAX_ERROR_CHARS = 600


def failure_summary(context: dg.RunFailureSensorContext, mask: Callable[[str], str] = mask_emails_in_text) -> str:
    """``mask``: applied to the text (by default every email in it is masked)."""
    run = context.dagster_run
    lines = [f"Pipeline run failed: job {run.job_name}, run {run.run_id}"]
    for event in context.get_step_failure_events():
        message = _error_text(event.step_failure_data.error) or event.message or ""
        if len(message) > MAX_ERROR_CHARS:
            message = message[:MAX_ERROR_CHARS].rstrip() + " ..."
        lines.append(f"- step {event.step_key}: {message}")
    if len(lines) == 1:  # no step failed: the run itself did (e.g. it could not start)
        lines.append(f"- {context.failure_event.message or 'the run failed before any step ran'}")
    return mask(secret_redactor(os.environ.get(ALERT_WEBHOOK_ENV))("\n".join(lines)))


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


def post_alert(url: str, text: str, log) -> bool:
    """POST ``{"text": text}``; True when the webhook accepted it. Never raises."""
    parts = urlsplit(url)
    if not parts.hostname or not (
        parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS)
    ):
        log.error(
            f"Alert not sent: {ALERT_WEBHOOK_ENV} must be an https:// URL (http:// only for 127.0.0.1/localhost), "
            "e.g. a Slack incoming webhook."
        )
        return False
    try:
        response = requests.post(url, json={"text": text}, timeout=WEBHOOK_TIMEOUT_SECONDS)
    except requests.RequestException as exc:
        log.error(f"Alert not sent: the webhook in {ALERT_WEBHOOK_ENV} could not be reached ({type(exc).__name__}).")
        return False
    if not 200 <= response.status_code < 300:
        log.error(f"Alert not sent: the webhook in {ALERT_WEBHOOK_ENV} answered HTTP {response.status_code}.")
        return False
    return True


def build_failure_alerts(pipeline: PipelineConfig | None = None) -> dg.SensorDefinition:
    """The sensor, masking as ``pipeline`` says (``show_personal_data``); without a config emails are masked."""
    mask = Masker.for_pipeline(pipeline).text if pipeline is not None else mask_emails_in_text

    @dg.run_failure_sensor(
        name=ALERT_SENSOR_NAME,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            f"Logs a summary of every failed run (job, failed steps, errors) and posts it to ${ALERT_WEBHOOK_ENV} "
            "(Slack-compatible JSON) when that is set."
        ),
    )
    def failure_alerts(context: dg.RunFailureSensorContext) -> None:
        summary = failure_summary(context, mask)
        context.log.error(summary)
        url = os.environ.get(ALERT_WEBHOOK_ENV, "").strip()
        if url and post_alert(url, summary, context.log):
            context.log.info(f"Alert posted to the webhook in {ALERT_WEBHOOK_ENV}.")

    return failure_alerts


failure_alerts = build_failure_alerts()
