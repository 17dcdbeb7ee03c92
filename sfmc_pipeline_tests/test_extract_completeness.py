"""Contract: a Data Extension read over REST is complete or it fails. Over real HTTP against the
fake SFMC server, every page must carry an ``items`` list and the same whole-number ``count``
(total rows), be the page asked for with the first page's page size, be full unless it is the
last, and the rows collected must reach ``count`` exactly when the pages end; the rows' primary
keys must not repeat (compared case-insensitively). A page that breaks a rule is read once more,
that page only; if it still does, the read fails with a retryable ``ExtractError`` naming the
Data Extension, the page and the counts, and the previous dataset stays in place. Each rule holds
for pages read one at a time and concurrently (``concurrency`` 1 and 4)."""

import re
from collections import Counter

import dagster as dg
import pandas as pd
import pytest

from sfmc_pipeline.config.loader import load_pipeline_config
from sfmc_pipeline.datasets.storage import DatasetStore
from sfmc_pipeline.defs.assets import failures
from sfmc_pipeline.defs.assets.datasets import build_dataset_asset
from sfmc_pipeline.defs.resources.sfmc import SfmcResource
from sfmc_pipeline.defs.resources.storage import StorageResource
from sfmc_pipeline.http import RetrySettings
from sfmc_pipeline.settings import DEFAULT_CONFIG_PATH
from sfmc_pipeline.sfmc.embedded_source import EmbeddedSampleSource
from sfmc_pipeline.sfmc.rest_source import SfmcRestSource
from sfmc_pipeline.sfmc.source import ExtractError
from sfmc_pipeline_tests.shipped_sample import SHIPPED_SAMPLE

CONFIG = load_pipeline_config(DEFAULT_CONFIG_PATH)
ACTIVITIES = CONFIG.extension("activities")
CONTACTS = CONFIG.extension("contacts")
# Page 3 of the 5-row Activities extension at page size 2, served by the fake itself.
PAGE_3 = "/v1/customobjectdata/key/Activities/rowset?$page=3&$pageSize=2"


def _activity(i: int) -> dict:
    return {
        "ActivityId": f"00000000-0000-4000-8000-{i:012d}",
        "SubscriberKey": "0035e00000ABCdeAAH",
        "ActivityType": "web_visit",
        "OccurredAt": "11/1/2026 9:30:00 AM",
        "Detail": f"https://www.example.com/p/{i}",
    }


def _wire(i: int) -> dict:
    """Activity ``i`` as the rowset serves it (lower-cased names, keys and values split)."""
    row = {name.lower(): value for name, value in _activity(i).items()}
    return {"keys": {"activityid": row.pop("activityid")}, "values": row}


def _page(items: list, *, count=5, next_link: str | None = PAGE_3) -> dict:
    body = {"links": {"self": "/v1/customobjectdata/token/t/rowset?$page=2"}, "page": 2, "pageSize": 2, "items": items}
    if count is not None:
        body["count"] = count
    if next_link:
        body["links"]["next"] = next_link
    return body


@pytest.fixture(params=[1, 4], ids=["sequential", "concurrent"])
def activities_source(request, fake_sfmc, clock, sleeps) -> SfmcRestSource:
    """Five Activities rows in three pages of 2, 2 and 1, read with concurrency 1 and 4."""
    fake_sfmc.add_data_extension("Activities", [_activity(i) for i in range(5)], primary_key=["ActivityId"])
    return SfmcRestSource(
        client_id=fake_sfmc.client_id,
        client_secret=fake_sfmc.client_secret,
        auth_base_uri=fake_sfmc.auth_base_uri,
        page_size=2,
        concurrency=request.param,
        clock=clock,
        sleep=sleeps,
        retry=RetrySettings(max_retries=0),
    )


def _requests_per_page(fake_sfmc) -> Counter:
    """How many times each rowset page was requested ("1" for the first page)."""
    return Counter(int(r.query.get("$page", "1")) for r in fake_sfmc.rowset_requests())


def _page_requests(fake_sfmc, number: int) -> list:
    return [r for r in fake_sfmc.rowset_requests() if int(r.query.get("$page", "1")) == number]


TWO_ROWS = [_wire(2), _wire(3)]
BAD_SECOND_PAGES = {
    "no items list": ({k: v for k, v in _page([]).items() if k != "items"}, "it had no 'items' list"),
    "SFMC error object": (
        {"message": "An error occurred while reading the data.", "errorcode": 10000, "documentation": "https://x"},
        "it was an SFMC error object, not rows: 'An error occurred while reading the data.' (errorcode 10000)",
    ),
    "count missing": (_page(TWO_ROWS, count=None), "its 'count' (total rows) was None, not a whole number"),
    "count not an integer": (_page(TWO_ROWS, count="5"), "its 'count' (total rows) was '5', not a whole number"),
    "count changed": (_page(TWO_ROWS, count=9), "its 'count' (total rows) changed to 9"),
    "pages run out short": (
        _page([_wire(2)], next_link=None),
        "it had 1 row(s) and no links.next, ending the read at 3 of 5 rows ('count')",
    ),
    "empty page before count": (_page([]), "it was empty, 3 rows short of 'count'"),
    "more rows than count": (
        _page([_wire(2), _wire(3), _wire(4), _wire(5)]),
        "it had 4 row(s), 6 in all, more than the 5 in 'count'",
    ),
    # Pages are requested by number, out of order: each must be the page asked for, and full.
    "not a full page": (_page([_wire(2)]), "it had 1 row(s), not a full page of 2, and it is page 2 of 3, not the last"),
    "another page": ({**_page(TWO_ROWS), "page": 3}, "it was page 3 of the read, not page 2"),
    "another page size": ({**_page(TWO_ROWS), "pageSize": 3}, "its pageSize was 3, not the first page's 2"),
    # Primary keys: a row of page 1 served again (the extension rewritten during the read).
    "a repeated primary key": (
        _page([_wire(0), _wire(3)]),
        "a row repeated the primary key (activityid) of a row on page 1",
    ),
    "two rows with one key": (_page([_wire(2), _wire(2)]), "two of its rows had the same primary key (activityid)"),
}


@pytest.mark.parametrize("body, problem", BAD_SECOND_PAGES.values(), ids=BAD_SECOND_PAGES.keys())
def test_a_bad_page_is_read_again_then_fails_the_read(fake_sfmc, activities_source, body, problem):
    fake_sfmc.fail_next(200, body=body, path_contains="/token/", page=2, times=2)
    with pytest.raises(ExtractError, match=re.escape(problem)) as info:
        activities_source.read(ACTIVITIES)
    message = str(info.value)
    assert info.value.retryable
    assert "Data Extension 'Activities' is incomplete" in message
    assert "page 2 (after 2 of the 5 rows in 'count') was read twice" in message
    assert "check that nothing writes to 'Activities'" in message
    assert not any(token in message for token in fake_sfmc.issued_tokens)
    per_page = _requests_per_page(fake_sfmc)
    assert per_page[1] == 1 and per_page[2] == 2 and per_page[3] <= 1  # page 3 may have been fetched ahead
    first, again = _page_requests(fake_sfmc, 2)
    assert first.raw_target == again.raw_target  # the same URL, twice
    assert fake_sfmc.pending_faults == 0


def _last_page(items: list, **fields) -> dict:
    return {"links": {"self": "/v1/customobjectdata/token/t/rowset?$page=3"}, "page": 3, "pageSize": 2, "count": 5,
            "items": items, **fields}


BAD_LAST_PAGES = {
    "short, with a next link": (
        _last_page([], links={"self": "/v1/x", "next": "/v1/customobjectdata/token/t/rowset?$page=4"}),
        "it was empty, 1 rows short of 'count'",
    ),
    "count changed": (_last_page([_wire(4)], count=6), "its 'count' (total rows) changed to 6"),
    "a key of page 2 again": (_last_page([_wire(3)]), "a row repeated the primary key (activityid) of a row on page 2"),
}


@pytest.mark.parametrize("body, problem", BAD_LAST_PAGES.values(), ids=BAD_LAST_PAGES.keys())
def test_a_bad_last_page_fails_the_read_after_one_more_read_of_it(fake_sfmc, activities_source, body, problem):
    fake_sfmc.fail_next(200, body=body, path_contains="/token/", page=3, times=2)
    with pytest.raises(ExtractError, match=re.escape(problem)) as info:
        activities_source.read(ACTIVITIES)
    assert info.value.retryable and "page 3 (after 4 of the 5 rows in 'count') was read twice" in str(info.value)
    assert _requests_per_page(fake_sfmc) == {1: 1, 2: 1, 3: 2}


def test_a_200_error_object_on_the_first_page_is_not_an_empty_extension(fake_sfmc, activities_source):
    error = {"message": "Request timed out", "errorcode": 10000, "documentation": "https://x"}
    fake_sfmc.fail_next(200, body=error, path_contains="/key/", times=2)
    with pytest.raises(ExtractError, match=r"page 1 \(the first page\) was read twice .*SFMC error object") as info:
        activities_source.read(ACTIVITIES)
    assert info.value.retryable and "'Request timed out' (errorcode 10000)" in str(info.value)


@pytest.mark.parametrize("body", [_page([_wire(2)], next_link=None), _page([_wire(0), _wire(3)])],
                         ids=["short page", "repeated primary key"])
def test_a_transient_bad_page_is_read_again_and_the_read_succeeds(fake_sfmc, activities_source, body):
    fake_sfmc.fail_next(200, body=body, path_contains="/token/", page=2)
    extract = activities_source.read(ACTIVITIES)
    assert extract.frame["ActivityId"].tolist() == [_activity(i)["ActivityId"] for i in range(5)]
    assert _requests_per_page(fake_sfmc) == {1: 1, 2: 2, 3: 1}  # page 2 twice; no other page again
    first, again = _page_requests(fake_sfmc, 2)
    assert first.raw_target == again.raw_target


def _contacts(n: int) -> list[dict]:
    """``n`` sample contacts with distinct keys (SFMC enforces the primary key)."""
    frame = EmbeddedSampleSource(SHIPPED_SAMPLE).read(CONTACTS).frame
    return frame.drop_duplicates("SubscriberKey").head(n).to_dict("records")


def _step_failure(result) -> str:
    """The failed step's error messages, the causes included (a retried step ends with
    "Exceeded max_retries", caused by the error that asked for the retry)."""
    [error] = [e.event_specific_data.error for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    messages = []
    while error is not None:
        messages.append(error.message)
        error = error.cause
    return "\n".join(messages)


def test_a_short_second_page_fails_the_run_and_keeps_the_previous_dataset(tmp_path, fake_sfmc, monkeypatch):
    fake_sfmc.add_data_extension("Contacts", _contacts(3000), primary_key=["SubscriberKey"])
    monkeypatch.setenv("SFMC_CLIENT_ID", fake_sfmc.client_id)
    monkeypatch.setenv("SFMC_CLIENT_SECRET", fake_sfmc.client_secret)
    monkeypatch.setenv("SFMC_AUTH_BASE_URI", fake_sfmc.auth_base_uri)
    monkeypatch.setattr(failures, "TRANSIENT_RETRY_WAIT", 0)
    resources = {
        "sfmc": SfmcResource(
            client_id=dg.EnvVar("SFMC_CLIENT_ID"),
            client_secret=dg.EnvVar("SFMC_CLIENT_SECRET"),
            auth_base_uri=dg.EnvVar("SFMC_AUTH_BASE_URI"),
            max_retries=0,
            backoff_seconds=0,
        ),
        "storage": StorageResource(base_dir=str(tmp_path)),
    }
    assets = [build_dataset_asset(CONTACTS, CONFIG)]
    dataset_path = DatasetStore(tmp_path).dataset_path("contacts")

    complete = dg.materialize(assets, resources=resources)
    assert complete.success
    rows_read = complete.get_asset_materialization_events()[0].materialization.metadata["rows_read"].value
    assert rows_read == 3000 and len(fake_sfmc.rowset_requests()) == 2  # 2,500 + 500
    before = pd.read_parquet(dataset_path)

    # Page 2 comes back empty without links.next: every attempt, and its re-read, is short.
    short = {"links": {"self": "/v1/customobjectdata/token/t/rowset?$page=2"}, "page": 2, "pageSize": 2500,
             "count": 3000, "items": []}
    attempts = 1 + failures.TRANSIENT_RETRIES
    fake_sfmc.fail_next(200, body=short, path_contains="/token/", times=2 * attempts)
    fake_sfmc.clear_requests()
    incomplete = dg.materialize(assets, resources=resources, raise_on_error=False)

    assert not incomplete.success
    assert incomplete.get_asset_materialization_events() == []
    assert fake_sfmc.pending_faults == 0 and len(fake_sfmc.rowset_requests()) == 3 * attempts
    message = _step_failure(incomplete)
    assert "Data Extension 'Contacts' is incomplete: page 2 (after 2500 of the 3000 rows in 'count')" in message
    assert "it was empty, 500 rows short of 'count'" in message
    assert fake_sfmc.client_secret not in message
    pd.testing.assert_frame_equal(pd.read_parquet(dataset_path), before)  # the previous dataset stays
