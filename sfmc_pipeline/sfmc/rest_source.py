"""Read Data Extension rows over the SFMC REST API (``data/v1/customobjectdata``, the "rowset").

The rowset read is not in SFMC's API reference; this is its observed contract:

* ``GET {rest_instance_url}data/v1/customobjectdata/key/{external key}/rowset?$page=1&$pageSize=N``
  answers a JSON object with ``count`` (the total rows of the read, not of the page), ``items``
  (at most 2,500 per page, each ``{"keys": {...}, "values": {...}}`` with lower-cased field
  names and every value a string), ``pageSize``, ``page``, ``requestToken`` and ``links``;
* ``links.next`` appears only while more pages exist. It is relative and lacks the ``/data``
  prefix (``/v1/customobjectdata/token/{requestToken}/rowset?$page=2``), so it is resolved
  against ``rest_instance_url + "data"``;
* a read without rows (an empty Data Extension, or a ``$filter`` that matches nothing) answers
  ``count: 0`` with **no ``items`` key at all** (recorded from real tenants): a complete, empty
  read, not a broken page (``_without_rows``).

Concurrent pages. The first page gives ``count``, the page size and ``links.next``; pages 2..N
(N = ceil(count / page size)) are then requested ``concurrency`` at a time (default 4, 1 reads
them one after another through the same code), each as ``links.next`` with ``$page=k`` and an
explicit ``$pageSize`` (the first page's: a continuation link need not carry the page size, and
whether the request token remembers it is not documented). Requesting pages of one request token
out of order is not documented either (only ``$page`` on the continuation URL is observed), so
nothing is taken on trust: every page must say it is the page asked for (``page``, when served),
hold the first page's ``pageSize`` rows unless it is the last, and the read must add up by
``count`` and by primary key (below). A server that ignored ``$page`` or shifted rows between
pages could at most reorder whole pages: a row missing or served twice fails the read (which is
retried); ``settings.concurrent_page_reads: 1`` is the way back to one page at a time. Pages are
yielded in page order (``read_pages``) from a window of at most ``2 x concurrency`` pages
requested ahead of the consumer, ``concurrency`` of them in flight: memory holds a few pages,
never the whole read.

A read is complete or it fails with ``ExtractError``: every page must be an object with an
``items`` list (a read of ``count`` 0 may have none) and the same whole-number ``count``, each
page but the last must be full, and the rows collected must reach ``count`` exactly when the
pages end. The rows' primary-key values
(``items[].keys``, compared case-insensitively as SFMC compares them) must be unique, so they
number ``count``: a key served twice (the Data Extension rewritten during the read) fails it too.
A page that breaks a rule is read once more, only that page, before the read fails; a transient
HTTP failure of one page (429, 5xx, a dropped connection) is retried by the transport for that
page alone. ``links.next`` is followed only within the origin (scheme, host, port) of
``rest_instance_url``: the bearer token is never sent anywhere else. A 401 renews the token once
for all the pages in flight (see ``auth.py``).

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
import math
import secrets
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Sequence
from urllib.parse import quote, unquote, urlencode, urlsplit, urlunsplit

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute  # noqa: F401 - pa.compute.coalesce
import pyarrow.json as pa_json
import requests

from sfmc_pipeline.config.data_extensions import DataExtensionConfig
from sfmc_pipeline.datasets.incremental import to_system_time
from sfmc_pipeline.datasets.recount import LATEST  # an incremental window's open end
from sfmc_pipeline.errors import ApiError
from sfmc_pipeline.http import HttpTransport, Redactor, RetrySettings, body_excerpt
from sfmc_pipeline.sfmc.auth import SfmcAuth
from sfmc_pipeline.sfmc.source import (
    ExtractError,
    PageStream,
    RawExtract,
    SourceProbe,
    collect_pages,
)

MAX_PAGE_SIZE = 2500
MAX_CONCURRENCY = 16


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
        concurrency: int = 4,
        timeout_seconds: float = 30.0,
        retry: RetrySettings | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ):
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be between 1 and {MAX_PAGE_SIZE}, got {page_size}")
        if not 1 <= concurrency <= MAX_CONCURRENCY:
            raise ValueError(f"concurrency must be between 1 and {MAX_CONCURRENCY}, got {concurrency}")
        self.page_size = page_size
        self.concurrency = concurrency
        self.transport = HttpTransport(
            "SFMC", timeout_seconds=timeout_seconds, retry=retry, redactor=Redactor([client_secret]), sleep=sleep,
            pool_size=concurrency,
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
        """Every row (or with ``since``, the window's) in one extract: the pages of ``read_pages``."""
        return collect_pages(self.read_pages(extension, since))

    def read_pages(self, extension: DataExtensionConfig, since: dt.datetime | None = None) -> PageStream:
        """The read's pages as frames, in page order, as they arrive (see ``PageStream``); nothing
        is requested before the first ``next()``. With ``since``, ``$filter`` on the first page
        selects the rows of the window (``window_filter``)."""
        if since is not None and not extension.incremental_column:
            raise ValueError(f"{extension.key}: a windowed read needs an incremental_column")
        row_filter = window_filter(extension.incremental_column, since) if since is not None else None
        where = f"Data Extension key {extension.key!r}" + (f", $filter {row_filter}" if row_filter else "")
        stream = PageStream(extension, source=f"SFMC REST ({where})")
        return stream.attach(lambda pages: self._frames(extension, row_filter, where, pages))

    def probe(self, extension: DataExtensionConfig, *, newest: bool = True, ranges: Sequence = ()) -> SourceProbe:
        """The rowset ``count`` and the fields of one row from one request with ``$pageSize=1``; with
        ``newest``, an ``incremental_column`` and rows, one more request ordered by that column, newest
        first, gives its newest value; with ``ranges``, one ``$pageSize=1`` request per range
        (``$filter column between 'start' and 'end'``, ``concurrency`` at a time) gives its ``count``."""
        calls_before = self.transport.stats.requests
        key, column = extension.key, extension.incremental_column
        url = self._rowset_url(key)
        first = self._read_page(url, _query({"$page": 1, "$pageSize": 1}), key, 1, None, 0)
        rows, items = first["count"], first["items"]
        served = _served_fields(items[0]) if rows and items else None
        value = None
        if newest and column and rows:
            body = self._read_page(url, _query({"$page": 1, "$pageSize": 1, "$orderBy": f"{column} desc"}),
                                   key, 1, None, 0)
            value = _served_value(body["items"][:1], column, key)
        range_rows: tuple[int, ...] = ()
        if ranges:
            if not column:
                raise ValueError(f"{key}: counting rows by date range needs an incremental_column")

            def count(date_range) -> int:
                between = between_filter(column, date_range.start, date_range.end)
                return self._read_page(url, _query({"$page": 1, "$pageSize": 1, "$filter": between}),
                                       key, 1, None, 0)["count"]

            with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix=f"sfmc-count-{key}") as pool:
                range_rows = tuple(pool.map(count, ranges))
        return SourceProbe(rows=rows, newest=value, api_calls=self.transport.stats.requests - calls_before,
                           served=served, range_rows=range_rows)

    # -- the paged read ----------------------------------------------------------------------------

    def _frames(self, extension: DataExtensionConfig, row_filter: str | None, where: str,
                stream: PageStream) -> Iterator[pd.DataFrame]:
        """The generator behind ``read_pages``: the first page, then the others through a window of
        ``2 x concurrency`` pages requested ahead, yielded in page order.

        ``concurrency`` threads only send requests and read the answers (``_fetch``), each taking
        the next page as soon as it has read one; decoding, the completeness and primary-key
        checks and the frames happen here, in the consumer's thread, while the next pages are in
        flight (under the GIL, parsing in the fetching threads would hold up their next requests)."""
        calls_before = self.transport.stats.requests
        key = extension.key
        check = _Checker(key, _Columns(extension), self._incomplete)
        pool: ThreadPoolExecutor | None = None
        try:
            rest = self.auth.token().rest_instance_url
            stream.source = f"SFMC REST {rest} ({where})"
            params = {"$page": 1, "$pageSize": self.page_size, **({"$filter": row_filter} if row_filter else {})}
            first = _Slot(number=1, url=self._rowset_url(key), params=_query(params))
            page = check.page(first, self._fetch(first, key), lambda: self._fetch(first, key))
            count = stream.expected_rows = page.count
            if len(page.frame) == count:  # the whole read in one page (or no rows at all)
                if count:
                    yield self._hand_over(page, stream, calls_before)
                return

            page_size, pages = page.page_size, math.ceil(count / page.page_size)
            template = _next_url(rest, page.next_link, key, 1)  # refused off the REST origin

            def slot(number: int) -> _Slot:
                return _Slot(number=number, url=_page_url(template, number, page_size), params=None,
                             expected=count, collected=(number - 1) * page_size, page_size=page_size, pages=pages)

            pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix=f"sfmc-pages-{key}")
            futures: dict[int, Future] = {}
            window, following = 2 * self.concurrency, 2

            def request_ahead(current: int) -> None:
                nonlocal following
                while following <= pages and following <= current + window:
                    futures[following] = pool.submit(self._fetch, slot(following), key)
                    following += 1
                stream.pages_ahead_peak = max(stream.pages_ahead_peak, len(futures))

            request_ahead(1)
            yield self._hand_over(page, stream, calls_before)
            for number in range(2, pages + 1):
                at = slot(number)
                page = check.page(at, futures.pop(number).result(),
                                  lambda: pool.submit(self._fetch, at, key).result())  # a re-read: one of the pool's
                request_ahead(number)
                yield self._hand_over(page, stream, calls_before)
        finally:
            if pool is not None:  # pages not started are not requested; those in flight finish
                pool.shutdown(wait=True, cancel_futures=True)
            stream.api_calls = self.transport.stats.requests - calls_before

    def _hand_over(self, page: "_Page", stream: PageStream, calls_before: int) -> pd.DataFrame:
        stream.note_columns(page.served)
        stream.api_calls = self.transport.stats.requests - calls_before
        return page.frame

    def _fetch(self, slot: "_Slot", key: str) -> requests.Response:
        """The 200 answer for ``slot``'s page, its body read (any other status raises)."""
        return self._get(slot.url, slot.params, key, slot.number)

    def _incomplete(self, slot: "_Slot", key: str, problem: str | None) -> ExtractError:
        where = ("the first page" if slot.expected is None
                 else f"after {slot.collected} of the {slot.expected} rows in 'count'")
        return ExtractError(
            self.transport.redact(
                f"SFMC rowset read of Data Extension {key!r} is incomplete: page {slot.number} ({where}) was read "
                f"twice and both times {problem}. The rows read so far are discarded. The Data Extension may "
                "be changing during the read (an import, query or automation writing to it), so the read is "
                f"retried; if it keeps failing, check that nothing writes to {key!r} while it is extracted."
            ),
            retryable=True,
        )

    def _rowset_url(self, key: str) -> str:
        return f"{self.auth.token().rest_instance_url}data/v1/customobjectdata/key/{quote(key, safe='')}/rowset"

    def _read_page(
        self, url: str, params: str | None, key: str, number: int, expected: int | None, collected: int
    ) -> dict:
        """GET one page (the probe's) that passes ``_page_problem``, reading it a second time if it does not."""
        for _ in (1, 2):
            body = _without_rows(self._get_json(url, params, key, number))
            problem = _page_problem(body, expected, collected)
            if problem is None:
                return body
        raise self._incomplete(_Slot(number=number, url=url, params=params, expected=expected, collected=collected),
                               key, problem)

    def _get_json(self, url: str, params: str | None, key: str, number: int = 1) -> object:
        """The parsed body of a 200 answer (``None`` if it is not JSON); any other status raises."""
        return _json(self._get(url, params, key, number))

    def _get(self, url: str, params: str | None, key: str, number: int = 1) -> requests.Response:
        """The 200 answer, its body read; any other status raises."""
        for attempt in (1, 2):
            token = self.auth.token()
            response = self.transport.request(
                "GET", url, params=params, headers={"Authorization": f"Bearer {token.access_token}"}
            )
            if response.status_code == 401 and attempt == 1:
                # Expired or revoked early: one fresh token, one more try. Only this token is dropped,
                # so pages in flight that all got 401 share one renewal.
                self.auth.invalidate(token)
                continue
            break
        if response.status_code != 200:
            raise self._read_error(response, key, number)
        response.content  # noqa: B018 - read the body here, in the fetching thread
        return response

    def _read_error(self, response, key: str, number: int = 1) -> ApiError:
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
        elif status == 404 and number == 1:
            message = (
                f"SFMC has no Data Extension with external key {key!r} (HTTP 404){detail}. The 'key' in the "
                "pipeline config must be the Data Extension's External Key (CustomerKey), not its name; "
                "system data views cannot be read this way."
            )
        else:
            message = f"SFMC rowset read for {key!r} failed with HTTP {status} on page {number}{detail}."
            if number > 1 and status in (400, 404) and self.concurrency > 1:
                message += (
                    f" Pages after the first are requested {self.concurrency} at a time, out of order; if this SFMC "
                    "instance does not serve a request token's pages that way, set settings.concurrent_page_reads "
                    "to 1 in the pipeline config."
                )
        return ApiError(message, status=status)


@dataclass(frozen=True)
class _Slot:
    """Where a page sits in its read: the request for it and what the pages before it told."""

    number: int
    url: str
    params: str | None
    expected: int | None = None  # the first page's count (None: this is the first page)
    collected: int = 0  # rows of the pages before it
    page_size: int | None = None  # rows of a full page (None: the first page tells)
    pages: int | None = None  # pages of the read (None: the first page tells)


class _Checker:
    """Turns a read's answers into pages, in page order: decoded, checked against the completeness
    rules and the primary keys of the pages before, each page read once more (``read_again``) if
    it breaks a rule."""

    def __init__(self, key: str, columns: "_Columns", incomplete: Callable[[_Slot, str, str | None], ExtractError]):
        self.key, self.columns, self.incomplete = key, columns, incomplete
        self.hash_key = secrets.token_hex(8)  # 16 characters: the primary-key hashes are keyed afresh per read
        self.seen = _SeenKeys()

    def page(self, slot: _Slot, response: requests.Response, read_again: Callable[[], requests.Response]) -> "_Page":
        for attempt in (1, 2):
            if attempt == 2:
                response = read_again()
            body = _decode_page(response.content, response.encoding)
            if body is None:
                body = _without_rows(_json(response))
            problem = _page_problem(body, slot.expected, slot.collected) or _position_problem(body, slot)
            if problem is None:
                try:
                    page = _Page.parse(body, slot, self.columns, self.hash_key)
                except (AttributeError, TypeError):  # an item's keys or values not an object
                    problem = "its items were not objects of 'keys' and 'values'"
                else:
                    problem = self.seen.problem(page)
            if problem is None:
                self.seen.add(page)
                return page
        raise self.incomplete(slot, self.key, problem)


class _Columns:
    """How served field names (any case) map to the configured columns."""

    def __init__(self, extension: DataExtensionConfig):
        self.names = [c.name for c in extension.columns]
        self.by_lower = {name.lower(): name for name in self.names}

    def _spelling(self, served: set[str]) -> dict[str, str]:
        """Configured column -> the served field name that holds it (the first in sorted order when SFMC
        serves several spellings of one name)."""
        spelling: dict[str, str] = {}
        for name in sorted(served):
            spelling.setdefault(self.by_lower.get(name.lower(), ""), name)
        return spelling

    def frame(self, items: list[dict], offset: int) -> tuple[pd.DataFrame, set[str]]:
        """The items as a frame aligned like ``align_columns`` (index from ``offset``), and the
        field names they served."""
        rows = [(item.get("keys") or {}, item.get("values") or {}) for item in items]
        served: set[str] = set()
        for keys, values in rows:
            served.update(keys)
            served.update(values)
        spelling = self._spelling(served)
        data = {}
        for column in self.names:
            name = spelling.get(column)
            if name is None:
                data[column] = pd.array([""] * len(rows), dtype="string")
                continue
            data[column] = _strings([values[name] if name in values else keys.get(name, "")
                                     for keys, values in rows])
        return pd.DataFrame(data, index=pd.RangeIndex(offset, offset + len(rows))), served

    def frame_of_columns(self, items: "_Items", offset: int) -> tuple[pd.DataFrame, set[str]]:
        """``frame`` for items parsed into columns: the same frame, without a Python object per row."""
        served = set(items.keys) | set(items.values)
        spelling = self._spelling(served)
        data = {}
        for column in self.names:
            name = spelling.get(column)
            parts = [part[name] for part in (items.values, items.keys) if name in part]  # values win, as in _flat
            if not parts:
                array = pa.array([""] * len(items), type=pa.string())
            else:
                array = parts[0] if len(parts) == 1 else pa.compute.coalesce(*parts)
                if array.null_count:
                    array = array.fill_null("")
            data[column] = _arrow_strings(array)
        return pd.DataFrame(data, index=pd.RangeIndex(offset, offset + len(items))), served


_STRING = pd.StringDtype()  # what astype("string") gives: pyarrow-backed when pyarrow is the storage


def _arrow_strings(array: pa.Array) -> pd.api.extensions.ExtensionArray:
    if _STRING.storage == "pyarrow":
        return pd.arrays.ArrowStringArray(array)
    return pd.array(array.to_pylist(), dtype=_STRING)


def _strings(values: list) -> pd.api.extensions.ExtensionArray:
    """``values`` as a ``string`` array, null (None, NaN) as ``""``, as ``align_columns`` makes them."""
    try:
        array = pd.array(values, dtype="string")
    except (TypeError, ValueError):  # e.g. a nested object: its text, as astype("string") gives it
        array = pd.Series(values, dtype=object).fillna("").astype("string").array
    return array.fillna("") if array.isna().any() else array


@dataclass
class _Page:
    number: int
    frame: pd.DataFrame
    served: set[str]  # field names as served
    keys: np.ndarray | None  # 64-bit hashes of the rows' primary-key values (None: no keys served)
    key_names: tuple[str, ...]
    count: int
    page_size: int  # rows of a full page: pageSize as served, else the rows of this page
    next_link: str | None

    @classmethod
    def parse(cls, body: dict, slot: _Slot, columns: _Columns, hash_key: str) -> "_Page":
        items = body["items"]
        if isinstance(items, _Items):
            frame, served = columns.frame_of_columns(items, slot.collected)
            keys, key_names = _hashed(*items.key_values(), hash_key)
        else:
            frame, served = columns.frame(items, slot.collected)
            keys, key_names = _hashed(*_key_values(item.get("keys") for item in items), hash_key)
        size = body.get("pageSize")
        page_size = slot.page_size or (size if _whole(size) and size > 0 else len(items))
        return cls(number=slot.number, frame=frame, served=served, keys=keys, key_names=key_names,
                   count=body["count"], page_size=page_size, next_link=_next_link(body))


def _hashed(values: list[str], names: tuple[str, ...], hash_key: str) -> tuple[np.ndarray | None, tuple[str, ...]]:
    """Primary-key values as 64-bit hashes keyed with ``hash_key`` (None: no row has a key)."""
    if not values:
        return None, ()
    return pd.util.hash_array(np.array(values, dtype=object), hash_key=hash_key, categorize=False), names


def _key_values(rows: Iterable[dict | None]) -> tuple[list[str], tuple[str, ...]]:
    """The rows' primary-key values (each row's ``items[].keys``, lower-cased: SFMC compares them
    case-insensitively; several key fields joined in name order), and the key's field names;
    rows without keys (a Data Extension without a primary key) have none, nor have null keys."""
    values: list[str] = []
    names: tuple[str, ...] = ()
    for keys in rows:
        if not keys:
            continue
        if len(keys) == 1:
            (value,) = keys.values()
            if value is None:
                continue
            values.append(str(value).lower())
        else:
            present = sorted((name, value) for name, value in keys.items() if value is not None)
            if not present:
                continue
            values.append("\x1f".join(str(value).lower() for _, value in present))
        if not names:
            names = tuple(sorted(keys))
    return values, names


class _SeenKeys:
    """The primary-key hashes of the pages read so far, in sorted runs merged as they grow (about
    12 bytes a row). The hashes are keyed afresh for each read: two different keys with the same
    64-bit hash (about one read in 10^8 at 500,000 rows) would fail that one read, retryably, and
    not the next."""

    def __init__(self):
        self._runs: list[tuple[np.ndarray, np.ndarray]] = []  # (sorted hashes, page of each)

    def problem(self, page: _Page) -> str | None:
        if page.keys is None or not len(page.keys):
            return None
        names = ", ".join(page.key_names)
        ordered = np.sort(page.keys)
        if (ordered[1:] == ordered[:-1]).any():
            return f"two of its rows had the same primary key ({names})"
        for hashes, pages in self._runs:
            at = np.minimum(np.searchsorted(hashes, ordered), len(hashes) - 1)
            hits = hashes[at] == ordered
            if hits.any():
                return f"a row repeated the primary key ({names}) of a row on page {int(pages[at[hits][0]])}"
        return None

    def add(self, page: _Page) -> None:
        if page.keys is None or not len(page.keys):
            return
        self._runs.append((np.sort(page.keys), np.full(len(page.keys), page.number, dtype=np.uint32)))
        while len(self._runs) > 1 and len(self._runs[-2][0]) <= len(self._runs[-1][0]):
            (h1, p1), (h2, p2) = self._runs.pop(-2), self._runs.pop()
            hashes = np.concatenate([h1, h2])
            order = np.argsort(hashes, kind="stable")  # two sorted runs: a merge
            self._runs.append((hashes[order], np.concatenate([p1, p2])[order]))


def _json(response: requests.Response) -> object:
    try:
        return response.json()
    except ValueError:
        return None


def window_filter(column: str, since: dt.datetime) -> str:
    """The rowset ``$filter`` of the rows whose ``column`` is at or after ``since`` (UTC), its
    bounds in SFMC system time."""
    return between_filter(column, to_system_time(since).replace(microsecond=0), LATEST)


def between_filter(column: str, start: dt.datetime, end: dt.datetime) -> str:
    """The rowset ``$filter`` of the rows whose ``column`` lies from ``start`` to ``end`` (naive SFMC system
    times, both inclusive, to the second)."""
    return f"{column} between '{start:%Y-%m-%dT%H:%M:%S}' and '{end:%Y-%m-%dT%H:%M:%S}'"


def _query(params: dict) -> str:
    """A query string with spaces as ``%20`` (not ``+``), as SFMC's examples write ``$filter``."""
    return urlencode(params, quote_via=quote)


def _flat(item: dict) -> dict[str, str]:
    return {**(item.get("keys") or {}), **(item.get("values") or {})}


def _served_fields(item: object) -> tuple[str, ...] | None:
    """The field names of one served item (None: not an item of ``keys`` and ``values`` objects)."""
    try:
        return tuple(_flat(item))
    except (AttributeError, TypeError):
        return None


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


def _without_rows(body: object) -> object:
    """``body`` with ``items: []`` when it is SFMC's answer to a read without rows: an object with a
    ``count`` of 0 and no ``items`` key at all (recorded from real tenants, for an empty Data
    Extension and for a ``$filter`` that matches nothing). Anything else is returned as it is, for
    ``_page_problem`` to judge (an error object has no ``count``)."""
    if (isinstance(body, dict) and "items" not in body and _whole(body.get("count")) and body["count"] == 0
            and "errorcode" not in body and "message" not in body):
        return {**body, "items": []}
    return body


def _page_problem(body: object, expected: int | None, collected: int) -> str | None:
    """What makes this page unusable, given the ``count`` of earlier pages (``None`` on the first)
    and the rows collected before it; ``None`` when it is a valid page."""
    if not isinstance(body, dict):
        return "it was not a JSON object"
    items, count = body.get("items"), body.get("count")
    if not isinstance(items, _Items) and (not isinstance(items, list) or not all(isinstance(item, dict)
                                                                                 for item in items)):
        if "errorcode" in body or "message" in body:
            message, code = body.get("message"), body.get("errorcode")
            return f"it was an SFMC error object, not rows: {message!r} (errorcode {code!r})"
        return "it had no 'items' list"
    if not _whole(count) or count < 0:
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


def _position_problem(body: dict, slot: _Slot) -> str | None:
    """What makes a page (one that passed ``_page_problem``) not the page ``slot`` asked for: the
    wrong ``page``, another ``pageSize`` than the first page's, fewer or more rows than a full page
    before the last page, a last page that does not end the read at ``count``."""
    items, count = body["items"], body["count"]
    rows, total = len(items), slot.collected + len(items)
    served_page, served_size = body.get("page"), body.get("pageSize")
    if _whole(served_page) and served_page != slot.number:
        return f"it was page {served_page} of the read, not page {slot.number}"
    if slot.page_size is None:  # the first page: it tells the page size
        if total < count and _whole(served_size) and served_size > 0 and rows != served_size:
            return f"it had {rows} row(s), not a full page of {served_size} (pageSize), and more rows follow"
        return None
    if _whole(served_size) and served_size != slot.page_size:
        return f"its pageSize was {served_size}, not the first page's {slot.page_size}"
    if slot.number < slot.pages and rows != slot.page_size:
        return (f"it had {rows} row(s), not a full page of {slot.page_size}, and it is page {slot.number} of "
                f"{slot.pages}, not the last")
    if slot.number == slot.pages and total != count:
        return (f"it had {rows} row(s), ending the read at {total} of {count} rows ('count') on its last page "
                f"({slot.number} of {slot.pages})")
    return None


class _Items:
    """A rowset page's ``items`` parsed into columns (pyarrow): per field of ``keys`` and of
    ``values``, one string array over the page's rows (null where a row lacks the field)."""

    def __init__(self, rows: int, keys: dict[str, pa.Array], values: dict[str, pa.Array]):
        self.rows, self.keys, self.values = rows, keys, values

    def __len__(self) -> int:
        return self.rows

    def key_values(self) -> tuple[list[str], tuple[str, ...]]:
        """``_key_values`` of the rows' ``keys``, without a dict per row."""
        if len(self.keys) == 1:
            ((name, array),) = self.keys.items()
            values = [value.lower() for value in array.to_pylist() if value is not None]
            return values, (name,) if values else ()
        names = sorted(self.keys)
        return _key_values(dict(zip(names, row)) for row in zip(*(self.keys[n].to_pylist() for n in names)))


def _decode_page(content: bytes, encoding: str | None) -> dict | None:
    """A rowset page's JSON with ``items`` as ``_Items``, or ``None`` when the page is anything
    but the usual shape (a top-level object whose ``items`` is a list of objects of ``keys`` and
    ``values`` objects of strings, whole numbers where numbers are): then the caller parses it
    the ordinary way, and every rule applies to it as to any page. The usual page is parsed in
    C++ without a Python object per row (a 2,500-row page costs a few milliseconds instead of
    tens, most of them garbage collection of the dicts)."""
    if content[:1] != b"{" or (encoding or "utf-8").lower().replace("_", "-") not in ("utf-8", "utf8"):
        return None
    table = _read_json_object(content, None)
    if table is None:
        return None
    items = _items_of(table)
    if items is None and _item_fields(table) is not None:  # strings taken for dates, say: read as strings
        table = _read_json_object(content, _item_fields(table))
        items = _items_of(table) if table is not None else None
    if items is None:
        return None
    body = {name: table.column(name)[0].as_py() for name in table.column_names if name != "items"}
    if not all(_whole(body[name]) for name in ("count", "page", "pageSize") if name in body):
        return None  # e.g. a count beyond 64 bits, which pyarrow reads as a float: the exact parser decides
    body["items"] = items
    return body


def _read_json_object(content: bytes, item_fields: dict[str, list[str]] | None) -> pa.Table | None:
    options = pa_json.ReadOptions(use_threads=False, block_size=len(content) + 1024)
    parse = pa_json.ParseOptions(newlines_in_values=True)
    if item_fields is not None:
        item = pa.struct([pa.field(part, pa.struct([pa.field(n, pa.string()) for n in names]))
                          for part, names in item_fields.items()])
        parse = pa_json.ParseOptions(explicit_schema=pa.schema([pa.field("items", pa.list_(item))]),
                                     unexpected_field_behavior="infer", newlines_in_values=True)
    try:
        table = pa_json.read_json(pa.BufferReader(content), read_options=options, parse_options=parse)
    except (pa.ArrowException, ValueError):
        return None
    return table if table.num_rows == 1 and "items" in table.column_names else None


def _item_fields(table: pa.Table) -> dict[str, list[str]] | None:
    """The field names of the items' ``keys`` and ``values`` (when both are objects)."""
    kind = table.schema.field("items").type
    if not pa.types.is_list(kind) or not pa.types.is_struct(kind.value_type):
        return None
    fields = {}
    for part in kind.value_type:
        if part.name in ("keys", "values"):
            if not pa.types.is_struct(part.type):
                return None
            fields[part.name] = [child.name for child in part.type]
    return fields


def _items_of(table: pa.Table) -> _Items | None:
    """``_Items`` of a page whose items are objects of ``keys`` and ``values`` objects of strings."""
    if _item_fields(table) is None:
        return None
    items = table.column("items").combine_chunks()
    if items.null_count:
        return None
    rows = items.flatten()
    if rows.null_count:
        return None  # a null where an item should be: the ordinary parser reports it
    parts = {}
    for field, array in zip(rows.type, rows.flatten()):
        if field.name not in ("keys", "values"):
            continue
        children = {}
        for child, values in zip(field.type, array.flatten()):  # flatten: a null keys/values is no fields
            if pa.types.is_null(child.type):
                values = pa.nulls(len(values), type=pa.string())
            elif not pa.types.is_string(child.type):
                return None
            children[child.name] = values
        parts[field.name] = children
    return _Items(len(rows), parts.get("keys", {}), parts.get("values", {}))


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _page_url(template: str, number: int, page_size: int) -> str:
    """``template`` (a page's resolved ``links.next``) asking for page ``number`` of ``page_size`` rows."""
    parts = urlsplit(template)
    kept = [part for part in parts.query.split("&")
            if part and unquote(part.split("=", 1)[0]).lower() not in ("$page", "$pagesize")]
    query = "&".join([*kept, f"$page={number}", f"$pageSize={page_size}"])
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


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
