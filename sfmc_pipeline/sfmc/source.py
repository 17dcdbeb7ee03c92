"""The source interface both implementations share, and the raw extract they return.

A read comes two ways: ``read`` returns every row in one ``RawExtract``; ``read_pages`` returns a
``PageStream``, an iterator of the read's pages as frames, in page order, so that a consumer can
convert and write each page as it arrives without holding the whole read. ``read`` is
``collect_pages(read_pages(...))``: both give the same rows in the same order.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Protocol, Sequence

import pandas as pd

from sfmc_pipeline.config.data_extensions import DataExtensionConfig
from sfmc_pipeline.errors import ApiError


class ExtractError(ApiError):
    """A Data Extension extract is incomplete, malformed or unreadable, so none of its rows may be
    used: a read is complete or it fails.

    ``retryable=True`` when reading again later may heal it (SFMC served pages that do not add up,
    e.g. while the Data Extension was being rewritten); ``retryable=False`` when someone must fix
    something first (a broken sample file, a next-page link leaving the REST instance).
    """


@dataclass(frozen=True)
class RawExtract:
    """Rows as the source served them: every value a string (``""`` for null), columns renamed to
    the configured names (SFMC lower-cases field names)."""

    frame: pd.DataFrame
    source: str  # human-readable: where the rows came from
    api_calls: int = 0
    unmapped_columns: list[str] = field(default_factory=list)  # served but not configured
    missing_columns: list[str] = field(default_factory=list)  # configured but never served


@dataclass(frozen=True)
class SourceProbe:
    """What a cheap look at a Data Extension tells, without reading its rows: how many rows it
    has, the field names one row served (its columns) and, when an ``incremental_column`` is
    configured, the newest value of that column (as served). The change sensor compares probes;
    the connection check shows one; an incremental read checks its merge against ``rows``."""

    rows: int
    newest: str | None = None  # newest incremental_column value as served; None without one (or no rows)
    api_calls: int = 0
    served: tuple[str, ...] | None = None  # field names of the probed row as served; None: no row to tell
    range_rows: tuple[int, ...] = ()  # rows whose incremental_column lies in each of the probe's ``ranges``

    def columns(self, extension: DataExtensionConfig) -> tuple[list[str], list[str]] | None:
        """``(unmapped, missing)``: fields served but not configured (as served, sorted) and configured
        fields not served (configured names, in order); None when no row told."""
        return None if self.served is None else column_match(self.served, extension)

    @property
    def change_token(self) -> str:
        """Equal for two probes that saw the same rows count and newest value."""
        return f"{self.rows}|{self.newest or ''}"


class PageStream(Iterator[pd.DataFrame]):
    """The pages of one read, as frames, in page order: what ``DataExtensionSource.read_pages``
    returns.

    Each frame holds one page's rows aligned like ``align_columns``: exactly the configured
    columns, in the configured order and names, every value a string (``""`` for null), dtype
    ``string``. Its index is the rows' position in the read (page 2 of a read with 2,500-row
    pages starts at 2500), so ``pd.concat(frames)`` has the index 0..n-1 and a row's position
    gives its ``_row_number`` as in a whole read. Pages without rows are not yielded (an empty
    extension yields nothing).

    A read is complete or it fails: iteration either ends after the last page, every row of
    the read yielded exactly once, or raises (``ExtractError``, ``ApiError``) part way. After a
    failure every frame yielded so far must be discarded; nothing of a failed read may land.

    Memory stays bounded: the source holds at most a small window of pages ahead of the consumer
    (for the REST source, ``2 x concurrency`` pages), never the whole read.

    ``source``, ``api_calls``, ``rows``, ``expected_rows``, ``unmapped_columns`` and
    ``missing_columns`` describe the read; ``source`` and ``expected_rows`` are known once the
    first page is read (the first ``next()``), the others are final once iteration has ended.
    Closing the stream (``close()``, or leaving a ``with`` block) before the end stops the read:
    pages not yet requested are not requested.
    """

    def __init__(self, extension: DataExtensionConfig, source: str):
        self.extension = extension
        self.source = source  # human-readable: where the rows come from
        self.api_calls = 0  # HTTP requests of this read so far, retries and token requests included
        self.rows = 0  # rows yielded so far
        self.expected_rows: int | None = None  # the rows the read must yield (the rowset's count)
        self.pages = 0  # pages yielded so far
        self.pages_ahead_peak = 0  # most pages ever requested or held ahead of the consumer
        self.finished = False  # iteration ended after the last page
        self._served: set[str] = set()  # configured names (lower-cased) served on a page with rows
        self._unmapped: set[str] = set()
        self._configured = {c.name.lower() for c in extension.columns}
        self._known: tuple[list[str], list[str]] | None = None  # (unmapped, missing) when known up front
        self._frames: Iterator[pd.DataFrame] = iter(())

    def attach(self, produce: Callable[["PageStream"], Iterator[pd.DataFrame]]) -> "PageStream":
        """Let ``produce(self)`` (a generator that updates this stream) supply the frames."""
        self._frames = produce(self)
        return self

    def note_columns(self, served: Iterable[str]) -> None:
        """Record the field names (any case) a page served."""
        for name in served:
            lower = name.lower()
            if lower in self._configured:
                self._served.add(lower)
            else:
                self._unmapped.add(name)

    def set_columns(self, unmapped: list[str], missing: list[str]) -> None:
        """The unmapped and missing columns, when the source knows them before any page."""
        self._known = (list(unmapped), list(missing))

    @property
    def unmapped_columns(self) -> list[str]:
        """Fields served but not configured (as served), sorted."""
        if self._known is not None:
            return self._known[0]
        return sorted(self._unmapped)

    @property
    def missing_columns(self) -> list[str]:
        """Configured fields no page with rows served ([] for a read without rows)."""
        if self._known is not None:
            return self._known[1]
        if not self.rows:
            return []
        return [c.name for c in self.extension.columns if c.name.lower() not in self._served]

    def __iter__(self) -> "PageStream":
        return self

    def __next__(self) -> pd.DataFrame:
        try:
            frame = next(self._frames)
        except StopIteration:
            self.finished = True
            raise
        self.rows += len(frame)
        self.pages += 1
        return frame

    def close(self) -> None:
        close = getattr(self._frames, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> "PageStream":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def collect_pages(pages: PageStream) -> RawExtract:
    """Every page of ``pages`` in one ``RawExtract`` (index 0..n-1), or the read's error."""
    with pages:
        frames = list(pages)
    if frames:
        frame = pd.concat(frames, ignore_index=True)
    else:
        frame = align_columns(pd.DataFrame(), pages.extension)[0]
    return RawExtract(
        frame=frame,
        source=pages.source,
        api_calls=pages.api_calls,
        unmapped_columns=pages.unmapped_columns,
        missing_columns=pages.missing_columns,
    )


class DataExtensionSource(Protocol):
    mode: str  # "sfmc" (REST API) or "embedded" (sample data shipped in data/)

    def read(self, extension: DataExtensionConfig, since: dt.datetime | None = None) -> RawExtract:
        """Every row, or with ``since`` (a UTC datetime) only the rows whose ``incremental_column`` is at
        or after it (an incremental read, see ``datasets/incremental.py``). The same rows, in the same
        order, as ``collect_pages(read_pages(extension, since))``."""
        ...

    def read_pages(self, extension: DataExtensionConfig, since: dt.datetime | None = None) -> PageStream:
        """The same read as ``read``, as a ``PageStream``: the pages' frames in page order, as they
        arrive (see ``PageStream`` for what each frame holds and what the stream guarantees).
        Nothing is requested before the first ``next()``."""
        ...

    def probe(self, extension: DataExtensionConfig, *, newest: bool = True, ranges: Sequence = ()) -> SourceProbe:
        """The rows count and one row's field names; with ``newest`` (and an ``incremental_column``)
        also the newest value of that column; with ``ranges`` (``datasets.recount.DateRange``s, SFMC
        system time, inclusive) the rows whose ``incremental_column`` lies in each, counted as SFMC's
        ``$filter ... between`` counts them (``range_rows``)."""
        ...


def column_match(served: Iterable[str], extension: DataExtensionConfig) -> tuple[list[str], list[str]]:
    """``(unmapped, missing)``: fields served but not configured (as served, sorted) and configured fields
    not served (configured names, in order), names compared in any case (SFMC serves them lower-cased)."""
    served = list(served)
    served_lower = {name.lower() for name in served}
    configured = {c.name.lower() for c in extension.columns}
    return (sorted(name for name in served if name.lower() not in configured),
            [c.name for c in extension.columns if c.name.lower() not in served_lower])


def align_columns(
    frame: pd.DataFrame, extension: DataExtensionConfig
) -> tuple[pd.DataFrame, list[str], list[str]]:
    """Rename served columns (any case) to the configured names, as strings.

    Returns ``(frame, unmapped, missing)``: fields served but not configured are left out and
    listed; configured fields never served are added as empty strings and listed.
    """
    by_lower = {c.name.lower(): c.name for c in extension.columns}
    rename = {name: by_lower[name.lower()] for name in frame.columns if name.lower() in by_lower}
    unmapped, missing = column_match(frame.columns, extension)
    missing = missing if len(frame) else []
    frame = frame.rename(columns=rename)
    for name in by_lower.values():
        if name not in frame.columns:
            frame[name] = ""
    frame = frame[[c.name for c in extension.columns]].fillna("").astype("string")
    return frame, unmapped, missing
