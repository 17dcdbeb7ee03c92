"""The change sensor against the fake SFMC server (real HTTP): it polls each Data Extension with
small requests and requests one run of what changed, with its whole state in the cursor."""

import json

import dagster as dg

from sfmc_pipeline.automation.change_sensor import CHANGE_SENSOR_NAME, build_change_sensor
from sfmc_pipeline.definitions import build_definitions
from sfmc_pipeline.jobs import STORAGE_TAG
from sfmc_pipeline.resources.sfmc import SfmcResource
from sfmc_pipeline_tests.flow_fixtures import copy_sample, edited_config

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


def test_in_embedded_mode_it_watches_the_sample_files(tmp_path):
    config = _config(tmp_path, incremental=False)
    sample = copy_sample(tmp_path / "sample")
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
