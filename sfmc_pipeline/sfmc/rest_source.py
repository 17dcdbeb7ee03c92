"""Read Data Extension rows over the SFMC REST rowset (``data/v1/customobjectdata``): the client.

The rowset is not in SFMC's API reference; its observed contract lives in the modules it shapes:
``rowset_links.py`` (filters, continuation links), ``rowset_decoding.py`` (a page's body),
``rowset_columns.py`` (items -> configured columns) and ``rowset_pages.py`` (completeness rules).
Here: the token, the requests, the concurrent paging and the probe. A read is complete or it
fails with ``ExtractError``; a 401 renews the token once for all the pages in flight.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Iterator, Sequence
from urllib.parse import quote

import pandas as pd
import requests

from sfmc_pipeline.config.data_extensions import DataExtensionConfig
from sfmc_pipeline.errors import ApiError
from sfmc_pipeline.http import HttpTransport, Redactor, RetrySettings, body_excerpt
from sfmc_pipeline.sfmc.auth import SfmcAuth
from sfmc_pipeline.sfmc.rowset_columns import ServedColumns, served_fields, served_value
from sfmc_pipeline.sfmc.rowset_decoding import json_body, without_rows
from sfmc_pipeline.sfmc.rowset_links import (
    between_filter,
    next_url,
    page_url,
    query_string,
    window_filter,
)
from sfmc_pipeline.sfmc.rowset_pages import (
    PageChecker,
    PageSlot,
    RowsetPage,
    page_problem,
)
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
    """Reads Data Extensions page by page. The first page gives ``count``, the page size and
    ``links.next``; pages 2..N are then requested ``concurrency`` at a time (1: one after another
    through the same code), each as ``links.next`` with ``$page=k`` and the first page's explicit
    ``$pageSize``. Reading a request token's pages out of order is not documented, so every page is
    checked for being the page asked for (``rowset_pages.py``): a server that ignored ``$page`` could
    at most reorder whole pages, and a row missing or served twice fails the read (retryably);
    ``settings.concurrent_page_reads: 1`` is the way back. Pages are yielded in page order from a
    window of at most ``2 x concurrency`` pages requested ahead: memory holds a few pages, never the
    whole read. The ``$filter`` goes on the first page only (continuation pages carry the read's
    snapshot), and a filtered read obeys the same completeness rules."""

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
        first = self._read_page(url, query_string({"$page": 1, "$pageSize": 1}), key, 1, None, 0)
        rows, items = first["count"], first["items"]
        served = served_fields(items[0]) if rows and items else None
        value = None
        if newest and column and rows:
            body = self._read_page(url, query_string({"$page": 1, "$pageSize": 1, "$orderBy": f"{column} desc"}),
                                   key, 1, None, 0)
            value = served_value(body["items"][:1], column, key)
        range_rows: tuple[int, ...] = ()
        if ranges:
            if not column:
                raise ValueError(f"{key}: counting rows by date range needs an incremental_column")

            def count(date_range) -> int:
                between = between_filter(column, date_range.start, date_range.end)
                return self._read_page(url, query_string({"$page": 1, "$pageSize": 1, "$filter": between}),
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
        check = PageChecker(key, ServedColumns(extension), self._incomplete)
        pool: ThreadPoolExecutor | None = None
        try:
            rest = self.auth.token().rest_instance_url
            stream.source = f"SFMC REST {rest} ({where})"
            params = {"$page": 1, "$pageSize": self.page_size, **({"$filter": row_filter} if row_filter else {})}
            first = PageSlot(number=1, url=self._rowset_url(key), params=query_string(params))
            page = check.page(first, self._fetch(first, key), lambda: self._fetch(first, key))
            count = stream.expected_rows = page.count
            if len(page.frame) == count:  # the whole read in one page (or no rows at all)
                if count:
                    yield self._hand_over(page, stream, calls_before)
                return

            page_size, pages = page.page_size, math.ceil(count / page.page_size)
            template = next_url(rest, page.next_link, key, 1)  # refused off the REST origin

            def slot(number: int) -> PageSlot:
                return PageSlot(number=number, url=page_url(template, number, page_size), params=None,
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

    def _hand_over(self, page: RowsetPage, stream: PageStream, calls_before: int) -> pd.DataFrame:
        stream.note_columns(page.served)
        stream.api_calls = self.transport.stats.requests - calls_before
        return page.frame

    def _fetch(self, slot: PageSlot, key: str) -> requests.Response:
        """The 200 answer for ``slot``'s page, its body read (any other status raises)."""
        return self._get(slot.url, slot.params, key, slot.number)

    def _incomplete(self, slot: PageSlot, key: str, problem: str | None) -> ExtractError:
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
        """GET one page (the probe's) that passes ``page_problem``, reading it a second time if it does not."""
        for _ in (1, 2):
            body = without_rows(self._get_json(url, params, key, number))
            problem = page_problem(body, expected, collected)
            if problem is None:
                return body
        raise self._incomplete(PageSlot(number=number, url=url, params=params, expected=expected, collected=collected),
                               key, problem)

    def _get_json(self, url: str, params: str | None, key: str, number: int = 1) -> object:
        """The parsed body of a 200 answer (``None`` if it is not JSON); any other status raises."""
        return json_body(self._get(url, params, key, number))

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
