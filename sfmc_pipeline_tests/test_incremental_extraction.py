"""Contract: a Data Extension with an ``incremental_column`` is read incrementally. Over real HTTP
against the fake SFMC server (and on the embedded sample): the first materialization reads every
row and stores the high-water mark; the next ones fetch only the rows whose cursor is at or after
``mark - 1 hour`` (the rowset ``$filter``, in SFMC system time), merge them into the dataset by
primary key (updated rows win, untouched rows stay, new rows are added) and report the mode, the
window, the rows fetched and the rows changed. A failed or dry run leaves the mark where it was;
``full_refresh: true`` and the periodic full refresh read everything; a row quarantined earlier
stays quarantined until a delta brings it again; a changed config or a missing previous dataset
reads in full. (That an incremental read is complete, or replaced by a full read, is in
test_incremental_completeness.py.)"""

import datetime as dt
import logging

import dagster as dg
import pandas as pd
import pytest
import yaml

from sfmc_pipeline.config.data_extensions import DataExtensionConfig
from sfmc_pipeline.config.loader import parse_pipeline_config
from sfmc_pipeline.datasets.incremental import (
    IncrementalState,
    config_fingerprint,
    plan_read,
    state_path,
    without_previous,
)
from sfmc_pipeline.datasets.merge import merge_delta
from sfmc_pipeline.datasets.storage import DatasetStore
from sfmc_pipeline.datasets.validation import validate_extract
from sfmc_pipeline.defs.assets.datasets import build_dataset_asset
from sfmc_pipeline.defs.resources.sfmc import SfmcResource
from sfmc_pipeline.defs.resources.storage import StorageResource
from sfmc_pipeline.settings import DEFAULT_CONFIG_PATH
from sfmc_pipeline_testing.sfmc_server import format_sfmc_datetime
from sfmc_pipeline_tests.flow_fixtures import (
    asset_metadata,
    check_evaluations,
    materialize,
    step_failures,
)
from sfmc_pipeline_tests.incremental_fixtures import (
    BASE,
    FULL_REFRESH,
    START,
    Activities,
    Clock,
    activity,
    between,
)
from sfmc_pipeline_tests.incremental_fixtures import (
    config_with as _config,
)


@pytest.fixture()
def activities(fake_sfmc, tmp_path) -> Activities:
    return Activities(fake_sfmc, tmp_path / "storage")


def test_the_first_read_is_full_and_the_next_fetches_the_window_and_merges_it(activities):
    first = activities.run()
    meta = asset_metadata(first, "activities")
    assert activities.filters() == [None]
    assert (meta["read_mode"], meta["full_read_reason"]) == ("full", "first read")
    assert meta["rows_fetched"] == meta["rows_read"] == meta["rows_changed"] == meta["dagster/row_count"] == 25
    # the newest row occurred at 11/20 0:00 system time = 06:00 UTC
    assert meta["high_water_mark"] == activities.state()["high_water_mark"] == "2026-11-20T06:00:00+00:00"
    assert activities.state()["last_full_read_at"] == START.isoformat()

    activities.rows[3] = activity(3, hour=30, detail="changed")  # an update: its cursor moves on
    activities.rows.update({i: activity(i, hour=i + 5) for i in (25, 26)})  # new rows
    activities.clock.advance(hours=4)
    second = activities.run()

    meta = asset_metadata(second, "activities")
    assert activities.filters() == [between("2026-11-19T23:00:00")]  # 06:00 UTC - 1 h, in UTC-6
    assert meta["read_mode"] == "incremental" and "full_read_reason" not in meta
    assert meta["window_start"] == "2026-11-20T05:00:00+00:00"
    assert meta["rows_fetched"] == meta["rows_read"] == 5  # rows 23 and 24 (the overlap), 3, 25 and 26
    assert (meta["rows_valid"], meta["rows_quarantined"], meta["rows_changed"]) == (5, 0, 3)
    assert meta["dagster/row_count"] == 27 and meta["high_water_mark"] == "2026-11-20T13:00:00+00:00"
    details = activities.details()
    assert sorted(details) == list(range(27)) and details[3] == "changed" and details[4].endswith("/p/4")
    assert activities.dataset()["ActivityId"].is_unique
    state = activities.state()
    assert state["high_water_mark"] == "2026-11-20T13:00:00+00:00" and state["last_full_read_at"] == START.isoformat()
    (line,) = [e.user_message for e in activities.instance.all_logs(second.run_id)
               if e.level == logging.INFO and "rows fetched" in (e.user_message or "")]
    assert "incremental read" in line and "5 rows fetched, 5 valid, 0 quarantined; 3 rows changed" in line

    activities.clock.advance(hours=1)
    meta = asset_metadata(activities.run(), "activities")  # nothing new: the last hour again, nothing changes
    assert activities.filters() == [between("2026-11-20T06:00:00")]
    assert (meta["rows_fetched"], meta["rows_changed"], meta["dagster/row_count"]) == (3, 0, 27)


def test_a_failed_run_leaves_the_mark_and_the_next_window_starts_where_it_was(activities):
    activities.run()
    mark = state_path(DatasetStore(activities.storage), "activities")
    stored, landed = mark.read_bytes(), activities.dataset()
    activities.rows.update({i: activity(i, kind="bogus" if i % 2 else "web_visit") for i in range(25, 29)})
    activities.clock.advance(hours=4)

    failed = activities.run(ok=False)  # 2 of the dataset's 29 rows (2 of the 6 fetched) invalid: above 5%
    assert "2 of 29 rows (6.9%) failed validation" in step_failures(failed)["activities"]
    assert "This incremental read fetched 6 rows and quarantined 2" in step_failures(failed)["activities"]
    assert activities.filters() == [between("2026-11-19T23:00:00")]
    assert mark.read_bytes() == stored
    pd.testing.assert_frame_equal(activities.dataset(), landed)
    assert len(activities.quarantine()) == 0  # the landed quarantine belongs to the dataset in place
    assert sorted(activities.rejected()["ActivityId"].str[-2:]) == ["25", "27"]  # kept for inspection

    activities.rows.update({i: activity(i) for i in (25, 27)})  # fixed in SFMC (same cursor)
    activities.clock.advance(hours=1)
    fixed = activities.run()
    assert activities.filters() == [between("2026-11-19T23:00:00")]  # still from the old mark
    meta = asset_metadata(fixed, "activities")
    assert (meta["rows_fetched"], meta["rows_changed"], meta["dagster/row_count"]) == (6, 4, 29)
    assert activities.state()["high_water_mark"] == "2026-11-20T10:00:00+00:00"
    assert len(activities.quarantine()) == 0 and not activities.rejected_path().exists()


def test_the_threshold_is_the_share_of_the_dataset_not_of_the_delta(activities):
    activities.run()
    activities.rows.update({25: activity(25, kind="bogus"), 26: activity(26), 27: activity(27)})
    activities.clock.advance(hours=4)
    result = activities.run()  # 1 bad row of 3 fetched (33%) but of 28 in the dataset (3.6%): below 5%
    check = next(c for c in check_evaluations(result) if c.check_name == "quarantine_below_threshold")
    assert check.passed and check.metadata["dataset_quarantined_share"].value == round(1 / 28, 6)
    assert sorted(activities.quarantine()["ActivityId"].str[-2:]) == ["25"]


def test_full_refresh_reads_everything(activities):
    activities.run()
    activities.rows[25] = activity(25)
    activities.clock.advance(hours=2)
    result = activities.run(FULL_REFRESH)
    meta = asset_metadata(result, "activities")
    assert activities.filters() == [None]
    assert (meta["read_mode"], meta["full_read_reason"]) == ("full", "full_refresh requested")
    assert (meta["rows_fetched"], meta["rows_changed"], meta["dagster/row_count"]) == (26, 1, 26)
    assert activities.state()["last_full_read_at"] == activities.clock.now.isoformat()


def test_the_periodic_full_refresh_reads_every_row(activities):
    activities.run()
    activities.clock.advance(days=6, hours=23)
    assert asset_metadata(activities.run(), "activities")["read_mode"] == "incremental"

    activities.clock.advance(hours=1)  # the last full read is 7 days old
    refreshed = activities.run()
    meta = asset_metadata(refreshed, "activities")
    assert (meta["read_mode"], meta["full_read_reason"]) == ("full", "periodic full refresh due")
    assert activities.filters() == [None] and meta["dagster/row_count"] == 25
    assert activities.probes() == 0  # a full read needs no proof of completeness

    activities.clock.advance(hours=1)
    assert asset_metadata(activities.run(), "activities")["read_mode"] == "incremental"


def test_without_a_periodic_full_refresh_only_a_request_reads_in_full(fake_sfmc, tmp_path):
    config = _config(full_refresh_every_days=0, incremental_overlap_minutes=0)
    activities = Activities(fake_sfmc, tmp_path, config=config)
    activities.run()
    activities.clock.advance(days=90)
    assert asset_metadata(activities.run(), "activities")["read_mode"] == "incremental"
    assert activities.filters() == [between("2026-11-20T00:00:00")]  # no overlap: from the mark itself


def test_a_quarantined_row_stays_quarantined_until_a_delta_brings_it_again(activities):
    activities.rows[2] = activity(2, kind="bogus")  # 1 of 25 rows: below the threshold
    first = activities.run()
    assert list(activities.quarantine()["ActivityId"].str[-1:]) == ["2"]

    activities.rows[25] = activity(25)
    activities.clock.advance(hours=2)
    second = activities.run()
    meta = asset_metadata(second, "activities")
    assert (meta["rows_fetched"], meta["rows_quarantined"], meta["quarantine_row_count"]) == (3, 0, 1)
    quarantine = activities.quarantine()
    assert list(quarantine["ActivityId"].str[-1:]) == ["2"] and list(quarantine["_run_id"]) == [first.run_id]
    assert "ActivityType: 'bogus' is not one of" in quarantine["_reasons"].iloc[0]
    assert 2 not in activities.details() and meta["dagster/row_count"] == 25

    activities.rows[2] = activity(2, hour=40)  # fixed in SFMC: its cursor moves on
    activities.clock.advance(hours=2)
    meta = asset_metadata(activities.run(), "activities")
    assert len(activities.quarantine()) == 0 and 2 in activities.details()
    assert (meta["rows_changed"], meta["dagster/row_count"], meta["quarantine_row_count"]) == (1, 26, 0)


def test_a_dry_run_does_not_move_the_mark(activities):
    @dg.asset(key=["salesforce", "contacts"], config_schema={"dry_run": bool})
    def stand_in_sync():
        """Stands for a CRM sync step: its ``dry_run`` makes the whole run dry (assets/dry_run.py)."""

    dry = {"ops": {"salesforce__contacts": {"config": {"dry_run": True}}}}
    activities.run()
    stored = activities.state()
    activities.rows[25] = activity(25)
    activities.clock.advance(hours=2)
    result = activities.run(dry, extra_assets=[stand_in_sync])
    assert asset_metadata(result, "activities")["high_water_mark"] == "2026-11-20T07:00:00+00:00"  # shown ...
    assert activities.state() == stored  # ... not stored
    activities.clock.advance(hours=1)
    activities.run()
    assert activities.filters() == [between("2026-11-19T23:00:00")]
    assert activities.state()["high_water_mark"] == "2026-11-20T07:00:00+00:00"


def test_a_changed_config_or_a_missing_dataset_reads_in_full(fake_sfmc, activities):
    activities.run()
    raw = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text(encoding="utf-8"))
    (entry,) = [e for e in raw["data_extensions"] if e["asset"] == "activities"]
    entry["columns"][4]["length"] = 400  # Detail: a stricter rule the stored rows never met
    activities.config = parse_pipeline_config(raw, source="test config")
    changed = asset_metadata(activities.run(), "activities")
    assert (changed["read_mode"], changed["full_read_reason"]) == ("full", "extension config changed")

    assert asset_metadata(activities.run(), "activities")["read_mode"] == "incremental"
    DatasetStore(activities.storage).dataset_path("activities").unlink()
    missing = asset_metadata(activities.run(), "activities")
    assert (missing["read_mode"], missing["full_read_reason"]) == ("full", "no previous dataset")
    assert missing["dagster/row_count"] == 25


def test_the_embedded_sample_is_read_incrementally_too(tmp_path):
    sample, storage, clock = tmp_path / "sample", tmp_path / "storage", Clock()
    sample.mkdir()
    path = sample / "Activities.csv"
    rows = pd.DataFrame([activity(i) for i in range(25)])
    rows["OccurredAt"] = rows["OccurredAt"].map(format_sfmc_datetime)
    rows.to_csv(path, index=False)
    config = _config()
    assets = [build_dataset_asset(config.extension("activities"), config, clock=clock)]
    resources = {"sfmc": SfmcResource(sample_dir=str(sample)), "storage": StorageResource(base_dir=str(storage))}
    assert asset_metadata(materialize(assets, resources), "activities")["read_mode"] == "full"

    rows.loc[len(rows)] = {**activity(25), "OccurredAt": format_sfmc_datetime(BASE + dt.timedelta(hours=25))}
    rows.to_csv(path, index=False)
    clock.advance(hours=2)
    meta = asset_metadata(materialize(assets, resources), "activities")
    assert (meta["read_mode"], meta["window_start"]) == ("incremental", "2026-11-20T05:00:00+00:00")
    assert (meta["rows_fetched"], meta["rows_changed"], meta["dagster/row_count"]) == (3, 1, 26)
    assert meta["source_mode"] == "embedded"


# -- the merge itself (pure) ---------------------------------------------------------------------

PROFILES = DataExtensionConfig(
    key="Profiles", asset="profiles", primary_key=["SubscriberKey"], incremental_column="ModifiedDate",
    columns=[{"name": "SubscriberKey", "type": "Text", "format": "salesforce_id"},
             {"name": "Email", "type": "EmailAddress"},
             {"name": "ModifiedDate", "type": "Date"}],
)
ID15, ID18 = "0035e00000ABCde", "0035e00000ABCdeAAH"
OTHER = "0035e00000XYZabAAH"


def _validated(*rows):
    frame = pd.DataFrame(rows, columns=["SubscriberKey", "Email", "ModifiedDate"]).astype("string")
    result = validate_extract(frame, PROFILES)
    return result.valid, result.quarantine.assign(_run_id="r")


def test_keys_are_compared_as_the_dataset_holds_them():
    # stored: a held profile (bad email) under its 15-character Id, and a valid one
    stored_valid, _ = _validated((OTHER, "o@example.com", "11/1/2026 9:00:00 AM"))
    _, stored_bad = _validated((f" {ID15} ", "no-at-sign", "11/1/2026 9:00:00 AM"))
    delta_valid, delta_bad = _validated((ID18, "a@example.com", "11/2/2026 9:00:00 AM"))
    merged = merge_delta(stored_valid, stored_bad, delta_valid, delta_bad, PROFILES)
    assert sorted(merged.valid["SubscriberKey"]) == [ID18, OTHER] and len(merged.quarantine) == 0
    assert merged.rows_changed == 1

    # and the other way round: a stored 18-character Id, the delta's row under its 15-character form
    bad_valid, bad_delta = _validated((ID15, "no-at-sign", "11/3/2026 9:00:00 AM"))
    again = merge_delta(merged.valid, merged.quarantine, bad_valid, bad_delta, PROFILES)
    assert list(again.valid["SubscriberKey"]) == [OTHER] and list(again.quarantine["SubscriberKey"]) == [ID15]


def test_the_newer_row_wins_and_a_tie_goes_to_the_delta():
    stored_valid, stored_bad = _validated((ID18, "new@example.com", "11/5/2026 9:00:00 AM"),
                                          (OTHER, "same@example.com", "11/5/2026 9:00:00 AM"))
    delta_valid, delta_bad = _validated((ID18, "old@example.com", "11/4/2026 9:00:00 AM"),
                                        (OTHER, "tie@example.com", "11/5/2026 9:00:00 AM"))
    merged = merge_delta(stored_valid, stored_bad, delta_valid, delta_bad, PROFILES)
    emails = dict(zip(merged.valid["SubscriberKey"], merged.valid["Email"]))
    assert emails == {ID18: "new@example.com", OTHER: "tie@example.com"} and merged.rows_changed == 1


def test_a_merge_keeps_every_row_once_valid_or_quarantined():
    """Rows of the dataset + quarantine = rows of the Data Extension, after any merge that is right: what the
    incremental read's completeness proof relies on."""
    stored_valid, stored_bad = _validated((OTHER, "o@example.com", "11/1/2026 9:00:00 AM"),
                                          (ID18, "no-at-sign", "11/1/2026 9:00:00 AM"))
    delta_valid, delta_bad = _validated((ID18, "fixed@example.com", "11/2/2026 9:00:00 AM"),
                                        (OTHER, "broken", "11/2/2026 9:00:00 AM"))
    merged = merge_delta(stored_valid, stored_bad, delta_valid, delta_bad, PROFILES)
    assert list(merged.quarantine["SubscriberKey"]) == [OTHER]  # the fixed row leaves it, the broken one enters
    assert list(merged.valid["SubscriberKey"]) == [ID18] and len(merged.valid) + len(merged.quarantine) == 2


def test_plan_read_says_why_a_read_is_full():
    config = _config()
    ext = config.extension("activities")
    state = IncrementalState(high_water_mark=START - dt.timedelta(hours=5), last_full_read_at=START,
                             fingerprint=config_fingerprint(ext))

    def plan(extension=ext, stored=state, **kwargs):
        return plan_read(extension, config.settings, stored, now=START + dt.timedelta(hours=1), **kwargs)

    incremental = plan()
    assert (incremental.mode, incremental.since) == ("incremental", START - dt.timedelta(hours=6))
    no_key = plan(ext.model_copy(update={"primary_key": []}))
    assert (no_key.reason, no_key.tracks_mark) == ("no primary key to merge on", False)
    assert plan(config.extension("contacts")).reason == "no incremental_column"
    assert plan(full_refresh=True, state_problem="damaged").reason == "full_refresh requested"
    assert plan(stored=None, state_problem="x.json cannot be read").reason == "incremental state unreadable"
    assert plan(stored=None).reason == "first read" and plan().tracks_mark
    no_previous = without_previous(plan(), "gone")
    assert (no_previous.mode, no_previous.reason, no_previous.detail) == ("full", "no previous dataset", "gone")


def test_a_damaged_state_file_reads_in_full_and_is_written_again(activities):
    activities.run()
    path = state_path(DatasetStore(activities.storage), "activities")
    path.write_text("{not json", encoding="utf-8")
    meta = asset_metadata(activities.run(), "activities")
    assert (meta["read_mode"], meta["full_read_reason"]) == ("full", "incremental state unreadable")
    assert activities.state()["high_water_mark"] == "2026-11-20T06:00:00+00:00"
