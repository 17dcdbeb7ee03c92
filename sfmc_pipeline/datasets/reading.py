"""Read one extension and land it in memory: plan (full or incremental), read page by page,
validate, merge, and prove an incremental read complete, falling back to a full read in the same
run when it is not.

``read_extension`` returns a ``LandedRead``: what the dataset asset writes (``landing``), how it was
read (``plan``: a full read that replaced an incomplete incremental one says why in
``plan.reason``), and what the source told about itself (its columns, its ``count``). Nothing is
written here; the asset decides what lands (the quarantine threshold, the volume guard).

Completeness (``recount.py``): after an incremental read, cheap probes of the extension's ``count``
(REST: ``$pageSize=1`` requests, unfiltered and per date range of the incremental column; embedded:
the file's rows), requested *after* the delta, must equal the merged dataset's rows, valid +
quarantined, in total and per range. The probe's row also tells the extension's columns when the
delta served none.
"""

from __future__ import annotations

import datetime as dt
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterable, Iterator

import pandas as pd

from sfmc_pipeline.config.models import DataExtensionConfig, PipelineSettings
from sfmc_pipeline.datasets.incremental import (
    FULL,
    INCREMENTAL,
    IncrementalState,
    Previous,
    ReadPlan,
    load_previous,
    plan_read,
    stored_state,
)
from sfmc_pipeline.datasets.memory import release_memory
from sfmc_pipeline.datasets.merge import (
    Landing,
    as_row_hashes,
    land,
    previous_for_full_read,
)
from sfmc_pipeline.datasets.recount import (
    RowCounts,
    completeness_problem,
    merged_counts,
    recount_ranges,
)
from sfmc_pipeline.datasets.storage import DatasetStore
from sfmc_pipeline.datasets.validation import ValidationResult, validate_pages


class PagedRead:
    """One read of an extension as the dataset asset consumes it: ``pages`` (raw string frames under
    the configured names, in order) and what the read says about itself, final once the pages are
    consumed: ``source``, ``api_calls``, ``unmapped_columns``, ``missing_columns`` (taken from the
    source's ``PageStream``, or from its ``RawExtract``)."""

    def __init__(self, pages: Iterable[pd.DataFrame], about, fallback_source: str = ""):
        self.pages, self._about, self._fallback_source = pages, about, fallback_source

    @property
    def source(self) -> str:
        return getattr(self._about, "source", None) or self._fallback_source

    @property
    def api_calls(self) -> int:
        return getattr(self._about, "api_calls", 0) or 0

    @property
    def unmapped_columns(self) -> list[str]:
        return list(getattr(self._about, "unmapped_columns", None) or [])

    @property
    def missing_columns(self) -> list[str]:
        return list(getattr(self._about, "missing_columns", None) or [])


@contextmanager
def open_read(source, extension: DataExtensionConfig, since: dt.datetime | None) -> Iterator[PagedRead]:
    """The read of ``extension`` page by page: ``source.read_pages`` when the source has it (a
    ``PageStream``, closed on leaving, so a failed validation stops the read), else ``source.read``
    as a single page."""
    if not hasattr(source, "read_pages"):
        extract = source.read(extension, since=since)
        yield PagedRead([extract.frame], extract)
        return
    stream = source.read_pages(extension, since=since)
    try:
        yield PagedRead(stream, stream, fallback_source=f"{source.mode} source, Data Extension {extension.key!r}")
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()


@dataclass(frozen=True)
class LandedRead:
    plan: ReadPlan  # how the landed rows were read (FULL with the reason when an incremental read was incomplete)
    extract: PagedRead  # the read that was landed
    result: ValidationResult  # its validation
    landing: Landing  # the dataset and quarantine it lands
    api_calls: int  # every request of the step's reads and probe
    columns: tuple[list[str], list[str]] | None  # (unmapped, missing) as served; None: no row served to tell
    stored: tuple[IncrementalState | None, str | None]  # the incremental state as read at the start
    source_rows: int | None = None  # the extension's count probed after an incremental read
    incremental_rows_fetched: int | None = None  # rows of an incremental read found incomplete and replaced


def read_extension(source, extension: DataExtensionConfig, settings: PipelineSettings, store: DatasetStore, *,
                   now: dt.datetime, full_refresh: bool, run_id: str) -> LandedRead:
    """Plan, read, validate and land ``extension`` in memory (see the module docstring). The source's
    errors (``ExtractError``, ``ApiError``) propagate."""
    state, state_problem = stored_state(store, extension.asset)
    plan = plan_read(extension, settings, state, now=now, full_refresh=full_refresh, state_problem=state_problem)
    if plan.mode == INCREMENTAL:  # the delta is merged into the previous dataset: load it
        previous = load_previous(store, extension)
        plan = plan_read(extension, settings, state, now=now, full_refresh=full_refresh,
                         state_problem=state_problem, previous_problem=previous.problem)
    if plan.mode != INCREMENTAL:  # a full read replaces it: only its row hashes (rows_changed)
        previous = previous_for_full_read(store, extension)
    extract, result, landing = _read_once(source, extension, plan, previous, run_id)
    columns = (extract.unmapped_columns, extract.missing_columns) if result.rows_read else None
    if plan.mode != INCREMENTAL:
        return LandedRead(plan, extract, result, landing, extract.api_calls, columns, (state, state_problem))

    ranges = recount_ranges(plan.since)
    # after the delta: a race shows in the counts, not in the delta
    probe = source.probe(extension, newest=False, ranges=ranges)
    api_calls = extract.api_calls + probe.api_calls
    columns = columns or probe.columns(extension)
    merged = merged_counts(landing.valid, landing.quarantine, extension, ranges)
    problem = completeness_problem(merged, RowCounts(probe.rows, probe.range_rows), ranges,
                                   extension.incremental_column)
    if problem is None:
        return LandedRead(plan, extract, result, landing, api_calls, columns, (state, state_problem),
                          source_rows=probe.rows)

    fetched = result.rows_read
    full = ReadPlan(FULL, reason=problem, detail=problem, state=plan.state)
    previous = Previous(as_row_hashes(previous.valid), None)  # what the full read needs: the rows, hashed
    del extract, result, landing
    release_memory()
    extract, result, landing = _read_once(source, extension, full, previous, run_id)
    columns = (extract.unmapped_columns, extract.missing_columns) if result.rows_read else columns
    return LandedRead(full, extract, result, landing, api_calls + extract.api_calls, columns, (state, state_problem),
                      source_rows=probe.rows, incremental_rows_fetched=fetched)


def _read_once(source, extension: DataExtensionConfig, plan: ReadPlan, previous: Previous, run_id: str
               ) -> tuple[PagedRead, ValidationResult, Landing]:
    # Pages are typed and checked as they arrive (the source's errors surface here, mid-read).
    with open_read(source, extension, plan.since) as extract:
        result = validate_pages(extract.pages, extension)
    landing = land(plan, result.valid, result.quarantine.assign(_run_id=run_id), previous, extension)
    return extract, result, landing
