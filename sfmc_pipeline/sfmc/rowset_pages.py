"""The completeness rules of a rowset read: each answer becomes a checked page, or the read fails.

Every page must be an object with an ``items`` list and the first page's whole-number ``count``;
each page but the last must be full, the page asked for, and the rows must reach ``count`` exactly.
Primary-key values (compared case-insensitively, as SFMC does) must be unique across the read, so a
Data Extension rewritten during the read fails it. A page that breaks a rule is read once more
before the read fails (retryably).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
import requests

from sfmc_pipeline.sfmc.rowset_columns import ServedColumns
from sfmc_pipeline.sfmc.rowset_decoding import (
    RowsetItems,
    decode_page,
    is_whole,
    json_body,
    primary_key_values,
    without_rows,
)
from sfmc_pipeline.sfmc.rowset_links import next_link
from sfmc_pipeline.sfmc.source import ExtractError


@dataclass(frozen=True)
class PageSlot:
    """Where a page sits in its read: the request for it and what the pages before it told."""

    number: int
    url: str
    params: str | None
    expected: int | None = None  # the first page's count (None: this is the first page)
    collected: int = 0  # rows of the pages before it
    page_size: int | None = None  # rows of a full page (None: the first page tells)
    pages: int | None = None  # pages of the read (None: the first page tells)


class PageChecker:
    """Turns a read's answers into pages, in page order: decoded, checked against the completeness
    rules and the primary keys of the pages before, each page read once more (``read_again``) if
    it breaks a rule."""

    def __init__(self, key: str, columns: "ServedColumns", incomplete: Callable[[PageSlot, str, str | None], ExtractError]):
        self.key, self.columns, self.incomplete = key, columns, incomplete
        self.hash_key = secrets.token_hex(8)  # 16 characters: the primary-key hashes are keyed afresh per read
        self.seen = SeenKeys()

    def page(self, slot: PageSlot, response: requests.Response, read_again: Callable[[], requests.Response]) -> "RowsetPage":
        for attempt in (1, 2):
            if attempt == 2:
                response = read_again()
            body = decode_page(response.content, response.encoding)
            if body is None:
                body = without_rows(json_body(response))
            problem = page_problem(body, slot.expected, slot.collected) or position_problem(body, slot)
            if problem is None:
                try:
                    page = RowsetPage.parse(body, slot, self.columns, self.hash_key)
                except (AttributeError, TypeError):  # an item's keys or values not an object
                    problem = "its items were not objects of 'keys' and 'values'"
                else:
                    problem = self.seen.problem(page)
            if problem is None:
                self.seen.add(page)
                return page
        raise self.incomplete(slot, self.key, problem)


@dataclass
class RowsetPage:
    number: int
    frame: pd.DataFrame
    served: set[str]  # field names as served
    keys: np.ndarray | None  # 64-bit hashes of the rows' primary-key values (None: no keys served)
    key_names: tuple[str, ...]
    count: int
    page_size: int  # rows of a full page: pageSize as served, else the rows of this page
    next_link: str | None

    @classmethod
    def parse(cls, body: dict, slot: PageSlot, columns: ServedColumns, hash_key: str) -> "RowsetPage":
        items = body["items"]
        if isinstance(items, RowsetItems):
            frame, served = columns.frame_of_columns(items, slot.collected)
            keys, key_names = _hashed(*items.key_values(), hash_key)
        else:
            frame, served = columns.frame(items, slot.collected)
            keys, key_names = _hashed(*primary_key_values(item.get("keys") for item in items), hash_key)
        size = body.get("pageSize")
        page_size = slot.page_size or (size if is_whole(size) and size > 0 else len(items))
        return cls(number=slot.number, frame=frame, served=served, keys=keys, key_names=key_names,
                   count=body["count"], page_size=page_size, next_link=next_link(body))


def _hashed(values: list[str], names: tuple[str, ...], hash_key: str) -> tuple[np.ndarray | None, tuple[str, ...]]:
    """Primary-key values as 64-bit hashes keyed with ``hash_key`` (None: no row has a key)."""
    if not values:
        return None, ()
    return pd.util.hash_array(np.array(values, dtype=object), hash_key=hash_key, categorize=False), names


class SeenKeys:
    """The primary-key hashes of the pages read so far, in sorted runs merged as they grow (about
    12 bytes a row). The hashes are keyed afresh for each read: two different keys with the same
    64-bit hash (about one read in 10^8 at 500,000 rows) would fail that one read, retryably, and
    not the next."""

    def __init__(self):
        self._runs: list[tuple[np.ndarray, np.ndarray]] = []  # (sorted hashes, page of each)

    def problem(self, page: RowsetPage) -> str | None:
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

    def add(self, page: RowsetPage) -> None:
        if page.keys is None or not len(page.keys):
            return
        self._runs.append((np.sort(page.keys), np.full(len(page.keys), page.number, dtype=np.uint32)))
        while len(self._runs) > 1 and len(self._runs[-2][0]) <= len(self._runs[-1][0]):
            (h1, p1), (h2, p2) = self._runs.pop(-2), self._runs.pop()
            hashes = np.concatenate([h1, h2])
            order = np.argsort(hashes, kind="stable")  # two sorted runs: a merge
            self._runs.append((hashes[order], np.concatenate([p1, p2])[order]))


def page_problem(body: object, expected: int | None, collected: int) -> str | None:
    """What makes this page unusable, given the ``count`` of earlier pages (``None`` on the first)
    and the rows collected before it; ``None`` when it is a valid page."""
    if not isinstance(body, dict):
        return "it was not a JSON object"
    items, count = body.get("items"), body.get("count")
    if not isinstance(items, RowsetItems) and (not isinstance(items, list) or not all(isinstance(item, dict)
                                                                                 for item in items)):
        if "errorcode" in body or "message" in body:
            message, code = body.get("message"), body.get("errorcode")
            return f"it was an SFMC error object, not rows: {message!r} (errorcode {code!r})"
        return "it had no 'items' list"
    if not is_whole(count) or count < 0:
        return f"its 'count' (total rows) was {count!r}, not a whole number"
    if expected is not None and count != expected:
        return f"its 'count' (total rows) changed to {count}"
    total = collected + len(items)
    if total > count:
        return f"it had {len(items)} row(s), {total} in all, more than the {count} in 'count'"
    if total < count and not items:
        return f"it was empty, {count - collected} rows short of 'count'"
    if total < count and next_link(body) is None:
        return f"it had {len(items)} row(s) and no links.next, ending the read at {total} of {count} rows ('count')"
    return None


def position_problem(body: dict, slot: PageSlot) -> str | None:
    """What makes a page (one that passed ``page_problem``) not the page ``slot`` asked for: the
    wrong ``page``, another ``pageSize`` than the first page's, fewer or more rows than a full page
    before the last page, a last page that does not end the read at ``count``."""
    items, count = body["items"], body["count"]
    rows, total = len(items), slot.collected + len(items)
    served_page, served_size = body.get("page"), body.get("pageSize")
    if is_whole(served_page) and served_page != slot.number:
        return f"it was page {served_page} of the read, not page {slot.number}"
    if slot.page_size is None:  # the first page: it tells the page size
        if total < count and is_whole(served_size) and served_size > 0 and rows != served_size:
            return f"it had {rows} row(s), not a full page of {served_size} (pageSize), and more rows follow"
        return None
    if is_whole(served_size) and served_size != slot.page_size:
        return f"its pageSize was {served_size}, not the first page's {slot.page_size}"
    if slot.number < slot.pages and rows != slot.page_size:
        return (f"it had {rows} row(s), not a full page of {slot.page_size}, and it is page {slot.number} of "
                f"{slot.pages}, not the last")
    if slot.number == slot.pages and total != count:
        return (f"it had {rows} row(s), ending the read at {total} of {count} rows ('count') on its last page "
                f"({slot.number} of {slot.pages})")
    return None
