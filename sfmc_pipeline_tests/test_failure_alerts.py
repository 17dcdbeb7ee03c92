"""The run-failure sensor: a failed run is summarised (job, failed step, error) and posted to
``SFMC_PIPELINE_ALERT_WEBHOOK`` as Slack-compatible JSON, with no secrets."""

import http.server
import json
import threading

import dagster as dg
import pytest

from sfmc_pipeline.automation.failure_alerts import ALERT_SENSOR_NAME, ALERT_WEBHOOK_ENV, failure_alerts
from sfmc_pipeline.definitions import defs
from sfmc_pipeline.jobs import PIPELINE_JOB_NAME
from sfmc_pipeline_tests.flow_fixtures import ASSETS, copy_sample, local_resources, materialize


class _Receiver(http.server.ThreadingHTTPServer):
    def __init__(self, status: int = 200):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.status = status
        self.posts: list[dict] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hooks/T000/B000/abcdef"


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.posts.append({"path": self.path, "type": self.headers["Content-Type"], "json": json.loads(body)})
        self.send_response(self.server.status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


@pytest.fixture
def receiver():
    servers = []

    def start(status=200):
        server = _Receiver(status)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _failed_run_context(instance, result):
    run = instance.get_run_by_id(result.run_id)
    [record] = instance.all_logs(result.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
    return dg.build_run_status_sensor_context(
        sensor_name=ALERT_SENSOR_NAME, dagster_event=record.dagster_event, dagster_instance=instance, dagster_run=run,
    ).for_run_failure()


@pytest.fixture
def volume_guard_failure(tmp_path):
    """A real failed pipeline run: the Contacts extract came back empty, so the volume guard stopped it."""
    sample = copy_sample(tmp_path / "sample")
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
