"""Contract: the SFMC REST client, over real HTTP against the fake SFMC server, gets one token per
run and renews it before expiry and once on a 401; reads every page of a Data Extension, the
pages after the first at the first page's ``links.next`` with ``$page`` and ``$pageSize`` and only
within the REST instance's origin (the token goes nowhere else), or with a window only the rows at
or after a time (``$filter ... between``, in SFMC system time, on the first page only);
retries 429 (honouring Retry-After), 5xx and dropped connections a bounded number of times; and
fails other errors at once with a message that says what to check and never holds the secret.
Completeness of a read (``count``, short and malformed pages) is in test_extract_completeness.py,
concurrent pages in test_concurrent_paging.py."""

import datetime as dt
from decimal import Decimal

import pandas as pd
import pytest

from sfmc_pipeline.config.data_extensions import DataExtensionConfig
from sfmc_pipeline.config.loader import load_pipeline_config
from sfmc_pipeline.datasets.validation import validate_extract
from sfmc_pipeline.errors import ApiError, ConfigurationError
from sfmc_pipeline.http import RetrySettings, normalize_base_url
from sfmc_pipeline.settings import DEFAULT_CONFIG_PATH
from sfmc_pipeline.sfmc.rest_source import SfmcRestSource
from sfmc_pipeline.sfmc.rowset_links import next_url, window_filter
from sfmc_pipeline.sfmc.source import ExtractError

SECRET = "fake-client-secret"
CONFIG = load_pipeline_config(DEFAULT_CONFIG_PATH)
ACTIVITIES = CONFIG.extension("activities")


def _activity(i: int) -> dict:
    return {
        "ActivityId": f"00000000-0000-4000-8000-{i:012d}",
        "SubscriberKey": "0035e00000ABCdeAAH",
        "ActivityType": "web_visit",
        "OccurredAt": dt.datetime(2026, 11, 1, 9, 30) + dt.timedelta(hours=i),
        "Detail": f"https://www.example.com/p/{i}",
    }


@pytest.fixture()
def source_for(fake_sfmc, clock, sleeps):
    def make(**overrides) -> SfmcRestSource:
        kwargs = dict(
            client_id=fake_sfmc.client_id,
            client_secret=SECRET,
            auth_base_uri=fake_sfmc.auth_base_uri,
            clock=clock,
            sleep=sleeps,
            retry=RetrySettings(max_retries=3, backoff_seconds=0.5),
        )
        kwargs.update(overrides)
        return SfmcRestSource(**kwargs)

    return make


def test_token_request_shape_and_one_token_for_many_reads(fake_sfmc, source_for):
    fake_sfmc.add_data_extension("Activities", [_activity(i) for i in range(3)], primary_key=["ActivityId"])
    source = source_for(account_id="5000123")
    fake_sfmc.account_id = "5000123"
    for _ in range(3):
        assert len(source.read(ACTIVITIES).frame) == 3
    tokens = fake_sfmc.token_requests()
    assert len(tokens) == 1
    assert tokens[0].method == "POST"
    assert tokens[0].json == {
        "grant_type": "client_credentials",
        "client_id": fake_sfmc.client_id,
        "client_secret": SECRET,
        "account_id": "5000123",
    }
    assert "authorization" not in {k.lower() for k in tokens[0].headers}
    assert SECRET not in tokens[0].path and not tokens[0].query
    rowsets = fake_sfmc.rowset_requests()
    assert all(r.headers["Authorization"] == f"Bearer {fake_sfmc.issued_tokens[0]}" for r in rowsets)


def test_token_is_renewed_before_it_expires(fake_sfmc, source_for, clock):
    fake_sfmc.add_data_extension("Activities", [_activity(1)], primary_key=["ActivityId"])
    source = source_for()
    source.read(ACTIVITIES)
    clock.advance(1000)  # 80 s before expires_in (1080): still fresh enough
    fake_sfmc.advance_clock(1000)
    source.read(ACTIVITIES)
    assert len(fake_sfmc.token_requests()) == 1
    clock.advance(30)  # inside the 60 s renewal margin
    fake_sfmc.advance_clock(30)
    source.read(ACTIVITIES)
    assert len(fake_sfmc.token_requests()) == 2
    assert not [r for r in fake_sfmc.requests if r.status == 401]  # renewed before SFMC refused it


@pytest.mark.parametrize("concurrency", [1, 4])
def test_a_401_renews_the_token_once_and_the_read_goes_on(fake_sfmc, source_for, concurrency):
    fake_sfmc.add_data_extension("Activities", [_activity(i) for i in range(5)], primary_key=["ActivityId"])
    source = source_for(page_size=2, concurrency=concurrency)
    # the token is invalidated server-side mid-read, when page 2 is asked for
    fake_sfmc.revoke_tokens_next(path_contains="/token/", page=2)
    frames = list(source.read_pages(ACTIVITIES))
    assert sum(len(frame) for frame in frames) == 5
    assert len(fake_sfmc.token_requests()) == 2
    assert [r.status for r in fake_sfmc.rowset_requests()].count(401) >= 1


def test_a_second_401_fails_with_a_clear_message(fake_sfmc, source_for):
    fake_sfmc.add_data_extension("Activities", [_activity(1)], primary_key=["ActivityId"])
    fake_sfmc.fail_next(401, path_contains="/rowset", times=2)
    with pytest.raises(ApiError, match="API user") as info:
        source_for().read(ACTIVITIES)
    assert not info.value.retryable


def test_three_pages_are_read_in_order_following_next_links(fake_sfmc, source_for):
    rows = [_activity(i) for i in range(7)]
    fake_sfmc.add_data_extension("Activities", rows, primary_key=["ActivityId"])
    extract = source_for(page_size=3).read(ACTIVITIES)
    assert extract.frame["ActivityId"].tolist() == [r["ActivityId"] for r in rows]
    rowsets = fake_sfmc.rowset_requests()
    assert len(rowsets) == 3
    assert rowsets[0].query == {"$page": "1", "$pageSize": "3"}
    assert "/customobjectdata/key/Activities/rowset" in rowsets[0].path
    assert all("/data/v1/customobjectdata/token/" in r.path for r in rowsets[1:])
    # pages 2 and 3 are links.next of page 1 with their own $page, and the page size kept explicit
    token = rowsets[1].path.split("/token/")[1].split("/")[0]
    assert sorted(r.raw_target for r in rowsets[1:]) == [
        f"/rest/data/v1/customobjectdata/token/{token}/rowset?$page={n}&$pageSize=3" for n in (2, 3)]
    assert extract.api_calls == 4  # one token + three pages


def test_a_windowed_read_filters_the_first_page_in_sfmc_system_time(fake_sfmc, source_for):
    rows = [_activity(i) for i in range(8)]  # 9:30 AM, 10:30 AM, ... (SFMC system time, UTC-6)
    fake_sfmc.add_data_extension("Activities", rows, primary_key=["ActivityId"],
                                 field_types={"OccurredAt": "Date"})
    since = dt.datetime(2026, 11, 1, 17, 30, 0, 999_000, tzinfo=dt.timezone.utc)  # 11:30:00 AM system time
    extract = source_for(page_size=2).read(ACTIVITIES, since=since)
    assert extract.frame["ActivityId"].tolist() == [r["ActivityId"] for r in rows[2:]]  # 11:30 AM and later
    first, *continuations = fake_sfmc.rowset_requests()
    expected = "OccurredAt between '2026-11-01T11:30:00' and '9999-12-31T23:59:59'"
    assert first.query == {"$page": "1", "$pageSize": "2", "$filter": expected}
    assert "%20" in first.raw_target and "+" not in first.raw_target
    assert len(continuations) == 2 and all("$filter" not in r.query for r in continuations)  # 6 rows in 3 pages
    assert f"$filter {expected}" in extract.source
    assert window_filter("ModifiedDate", dt.datetime(2026, 1, 1, 3, 0, tzinfo=dt.timezone.utc)) == (
        "ModifiedDate between '2025-12-31T21:00:00' and '9999-12-31T23:59:59'")  # the day before in SFMC time


def test_a_windowed_read_is_complete_or_fails_like_any_read(fake_sfmc, source_for):
    fake_sfmc.add_data_extension("Activities", [_activity(i) for i in range(5)], primary_key=["ActivityId"],
                                 field_types={"OccurredAt": "Date"})
    short = {"links": {"self": "/v1/x"}, "page": 2, "pageSize": 2, "count": 5, "items": []}
    fake_sfmc.fail_next(200, body=short, path_contains="/token/", page=2, times=2)
    with pytest.raises(ExtractError, match="it was empty, 3 rows short of 'count'") as info:
        source_for(page_size=2).read(ACTIVITIES, since=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc))
    assert info.value.retryable


def test_an_empty_extension_and_a_window_matching_nothing_are_complete_empty_reads(fake_sfmc, source_for):
    """SFMC serves both as ``count: 0`` with no ``items`` key at all: a read of 0 rows, not a broken page."""
    fake_sfmc.add_data_extension("Activities", [], primary_key=["ActivityId"], field_types={"OccurredAt": "Date"})
    source = source_for()
    empty = source.read(ACTIVITIES)
    assert len(empty.frame) == 0 and list(empty.frame.columns) == [c.name for c in ACTIVITIES.columns]
    assert len(source.read(ACTIVITIES, since=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)).frame) == 0

    fake_sfmc.add_data_extension("Activities", [_activity(i) for i in range(3)], primary_key=["ActivityId"])
    fake_sfmc.clear_requests()
    window = source.read(ACTIVITIES, since=dt.datetime(2027, 1, 1, tzinfo=dt.timezone.utc))
    assert len(window.frame) == 0 and len(fake_sfmc.rowset_requests()) == 1  # read once: nothing was wrong with it


def test_429_waits_as_long_as_retry_after_says(fake_sfmc, source_for, sleeps):
    fake_sfmc.add_data_extension("Activities", [_activity(1)], primary_key=["ActivityId"])
    fake_sfmc.fail_next(429, path_contains="/rowset", headers={"Retry-After": "7"})
    assert len(source_for().read(ACTIVITIES).frame) == 1
    assert sleeps.calls == [7.0]


def test_5xx_and_dropped_connections_are_retried_with_backoff(fake_sfmc, source_for, sleeps):
    fake_sfmc.add_data_extension("Activities", [_activity(1)], primary_key=["ActivityId"])
    fake_sfmc.fail_next(503, path_contains="/rowset")
    fake_sfmc.drop_connection_next(path_contains="/rowset")
    fake_sfmc.fail_next(500, path_contains="/v2/token")
    assert len(source_for().read(ACTIVITIES).frame) == 1
    assert sleeps.calls == [0.5, 0.5, 1.0]  # token: one retry; rowset: two retries, doubling


def test_retries_exhausted_gives_a_clear_retryable_error(fake_sfmc, source_for, sleeps):
    fake_sfmc.add_data_extension("Activities", [_activity(1)], primary_key=["ActivityId"])
    fake_sfmc.fail_next(503, path_contains="/rowset", times=10)
    with pytest.raises(ApiError, match=r"failed after 4 attempt\(s\): HTTP 503") as info:
        source_for().read(ACTIVITIES)
    assert info.value.retryable
    assert sleeps.calls == [0.5, 1.0, 2.0]


def test_wrong_credentials_name_the_settings_and_hide_the_secret(fake_sfmc, source_for):
    wrong_secret = "this-is-the-wrong-secret"
    with pytest.raises(ApiError) as info:
        source_for(client_secret=wrong_secret).read(ACTIVITIES)
    message = str(info.value)
    assert "SFMC_CLIENT_ID and SFMC_CLIENT_SECRET" in message and "invalid_client" in message
    assert wrong_secret not in message and SECRET not in message
    assert not info.value.retryable and info.value.status == 401


def test_unknown_key_and_missing_scope_say_what_to_check(fake_sfmc_factory, clock, sleeps):
    server = fake_sfmc_factory(scopes=("email_read",))
    source = SfmcRestSource(
        client_id=server.client_id, client_secret=SECRET, auth_base_uri=server.auth_base_uri, clock=clock, sleep=sleeps
    )
    with pytest.raises(ApiError, match="'Data Extensions: Read' scope"):
        source.read(ACTIVITIES)
    server.scopes = ("data_extensions_read",)
    source.auth.invalidate()
    with pytest.raises(ApiError, match="External Key") as info:
        source.read(ACTIVITIES)
    assert info.value.status == 404 and "'Activities'" in str(info.value)
    assert sleeps.calls == []  # 4xx are not retried


def test_every_sfmc_type_converts_from_the_wire_format(fake_sfmc, source_for):
    extension = DataExtensionConfig(
        key="AllTypes",
        asset="all_types",
        primary_key=["Id"],
        columns=[
            {"name": "Id", "type": "Text"},
            {"name": "Count", "type": "Number", "nullable": True},
            {"name": "Amount", "type": "Decimal", "precision": 10, "scale": 2, "nullable": True},
            {"name": "When", "type": "Date", "nullable": True},
            {"name": "Flag", "type": "Boolean", "nullable": True},
            {"name": "Mail", "type": "EmailAddress", "nullable": True},
            {"name": "Phone", "type": "Phone", "nullable": True},
            {"name": "Locale", "type": "Locale", "nullable": True},
        ],
    )
    fake_sfmc.add_data_extension(
        "AllTypes",
        [
            {"Id": "a", "Count": 3, "Amount": Decimal("12.5"), "When": dt.datetime(2024, 6, 23, 13, 5, 9),
             "Flag": True, "Mail": "a@example.com", "Phone": "5515996919166", "Locale": "en-US"},
            {"Id": "b", "Count": None, "Amount": None, "When": None, "Flag": None, "Mail": None, "Phone": None,
             "Locale": None},
        ],
        primary_key=["Id"],
    )
    extract = source_for().read(extension)
    assert extract.frame.iloc[1].tolist()[1:] == [""] * 7  # SFMC sends empty strings for null
    result = validate_extract(extract.frame, extension)
    assert result.rows_quarantined == 0
    first = result.valid.iloc[0]
    assert first["Count"] == 3 and first["Amount"] == Decimal("12.50") and bool(first["Flag"]) is True
    assert first["When"] == pd.Timestamp("2024-06-23 19:05:09", tz="UTC")  # 1:05:09 PM CST
    assert (first["Mail"], first["Phone"], first["Locale"]) == ("a@example.com", "5515996919166", "en-US")
    assert result.valid.iloc[1, 1:].isna().all()


def test_lower_cased_fields_map_back_and_extra_fields_are_reported(fake_sfmc, source_for):
    rows = [{**_activity(1), "Unexpected": "x"}]
    fake_sfmc.add_data_extension("Activities", rows, primary_key=["ActivityId"])
    extract = source_for().read(ACTIVITIES)
    assert list(extract.frame.columns) == [c.name for c in ACTIVITIES.columns]
    assert extract.unmapped_columns == ["unexpected"]


@pytest.mark.parametrize(
    "value, expected",
    [
        ("https://mc123.auth.marketingcloudapis.com", "https://mc123.auth.marketingcloudapis.com/"),
        ("mc123.auth.marketingcloudapis.com/", "https://mc123.auth.marketingcloudapis.com/"),  # bare host
        ("http://127.0.0.1:8080/auth", "http://127.0.0.1:8080/auth/"),  # loopback may be plain http
    ],
)
def test_base_uri_is_normalised(value, expected):
    assert normalize_base_url(value, setting="SFMC_AUTH_BASE_URI") == expected


@pytest.mark.parametrize("value", ["http://mc123.auth.marketingcloudapis.com/", "ftp://x/", "https://u:p@host/"])
def test_insecure_or_odd_base_uri_is_refused(value):
    with pytest.raises(ConfigurationError, match="SFMC_AUTH_BASE_URI"):
        SfmcRestSource(client_id="x", client_secret="y", auth_base_uri=value)


def _wire_activity(i: int) -> dict:
    """Activity ``i`` as the rowset serves it (lower-cased names, keys and values split)."""
    return {"keys": {"activityid": f"00000000-0000-4000-8000-{i:012d}"},
            "values": {"subscriberkey": "0035e00000ABCdeAAH", "activitytype": "web_visit",
                       "occurredat": "11/1/2026 9:30:00 AM", "detail": ""}}


@pytest.mark.parametrize("elsewhere", ["other port", "other host", "other scheme"])
def test_a_next_link_off_the_rest_instance_is_refused_and_gets_no_token(fake_sfmc, fake_sfmc_factory, source_for,
                                                                       elsewhere):
    other = fake_sfmc_factory()  # a second server on 127.0.0.1 that records every request
    path = "/rest/data/v1/customobjectdata/key/Activities/rowset?$page=2&$pageSize=2"
    link, refused = {
        "other port": (f"http://127.0.0.1:{other.port}{path}", f"http://127.0.0.1:{other.port}"),
        "other host": (f"http://localhost:{fake_sfmc.port}{path}", f"http://localhost:{fake_sfmc.port}"),
        "other scheme": (f"https://127.0.0.1:{fake_sfmc.port}{path}", f"https://127.0.0.1:{fake_sfmc.port}"),
    }[elsewhere]
    fake_sfmc.add_data_extension("Activities", [_activity(i) for i in range(4)], primary_key=["ActivityId"])
    first_page = {"links": {"self": "/v1/x", "next": link}, "page": 1, "pageSize": 2, "count": 4,
                  "items": [_wire_activity(0), _wire_activity(1)]}
    fake_sfmc.fail_next(200, body=first_page, path_contains="/key/")
    with pytest.raises(ExtractError) as info:
        source_for(page_size=2).read(ACTIVITIES)
    message = str(info.value)
    assert not info.value.retryable
    assert f"links its next page to {refused}" in message and "Data Extension 'Activities'" in message
    assert f"not to the REST instance http://127.0.0.1:{fake_sfmc.port}" in message
    assert "the access token was not sent there" in message
    assert not any(token in message for token in fake_sfmc.issued_tokens)
    assert other.requests == [] and len(fake_sfmc.rowset_requests()) == 1  # nothing sent but page 1


def test_a_rest_instance_url_off_the_vendor_domain_is_refused_and_gets_no_token(fake_sfmc, fake_sfmc_factory,
                                                                                source_for):
    other = fake_sfmc_factory()  # a second server that records every request
    fake_sfmc.rest_instance_url = f"http://localhost:{other.port}/rest/"  # loopback, but not the configured host
    fake_sfmc.add_data_extension("Activities", [_activity(0)], primary_key=["ActivityId"])
    with pytest.raises(ApiError) as info:
        source_for().read(ACTIVITIES)
    message = str(info.value)
    assert f"The SFMC token response names rest_instance_url http://localhost:{other.port}/rest/" in message
    assert f"neither on https://*.marketingcloudapis.com nor on http://127.0.0.1:{fake_sfmc.port}" in message
    assert "(SFMC_AUTH_BASE_URI); the access token was not sent there" in message and not info.value.retryable
    assert not any(token in message for token in fake_sfmc.issued_tokens)
    assert other.requests == [] and fake_sfmc.rowset_requests() == []  # only the token request was sent


def test_next_links_resolve_within_the_rest_origin_only():
    rest = "https://mc123.rest.marketingcloudapis.com/"
    page_2 = "v1/customobjectdata/token/abc/rowset?$page=2"
    assert next_url(rest, "/" + page_2, "DE", 1) == rest + "data/" + page_2  # the normal, relative link
    assert next_url(rest, "/data/" + page_2, "DE", 1) == rest + "data/" + page_2
    assert next_url(rest, "https://MC123.rest.marketingcloudapis.com:443/data/" + page_2, "DE", 1).endswith(page_2)
    for link in ("http://mc123.rest.marketingcloudapis.com/data/" + page_2,  # a downgrade to plain http
                 "https://mc123.rest.marketingcloudapis.com:8443/data/" + page_2,
                 "https://mc123.rest.marketingcloudapis.com.evil.example/data/" + page_2):
        with pytest.raises(ExtractError, match="was refused and the access token was not sent there") as info:
            next_url(rest, link, "DE", 1)
        assert not info.value.retryable
