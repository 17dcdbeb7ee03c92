"""The change sensor against the fake SFMC server (real HTTP): it polls each Data Extension with
small requests and requests one run of what changed, with its whole state in the cursor; every
distinct change starts a run in a real Dagster instance, driven by the sensor daemon's own code."""

import datetime as dt
import json
import logging

import dagster as dg

from sfmc_pipeline.definitions import build_definitions
from sfmc_pipeline.defs.automation.change_sensor import (
    CHANGE_SENSOR_NAME,
    build_change_sensor,
)
from sfmc_pipeline.defs.jobs import STORAGE_TAG
from sfmc_pipeline.defs.resources.sfmc import SfmcResource
from sfmc_pipeline_tests.flow_fixtures import edited_config
from sfmc_pipeline_tests.tiny_sample import write_tiny_sample

DOWNSTREAM = {"segment_memberships", "segment_statuses", "salesforce/contacts", "salesforce/leads"}


def _config(tmp_path, *, incremental: bool):
    """The shipped config, with or without Activities' incremental_column."""
    def edit(raw):
        for ext in raw["data_extensions"]:
            if not incremental:
                ext.pop("incremental_column", None)
    return edited_config(tmp_path, edit)


def _serve(fake_sfmc, config, rows: dict[str, int]):
    for ext in config.data_extensions:
        count = rows.get(ext.key, 3)
        served = [{name: f"{ext.key}-{i}" for name in ext.primary_key} for i in range(count)]
        fake_sfmc.add_data_extension(ext.key, served, primary_key=ext.primary_key)


def _tick(config, sfmc: SfmcResource, cursor: str | None):
    defs = build_definitions(config)
    sensor = defs.get_repository_def().get_sensor_def(CHANGE_SENSOR_NAME)
    with dg.build_sensor_context(cursor=cursor, resources={"sfmc": sfmc}, definitions=defs) as context:
        return sensor.evaluate_tick(context)


def _rest(fake_sfmc, **overrides) -> SfmcResource:
    settings = {"client_id": fake_sfmc.client_id, "client_secret": fake_sfmc.client_secret,
                "auth_base_uri": fake_sfmc.auth_base_uri, "max_retries": 0, "backoff_seconds": 0.0}
    return SfmcResource(**{**settings, **overrides})


def test_no_change_skips_a_change_requests_one_run_and_the_same_change_no_second(tmp_path, fake_sfmc):
    config = _config(tmp_path, incremental=False)
    sfmc = _rest(fake_sfmc)
    _serve(fake_sfmc, config, {})

    first = _tick(config, sfmc, None)
    assert not first.run_requests and "First poll" in first.skip_message
    baseline = json.loads(first.cursor)
    assert baseline["version"] == 1 and set(baseline["tokens"]) == {e.asset for e in config.data_extensions}
    probes = [r for r in fake_sfmc.rowset_requests() if "/key/" in r.path]
    assert len(probes) == 3 and all(r.query.get("$pageSize") == "1" for r in probes)  # cheap: one row per DE

    quiet = _tick(config, sfmc, first.cursor)
    assert not quiet.run_requests and "No change" in quiet.skip_message
    assert json.loads(quiet.cursor)["tokens"] == baseline["tokens"]

    _serve(fake_sfmc, config, {"CampaignEngagement": 5})  # two rows were added to one DE
    changed = _tick(config, sfmc, quiet.cursor)
    [request] = changed.run_requests
    assert {k.to_user_string() for k in request.asset_selection} == {"campaign_engagement"} | DOWNSTREAM
    assert request.tags.items() >= STORAGE_TAG.items()
    state = json.loads(changed.cursor)
    assert state["tokens"]["campaign_engagement"] == "5|" and state["last_change"] == request.run_key

    again = _tick(config, sfmc, changed.cursor)  # the same state once more: nothing new
    assert not again.run_requests
    replayed = _tick(config, sfmc, quiet.cursor)  # a tick evaluated twice gives the same run key (one run)
    assert replayed.run_requests[0].run_key == request.run_key


def test_every_new_change_has_a_new_run_key_even_back_to_earlier_counts(tmp_path, fake_sfmc):
    config = _config(tmp_path, incremental=False)
    sfmc = _rest(fake_sfmc)
    _serve(fake_sfmc, config, {"Contacts": 6})
    cursor = _tick(config, sfmc, None).cursor
    keys = []
    for count in (7, 8, 7, 8):  # 6 -> 7 -> 8 -> 7 -> 8: four changes, two of them back to an earlier count
        _serve(fake_sfmc, config, {"Contacts": count})
        result = _tick(config, sfmc, cursor)
        [request] = result.run_requests
        assert _tick(config, sfmc, cursor).run_requests[0].run_key == request.run_key  # the same tick again: same key
        keys.append(request.run_key)
        cursor = result.cursor
    assert len(set(keys)) == 4
    assert json.loads(cursor)["changes"] == 4 and json.loads(cursor)["last_change"] == keys[-1]


def test_a_cursor_started_afresh_never_reuses_an_earlier_run_key(tmp_path, fake_sfmc):
    config = _config(tmp_path, incremental=False)
    sfmc = _rest(fake_sfmc)
    _serve(fake_sfmc, config, {"Contacts": 6})
    keys = []
    for _ in range(2):  # e.g. the sensor's cursor was reset in the UI: the same change seen from a new baseline
        _serve(fake_sfmc, config, {"Contacts": 6})
        baseline = _tick(config, sfmc, None).cursor
        _serve(fake_sfmc, config, {"Contacts": 7})
        keys.append(_tick(config, sfmc, baseline).run_requests[0].run_key)
    assert keys[0] != keys[1]


def test_a_cursor_written_before_changes_were_counted_keeps_its_baseline(tmp_path, fake_sfmc):
    config = _config(tmp_path, incremental=False)
    sfmc = _rest(fake_sfmc)
    _serve(fake_sfmc, config, {"Contacts": 6})
    current = json.loads(_tick(config, sfmc, None).cursor)
    older = json.dumps({"version": 1, "tokens": current["tokens"], "last_change": "sfmc-change-0123456789abcdef"})
    _serve(fake_sfmc, config, {"Contacts": 7})
    [request] = _tick(config, sfmc, older).run_requests  # a change, not a new baseline
    assert request.run_key == _tick(config, sfmc, older).run_requests[0].run_key


def _daemon_location(tmp_path, config_path, fake_sfmc, monkeypatch):
    """A code location file building the project's definitions from ``config_path``, reading the fake SFMC."""
    monkeypatch.setenv("SFMC_CLIENT_ID", fake_sfmc.client_id)
    monkeypatch.setenv("SFMC_CLIENT_SECRET", fake_sfmc.client_secret)
    monkeypatch.setenv("SFMC_AUTH_BASE_URI", fake_sfmc.auth_base_uri)
    module = tmp_path / "location.py"
    module.write_text(
        "from sfmc_pipeline.config.loader import load_pipeline_config\n"
        "from sfmc_pipeline.definitions import build_definitions\n"
        f"defs = build_definitions(load_pipeline_config({str(config_path)!r}))\n",
        encoding="utf-8",
    )
    return module


def test_the_sensor_daemon_starts_a_run_for_every_distinct_change_and_every_skipped_tick_says_why(
        tmp_path, fake_sfmc, monkeypatch):
    # Dagster has no public API to run the sensor daemon once; these are the daemon's own functions, so the test
    # sees what a deployment sees: a run request whose run key a run of the sensor already used is dropped.
    from dagster._core.remote_origin import InProcessCodeLocationOrigin
    from dagster._core.test_utils import freeze_time
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget
    from dagster._daemon.sensor import execute_sensor_iteration

    config = _config(tmp_path, incremental=False)
    module = _daemon_location(tmp_path, tmp_path / "pipeline.yaml", fake_sfmc, monkeypatch)
    origin = InProcessCodeLocationOrigin(LoadableTargetOrigin(python_file=str(module), attribute="defs"),
                                         location_name="sfmc_pipeline")
    interval = dt.timedelta(seconds=config.automation.change_sensor.minimum_interval_seconds + 1)
    start = dt.datetime.now(dt.timezone.utc)
    with dg.instance_for_test() as instance:  # its run queue keeps the requested runs queued: nothing executes
        with WorkspaceProcessContext(instance, InProcessWorkspaceLoadTarget([origin])) as workspace:
            location = workspace.create_request_context().get_code_location("sfmc_pipeline")
            sensor = location.get_repository("__repository__").get_sensor(CHANGE_SENSOR_NAME)
            instance.start_sensor(sensor)
            for tick, count in enumerate((6, 7, 8, 8, 7)):  # baseline, three changes (the last back to 7), one quiet tick
                _serve(fake_sfmc, config, {"Contacts": count})
                with freeze_time(start + interval * (tick + 1)):
                    list(execute_sensor_iteration(workspace, logging.getLogger("sensor-daemon"), None, None))
            ticks = instance.get_ticks(sensor.get_remote_origin_id(), sensor.selector_id)
        runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/sensor_name": CHANGE_SENSOR_NAME}))
    assert len(ticks) == 5
    assert len(runs) == 3 and len({run.tags["dagster/run_key"] for run in runs}) == 3
    assert all(run.tags["sfmc_pipeline/changed"] == "contacts" for run in runs)
    skipped = [t for t in ticks if t.status.value == "SKIPPED"]
    assert len(skipped) == 2 and all(t.skip_reason for t in skipped)  # the baseline and the quiet tick, each with why


def test_a_change_only_requests_what_depends_on_it(tmp_path, fake_sfmc):
    config = _config(tmp_path, incremental=False)
    sfmc = _rest(fake_sfmc)
    _serve(fake_sfmc, config, {})
    baseline = _tick(config, sfmc, None).cursor
    _serve(fake_sfmc, config, {"Contacts": 4})
    [request] = _tick(config, sfmc, baseline).run_requests
    assert {k.to_user_string() for k in request.asset_selection} == {"contacts"} | DOWNSTREAM
    assert request.tags["sfmc_pipeline/changed"] == "contacts"


def test_an_sfmc_error_is_a_skipped_tick_with_the_reason_and_the_cursor_unchanged(tmp_path, fake_sfmc):
    config = _config(tmp_path, incremental=False)
    _serve(fake_sfmc, config, {})
    baseline = _tick(config, _rest(fake_sfmc), None).cursor

    fake_sfmc.remove_data_extension("Activities")
    missing = _tick(config, _rest(fake_sfmc), baseline)
    assert not missing.run_requests and missing.cursor in (None, baseline)
    assert "Could not poll" in missing.skip_message and "no Data Extension with external key 'Activities'" in missing.skip_message

    wrong = _tick(config, _rest(fake_sfmc, client_secret="not-the-secret"), baseline)
    assert not wrong.run_requests and "Could not poll" in wrong.skip_message
    assert "not-the-secret" not in wrong.skip_message

    fake_sfmc.fail_next(503, path_contains="/rowset", times=5)
    fake_sfmc.clear_requests()
    down = _tick(config, _rest(fake_sfmc, max_retries=5), baseline)
    assert not down.run_requests and "503" in down.skip_message
    assert len(fake_sfmc.rowset_requests()) == 2  # one retry per request, whatever the resource says: short ticks
    fake_sfmc.clear_faults()

    half = _tick(config, SfmcResource(client_id="only-this"), baseline)  # incomplete credentials
    assert not half.run_requests and "SFMC_CLIENT_SECRET" in half.skip_message


def test_a_garbled_cursor_starts_afresh_instead_of_crashing(tmp_path, fake_sfmc):
    config = _config(tmp_path, incremental=False)
    _serve(fake_sfmc, config, {})
    result = _tick(config, _rest(fake_sfmc), "{not json")
    assert not result.run_requests and "First poll" in result.skip_message
    assert "the stored cursor was not JSON" in result.skip_message  # why the sensor started afresh


def test_in_embedded_mode_it_watches_the_sample_files(tmp_path):
    config = _config(tmp_path, incremental=False)
    sample = write_tiny_sample(tmp_path / "sample")
    sfmc = SfmcResource(sample_dir=str(sample))
    baseline = _tick(config, sfmc, None).cursor
    assert not _tick(config, sfmc, baseline).run_requests
    path = sample / "Contacts.csv"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    path.write_text("".join(lines[:-1]), encoding="utf-8")  # one contact fewer
    [request] = _tick(config, sfmc, baseline).run_requests
    assert {k.to_user_string() for k in request.asset_selection} == {"contacts"} | DOWNSTREAM


def test_the_interval_comes_from_the_config(tmp_path):
    config = edited_config(tmp_path, lambda raw: raw["automation"].update(
        change_sensor={"minimum_interval_seconds": 900}))
    sensor = build_change_sensor(config)
    assert sensor.minimum_interval_seconds == 900
    assert sensor.default_status == dg.DefaultSensorStatus.STOPPED


def test_with_an_incremental_column_a_newer_row_is_a_change_even_at_the_same_count(tmp_path, fake_sfmc):
    config = _config(tmp_path, incremental=True)  # Activities: incremental_column OccurredAt
    sfmc = _rest(fake_sfmc)
    _serve(fake_sfmc, config, {})
    activities = config.extension("activities")

    def serve_activities(day: int):
        rows = [{"ActivityId": f"a-{i}", "OccurredAt": f"11/{day + i}/2026 10:00:00 AM"} for i in range(3)]
        fake_sfmc.add_data_extension("Activities", rows, primary_key=activities.primary_key)

    serve_activities(10)
    baseline = _tick(config, sfmc, None)
    assert json.loads(baseline.cursor)["tokens"]["activities"] == "3|11/12/2026 10:00:00 AM"
    ordered = [r for r in fake_sfmc.rowset_requests() if r.query.get("$orderBy")]
    assert [r.query["$orderBy"] for r in ordered] == ["OccurredAt desc"] and ordered[0].query["$pageSize"] == "1"

    serve_activities(11)  # same number of rows, one of them newer
    [request] = _tick(config, sfmc, baseline.cursor).run_requests
    assert {k.to_user_string() for k in request.asset_selection} == {"activities"} | DOWNSTREAM
