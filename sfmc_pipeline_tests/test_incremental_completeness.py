"""Contract: an incremental read is complete, or the same run reads every row; the window never moves
past real rows; a failed run never leaves the extension stuck; what the extension does not serve is
visible. Over real HTTP against the fake SFMC server, day after day:

- after merging a delta, the dataset's rows (valid + quarantined) equal the extension's ``count``,
  probed after the delta (so a change during the run errs towards a full read); otherwise rows were
  missed (late-arriving rows dated before the window) or deleted, and the run reads in full, saying why
  (``full_read_reason``, a warning);
- a row dated in the future does not move the high-water mark; it is counted (``future_dated_rows``)
  and warned about (``no_future_dated_rows``), and rows arriving afterwards with real dates are read;
- a delta that fails the quarantine threshold leaves the landed dataset and quarantine as they were
  (its quarantine goes to ``quarantine/rejected/``), names the rows, the reasons and the fix, and once
  the source is fixed the next run passes by itself;
- a configured column the extension does not serve warns (check ``configured_columns_served`` and a
  log line) on every run; the checks of a failed run describe the dataset that stays in place.
"""

import logging

import dagster as dg
import pandas as pd
import pytest
import yaml

from sfmc_pipeline.config.loader import parse_pipeline_config
from sfmc_pipeline.datasets.storage import DatasetStore
from sfmc_pipeline.settings import DEFAULT_CONFIG_PATH
from sfmc_pipeline_tests.flow_fixtures import (
    asset_metadata,
    check_evaluations,
    step_failures,
)
from sfmc_pipeline_tests.incremental_fixtures import Activities, activity, between

IN_PLACE = "the dataset in place (landed by an earlier run): this run failed and did not replace it"


@pytest.fixture()
def activities(fake_sfmc, tmp_path) -> Activities:
    return Activities(fake_sfmc, tmp_path / "storage")


def _checks(result) -> dict[str, dg.AssetCheckEvaluation]:
    return {c.check_name: c for c in check_evaluations(result)}


def _logs(activities: Activities, result, level=logging.WARNING) -> list[str]:
    return [e.user_message for e in activities.instance.all_logs(result.run_id) if e.level == level]


def _activities_config(edit):
    raw = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text(encoding="utf-8"))
    (entry,) = [e for e in raw["data_extensions"] if e["asset"] == "activities"]
    edit(entry)
    return parse_pipeline_config(raw, source="test config")


# -- item 2: an incremental read proves it is complete ------------------------------------------


def test_rows_arriving_late_with_old_dates_are_read_in_the_same_run(activities):
    activities.run()  # 25 rows; the mark is row 24's date
    for n in range(3):  # imported today, but dated three days back: before any window
        activities.rows[100 + n] = activity(100 + n, hour=-72 + n)
    activities.clock.advance(hours=4)
    result = activities.run()

    meta = asset_metadata(result, "activities")
    reason = ("incremental read incomplete: merged dataset 25 rows (valid + quarantined), SFMC count 28 "
              "(OccurredAt from 2026-11-15 23:00:00 to 2026-11-16 22:59:59: 0 rows, SFMC 3; system time)")
    assert (meta["read_mode"], meta["full_read_reason"]) == ("full", reason)
    assert activities.filters() == [between("2026-11-19T23:00:00"), None]  # the delta, then every row
    assert {100, 101, 102} <= set(activities.details()) and meta["dagster/row_count"] == 28
    assert meta["source_row_count"] == 28
    assert activities.state()["last_full_read_at"] == activities.clock.now.isoformat()
    assert any(reason in line and "every row read instead" in line for line in _logs(activities, result))

    activities.clock.advance(hours=1)
    again = asset_metadata(activities.run(), "activities")  # complete again: incremental, one probe
    assert again["read_mode"] == "incremental" and again["source_row_count"] == 28 and activities.probes() == 1


def test_the_count_is_probed_after_the_delta_so_a_change_during_the_run_reads_in_full(activities):
    activities.run()
    activities.clock.advance(hours=4)
    late = activity(200, hour=-50)  # written by an import just after the delta was read

    def import_a_late_row(fake):
        activities.rows[200] = late
        activities.serve()

    activities.fake.change_after_next(import_a_late_row, path_contains="/key/Activities/",
                                      query={"$filter": between("2026-11-19T23:00:00")})
    result = activities.run()
    meta = asset_metadata(result, "activities")
    assert meta["full_read_reason"].startswith("incremental read incomplete: merged dataset 25 rows")
    assert 200 in activities.details()
    first_pages = [r.query for r in activities.fake.rowset_requests() if "/key/" in r.path]
    counts = [q for q in first_pages[1:-1] if q["$pageSize"] == "1"]  # the total and one per date range
    assert first_pages[0] == {"$page": "1", "$pageSize": "2500", "$filter": between("2026-11-19T23:00:00")}
    assert first_pages[-1] == {"$page": "1", "$pageSize": "2500"} and len(counts) == len(first_pages) - 2 == 10


def test_late_rows_and_deleted_rows_that_cancel_out_in_the_total_are_still_caught(activities):
    """An event log gets both every day: three events arriving dated three days back, and three old rows
    pruned. The total is unchanged; the counts per day are not."""
    activities.run()
    for n in range(3):
        del activities.rows[n]  # pruned: the oldest rows (the day before the window)
        activities.rows[100 + n] = activity(100 + n, hour=-72 + n)  # late: three days back
    activities.clock.advance(hours=4)
    meta = asset_metadata(activities.run(), "activities")
    assert meta["read_mode"] == "full"
    assert meta["full_read_reason"] == (
        "incremental read incomplete: merged dataset 25 rows (valid + quarantined), SFMC count 25 (OccurredAt "
        "from 2026-11-18 23:00:00 to 2026-11-19 22:59:59: 23 rows, SFMC 20; OccurredAt from 2026-11-15 23:00:00 to "
        "2026-11-16 22:59:59: 0 rows, SFMC 3; system time)")
    assert {100, 101, 102} <= set(activities.details()) and not {0, 1, 2} & set(activities.details())


def test_a_daily_reimport_does_not_pile_up_deleted_bad_rows(fake_sfmc, tmp_path):
    """An extension re-imported every day with a new bad row (yesterday's deleted, ~1.6% of 60 rows):
    each day's dataset holds today's rows only, and the 5% threshold holds on every day."""
    activities = Activities(fake_sfmc, tmp_path / "storage")
    good = {i: activity(i) for i in range(59)}
    for day in range(6):
        bad = activity(1000 + day, hour=59 + 24 * day, kind="bogus")  # dated on its import day
        activities.rows = {**good, 1000 + day: bad}
        result = activities.run()
        meta = asset_metadata(result, "activities")
        assert list(activities.quarantine()["ActivityId"].str[-4:]) == [str(1000 + day)]
        assert (meta["dagster/row_count"], meta["quarantine_row_count"]) == (59, 1)
        if day:
            assert meta["full_read_reason"].startswith(
                "incremental read incomplete: merged dataset 61 rows (valid + quarantined), SFMC count 60")
        activities.clock.advance(days=1)


def test_rows_deleted_in_sfmc_leave_the_dataset_in_the_same_run(activities):
    activities.run()
    del activities.rows[0], activities.rows[1]
    activities.clock.advance(hours=2)
    meta = asset_metadata(activities.run(), "activities")
    assert meta["full_read_reason"].startswith("incremental read incomplete: merged dataset 25 rows")
    assert not {0, 1} & set(activities.details()) and meta["dagster/row_count"] == 23


def test_a_right_merge_matches_the_count_with_duplicate_and_malformed_keys(fake_sfmc, tmp_path):
    """In a Data Extension without a primary key of its own, a key can be served twice (both rows are
    quarantined) or be malformed (quarantined under the key as served): each row still counts once, so a
    merge that is right stays incremental, whether those rows are in the window or not."""
    config = _activities_config(lambda e: e.update(quarantine_threshold=0.5))  # 5 bad rows of 28, on purpose
    activities = Activities(fake_sfmc, tmp_path / "storage", config=config)
    served = []

    def serve():  # no primary key in SFMC: every field under "values", duplicates allowed
        activities.fake.add_data_extension("Activities", list(served), field_types={"OccurredAt": "Date"})

    activities.serve = serve
    rows = {i: activity(i) for i in range(25)}
    old_twin, new_twin = activity(5), activity(23)  # row 5's key again, and row 23's, dated as its twin
    new_twin["ActivityId"] = rows[23]["ActivityId"]
    old_twin["Detail"], new_twin["Detail"] = "twin", "twin"
    malformed = {**activity(24, hour=24), "ActivityId": "x" * 40}  # longer than the column's 36
    served[:] = [*rows.values(), old_twin, new_twin, malformed]
    first = asset_metadata(activities.run(), "activities")
    assert (first["rows_read"], first["rows_quarantined"]) == (28, 5)  # 2 + 2 twins, 1 malformed

    activities.clock.advance(hours=2)
    second = activities.run()  # the window holds rows 23 and 24, row 23's twin and the malformed row
    meta = asset_metadata(second, "activities")
    assert meta["read_mode"] == "incremental" and "full_read_reason" not in meta
    assert (meta["rows_fetched"], meta["source_row_count"], meta["quarantine_row_count"]) == (4, 28, 5)
    assert meta["dagster/row_count"] == 23


# -- item 3: a future-dated value never moves the window past real rows ---------------------------


def test_a_row_dated_next_year_does_not_move_the_window_and_later_real_rows_are_read(activities):
    activities.rows[99] = activity(99, hour=24 * 365)  # 11/19/2027: a typo year
    first = activities.run()  # read at 2026-11-21 12:00 UTC
    meta = asset_metadata(first, "activities")
    assert meta["high_water_mark"] == "2026-11-20T06:00:00+00:00"  # row 24, the newest real date
    assert meta["future_dated_rows"] == 1 and "00000000-0000-4000-8000-000000000099" in meta["future_dated_preview"]
    future = _checks(first)["no_future_dated_rows"]
    assert not future.passed and future.severity == dg.AssetCheckSeverity.WARN
    assert any("1 row(s) dated in the future (OccurredAt later than the time of the read" in line
               for line in _logs(activities, first))

    activities.rows[25] = activity(25, hour=27)  # 11/20 3:00 AM system time: after the mark, before the read
    activities.clock.advance(hours=4)
    second = activities.run()
    meta = asset_metadata(second, "activities")
    assert meta["read_mode"] == "incremental" and activities.filters() == [between("2026-11-19T23:00:00")]
    assert 25 in activities.details() and meta["rows_fetched"] == 4  # rows 23, 24, 25 and the future one
    assert meta["high_water_mark"] == activities.state()["high_water_mark"] == "2026-11-20T09:00:00+00:00"


# -- item 4: one failed delta does not leave an extension stuck -----------------------------------


def test_a_failed_delta_does_not_leave_the_extension_stuck(activities):
    activities.run()
    store = DatasetStore(activities.storage)
    landed = {path: path.read_bytes()
              for path in (store.dataset_path("activities"), store.quarantine_path("activities"))}
    for i in (25, 26, 27):
        activities.rows[i] = activity(i, kind="bogus")
    activities.clock.advance(hours=4)
    failed = activities.run(ok=False)

    message = step_failures(failed)["activities"]
    assert "3 of 28 rows (10.7%) failed validation, above the 5% threshold" in message
    assert ("quarantined 3 (ActivityId: 00000000-0000-4000-8000-000000000025; 00000000-0000-4000-8000-000000000026; "
            "00000000-0000-4000-8000-000000000027)") in message
    assert "top reasons: ActivityType: not one of: web_visit, form_submit, email_open, email_click (3)" in message
    assert f"is in {activities.rejected_path()}" in message
    assert "Fix: correct these rows in the Data Extension" in message
    assert {path: path.read_bytes() for path in landed} == landed  # dataset and quarantine as they were
    assert sorted(activities.rejected()["ActivityId"].str[-2:]) == ["25", "26", "27"]

    for i in (25, 26, 27):  # fixed in SFMC: the bad rows are deleted
        del activities.rows[i]
    activities.clock.advance(hours=1)
    fixed = activities.run()  # no full_refresh
    meta = asset_metadata(fixed, "activities")
    assert meta["read_mode"] == "incremental" and meta["quarantine_row_count"] == 0
    assert _checks(fixed)["quarantine_below_threshold"].passed and not activities.rejected_path().exists()


# -- item 5: what the extension does not serve is visible; checks of a failed run ----------------


def test_a_configured_column_the_extension_does_not_serve_warns_on_every_run(fake_sfmc, tmp_path):
    config = _activities_config(lambda e: e["columns"].append({"name": "Channel", "type": "Text", "nullable": True}))
    activities = Activities(fake_sfmc, tmp_path / "storage", config=config)
    for run in range(2):  # a full read, then an incremental one
        result = activities.run()
        check = _checks(result)["configured_columns_served"]
        assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
        assert check.metadata["missing_columns"].value == "Channel"
        assert any("configured column(s) Channel are not served by the Data Extension" in line
                   for line in _logs(activities, result))
        assert asset_metadata(result, "activities")["missing_columns"] == "Channel"
        activities.clock.advance(hours=1)
    assert asset_metadata(result, "activities")["read_mode"] == "incremental"


def test_the_checks_of_a_failed_read_describe_the_dataset_in_place(activities):
    activities.rows[3] = activity(3, kind="bogus")
    activities.run()  # 24 valid rows, 1 quarantined
    activities.fake.fail_next(403, path_contains="/rowset")
    activities.clock.advance(hours=1)
    failed = activities.run(ok=False)
    checks = _checks(failed)
    assert set(checks) == {"quarantine_below_threshold", "no_rows_quarantined", "row_volume_stable"}
    threshold, clean, volume = (checks[name].metadata for name in
                                ("quarantine_below_threshold", "no_rows_quarantined", "row_volume_stable"))
    assert (threshold["dataset_rows"].value, threshold["dataset_rows_quarantined"].value) == (25, 1)
    assert checks["quarantine_below_threshold"].passed and not checks["no_rows_quarantined"].passed
    assert volume["rows_valid"].value == 24 and threshold["describes"].value == IN_PLACE


def test_an_emptied_extension_fails_the_volume_guard_and_its_checks_describe_the_dataset_in_place(activities):
    activities.run()
    quarantine = DatasetStore(activities.storage).quarantine_path("activities").read_bytes()
    activities.rows = {}  # SFMC now serves count 0 and no items
    activities.clock.advance(hours=1)
    failed = activities.run(ok=False)
    assert "activities: the extract has no valid rows (25 at the last successful materialization)" in (
        step_failures(failed)["activities"])
    checks = _checks(failed)
    volume = checks["row_volume_stable"]
    assert not volume.passed and volume.metadata["rows_valid"].value == 0
    assert volume.metadata["dataset_rows_valid"].value == 25
    threshold = checks["quarantine_below_threshold"]
    assert threshold.passed and threshold.metadata["dataset_rows"].value == 25  # not "0 rows, passed"
    assert DatasetStore(activities.storage).quarantine_path("activities").read_bytes() == quarantine
    assert len(activities.dataset()) == 25


# -- item 1: an empty extension is a complete, empty read ----------------------------------------


def test_an_empty_extension_allowed_empty_is_read_as_empty(fake_sfmc, tmp_path):
    config = _activities_config(lambda e: e.update(allow_empty=True))
    activities = Activities(fake_sfmc, tmp_path / "storage", config=config)
    activities.rows = {}
    result = activities.run()
    meta = asset_metadata(result, "activities")
    assert (meta["rows_read"], meta["dagster/row_count"]) == (0, 0)
    assert _checks(result)["row_volume_stable"].passed
    columns = _checks(result)["configured_columns_served"]  # nothing served: not verified, so not passed
    assert not columns.passed and "served no row" in columns.metadata["not_verified"].value
    assert len(activities.dataset()) == 0 and list(activities.dataset().columns) == list(activity(0))
    assert isinstance(activities.dataset(), pd.DataFrame)
