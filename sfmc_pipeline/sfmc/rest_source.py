"""Read Data Extension rows over the SFMC REST API (``data/v1/customobjectdata``, the "rowset").

Observed contract (see shared/api-notes.md 1.2): pages of up to 2,500 rows; ``count`` is the
total; ``links.next`` is relative and lacks the ``/data`` prefix and appears only while more
pages exist; each item is ``{"keys": {...}, "values": {...}}`` with lower-cased field names and
every value a string. Reading stops at the first of: no ``links.next``, an empty page, or
``count`` rows collected.
"""

from __future__ import annotations

import math
import time
from typing import Callable, Iterator
from urllib.parse import quote

import pandas as pd

from sfmc_pipeline.config.models import DataExtensionConfig
from sfmc_pipeline.sfmc.auth import SfmcAuth
from sfmc_pipeline.sfmc.source import RawExtract, align_columns
from sfmc_pipeline.transport import ApiError, HttpTransport, Redactor, RetrySettings, body_excerpt

MAX_PAGE_SIZE = 2500


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

    def read(self, extension: DataExtensionConfig) -> RawExtract:
        calls_before = self.transport.stats.requests
        pages = [pd.DataFrame.from_records(items) for items in self.iter_pages(extension.key)]
        frame = pd.concat(pages, ignore_index=True) if pages else pd.DataFrame()
        frame, unmapped, missing = align_columns(frame, extension)
        return RawExtract(
            frame=frame,
            source=f"SFMC REST {self.auth.token().rest_instance_url} (Data Extension key {extension.key!r})",
            api_calls=self.transport.stats.requests - calls_before,
            unmapped_columns=unmapped,
            missing_columns=missing,
        )

    def iter_pages(self, key: str) -> Iterator[list[dict[str, str]]]:
        """Yield each page's rows as flat dicts (keys and values merged, names as served)."""
        rest = self.auth.token().rest_instance_url
        url = f"{rest}data/v1/customobjectdata/key/{quote(key, safe='')}/rowset"
        params: dict | None = {"$page": 1, "$pageSize": self.page_size}
        collected, pages_read, max_pages = 0, 0, None
        while True:
            body = self._get_json(url, params, key)
            items = body.get("items") or []
            pages_read += 1
            collected += len(items)
            if items:
                yield [{**(item.get("keys") or {}), **(item.get("values") or {})} for item in items]
            count = body.get("count")
            if isinstance(count, int) and max_pages is None:
                max_pages = math.ceil(count / max(len(items), 1)) + 1
            next_link = (body.get("links") or {}).get("next")
            if not items or not next_link or (isinstance(count, int) and collected >= count):
                return
            if max_pages is not None and pages_read >= max_pages:
                raise ApiError(f"SFMC kept returning pages for {key!r} past its count of {count} rows; stopping.")
            url, params = _resolve_link(rest, next_link), None

    def _get_json(self, url: str, params: dict | None, key: str) -> dict:
        for attempt in (1, 2):
            token = self.auth.token()
            response = self.transport.request(
                "GET", url, params=params, headers={"Authorization": f"Bearer {token.access_token}"}
            )
            if response.status_code == 401 and attempt == 1:
                self.auth.invalidate()  # expired or revoked early: one fresh token, one more try
                continue
            break
        if response.status_code == 200:
            try:
                body = response.json()
            except ValueError:
                body = None
            if isinstance(body, dict):
                return body
            raise ApiError(f"SFMC rowset for {key!r} did not return a JSON object{self.transport.redact(body_excerpt(response))}")
        raise self._read_error(response, key)

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


def _resolve_link(rest_instance_url: str, link: str) -> str:
    if link.startswith(("http://", "https://")):
        return link
    if link.startswith("/data/"):
        return rest_instance_url + link.lstrip("/")
    return rest_instance_url + "data" + (link if link.startswith("/") else "/" + link)
