"""Contract tests for the fake SFMC server (sfmc_pipeline_testing/sfmc_server.py).

They pin the SFMC behaviour our client relies on:
- OAuth2 client-credentials token: JSON body, response shape (Bearer, expires_in, rest_instance_url ending in "/"),
  invalid_client / unsupported_grant_type errors, and tokens dying 20 min (expires_in + 120 s) after issue;
- Data Extension rowset read: 1-based $page/$pageSize, `count` = total rows, relative `links.next` without the
  "/data" prefix (absent on the last page), token continuation of a snapshot, lower-cased field names, every value a
  string (dates as "M/D/YYYY h:mm:ss AM|PM"), keys/values split by primary key; a read without rows (an empty
  extension, a filter matching nothing) has `count: 0` and no `items` key, as recorded from real tenants;
- `$filter` (`Field eq 'v'`, `Field between 'A' and 'B'`; dates compared as dates) and `$orderBy`
  (`Field asc|desc`) on the first page, fields in the schema casing; every other operator and OData parameter is a
  400 (unconfirmed on the real API);
- SFMC error envelope {"message","errorcode","documentation"}: 401 Not Authorized, 404 unknown key, 429 rate limit;
- the test harness: concurrent requests are served concurrently (``latency`` waits outside the fake's lock,
  ``max_in_flight`` counts them), faults can target one page (``page=``) or revoke the tokens mid-read, a change can
  follow a given request (``change_after_next``), and cached page bodies are byte-for-byte what serialising the
  page gives.
Plain `requests` over real HTTP, no sleeps (a latency only where requests must overlap).
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from decimal import Decimal

import pytest
import requests

from sfmc_pipeline_testing.sfmc_server import FakeSfmcServer

CREDS = {"grant_type": "client_credentials", "client_id": "fake-client-id", "client_secret": "fake-client-secret"}


@pytest.fixture
def sfmc():
    with FakeSfmcServer() as server:
        yield server
    assert server.errors == []


def get_token(server: FakeSfmcServer, **extra) -> dict:
    resp = requests.post(server.auth_base_uri + "v2/token", json={**CREDS, **extra}, timeout=5)
    assert resp.status_code == 200, resp.text
    return resp.json()


def bearer(token: dict) -> dict:
    return {"Authorization": f"Bearer {token['access_token']}"}


def test_token_shape_and_errors():
    with FakeSfmcServer(account_id="12345", scopes=("data_extensions_read", "data_extensions_write")) as server:
        url = server.auth_base_uri + "v2/token"
        ok = requests.post(url, json=CREDS, timeout=5)
        assert ok.status_code == 200
        assert ok.headers["Content-Type"].startswith("application/json")
        body = ok.json()
        assert set(body) == {"access_token", "token_type", "expires_in", "scope", "rest_instance_url", "soap_instance_url"}
        assert body["token_type"] == "Bearer" and body["expires_in"] == 1080
        assert body["scope"] == "data_extensions_read data_extensions_write"
        assert body["rest_instance_url"] == server.rest_base_uri and body["rest_instance_url"].endswith("/")
        assert 90 <= len(body["access_token"]) <= 512

        bad_secret = requests.post(url, json={**CREDS, "client_secret": "nope"}, timeout=5)
        assert bad_secret.status_code == 401
        assert bad_secret.json() == {
            "error": "invalid_client",
            "error_description": "Invalid client ID. Use the client ID in Marketing Cloud Installed Packages.",
            "error_uri": "https://developer.salesforce.com/docs",
        }
        bad_grant = requests.post(url, json={**CREDS, "grant_type": "password"}, timeout=5)
        assert bad_grant.status_code == 400 and bad_grant.json()["error"] == "unsupported_grant_type"
        form = requests.post(url, data=CREDS, timeout=5)  # form-encoded instead of JSON
        assert form.status_code == 400
        wrong_mid = requests.post(url, json={**CREDS, "account_id": "999"}, timeout=5)
        assert wrong_mid.status_code == 401 and wrong_mid.json()["error"] == "invalid_client"
        assert requests.post(url, json={**CREDS, "account_id": 12345}, timeout=5).status_code == 200
        assert get_token(server, scope="")["scope"] == ""  # empty scope string -> no scopes

        recorded = server.token_requests()
        assert len(recorded) == 7 and recorded[0].json == CREDS and recorded[0].method == "POST"
        assert "authorization" not in recorded[0].headers
        assert recorded[0].headers["content-type"] == "application/json"


def test_three_pages_via_relative_next_links_with_total_count(sfmc):
    rows = [{"Id": f"id{i}", "Email": f"u{i}@x.org"} for i in range(5)]
    sfmc.add_data_extension("My_DE", rows, primary_key=["Id"])
    token = get_token(sfmc)
    rest = token["rest_instance_url"]
    with requests.Session() as session:
        session.headers.update(bearer(token))
        page = session.get(rest + "data/v1/customobjectdata/key/My_DE/rowset", params={"$pageSize": 2}, timeout=5).json()
        sfmc.add_data_extension("My_DE", [{"Id": "new", "Email": "changed"}], primary_key=["Id"])  # snapshot unaffected
        pages = [page]
        while "next" in page["links"]:
            nxt = page["links"]["next"]
            assert nxt.startswith("/v1/customobjectdata/token/") and "$pageSize=2" in nxt
            page = session.get(rest + "data" + nxt, timeout=5).json()
            pages.append(page)
    assert [p["page"] for p in pages] == [1, 2, 3]
    assert [p["count"] for p in pages] == [5, 5, 5]
    assert [len(p["items"]) for p in pages] == [2, 2, 1]
    assert all(p["pageSize"] == 2 and p["top"] == 0 and p["customObjectKey"] == "My_DE" for p in pages)
    assert len({p["requestToken"] for p in pages}) == 1
    assert "previous" not in pages[0]["links"] and "previous" in pages[2]["links"]
    assert [it["keys"]["id"] for p in pages for it in p["items"]] == [f"id{i}" for i in range(5)]
    req = sfmc.rowset_requests()
    assert [r.query.get("$page") for r in req] == [None, "2", "3"] and req[0].query["$pageSize"] == "2"

    # past the last page: 200, empty items, no next link; default page size is 2500
    past = requests.get(rest + "data" + pages[2]["links"]["self"].replace("$page=3", "$page=4"), headers=bearer(token),
                        timeout=5).json()
    assert past["items"] == [] and "next" not in past["links"] and past["count"] == 5
    fresh = requests.get(rest + "data/v1/customobjectdata/key/My_DE/rowset", headers=bearer(token), timeout=5).json()
    assert fresh["pageSize"] == 2500 and fresh["count"] == 1 and set(fresh["links"]) == {"self"}


def test_a_read_without_rows_has_count_0_and_no_items_key(sfmc):
    """As recorded from real tenants: an empty extension, and a $filter matching nothing, are served
    ``count: 0`` with no ``items`` key at all (not ``items: []``)."""
    sfmc.add_data_extension("Empty_DE", [], primary_key=["Id"], field_types={"Id": "Text", "At": "Date"})
    sfmc.add_data_extension("Dated_DE", [{"Id": "a", "At": dt.datetime(2026, 11, 1)}], primary_key=["Id"])
    token = get_token(sfmc)
    empty = requests.get(sfmc.rowset_url("Empty_DE"), params={"$page": 1, "$pageSize": 1}, headers=bearer(token),
                         timeout=5).json()
    nothing = requests.get(sfmc.rowset_url("Dated_DE"), params={"$filter": "At between '2027-01-01' and "
                                                                "'9999-12-31T23:59:59'"},
                           headers=bearer(token), timeout=5).json()
    for body in (empty, nothing):
        assert set(body) == {"links", "requestToken", "pageSize", "page", "count", "top"}
        assert body["count"] == 0 and body["page"] == 1 and set(body["links"]) == {"self"}
    assert empty["pageSize"] == 1 and nothing["pageSize"] == 2500


def test_lowercased_names_and_string_values(sfmc):
    sfmc.add_data_extension(
        "Typed_DE",
        [{"SubscriberKey": "K1", "FirstName": " Ann ", "OptIn": True, "Ferias": False, "Age": 42,
          "Score": Decimal("12.50"), "Ratio": 0.25, "Phone": None,
          "JoinedAt": dt.datetime(2024, 11, 3, 13, 5, 9), "BirthDate": dt.date(2024, 6, 23)}],
        primary_key=["SubscriberKey"],
    )
    sfmc.add_data_extension("NoPk_DE", [{"EmailAddress": "a@b.c", "Midnight": dt.datetime(2024, 1, 5, 0, 7, 0)}])
    token = get_token(sfmc)
    get = lambda key: requests.get(f"{sfmc.rest_base_uri}data/v1/customobjectdata/key/{key}/rowset",  # noqa: E731
                                   headers=bearer(token), timeout=5).json()["items"]
    assert get("Typed_DE") == [{
        "keys": {"subscriberkey": "K1"},
        "values": {"firstname": " Ann ", "optin": "True", "ferias": "False", "age": "42", "score": "12.50",
                   "ratio": "0.25", "phone": "", "joinedat": "11/3/2024 1:05:09 PM", "birthdate": "6/23/2024 12:00:00 AM"},
    }]
    assert get("NoPk_DE") == [{"keys": {}, "values": {"emailaddress": "a@b.c", "midnight": "1/5/2024 12:07:00 AM"}}]


def test_token_expiry_revocation_and_scope(sfmc):
    sfmc.add_data_extension("DE", [{"A": 1}])
    url = sfmc.rowset_url("DE")
    token = get_token(sfmc)
    sfmc.advance_clock(1080 + 119)  # expires_in says 18 min, the token really lives 20 min
    assert requests.get(url, headers=bearer(token), timeout=5).status_code == 200
    sfmc.advance_clock(1)
    expired = requests.get(url, headers=bearer(token), timeout=5)
    assert expired.status_code == 401
    assert expired.json() == {"message": "Not Authorized", "errorcode": 0,
                              "documentation": "https://developer.salesforce.com/docs/marketing/marketing-cloud/guide/error-handling.html"}
    assert requests.get(url, timeout=5).status_code == 401  # no Authorization header at all
    fresh = get_token(sfmc)
    assert requests.get(url, headers=bearer(fresh), timeout=5).status_code == 200
    sfmc.revoke_tokens()
    assert requests.get(url, headers=bearer(fresh), timeout=5).status_code == 401
    no_scope = requests.get(url, headers=bearer(get_token(sfmc, scope="email_read")), timeout=5)
    assert no_scope.status_code == 403 and no_scope.json()["errorcode"] == 20002


def test_fault_injection_429_5xx_and_dropped_connection(sfmc):
    sfmc.add_data_extension("DE", [{"A": 1}])
    token = get_token(sfmc)
    url = sfmc.rowset_url("DE")
    sfmc.fail_next(429, path_contains="/rowset", headers={"Retry-After": "3"})
    sfmc.fail_next(503, path_contains="/rowset")
    limited = requests.get(url, headers=bearer(token), timeout=5)
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "3"
    assert limited.json()["errorcode"] == 50100 and limited.json()["retryAfter"] == 3
    unavailable = requests.get(url, headers=bearer(token), timeout=5)
    assert unavailable.status_code == 503 and unavailable.json()["message"] == "Internal Server Error"
    assert requests.get(url, headers=bearer(token), timeout=5).status_code == 200

    sfmc.fail_next(429, path_contains="/v2/token")
    throttled = requests.post(sfmc.token_url, json=CREDS, timeout=5)
    assert throttled.status_code == 429 and "Retry-After" not in throttled.headers

    sfmc.drop_connection_next(path_contains="/rowset")
    with pytest.raises(requests.ConnectionError):
        requests.get(url, headers=bearer(token), timeout=5)
    assert requests.get(url, headers=bearer(token), timeout=5).status_code == 200
    assert [r.status for r in sfmc.rowset_requests()] == [429, 503, 200, None, 200]
    assert sfmc.pending_faults == 0


def test_unknown_key_bad_paging_params_and_unknown_paths(sfmc):
    token = get_token(sfmc)
    missing = requests.get(sfmc.rowset_url("Nope"), headers=bearer(token), timeout=5)
    assert missing.status_code == 404 and missing.headers["Content-Type"].startswith("application/json")
    assert missing.json()["errorcode"] == 10000 and set(missing.json()) == {"message", "errorcode", "documentation"}
    sfmc.add_data_extension("DE", [{"A": 1}])
    for params in ({"$page": "0"}, {"$page": "x"}, {"$pageSize": "-5"}):
        bad = requests.get(sfmc.rowset_url("DE"), params=params, headers=bearer(token), timeout=5)
        assert bad.status_code == 400 and bad.json()["errorcode"] == 10001
    unknown_token = requests.get(f"{sfmc.rest_base_uri}data/v1/customobjectdata/token/abc/rowset?$page=2",
                                 headers=bearer(token), timeout=5)
    assert unknown_token.status_code == 404
    for path in ("data/v1/customobjectdata", "/data/v1/customobjectdata/key/DE/rowset"):  # bare path; double slash
        assert requests.get(sfmc.rest_base_uri + path, headers=bearer(token), timeout=5).status_code == 404


def test_page_size_cap_and_clean_stop_with_keepalive_connections():
    server = FakeSfmcServer(max_page_size=3).start()
    server.add_data_extension("DE", [{"N": i} for i in range(7)])
    session = requests.Session()
    token = get_token(server)
    first = session.get(server.rowset_url("DE"), params={"$pageSize": 100}, headers=bearer(token), timeout=5).json()
    assert first["pageSize"] == 3 and len(first["items"]) == 3 and first["links"]["next"].endswith("$page=2&$pageSize=3")
    assert any(t.name.startswith("fake-sfmc-conn-") for t in threading.enumerate())  # keep-alive handler alive
    server.stop()  # must not hang on the session's idle keep-alive connection
    leftovers = [t for t in threading.enumerate() if t.name.startswith("fake-sfmc-")]
    assert leftovers == []  # serve thread and per-connection handler threads are all joined
    session.close()


def _events_de(server: FakeSfmcServer) -> None:
    """Five rows: a Date field (given as datetimes), a Text field, one row without a date."""
    rows = [
        {"EventId": "e1", "Kind": "Visit", "OccurredAt": dt.datetime(2026, 11, 1, 9, 30)},
        {"EventId": "e2", "Kind": "visit", "OccurredAt": dt.datetime(2026, 11, 2, 13, 5, 9)},
        {"EventId": "e3", "Kind": "Open", "OccurredAt": dt.datetime(2026, 11, 10, 0, 0)},
        {"EventId": "e4", "Kind": "Click", "OccurredAt": None},
        {"EventId": "e5", "Kind": "O'Hara", "OccurredAt": dt.datetime(2026, 10, 30, 23, 59, 59)},
    ]
    server.add_data_extension("Events", rows, primary_key=["EventId"])


def _ids(body: dict) -> list[str]:
    return [item["keys"]["eventid"] for item in body["items"]]


def test_filter_eq_and_between_on_date_and_text_fields(sfmc):
    _events_de(sfmc)
    token = get_token(sfmc)

    def read(filter_: str, **params) -> dict:
        resp = requests.get(sfmc.rowset_url("Events"), params={"$filter": filter_, **params}, headers=bearer(token),
                            timeout=5)
        assert resp.status_code == 200, resp.text
        return resp.json()

    # dates compare as dates, whatever format the bound is written in (ISO or the rowset's own)
    window = read("OccurredAt between '2026-11-01T09:30:00' and '9999-12-31T23:59:59'")
    assert _ids(window) == ["e1", "e2", "e3"] and window["count"] == 3  # count = rows matching; null excluded
    assert _ids(read("OccurredAt between '11/2/2026 1:05:09 PM' and '11/2/2026 1:05:09 PM'")) == ["e2"]
    assert _ids(read("OccurredAt eq '2026-11-10'")) == ["e3"]
    assert _ids(read("Kind eq 'VISIT'")) == ["e1", "e2"]  # text: case-insensitive
    assert _ids(read("Kind eq 'O''Hara'")) == ["e5"]  # '' quotes a quote
    assert _ids(read("Kind between 'c' and 'p'")) == ["e3", "e4", "e5"]
    assert read("OccurredAt between '2027-01-01' and '2028-01-01'")["count"] == 0

    # the filtered rows are the read's snapshot: continuation pages carry them without the filter
    first = read("OccurredAt between '2026-10-01' and '2026-12-01'", **{"$pageSize": 3})
    assert first["count"] == 4 and "$filter" not in first["links"]["next"]
    sfmc.add_data_extension("Events", [], primary_key=["EventId"])  # the DE changes meanwhile
    second = requests.get(token["rest_instance_url"] + "data" + first["links"]["next"], headers=bearer(token),
                          timeout=5).json()
    assert _ids(first) + _ids(second) == ["e1", "e2", "e3", "e5"] and second["count"] == 4
    sent = sfmc.rowset_requests()[0].query["$filter"]
    assert sent == "OccurredAt between '2026-11-01T09:30:00' and '9999-12-31T23:59:59'"


def test_order_by_sorts_dates_as_dates_with_nulls_lowest(sfmc):
    _events_de(sfmc)
    token = get_token(sfmc)

    def ordered(expression: str, **params) -> dict:
        resp = requests.get(sfmc.rowset_url("Events"), params={"$orderBy": expression, **params},
                            headers=bearer(token), timeout=5)
        assert resp.status_code == 200, resp.text
        return resp.json()

    assert _ids(ordered("OccurredAt desc")) == ["e3", "e2", "e1", "e5", "e4"]
    assert _ids(ordered("OccurredAt asc")) == ["e4", "e5", "e1", "e2", "e3"]
    assert _ids(ordered("OccurredAt")) == ["e4", "e5", "e1", "e2", "e3"]  # asc by default
    newest = ordered("OccurredAt desc", **{"$page": 1, "$pageSize": 1})
    assert newest["count"] == 5 and newest["items"][0]["values"]["occurredat"] == "11/10/2026 12:00:00 AM"
    both = requests.get(sfmc.rowset_url("Events"), headers=bearer(token), timeout=5, params={
        "$filter": "Kind eq 'visit'", "$orderBy": "OccurredAt desc"}).json()
    assert _ids(both) == ["e2", "e1"]
    # a Date field declared as such (its values given as strings) sorts as dates too
    sfmc.add_data_extension("Strings", [{"Id": "a", "When": "12/1/2026 9:00:00 AM"},
                                        {"Id": "b", "When": "9/1/2026 9:00:00 AM"}],
                            primary_key=["Id"], field_types={"When": "Date"})
    desc = requests.get(sfmc.rowset_url("Strings"), params={"$orderBy": "When desc"}, headers=bearer(token),
                        timeout=5).json()
    assert [item["keys"]["id"] for item in desc["items"]] == ["a", "b"]  # as text, "9/..." would come first


@pytest.mark.parametrize("params", [
    {"$filter": "OccurredAt gt '2026-11-01'"},  # other operators: unconfirmed on the real API
    {"$filter": "OccurredAt ge '2026-11-01'"},
    {"$filter": "Kind ne 'Open'"},
    {"$filter": "Kind like 'Op%'"},
    {"$filter": "Kind eq 'Open' and EventId eq 'e3'"},
    {"$filter": "Kind eq 'Open' or Kind eq 'Click'"},
    {"$filter": "Kind eq Open"},  # unquoted value
    {"$orderBy": "OccurredAt desc, Kind asc"},
    {"$orderBy": "OccurredAt descending"},
    {"$fields": "Kind"},
    {"$top": "1"},
    {"$offset": "1"},
    {"$orderby": "OccurredAt desc"},  # not the parameter's spelling
])
def test_unsupported_grammar_and_parameters_are_a_400_error_envelope(sfmc, params):
    _events_de(sfmc)
    resp = requests.get(sfmc.rowset_url("Events"), params=params, headers=bearer(get_token(sfmc)), timeout=5)
    assert resp.status_code == 400
    assert set(resp.json()) == {"message", "errorcode", "documentation"} and resp.json()["errorcode"] == 10000


@pytest.mark.parametrize("params, message", [
    ({"$filter": "occurredat eq '2026-11-10'"}, "write the field 'occurredat' as 'OccurredAt'"),
    ({"$orderBy": "OCCURREDAT desc"}, "write the field 'OCCURREDAT' as 'OccurredAt'"),
    ({"$filter": "Nope eq 'x'"}, "'Nope' is not a field of data extension Events"),
    ({"$filter": "OccurredAt between 'yesterday' and '2026-12-01'"}, "'yesterday' is not a date"),
])
def test_filter_fields_need_the_schema_casing_and_date_bounds_must_be_dates(sfmc, params, message):
    _events_de(sfmc)
    resp = requests.get(sfmc.rowset_url("Events"), params=params, headers=bearer(get_token(sfmc)), timeout=5)
    assert resp.status_code == 400 and message in resp.json()["message"]


def test_filter_and_order_by_are_refused_on_a_continuation_page(sfmc):
    _events_de(sfmc)
    token = get_token(sfmc)
    first = requests.get(sfmc.rowset_url("Events"), params={"$pageSize": 2}, headers=bearer(token), timeout=5).json()
    for params in ({"$filter": "Kind eq 'Open'"}, {"$orderBy": "Kind asc"}):
        resp = requests.get(token["rest_instance_url"] + "data" + first["links"]["next"], params=params,
                            headers=bearer(token), timeout=5)
        assert resp.status_code == 400 and "continuation page" in resp.json()["message"]


def test_concurrent_requests_are_served_concurrently_with_latency():
    with FakeSfmcServer(latency=0.2) as server:
        server.add_data_extension("DE", [{"Id": f"r{i}"} for i in range(10)], primary_key=["Id"])
        token = get_token(server)
        assert server.max_in_flight == 1
        server.reset_max_in_flight()
        barrier, statuses = threading.Barrier(4), []

        def get() -> None:
            barrier.wait()
            statuses.append(requests.get(server.rowset_url("DE"), headers=bearer(token), timeout=5).status_code)

        threads = [threading.Thread(target=get) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert statuses == [200] * 4
        assert server.max_in_flight >= 2 and server.in_flight == 0  # they waited out the latency together
        assert len(server.rowset_requests()) == 4 and server.errors == []


def test_faults_can_target_one_page_and_revoke_tokens_mid_read(sfmc):
    sfmc.add_data_extension("DE", [{"Id": f"r{i}"} for i in range(6)], primary_key=["Id"])
    token = get_token(sfmc)
    first = requests.get(sfmc.rowset_url("DE"), params={"$pageSize": 2}, headers=bearer(token), timeout=5).json()
    page = lambda n: requests.get(  # noqa: E731
        token["rest_instance_url"] + "data" + first["links"]["next"].replace("$page=2", f"$page={n}"),
        headers=bearer(token), timeout=5)
    sfmc.fail_next(503, path_contains="/token/", page=3)
    assert page(2).status_code == 200 and page(3).status_code == 503 and page(3).status_code == 200
    sfmc.fail_next(429, page=1)  # no $page on the first request: page 1
    assert requests.get(sfmc.rowset_url("DE"), headers=bearer(token), timeout=5).status_code == 429
    sfmc.revoke_tokens_next(path_contains="/token/", page=2)
    assert page(3).status_code == 200  # not the page it waits for
    assert page(2).status_code == 401 and page(3).status_code == 401  # revoked: every old token
    fresh = get_token(sfmc)
    assert requests.get(sfmc.rowset_url("DE"), headers=bearer(fresh), timeout=5).status_code == 200
    assert sfmc.pending_faults == 0


def test_cached_page_bodies_are_the_serialised_pages(sfmc):
    rows = [{"Id": f"r{i}", "Name": f"Ann {i} \u00e9", "When": dt.datetime(2026, 1, 1 + i)} for i in range(7)]
    sfmc.add_data_extension("DE", rows, primary_key=["Id"])
    assert sfmc.warm_page_cache("DE", 3) == 3
    token = get_token(sfmc)
    cached = requests.get(sfmc.rowset_url("DE"), params={"$pageSize": 3}, headers=bearer(token), timeout=5)
    body = cached.json()
    assert cached.content == json.dumps(body, ensure_ascii=False).encode("utf-8")  # same bytes, items last
    assert list(body)[-1] == "items" and [item["keys"]["id"] for item in body["items"]] == ["r0", "r1", "r2"]
    assert body["items"][0]["values"]["name"] == "Ann 0 \u00e9"
    sfmc.add_data_extension("DE", [{"Id": "new", "Name": "x", "When": None}], primary_key=["Id"])
    again = requests.get(sfmc.rowset_url("DE"), params={"$pageSize": 3}, headers=bearer(token), timeout=5).json()
    assert [item["keys"]["id"] for item in again["items"]] == ["new"]  # a replaced DE is not served from the cache
    old = requests.get(token["rest_instance_url"] + "data" + body["links"]["next"], headers=bearer(token),
                       timeout=5).json()
    assert [item["keys"]["id"] for item in old["items"]] == ["r3", "r4", "r5"]  # the old snapshot keeps its rows
    filtered = requests.get(sfmc.rowset_url("DE"), params={"$filter": "Id eq 'new'"}, headers=bearer(token),
                            timeout=5).json()
    assert filtered["count"] == 1 and filtered["items"][0]["keys"]["id"] == "new"


def test_a_change_can_be_made_right_after_a_given_request(sfmc):
    """``change_after_next``: the Data Extension changes between two requests of a client (an import writing to
    it during a read); the request that triggered it was answered with the rows before the change."""
    sfmc.add_data_extension("DE", [{"Id": "a"}], primary_key=["Id"])
    sfmc.change_after_next(lambda fake: fake.add_data_extension("DE", [{"Id": "a"}, {"Id": "b"}], primary_key=["Id"]),
                           path_contains="/key/DE/", query={"$pageSize": "7"})
    token = get_token(sfmc)
    count = lambda **params: requests.get(sfmc.rowset_url("DE"), params=params, headers=bearer(token),  # noqa: E731
                                          timeout=5).json()["count"]
    assert count() == 1  # not the request it waits for
    assert count(**{"$pageSize": 7}) == 1  # answered before the change ...
    assert count() == 2  # ... which later requests see
