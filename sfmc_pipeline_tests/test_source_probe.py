"""Contract: ``probe`` takes a cheap look at a Data Extension. Over REST (real HTTP against the fake
SFMC server) it reads the rowset ``count`` with ``$page=1&$pageSize=1`` and, when the extension has
an ``incremental_column``, the newest value of that column with one more request ordered by it
(``$orderBy=<Column> desc``, schema casing), as served; an empty Data Extension has no newest value
(and costs one request). The embedded source counts the sample file's rows and gives the newest
value of the column compared as dates, as written in the file. Errors are the reads' errors."""

import datetime as dt

import pytest

from sfmc_pipeline.config.loader import load_pipeline_config
from sfmc_pipeline.errors import ApiError
from sfmc_pipeline.http import RetrySettings
from sfmc_pipeline.settings import DEFAULT_CONFIG_PATH
from sfmc_pipeline.sfmc.embedded_source import EmbeddedSampleSource
from sfmc_pipeline.sfmc.rest_source import SfmcRestSource
from sfmc_pipeline.sfmc.source import ExtractError

CONFIG = load_pipeline_config(DEFAULT_CONFIG_PATH)
ACTIVITIES = CONFIG.extension("activities")  # incremental_column: OccurredAt
CAMPAIGNS = CONFIG.extension("campaign_engagement")  # no incremental_column
HEADER = "ActivityId,SubscriberKey,ActivityType,OccurredAt,Detail\n"


def _activity(i: int, occurred_at) -> dict:
    return {"ActivityId": f"a{i}", "SubscriberKey": "0035e00000ABCdeAAH", "ActivityType": "web_visit",
            "OccurredAt": occurred_at, "Detail": ""}


# Newest by date is 12/1; as text "9/30/..." would sort last, and the newest row is neither first nor last.
DATES = [dt.datetime(2026, 9, 30, 23, 0), dt.datetime(2026, 12, 1, 8, 5, 9), None, dt.datetime(2026, 10, 2, 9, 0)]


@pytest.fixture()
def source(fake_sfmc, clock, sleeps) -> SfmcRestSource:
    return SfmcRestSource(client_id=fake_sfmc.client_id, client_secret=fake_sfmc.client_secret,
                          auth_base_uri=fake_sfmc.auth_base_uri, clock=clock, sleep=sleeps,
                          retry=RetrySettings(max_retries=0))


def test_without_an_incremental_column_the_probe_is_one_count_request(fake_sfmc, source):
    rows = [{"SubscriberKey": f"k{i}", "CampaignId": "c"} for i in range(7)]
    fake_sfmc.add_data_extension("CampaignEngagement", rows, primary_key=["SubscriberKey", "CampaignId"])
    probe = source.probe(CAMPAIGNS)
    assert (probe.rows, probe.newest, probe.change_token) == (7, None, "7|")
    (request,) = fake_sfmc.rowset_requests()
    assert request.query == {"$page": "1", "$pageSize": "1"} and "/key/CampaignEngagement/rowset" in request.path
    assert probe.api_calls == 2  # the token and the count


def test_with_an_incremental_column_the_probe_also_reads_the_newest_value(fake_sfmc, source):
    fake_sfmc.add_data_extension("Activities", [_activity(i, at) for i, at in enumerate(DATES)],
                                 primary_key=["ActivityId"])
    probe = source.probe(ACTIVITIES)
    assert probe.rows == 4 and probe.newest == "12/1/2026 8:05:09 AM"  # as served
    assert probe.change_token == "4|12/1/2026 8:05:09 AM" and probe.api_calls == 3
    count, newest = fake_sfmc.rowset_requests()
    assert count.query == {"$page": "1", "$pageSize": "1"}
    assert newest.query == {"$page": "1", "$pageSize": "1", "$orderBy": "OccurredAt desc"}
    assert "%20" in newest.raw_target and "+" not in newest.raw_target  # spaces as SFMC's examples write them

    fake_sfmc.add_data_extension("Activities", [_activity(9, dt.datetime(2026, 12, 1, 8, 5, 10)),
                                                *(_activity(i, at) for i, at in enumerate(DATES[1:]))],
                                 primary_key=["ActivityId"])  # one row gone, a newer one added: same count
    changed = source.probe(ACTIVITIES)
    assert changed.rows == 4 and changed.change_token != probe.change_token


def test_an_empty_extension_has_no_newest_value_and_costs_one_request(fake_sfmc, source):
    fake_sfmc.add_data_extension("Activities", [], primary_key=["ActivityId"])
    probe = source.probe(ACTIVITIES)
    assert (probe.rows, probe.newest, probe.change_token) == (0, None, "0|")
    assert len(fake_sfmc.rowset_requests()) == 1


def test_probe_errors_are_the_reads_errors(fake_sfmc, source):
    with pytest.raises(ApiError, match="External Key") as info:
        source.probe(ACTIVITIES)
    assert info.value.status == 404 and not info.value.retryable
    fake_sfmc.add_data_extension("Activities", [{"ActivityId": "a1", "Detail": "x"}], primary_key=["ActivityId"])
    with pytest.raises(ApiError, match="HTTP 400.*'OccurredAt' is not a field") as info:  # the fake refuses it
        source.probe(ACTIVITIES)
    assert not info.value.retryable
    page = {"links": {"self": "/v1/x"}, "page": 1, "pageSize": 1, "count": 1,
            "items": [{"keys": {"activityid": "a1"}, "values": {"detail": "x"}}]}
    fake_sfmc.fail_next(200, body=page, path_contains="/key/", times=2)  # were a tenant to serve it anyway
    missing = r"without its incremental_column 'OccurredAt' \(fields: activityid, detail\)"
    with pytest.raises(ExtractError, match=missing):
        source.probe(ACTIVITIES)
    fake_sfmc.fail_next(200, body={"message": "Request timed out", "errorcode": 10000}, path_contains="/key/", times=2)
    with pytest.raises(ExtractError, match="SFMC error object") as info:
        source.probe(ACTIVITIES)
    assert info.value.retryable


def test_the_embedded_probe_counts_the_file_and_compares_dates_as_dates(tmp_path):
    (tmp_path / "Activities.csv").write_text(
        HEADER
        + "a1,0035e00000ABCdeAAH,web_visit,9/30/2026 11:00:00 PM,\n"
        + "a2,0035e00000ABCdeAAH,web_visit,12/1/2026 8:05:09 AM,\n"
        + "a3,0035e00000ABCdeAAH,web_visit,,\n"
        + "a4,0035e00000ABCdeAAH,web_visit,not a date,\n"
        + "a5,0035e00000ABCdeAAH,web_visit,2026-10-02 09:00:00,\n",
        encoding="utf-8",
    )
    source = EmbeddedSampleSource(tmp_path)
    probe = source.probe(ACTIVITIES)
    assert (probe.rows, probe.newest, probe.api_calls) == (5, "12/1/2026 8:05:09 AM", 0)
    no_column = ACTIVITIES.model_copy(update={"incremental_column": None})
    assert source.probe(no_column).newest is None

    (tmp_path / "Activities.csv").write_text(HEADER, encoding="utf-8")
    assert source.probe(ACTIVITIES).change_token == "0|"
    (tmp_path / "Activities.csv").unlink()
    with pytest.raises(ExtractError, match="No sample extract"):
        source.probe(ACTIVITIES)
