"""Contract: once the first page has told ``count``, the pages of a rowset read are fetched
concurrently (``concurrency`` at a time, at most ``2 x concurrency`` ahead of the consumer) and
yielded in page order, and the result is exactly the rows of reading them one at a time: no row
missing or doubled, checked by primary key against ``count``. A transient failure of one page is
retried for that page only; a bad page (short, count changed, a primary key repeated) is read
once more, that page only, then fails the read; a 401 renews the token once for every page in
flight; the token never leaves the REST origin. Over real HTTP against the fake SFMC server; no
assertion is about time (a latency is set only so that requests overlap)."""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
import time
from collections import Counter

import dagster as dg
import pandas as pd
import pytest
import requests

from sfmc_pipeline.config.loader import load_pipeline_config
from sfmc_pipeline.defs.assets.datasets import build_dataset_asset
from sfmc_pipeline.defs.resources.sfmc import SfmcResource
from sfmc_pipeline.defs.resources.storage import StorageResource
from sfmc_pipeline.errors import ApiError
from sfmc_pipeline.http import HttpTransport, RetrySettings
from sfmc_pipeline.settings import DEFAULT_CONFIG_PATH
from sfmc_pipeline.sfmc.auth import SfmcAuth
from sfmc_pipeline.sfmc.embedded_source import EmbeddedSampleSource
from sfmc_pipeline.sfmc.rest_source import SfmcRestSource
from sfmc_pipeline.sfmc.rowset_decoding import RowsetItems, decode_page
from sfmc_pipeline.sfmc.rowset_links import page_url
from sfmc_pipeline.sfmc.source import ExtractError, align_columns, collect_pages
from sfmc_pipeline_tests.shipped_sample import SHIPPED_SAMPLE

CONFIG = load_pipeline_config(DEFAULT_CONFIG_PATH)
ACTIVITIES = CONFIG.extension("activities")
CONTACTS = CONFIG.extension("contacts")
ROWS = 37  # pages of 5: 7 full pages and a last one of 2


def _activity(i: int) -> dict:
    return {
        "ActivityId": f"act-{i:03d}-key",  # letters: primary keys compare case-insensitively
        "SubscriberKey": "0035e00000ABCdeAAH",
        "ActivityType": ["web_visit", "email_open", "form_submit"][i % 3],
        "OccurredAt": dt.datetime(2026, 11, 1, 9, 30) + dt.timedelta(hours=i),
        "Detail": f"https://www.example.com/p/{i}" if i % 4 else "",
    }


def _wire(i: int, key: str | None = None) -> dict:
    """Activity ``i`` as the rowset serves it."""
    row = {name.lower(): value for name, value in _activity(i).items()}
    row["occurredat"] = "11/1/2026 9:30:00 AM"
    return {"keys": {"activityid": key or row.pop("activityid")}, "values": {k: v for k, v in row.items()
                                                                               if k != "activityid"}}


def _body(page: int, items: list, *, count: int = ROWS, page_size: int = 5, next_page: bool = True) -> dict:
    links = {"self": f"/v1/customobjectdata/token/t/rowset?$page={page}"}
    if next_page:
        links["next"] = f"/v1/customobjectdata/token/t/rowset?$page={page + 1}"
    return {"links": links, "page": page, "pageSize": page_size, "count": count, "items": items}


@pytest.fixture()
def activities(fake_sfmc):
    fake_sfmc.add_data_extension("Activities", [_activity(i) for i in range(ROWS)], primary_key=["ActivityId"],
                                 field_types={"OccurredAt": "Date"})
    return fake_sfmc


@pytest.fixture()
def source_for(fake_sfmc, clock, sleeps):
    def make(**overrides) -> SfmcRestSource:
        kwargs = dict(client_id=fake_sfmc.client_id, client_secret=fake_sfmc.client_secret,
                      auth_base_uri=fake_sfmc.auth_base_uri, page_size=5, concurrency=4, clock=clock, sleep=sleeps,
                      retry=RetrySettings(max_retries=3, backoff_seconds=0.5))
        kwargs.update(overrides)
        return SfmcRestSource(**kwargs)

    return make


def _per_page(fake_sfmc, status: int | None = None) -> Counter:
    """Rowset requests per page number (the first page has no ``$page`` continuation)."""
    return Counter(int(r.query.get("$page", "1")) for r in fake_sfmc.rowset_requests()
                   if status is None or r.status == status)


def _served_in_order(server, key: str, page_size: int, row_filter: str | None = None) -> list[dict]:
    """The rows as a plain sequential loop over links.next gets them (flat, names as served)."""
    token = requests.post(server.token_url, json={"grant_type": "client_credentials", "client_id": server.client_id,
                                                  "client_secret": server.client_secret}, timeout=5).json()
    params = {"$page": 1, "$pageSize": page_size, **({"$filter": row_filter} if row_filter else {})}
    headers = {"Authorization": f"Bearer {token['access_token']}"}
    page = requests.get(server.rowset_url(key), params=params, headers=headers, timeout=5).json()
    rows = []
    while True:
        rows += [{**item["keys"], **item["values"]} for item in page["items"]]
        if "next" not in page["links"]:
            return rows
        page = requests.get(token["rest_instance_url"] + "data" + page["links"]["next"], headers=headers,
                            timeout=5).json()


@pytest.mark.parametrize("page_size", [1, 5, 7, 37, 50])
def test_concurrent_pages_are_exactly_the_rows_of_sequential_pages_in_order(activities, source_for, page_size):
    served = _served_in_order(activities, "Activities", page_size)
    expected = align_columns(pd.DataFrame.from_records(served), ACTIVITIES)[0]  # how a whole read is aligned
    activities.clear_requests()
    reads = {}
    for concurrency in (1, 4, 16):
        stream = source_for(page_size=page_size, concurrency=concurrency).read_pages(ACTIVITIES)
        frames = list(stream)
        pages = -(-ROWS // page_size)
        assert [len(f) for f in frames] == [page_size] * (pages - 1) + [ROWS - (pages - 1) * page_size]
        assert [f.index[0] for f in frames] == [n * page_size for n in range(pages)]  # position in the read
        assert stream.finished and stream.rows == stream.expected_rows == ROWS and stream.pages == pages
        assert stream.api_calls == 1 + pages  # a token, then every page once
        reads[concurrency] = pd.concat(frames)
    for frame in reads.values():
        pd.testing.assert_frame_equal(frame, expected)
    whole = source_for(page_size=page_size).read(ACTIVITIES)
    pd.testing.assert_frame_equal(whole.frame, expected)
    assert whole.api_calls == 1 + -(-ROWS // page_size) and whole.unmapped_columns == [] == whole.missing_columns


def test_served_fields_map_to_the_configured_columns_on_every_page(fake_sfmc, source_for):
    """Extra fields are reported, fields no page serves are missing, a field some rows lack is ""."""
    rows = [{k: v for k, v in _activity(i).items() if not (k == "Detail" and i % 2)} | {"Extra": "x"}
            for i in range(12)]
    fake_sfmc.add_data_extension("Activities", [{k: v for k, v in r.items() if k != "SubscriberKey"} for r in rows],
                                 primary_key=["ActivityId"])
    extract = source_for(concurrency=3).read(ACTIVITIES)
    served = _served_in_order(fake_sfmc, "Activities", 5)
    pd.testing.assert_frame_equal(extract.frame, align_columns(pd.DataFrame.from_records(served), ACTIVITIES)[0])
    assert extract.unmapped_columns == ["extra"] and extract.missing_columns == ["SubscriberKey"]
    assert (extract.frame["SubscriberKey"] == "").all() and extract.frame["Detail"].iloc[1] == ""


def test_a_windowed_read_filters_the_first_page_and_continues_concurrently(activities, source_for):
    since = dt.datetime(2026, 11, 2, 15, 30, tzinfo=dt.timezone.utc)  # 9:30 AM system time, the 25th row on
    extract = source_for(concurrency=4).read(ACTIVITIES, since=since)
    assert extract.frame["ActivityId"].tolist() == [_activity(i)["ActivityId"] for i in range(24, ROWS)]
    first, *continuations = activities.rowset_requests()
    assert first.query["$filter"] == "OccurredAt between '2026-11-02T09:30:00' and '9999-12-31T23:59:59'"
    assert len(continuations) == 2 and all("$filter" not in r.query for r in continuations)  # 13 rows: 3 pages


def test_transient_failures_of_some_pages_are_retried_for_those_pages_only(activities, source_for, sleeps):
    activities.fail_next(429, path_contains="/token/", page=3)
    activities.fail_next(503, path_contains="/token/", page=5, times=2)
    activities.drop_connection_next(path_contains="/token/", page=7)
    extract = source_for(concurrency=4).read(ACTIVITIES)
    assert extract.frame["ActivityId"].tolist() == [_activity(i)["ActivityId"] for i in range(ROWS)]
    assert _per_page(activities) == {1: 1, 2: 1, 3: 2, 4: 1, 5: 3, 6: 1, 7: 2, 8: 1}
    assert _per_page(activities, status=200) == {n: 1 for n in range(1, 9)}  # every page answered once
    assert sorted(sleeps.calls) == [0.5, 0.5, 1.0, 1.0]  # 429: retryAfter 1; 503: 0.5, 1.0; the drop: 0.5
    assert activities.pending_faults == 0 and extract.api_calls == 1 + 8 + 4


BAD_FOURTH_PAGES = {
    "short": (_body(4, [_wire(15), _wire(16)]), "it had 2 row(s), not a full page of 5, and it is page 4 of 8"),
    "count changed": (_body(4, [_wire(i) for i in range(15, 20)], count=40), "its 'count' (total rows) changed to 40"),
    "a primary key of page 1, in other case": (
        _body(4, [_wire(15), _wire(16), _wire(17), _wire(18), _wire(0, key="ACT-000-KEY")]),
        "a row repeated the primary key (activityid) of a row on page 1",
    ),
    "the rows of page 2 (pages served in order, not as asked)": (
        _body(4, [_wire(i) for i in range(5, 10)]),
        "a row repeated the primary key (activityid) of a row on page 2",
    ),
}


@pytest.mark.parametrize("body, problem", BAD_FOURTH_PAGES.values(), ids=BAD_FOURTH_PAGES.keys())
def test_a_bad_page_fails_the_concurrent_read_after_one_more_read_of_it(activities, source_for, body, problem):
    activities.fail_next(200, body=body, path_contains="/token/", page=4, times=2)
    stream = source_for(concurrency=4).read_pages(ACTIVITIES)
    yielded = []
    with pytest.raises(ExtractError, match=re.escape(problem)) as info:
        for frame in stream:
            yielded.append(frame)
    assert info.value.retryable and "page 4 (after 15 of the 37 rows in 'count') was read twice" in str(info.value)
    assert [len(f) for f in yielded] == [5, 5, 5] and not stream.finished  # pages 1-3, then the failure
    per_page = _per_page(activities)
    assert per_page[4] == 2 and all(per_page[n] == 1 for n in (1, 2, 3))
    assert all(per_page[n] <= 1 for n in range(5, 9))  # fetched ahead at most once, never read again
    assert activities.in_flight == 0 and activities.pending_faults == 0  # nothing left running


def test_a_last_page_that_ends_short_of_count_fails(activities, source_for):
    short = _body(8, [_wire(35)], next_page=True)  # 1 of the 2 rows the last page must hold, and a next link
    activities.fail_next(200, body=short, path_contains="/token/", page=8, times=2)
    with pytest.raises(ExtractError, match=re.escape(
            "it had 1 row(s), ending the read at 36 of 37 rows ('count') on its last page (8 of 8)")):
        source_for(concurrency=4).read(ACTIVITIES)
    assert _per_page(activities) == {**{n: 1 for n in range(1, 8)}, 8: 2}


def test_a_repeated_key_once_is_read_again_and_the_read_succeeds(activities, source_for):
    activities.fail_next(200, body=_body(6, [_wire(0)] + [_wire(i) for i in range(26, 30)]), path_contains="/token/",
                         page=6)
    extract = source_for(concurrency=4).read(ACTIVITIES)
    assert extract.frame["ActivityId"].tolist() == [_activity(i)["ActivityId"] for i in range(ROWS)]
    assert _per_page(activities) == {**{n: 1 for n in range(1, 9)}, 6: 2}


def test_a_401_mid_read_renews_the_token_exactly_once_for_every_page_in_flight(activities, source_for):
    activities.latency = 0.02  # pages 2..5 in flight together, all with the token revoked under them
    activities.revoke_tokens_next(path_contains="/token/", page=2)
    extract = source_for(concurrency=4).read(ACTIVITIES)
    assert extract.frame["ActivityId"].tolist() == [_activity(i)["ActivityId"] for i in range(ROWS)]
    assert len(activities.token_requests()) == 2  # the first token and one renewal, however many pages got 401
    old, new = activities.issued_tokens
    unauthorized = [r for r in activities.rowset_requests() if r.status == 401]
    assert unauthorized and all(r.headers["Authorization"] == f"Bearer {old}" for r in unauthorized)
    assert _per_page(activities, status=200) == {n: 1 for n in range(1, 9)}
    # in the order the fake handled them: from page 2 on (the revocation), every page answered had the new token
    rowsets = activities.rowset_requests()
    revoked_at = next(i for i, r in enumerate(rowsets) if r.query.get("$page") == "2")
    assert rowsets[revoked_at].status == 401
    assert all(r.headers["Authorization"] == f"Bearer {new}" for r in rowsets[revoked_at:] if r.status == 200)


def test_token_renewal_is_one_request_for_many_threads(fake_sfmc_factory, clock):
    """Threads that ask for a token while another renews wait for that renewal: its token, or its
    error, is theirs; a 401 on a stale token invalidates it once."""
    server = fake_sfmc_factory(latency=0.2)  # a slow token endpoint: every thread arrives while it is asked
    auth = SfmcAuth(HttpTransport("SFMC", retry=RetrySettings(max_retries=0)), client_id=server.client_id,
                    client_secret=server.client_secret, auth_base_uri=server.auth_base_uri, clock=clock)

    def in_threads(action, n: int = 8) -> list:
        barrier, results = threading.Barrier(n), [None] * n

        def run(i: int) -> None:
            barrier.wait()
            try:
                results[i] = action()
            except ApiError as exc:
                results[i] = exc

        threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        return results

    first = in_threads(auth.token)
    assert len(server.token_requests()) == 1 and all(token is first[0] for token in first)

    def renew_after_401():
        auth.invalidate(first[0])  # every thread saw a 401 with the same token
        return auth.token()

    renewed = in_threads(renew_after_401)
    assert len(server.token_requests()) == 2 and all(token is renewed[0] for token in renewed)
    assert renewed[0] is not first[0]

    server.fail_next(401, path_contains="/v2/token", times=8,
                     body={"error": "invalid_client", "error_description": "Invalid client ID."})
    auth.invalidate()
    failed = in_threads(auth.token)
    assert len(server.token_requests()) == 3  # one failed renewal, its error given to every waiting thread
    assert all(isinstance(error, ApiError) and "invalid_client" in str(error) for error in failed)
    server.clear_faults()
    assert auth.token() is not renewed[0] and len(server.token_requests()) == 4  # a later call asks again


@pytest.mark.parametrize("where", ["the first page's next link", "a later page's next link"])
def test_the_token_never_goes_to_another_origin(activities, fake_sfmc_factory, source_for, where):
    other = fake_sfmc_factory()  # records every request
    elsewhere = f"http://127.0.0.1:{other.port}/rest/data/v1/customobjectdata/token/t/rowset?$page=3"
    if where == "the first page's next link":
        first = _body(1, [_wire(i) for i in range(5)])
        first["links"]["next"] = elsewhere
        activities.fail_next(200, body=first, path_contains="/key/")
        with pytest.raises(ExtractError, match="the access token was not sent there") as info:
            source_for(concurrency=4).read(ACTIVITIES)
        assert not info.value.retryable and len(activities.rowset_requests()) == 1
    else:  # pages are requested at the first page's link: a later page's link is never followed
        second = _body(2, [_wire(i) for i in range(5, 10)])
        second["links"]["next"] = elsewhere
        activities.fail_next(200, body=second, path_contains="/token/", page=2)
        assert len(source_for(concurrency=4).read(ACTIVITIES).frame) == ROWS
        assert all(r.path.startswith("/rest/data/v1/customobjectdata/") for r in activities.rowset_requests())
    assert other.requests == []


@pytest.mark.parametrize("concurrency", [1, 2, 4])
def test_pages_come_in_order_from_a_bounded_window(fake_sfmc, source_for, concurrency):
    fake_sfmc.add_data_extension("Activities", [_activity(i) for i in range(60)], primary_key=["ActivityId"])
    fake_sfmc.latency = 0.01  # so that concurrent requests overlap at the fake
    window = 2 * concurrency
    stream = source_for(concurrency=concurrency).read_pages(ACTIVITIES)
    for number, frame in enumerate(stream, start=1):
        assert frame.index[0] == (number - 1) * 5 and len(frame) == 5  # page order
        # the consumer holds page `number`: at most the next `window` pages have been asked for
        assert len(fake_sfmc.rowset_requests()) <= number + window
    assert stream.pages == 12 and stream.pages_ahead_peak == window
    assert 1 <= fake_sfmc.max_in_flight <= concurrency
    if concurrency > 1:
        assert fake_sfmc.max_in_flight >= 2  # pages really were fetched concurrently


def test_a_consumer_that_pauses_holds_up_the_read_after_the_window(fake_sfmc, source_for):
    fake_sfmc.add_data_extension("Activities", [_activity(i) for i in range(60)], primary_key=["ActivityId"])
    stream = source_for(concurrency=2).read_pages(ACTIVITIES)
    next(stream)  # page 1 taken; the consumer does not ask for more yet
    deadline = time.monotonic() + 10
    while len(fake_sfmc.rowset_requests()) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    while fake_sfmc.in_flight and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(fake_sfmc.rowset_requests()) == 5  # page 1 and the window of 2 x 2 pages, nothing more
    stream.close()  # pages not yet requested are not requested
    assert len(fake_sfmc.rowset_requests()) == 5 and fake_sfmc.in_flight == 0 and not stream.finished


def test_max_in_flight_stays_within_concurrency_when_pages_are_retried(activities, source_for):
    activities.latency = 0.01
    activities.fail_next(503, path_contains="/token/", page=2, times=2)
    activities.fail_next(200, body=_body(3, [_wire(10)]), path_contains="/token/", page=3)  # short once: re-read
    extract = source_for(concurrency=2).read(ACTIVITIES)
    assert len(extract.frame) == ROWS and activities.max_in_flight <= 2


def test_embedded_pages_are_chunks_of_the_sample_file(tmp_path):
    source = EmbeddedSampleSource(SHIPPED_SAMPLE, page_size=1000)
    whole = source.read(CONTACTS)
    stream = source.read_pages(CONTACTS)
    frames = list(stream)
    assert [len(f) for f in frames[:-1]] == [1000] * (len(frames) - 1) and 0 < len(frames[-1]) <= 1000
    assert [f.index[0] for f in frames] == [n * 1000 for n in range(len(frames))]
    pd.testing.assert_frame_equal(collect_pages(source.read_pages(CONTACTS)).frame, whole.frame)
    assert stream.finished and stream.rows == stream.expected_rows == len(whole.frame)
    assert (stream.unmapped_columns, stream.missing_columns) == (whole.unmapped_columns, whole.missing_columns)
    since = dt.datetime(2026, 11, 19, tzinfo=dt.timezone.utc)
    windowed = source.read(ACTIVITIES, since=since)
    pd.testing.assert_frame_equal(collect_pages(source.read_pages(ACTIVITIES, since=since)).frame, windowed.frame)
    header_only = tmp_path / "Activities.csv"
    header_only.write_text("ActivityId,SubscriberKey,ActivityType,OccurredAt,Detail\n")
    assert list(EmbeddedSampleSource(tmp_path).read_pages(ACTIVITIES)) == []


def test_the_dataset_asset_reads_with_concurrent_page_reads_from_the_config(tmp_path, fake_sfmc, monkeypatch):
    contacts = EmbeddedSampleSource(SHIPPED_SAMPLE).read(CONTACTS).frame.drop_duplicates("SubscriberKey").head(600)
    fake_sfmc.add_data_extension("Contacts", contacts.to_dict("records"), primary_key=["SubscriberKey"])
    fake_sfmc.latency = 0.005
    settings = CONFIG.settings.model_copy(update={"page_size": 50, "concurrent_page_reads": 3})
    config = CONFIG.model_copy(update={"settings": settings})
    monkeypatch.setenv("SFMC_CLIENT_ID", fake_sfmc.client_id)
    monkeypatch.setenv("SFMC_CLIENT_SECRET", fake_sfmc.client_secret)
    monkeypatch.setenv("SFMC_AUTH_BASE_URI", fake_sfmc.auth_base_uri)
    resources = {
        "sfmc": SfmcResource(client_id=dg.EnvVar("SFMC_CLIENT_ID"), client_secret=dg.EnvVar("SFMC_CLIENT_SECRET"),
                             auth_base_uri=dg.EnvVar("SFMC_AUTH_BASE_URI"), max_retries=0),
        "storage": StorageResource(base_dir=str(tmp_path)),
    }
    result = dg.materialize([build_dataset_asset(CONTACTS, config)], resources=resources)
    assert result.success
    metadata = result.get_asset_materialization_events()[0].materialization.metadata
    assert metadata["rows_read"].value == 600 and metadata["api_calls"].value == 1 + 12
    assert 2 <= fake_sfmc.max_in_flight <= 3


def test_page_urls_keep_the_link_and_set_page_and_page_size():
    base = "https://mc1.rest.marketingcloudapis.com/data/v1/customobjectdata/token/abc/rowset"
    assert page_url(base + "?$page=2", 7, 2500) == base + "?$page=7&$pageSize=2500"
    assert page_url(base + "?$page=2&$pageSize=3", 4, 3) == base + "?$page=4&$pageSize=3"
    assert page_url(base + "?%24pagesize=3&x=1&%24page=2", 9, 3) == base + "?x=1&$page=9&$pageSize=3"
    assert page_url(base, 2, 10) == base + "?$page=2&$pageSize=10"


@pytest.mark.parametrize("concurrency", [0, 17])
def test_concurrency_is_between_1_and_16(concurrency):
    with pytest.raises(ValueError, match="concurrency must be between 1 and 16"):
        SfmcRestSource(client_id="x", client_secret="y", auth_base_uri="https://mc1.auth.example.com/",
                       concurrency=concurrency)


def test_pages_the_columnar_decoder_does_not_take_are_read_the_ordinary_way(activities, source_for):
    """A usual page is decoded into columns; any other (a number or null where strings are, an ISO
    date pyarrow would take for a timestamp) goes through the ordinary JSON parser, same frame."""
    page = _body(2, [_wire(i) for i in range(5, 10)])
    assert isinstance(decode_page(json.dumps(page).encode(), "utf-8")["items"], RowsetItems)
    odd = _body(2, [_wire(i) for i in range(5, 10)])
    odd["items"][0]["values"]["detail"] = 5
    odd["items"][1]["values"]["detail"] = None
    odd["items"][2]["values"]["activitytype"] = "2026-11-01T09:30:00"
    assert decode_page(json.dumps(odd).encode(), "utf-8") is None
    dated = _body(3, [_wire(i) for i in range(10, 15)])
    for item in dated["items"]:
        item["values"]["activitytype"] = "2026-11-01"  # every value ISO: read again as strings, still columns
    assert isinstance(decode_page(json.dumps(dated).encode(), "utf-8")["items"], RowsetItems)
    activities.fail_next(200, body=odd, path_contains="/token/", page=2)
    activities.fail_next(200, body=dated, path_contains="/token/", page=3)
    frame = source_for(concurrency=4).read(ACTIVITIES).frame
    assert frame["Detail"].iloc[5:7].tolist() == ["5", ""]
    assert frame["ActivityType"].iloc[7] == "2026-11-01T09:30:00"
    assert (frame["ActivityType"].iloc[10:15] == "2026-11-01").all()
    assert frame["ActivityId"].tolist() == [_activity(i)["ActivityId"] for i in range(ROWS)]
    assert _per_page(activities) == {n: 1 for n in range(1, 9)}  # both taken as they were, no re-read
