"""Unattended operation: the schedule, per-stage jobs, freshness, downstream automation and the
project's Dagster instance settings (run queue, API pools)."""

import datetime as dt
import shutil
import subprocess

import dagster as dg
import pytest
import yaml

from sfmc_pipeline.config.automation import ScheduleConfig
from sfmc_pipeline.config.loader import PipelineConfigError, load_pipeline_config
from sfmc_pipeline.definitions import build_definitions
from sfmc_pipeline.defs.automation.downstream import AUTOMATION_SENSOR_NAME
from sfmc_pipeline.defs.automation.schedule import SCHEDULE_NAME, longest_gap
from sfmc_pipeline.defs.jobs import STORAGE_TAG
from sfmc_pipeline.settings import DEFAULT_CONFIG_PATH, REPO_ROOT
from sfmc_pipeline_tests.flow_fixtures import edited_config

CONFIG = load_pipeline_config(DEFAULT_CONFIG_PATH)
DEFS = build_definitions(CONFIG)
DATASETS = {dg.AssetKey(e.asset) for e in CONFIG.data_extensions}
SEGMENTS = {dg.AssetKey("segment_memberships"), dg.AssetKey("segment_statuses")}
SYNCS = {dg.AssetKey(["salesforce", d.name]) for d in CONFIG.destinations}


def _config_with(tmp_path, automation: str):
    """The shipped config with its ``automation`` section replaced by ``automation`` (YAML)."""
    return edited_config(tmp_path, lambda raw: raw.update(automation=yaml.safe_load(automation)))


def test_the_schedule_runs_the_whole_flow_every_4_hours_and_ships_stopped():
    schedule = DEFS.get_repository_def().get_schedule_def(SCHEDULE_NAME)
    assert schedule.cron_schedule == "0 */4 * * *" and schedule.execution_timezone == "UTC"
    assert schedule.job_name == "sfmc_pipeline_job"
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED


def test_the_schedule_follows_the_config(tmp_path):
    config = _config_with(tmp_path, "schedule: {cron: '30 6 * * 1-5', timezone: Europe/Paris}")
    schedule = build_definitions(config).get_repository_def().get_schedule_def(SCHEDULE_NAME)
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("30 6 * * 1-5", "Europe/Paris")
    assert schedule.job_name == "sfmc_pipeline_job"  # whose runs carry the storage tag (see the jobs test)


@pytest.mark.parametrize("automation, problem", [
    ("schedule: {cron: 'every 4 hours'}", "automation > schedule > cron"),
    ("schedule: {timezone: Mars/Olympus}", "unknown time zone 'Mars/Olympus'"),
    ("change_sensor: {minimum_interval_seconds: 5}", "automation > change_sensor > minimum_interval_seconds"),
])
def test_a_bad_automation_setting_is_a_load_error(tmp_path, automation, problem):
    with pytest.raises(PipelineConfigError) as raised:
        _config_with(tmp_path, automation)
    assert problem in str(raised.value)


def test_per_stage_jobs_select_their_stage_and_every_job_carries_the_storage_tag():
    repo = DEFS.get_repository_def()
    selected = {
        name: set(repo.get_job(name).asset_layer.selected_asset_keys)
        for name in ("sfmc_pipeline_job", "extract_job", "segments_job", "sync_job")
    }
    assert selected["extract_job"] == DATASETS
    assert selected["segments_job"] == SEGMENTS
    assert selected["sync_job"] == SYNCS
    assert selected["sfmc_pipeline_job"] == DATASETS | SEGMENTS | SYNCS
    for name in selected:
        assert repo.get_job(name).tags.items() >= STORAGE_TAG.items()


def test_datasets_are_stale_when_they_miss_a_scheduled_run():
    graph = DEFS.resolve_asset_graph()
    for key in DATASETS:
        policy = graph.get(key).freshness_policy
        assert policy.warn_window.to_timedelta() == dt.timedelta(hours=4)
        assert policy.fail_window.to_timedelta() == dt.timedelta(hours=5)  # the gap plus an hour for the run itself
    assert longest_gap(ScheduleConfig(cron="0 8 * * 1-5")) == dt.timedelta(days=3)  # Friday 08:00 -> Monday 08:00


def _evaluate(instance, cursor=None):
    result = dg.evaluate_automation_conditions(defs=DEFS, instance=instance, cursor=cursor)
    return {r.key for r in result.results if r.true_subset.size}, result.cursor


def test_a_new_extract_leads_to_segments_and_syncs_without_a_second_trigger():
    instance = dg.DagsterInstance.ephemeral()
    requested, cursor = _evaluate(instance)
    assert requested == set()  # nothing was extracted yet: nothing downstream can run

    for key in DATASETS:
        instance.report_runless_asset_event(dg.AssetMaterialization(key))
    requested, cursor = _evaluate(instance, cursor)
    assert requested == SEGMENTS | SYNCS  # one tick requests the whole chain, in one run

    for key in [*SEGMENTS, *SYNCS]:
        instance.report_runless_asset_event(dg.AssetMaterialization(key))
    requested, cursor = _evaluate(instance, cursor)
    assert requested == set()  # all up to date: nothing more

    instance.report_runless_asset_event(dg.AssetMaterialization(dg.AssetKey("activities")))
    requested, _ = _evaluate(instance, cursor)
    assert dg.AssetKey("segment_memberships") in requested and SYNCS <= requested


def test_the_automation_sensor_ships_stopped_and_its_runs_queue():
    sensor = DEFS.get_repository_def().get_sensor_def(AUTOMATION_SENSOR_NAME)
    assert sensor.default_status == dg.DefaultSensorStatus.STOPPED
    assert sensor.run_tags.items() >= STORAGE_TAG.items()


def _instance_config(tmp_path, source):
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(source, home / "dagster.yaml")
    return home


def test_the_project_instance_queues_pipeline_runs_and_bounds_the_api_pools(tmp_path):
    home = _instance_config(tmp_path, REPO_ROOT / ".dagster_home" / "dagster.yaml")
    instance = dg.DagsterInstance.from_config(str(home))
    concurrency = instance.get_concurrency_config()
    limits = concurrency.run_queue_config.tag_concurrency_limits
    assert any(limit["key"] in STORAGE_TAG and limit["limit"] == 1 for limit in limits)
    assert concurrency.pool_config.default_pool_limit == 2

    pools = {}
    for node in DEFS.resolve_asset_graph().asset_nodes:
        pools[node.key] = node.pools
    assert all(pools[key] == {"sfmc_api"} for key in DATASETS)
    assert all(pools[key] == {"salesforce_api"} for key in SYNCS)


def test_the_production_example_has_the_same_queue_pool_and_run_monitoring_settings():
    local = yaml.safe_load((REPO_ROOT / ".dagster_home" / "dagster.yaml").read_text(encoding="utf-8"))
    production = yaml.safe_load((REPO_ROOT / "deploy" / "dagster.production.yaml").read_text(encoding="utf-8"))
    for section in ("concurrency", "run_queue", "run_launcher", "run_monitoring"):
        assert production[section] == local[section], section
    assert "postgres" in production["storage"]


def test_only_the_instance_settings_of_the_project_home_are_in_git():
    """Runs write their history under .dagster_home; git must ignore it but keep the instance settings."""
    paths = [".dagster_home/dagster.yaml", ".dagster_home/history/runs.db", ".dagster_home/storage/run/x",
             "data/storage/contacts/part.parquet", ".env"]
    answer = subprocess.run(["git", "check-ignore", "--no-index", *paths], cwd=REPO_ROOT,
                            capture_output=True, text=True)
    assert set(answer.stdout.split()) == set(paths[1:])
