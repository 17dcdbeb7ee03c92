"""Read Data Extension rows over the SFMC REST API (``data/v1/customobjectdata``, the "rowset").

The rowset read is not in SFMC's API reference; this is its observed contract:

* ``GET {rest_instance_url}data/v1/customobjectdata/key/{external key}/rowset?$page=1&$pageSize=N``
  answers a JSON object with ``count`` (the total rows of the read, not of the page), ``items``
  (at most 2,500 per page, each ``{"keys": {...}, "values": {...}}`` with lower-cased field
  names and every value a string) and ``links``;
* ``links.next`` appears only while more pages exist. It is relative and lacks the ``/data``
  prefix (``/v1/customobjectdata/token/{requestToken}/rowset?$page=2``), so it is resolved
  against ``rest_instance_url + "data"``.

A read is complete or it fails with ``ExtractError``: every page must be an object with an
``items`` list and the same whole-number ``count``, and the rows collected must reach ``count``
exactly when the pages end. A page that breaks a rule is read once more before the read fails.
``links.next`` is followed only within the origin (scheme, host, port) of ``rest_instance_url``:
the bearer token is never sent anywhere else.

Of the rowset's OData-like parameters only what has been seen working is used: ``$filter`` as
``Field between 'A' and 'B'`` for an incremental read (other operators are unconfirmed) and
``$orderBy=Field desc`` for the probe's newest value, field names in the schema casing. The
filter goes on the first page only (continuation pages carry the read's snapshot), and a
filtered read obeys the same completeness rules (its ``count`` is the rows matching the filter).
Its bounds are SFMC system time (US Central Standard Time, UTC-6 all year), as SFMC compares
dates in it: ``OccurredAt between '2026-11-20T06:00:00' and '9999-12-31T23:59:59'`` is every row
at or after 2026-11-20 12:00 UTC.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Callable, Iterator
from urllib.parse import quote, urlencode, urlsplit

import pandas as pd

from sfmc_pipeline.config.models import DataExtensionConfig
from sfmc_pipeline.datasets.incremental import to_system_time
from sfmc_pipeline.sfmc.auth import SfmcAuth
from sfmc_pipeline.sfmc.source import ExtractError, RawExtract, SourceProbe, align_columns
from sfmc_pipeline.transport import ApiError, HttpTransport, Redactor, RetrySettings, body_excerpt

MAX_PAGE_SIZE = 2500
# The upper bound of an incremental read's window: "no upper bound", as a date SFMC can store.
WINDOW_END = "9999-12-31T23:59:59"


class SfmcRestSource:
    mode = "sfmc"

    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        auth_base_uri: str,
        account_id: str | None = None,
        page_size: int = MAX_PAGE_SIZE,
        timeout_seconds: float = 30.0,
        retry: RetrySettings | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ):
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be between 1 and {MAX_PAGE_SIZE}, got {page_size}")
        self.page_size = page_size
        self.transport = HttpTransport(
            "SFMC", timeout_seconds=timeout_seconds, retry=retry, redactor=Redactor([client_secret]), sleep=sleep
        )
        self.auth = SfmcAuth(
            self.transport,
            client_id=client_id,
            client_secret=client_secret,
            auth_base_uri=auth_base_uri,
            account_id=account_id,
            clock=clock,
        )

    def read(self, extension: DataExtensionConfig, since: dt.datetime | None = None) -> RawExtract:
        if since is not None and not extension.incremental_column:
            raise ValueError(f"{extension.key}: a windowed read needs an incremental_column")
        calls_before = self.transport.stats.requests
        row_filter = window_filter(extension.incremental_column, since) if since is not None else None
        pages = [pd.DataFrame.from_records(items) for items in self.iter_pages(extension.key, row_filter)]
        frame = pd.concat(pages, ignore_index=True) if pages else pd.DataFrame()
        frame, unmapped, missing = align_columns(frame, extension)
        where = f"Data Extension key {extension.key!r}" + (f", $filter {row_filter}" if row_filter else "")
        return RawExtract(
            frame=frame,
            source=f"SFMC REST {self.auth.token().rest_instance_url} ({where})",
            api_calls=self.transport.stats.requests - calls_before,
            unmapped_columns=unmapped,
            missing_columns=missing,
        )

    def probe(self, extension: DataExtensionConfig) -> SourceProbe:
        """The rowset ``count`` from one request with ``$pageSize=1``; with an ``incremental_column``
        and rows, one more request ordered by that column, newest first, gives its newest value."""
        calls_before = self.transport.stats.requests
        key, column = extension.key, extension.incremental_column
        url = self._rowset_url(key)
        rows = self._read_page(url, _query({"$page": 1, "$pageSize": 1}), key, 1, None, 0)["count"]
        newest = None
        if column and rows:
            body = self._read_page(url, _query({"$page": 1, "$pageSize": 1, "$orderBy": f"{column} desc"}),
                                   key, 1, None, 0)
            newest = _served_value(body["items"][:1], column, key)
        return SourceProbe(rows=rows, newest=newest, api_calls=self.transport.stats.requests - calls_before)

    def iter_pages(self, key: str, row_filter: str | None = None) -> Iterator[list[dict[str, str]]]:
        """Yield each page's rows as flat dicts (keys and values merged, names as served), until
        ``count`` rows are collected; raise ``ExtractError`` when the pages do not add up.
        ``row_filter`` is the first page's ``$filter`` (continuation pages carry it)."""
        rest = self.auth.token().rest_instance_url
        url = self._rowset_url(key)
        first = {"$page": 1, "$pageSize": self.page_size, **({"$filter": row_filter} if row_filter else {})}
        params: str | None = _query(first)
        expected: int | None = None
        collected, number = 0, 1
        while True:
            body = self._read_page(url, params, key, number, expected, collected)
            expected = body["count"]
            collected += len(body["items"])
            if body["items"]:
                yield [_flat(item) for item in body["items"]]
            if collected == expected:
                return
            url, params, number = _next_url(rest, _next_link(body), key, number), None, number + 1

    def _rowset_url(self, key: str) -> str:
        return f"{self.auth.token().rest_instance_url}data/v1/customobjectdata/key/{quote(key, safe='')}/rowset"

    def _read_page(
        self, url: str, params: str | None, key: str, number: int, expected: int | None, collected: int
    ) -> dict:
        """GET one page that passes ``_page_problem``, reading it a second time if it does not."""
        for _ in (1, 2):
            body = self._get_json(url, params, key)
            problem = _page_problem(body, expected, collected)
            if problem is None:
                return body
        where = "the first page" if expected is None else f"after {collected} of the {expected} rows in 'count'"
        raise ExtractError(
            self.transport.redact(
                f"SFMC rowset read of Data Extension {key!r} is incomplete: page {number} ({where}) was read "
                f"twice and both times {problem}. The rows read so far are discarded. The Data Extension may "
                "be changing during the read (an import, query or automation writing to it), so the read is "
                f"retried; if it keeps failing, check that nothing writes to {key!r} while it is extracted."
            ),
            retryable=True,
        )

    def _get_json(self, url: str, params: str | None, key: str) -> object:
        """The parsed body of a 200 answer (``None`` if it is not JSON); any other status raises."""
        for attempt in (1, 2):
            token = self.auth.token()
            response = self.transport.request(
                "GET", url, params=params, headers={"Authorization": f"Bearer {token.access_token}"}
            )
            if response.status_code == 401 and attempt == 1:
                self.auth.invalidate()  # expired or revoked early: one fresh token, one more try
                continue
            break
        if response.status_code != 200:
            raise self._read_error(response, key)
        try:
            return response.json()
        except ValueError:
            return None

    def _read_error(self, response, key: str) -> ApiError:
        status = response.status_code
        detail = self.transport.redact(body_excerpt(response))
        if status == 401:
            message = (
                f"SFMC answered 401 Not Authorized for Data Extension {key!r} even with a fresh token{detail}. "
                "Check that the installed package's API integration is active and its API user is not inactive."
            )
        elif status == 403:
            message = (
                f"SFMC refused to read Data Extension {key!r} (HTTP 403){detail}. Give the installed "
                "package's API integration the 'Data Extensions: Read' scope (changes take up to 5 minutes), "
                "and check that SFMC_ACCOUNT_ID names a business unit it can access."
            )
        elif status == 404:
            message = (
                f"SFMC has no Data Extension with external key {key!r} (HTTP 404){detail}. The 'key' in the "
                "pipeline config must be the Data Extension's External Key (CustomerKey), not its name; "
                "system data views cannot be read this way."
            )
        else:
            message = f"SFMC rowset read for {key!r} failed with HTTP {status}{detail}."
        return ApiError(message, status=status)


def window_filter(column: str, since: dt.datetime) -> str:
    """The rowset ``$filter`` of the rows whose ``column`` is at or after ``since`` (UTC), its
    bounds in SFMC system time."""
    start = to_system_time(since).replace(microsecond=0)
    return f"{column} between '{start:%Y-%m-%dT%H:%M:%S}' and '{WINDOW_END}'"


def _query(params: dict) -> str:
    """A query string with spaces as ``%20`` (not ``+``), as SFMC's examples write ``$filter``."""
    return urlencode(params, quote_via=quote)


def _flat(item: dict) -> dict[str, str]:
    return {**(item.get("keys") or {}), **(item.get("values") or {})}


def _served_value(items: list[dict], column: str, key: str) -> str | None:
    """``column``'s value in the first item as served (None: no item, or an empty value)."""
    if not items:
        return None
    row = {name.lower(): value for name, value in _flat(items[0]).items()}
    if column.lower() not in row:
        raise ExtractError(
            f"SFMC served Data Extension {key!r} without its incremental_column {column!r} (fields: "
            f"{', '.join(sorted(row)) or 'none'}). Fix incremental_column in the pipeline config, or add the "
            "field to the Data Extension."
        )
    value = row[column.lower()]
    return value if isinstance(value, str) and value.strip() else None


def _page_problem(body: object, expected: int | None, collected: int) -> str | None:
    """What makes this page unusable, given the ``count`` of earlier pages (``None`` on the first)
    and the rows collected before it; ``None`` when it is a valid page."""
    if not isinstance(body, dict):
        return "it was not a JSON object"
    items, count = body.get("items"), body.get("count")
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        if "errorcode" in body or "message" in body:
            message, code = body.get("message"), body.get("errorcode")
            return f"it was an SFMC error object, not rows: {message!r} (errorcode {code!r})"
        return "it had no 'items' list"
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        return f"its 'count' (total rows) was {count!r}, not a whole number"
    if expected is not None and count != expected:
        return f"its 'count' (total rows) changed to {count}"
    total = collected + len(items)
    if total > count:
        return f"it had {len(items)} row(s), {total} in all, more than the {count} in 'count'"
    if total < count and not items:
        return f"it was empty, {count - collected} rows short of 'count'"
    if total < count and _next_link(body) is None:
        return f"it had {len(items)} row(s) and no links.next, ending the read at {total} of {count} rows ('count')"
    return None


def _next_link(body: dict) -> str | None:
    links = body.get("links")
    link = links.get("next") if isinstance(links, dict) else None
    return link if isinstance(link, str) and link else None


def _next_url(rest_instance_url: str, link: str, key: str, number: int) -> str:
    """The next page's URL, refused (``ExtractError``) unless it is on ``rest_instance_url``'s origin."""
    url = _resolve_link(rest_instance_url, link)
    if _origin(url) != _origin(rest_instance_url):
        raise ExtractError(
            f"SFMC rowset page {number} of Data Extension {key!r} links its next page to {_origin_text(url)}, "
            f"not to the REST instance {_origin_text(rest_instance_url)} (rest_instance_url of the token "
            "response). The link was refused and the access token was not sent there. SFMC serves relative "
            "links; check for a proxy or gateway between the pipeline and SFMC that rewrites responses."
        )
    return url


def _resolve_link(rest_instance_url: str, link: str) -> str:
    if link.startswith(("http://", "https://")):
        return link
    if link.startswith("/data/"):
        return rest_instance_url + link.lstrip("/")
    return rest_instance_url + "data" + (link if link.startswith("/") else "/" + link)


def _origin(url: str) -> tuple[str, str, int | None] | None:
    """``(scheme, host, port)`` with the scheme's default port filled in; ``None`` if unparsable."""
    parts = urlsplit(url)
    try:
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme.lower())
    except ValueError:  # a port that is not a number
        return None
    return parts.scheme.lower(), (parts.hostname or "").lower(), port


def _origin_text(url: str) -> str:
    origin = _origin(url)
    return f"{origin[0]}://{origin[1]}:{origin[2]}" if origin else repr(url[:80])
