"""Failure alerts: a failed run is summarised (job, failed step, error) and posted to
``SFMC_PIPELINE_ALERT_WEBHOOK`` as Slack-compatible JSON, with no secrets, once per run however it was
launched (the run posts its own; the daemon's sensor covers runs that could not), and never through a
redirect."""

import os
import shutil

import dagster as dg
import pytest

from sfmc_pipeline.definitions import defs
from sfmc_pipeline.defs.automation.alert_webhook import post_alert
from sfmc_pipeline.defs.automation.failure_alerts import (
    ALERT_POSTED_TAG,
    ALERT_SENSOR_NAME,
    failure_alerts,
)
from sfmc_pipeline.defs.jobs import PIPELINE_JOB_NAME
from sfmc_pipeline.settings import ALERT_WEBHOOK_ENV, REPO_ROOT
from sfmc_pipeline_tests import probe_location
from sfmc_pipeline_tests.alert_receiver import receiver  # noqa: F401 - the fixture
from sfmc_pipeline_tests.dagster_processes import DagsterProcesses
from sfmc_pipeline_tests.flow_fixtures import (
    ASSETS,
    local_resources,
    materialize,
)
from sfmc_pipeline_tests.tiny_sample import write_tiny_sample


def _failed_run_context(instance, result):
    run = instance.get_run_by_id(result.run_id)
    [record] = instance.all_logs(result.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
    return dg.build_run_status_sensor_context(
        sensor_name=ALERT_SENSOR_NAME, dagster_event=record.dagster_event, dagster_instance=instance, dagster_run=run,
    ).for_run_failure()


@pytest.fixture
def volume_guard_failure(tmp_path):
    """A real failed pipeline run on the tiny sample: the Contacts extract came back empty, so the volume guard
    stopped it."""
    sample = write_tiny_sample(tmp_path / "sample")
    contacts = sample / "Contacts.csv"
    contacts.write_text(contacts.read_text(encoding="utf-8").splitlines()[0] + "\n", encoding="utf-8")
    instance = dg.DagsterInstance.ephemeral()
    result = materialize(ASSETS, local_resources(tmp_path / "storage", sample), instance=instance)
    assert not result.success
    return instance, result


def test_a_failed_run_is_logged_and_posted_as_slack_json(volume_guard_failure, receiver, monkeypatch):
    hook = receiver()
    monkeypatch.setenv(ALERT_WEBHOOK_ENV, hook.url)
    instance, result = volume_guard_failure
    failure_alerts(_failed_run_context(instance, result))

    [post] = hook.posts
    assert post["type"] == "application/json" and set(post["json"]) == {"text"}
    text = post["json"]["text"]
    assert f"run {result.run_id}" in text and "step contacts:" in text
    assert "no valid rows" in text or "empty" in text  # the volume guard's own explanation, with its fix
    assert "accept_volume_change" in text


def test_no_webhook_means_the_summary_is_only_logged(volume_guard_failure, receiver, monkeypatch):
    monkeypatch.delenv(ALERT_WEBHOOK_ENV, raising=False)
    instance, result = volume_guard_failure
    failure_alerts(_failed_run_context(instance, result))  # nothing to post to, nothing raised


def _failing_job_run(message: str):
    @dg.op
    def write_segments():
        raise dg.Failure(description=message)

    @dg.job(name="alert_probe")
    def alert_probe():
        write_segments()

    instance = dg.DagsterInstance.ephemeral()
    result = alert_probe.execute_in_process(instance=instance, raise_on_error=False)
    return instance, result


def test_secrets_never_reach_the_webhook(receiver, monkeypatch):
    hook = receiver()
    monkeypatch.setenv(ALERT_WEBHOOK_ENV, hook.url)
    monkeypatch.setenv("SALESFORCE_CLIENT_SECRET", "sf-secret-value-123")
    monkeypatch.setenv("SFMC_CLIENT_SECRET", "mc-secret-value-456")
    instance, result = _failing_job_run("login failed with sf-secret-value-123 / mc-secret-value-456")
    failure_alerts(_failed_run_context(instance, result))
    text = hook.posts[0]["json"]["text"]
    assert "step write_segments" in text and "login failed with *** / ***" in text
    assert "secret-value" not in text and "abcdef" not in text  # nor the webhook URL itself


@pytest.mark.parametrize("status", [500, 404])
def test_a_webhook_that_refuses_is_reported_without_failing_the_sensor(receiver, monkeypatch, status):
    hook = receiver(status)
    monkeypatch.setenv(ALERT_WEBHOOK_ENV, hook.url)
    instance, result = _failing_job_run("boom")
    failure_alerts(_failed_run_context(instance, result))
    assert len(hook.posts) == 1  # tried once, with a timeout; the error is logged


def test_an_unreachable_or_plain_http_webhook_is_not_fatal(monkeypatch):
    instance, result = _failing_job_run("boom")
    monkeypatch.setenv(ALERT_WEBHOOK_ENV, "http://127.0.0.1:9/closed")  # nothing listens on the discard port
    failure_alerts(_failed_run_context(instance, result))
    monkeypatch.setenv(ALERT_WEBHOOK_ENV, "http://hooks.example.com/services/x")  # not https: refused, not sent
    failure_alerts(_failed_run_context(instance, result))


def test_the_alert_sensor_runs_by_default_and_watches_the_pipeline():
    sensor = defs.get_repository_def().get_sensor_def(ALERT_SENSOR_NAME)
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert PIPELINE_JOB_NAME in {j.name for j in defs.get_repository_def().get_all_jobs()}


class _Log:
    """Collects what ``post_alert`` logs."""

    def __init__(self):
        self.lines: list[str] = []

    def error(self, message: str) -> None:
        self.lines.append(message)

    info = warning = error


@pytest.mark.parametrize("status", [307, 308])
def test_a_redirect_never_takes_the_alert_to_a_host_the_rule_refuses(receiver, monkeypatch, status):
    elsewhere = receiver(host="127.0.0.2")  # reachable, but plain http is allowed only to 127.0.0.1/localhost
    hook = receiver(status=status, location=elsewhere.url)
    monkeypatch.setenv(ALERT_WEBHOOK_ENV, hook.url)
    instance, result = _failing_job_run("boom")
    failure_alerts(_failed_run_context(instance, result))
    assert len(hook.posts) == 1 and elsewhere.posts == []


def test_a_redirect_is_reported_with_its_host_and_the_fix(receiver):
    target = receiver()
    hook = receiver(status=307, location=target.url)  # even to a host the rule accepts: alerts never follow
    log = _Log()
    assert not post_alert(hook.url, "a summary", log)
    assert target.posts == []
    [line] = log.lines
    assert "HTTP 307, a redirect to http://127.0.0.1" in line and "final URL" in line
    assert "abcdef" not in line  # the token in the webhook's path (and the redirect's) is never logged


def _execute(job, instance):
    return dg.execute_job(dg.reconstructable(job), instance=instance, raise_on_error=False)


def test_a_run_posts_its_own_alert_and_the_sensor_does_not_repeat_it(receiver, monkeypatch):
    hook = receiver()
    monkeypatch.setenv(ALERT_WEBHOOK_ENV, hook.url)
    monkeypatch.setenv("SALESFORCE_CLIENT_SECRET", "sf-secret-value-123")
    instance = dg.DagsterInstance.ephemeral()
    result = _execute(probe_location.broken_job, instance)  # no daemon, no sensor: the run alone
    assert not result.success
    [text] = hook.texts()
    assert f"run {result.run_id}" in text and "step write_segments: login failed with ***" in text
    assert instance.get_run_by_id(result.run_id).tags[ALERT_POSTED_TAG] == "posted"

    failure_alerts(_failed_run_context(instance, result))  # the daemon's sensor sees the failed run too
    assert len(hook.posts) == 1


def test_when_the_run_could_not_post_its_alert_the_sensor_does(receiver, monkeypatch):
    hook = receiver(status=503)
    monkeypatch.setenv(ALERT_WEBHOOK_ENV, hook.url)
    instance = dg.DagsterInstance.ephemeral()
    result = _execute(probe_location.broken_job, instance)
    assert len(hook.posts) == 1 and ALERT_POSTED_TAG not in instance.get_run_by_id(result.run_id).tags

    hook.status = 200
    failure_alerts(_failed_run_context(instance, result))
    assert len(hook.posts) == 2 and hook.posts[1]["json"] == hook.posts[0]["json"]


def test_a_dg_launch_run_alerts_with_no_daemon_running(receiver, tmp_path):
    hook = receiver()
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(REPO_ROOT / ".dagster_home" / "dagster.yaml", home / "dagster.yaml")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SFMC_", "SALESFORCE_", "DAGSTER_"))}
    env.update(DAGSTER_HOME=str(home), SFMC_PIPELINE_STORAGE=str(tmp_path / "storage"), SFMC_CLIENT_ID="set-alone",
               **{ALERT_WEBHOOK_ENV: hook.url})
    # The README's command; with one SFMC credential of three set, every extract step fails.
    launched = DagsterProcesses(tmp_path / "logs", env).run("launch", "dg", "launch", "--job", PIPELINE_JOB_NAME)
    assert launched.returncode != 0, launched.stdout + launched.stderr
    [text] = hook.texts()
    assert text.startswith(f"Pipeline run failed: job {PIPELINE_JOB_NAME}, run ")
    assert "- step contacts: SFMC credentials are incomplete: SFMC_CLIENT_SECRET, SFMC_AUTH_BASE_URI not set" in text
