"""Read one extension and land it in memory: plan (full or incremental), read page by page,
validate, merge, and prove an incremental read complete, reading in full in the same run when not.

``read_extension`` returns a ``LandedRead``: the dataset and quarantine to write, how they were read
and what the source told about itself. Nothing is written here (``landing.py`` decides). The proof
(``recount.py``): probes of the extension's ``count``, requested *after* the delta, must equal the
merged dataset's rows, valid + quarantined, in total and per date range of the incremental column.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sfmc_pipeline.config.data_extensions import DataExtensionConfig, PipelineSettings
from sfmc_pipeline.datasets.incremental import (
    FULL,
    INCREMENTAL,
    IncrementalState,
    Previous,
    ReadPlan,
    load_previous,
    plan_read,
    stored_state,
    without_previous,
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
from sfmc_pipeline.sfmc.source import DataExtensionSource, PageStream


@dataclass(frozen=True)
class LandedRead:
    plan: ReadPlan  # how the landed rows were read (FULL with the reason when an incremental read was incomplete)
    extract: PageStream  # the read that was landed
    result: ValidationResult  # its validation
    landing: Landing  # the dataset and quarantine it lands
    api_calls: int  # every request of the step's reads and probe
    columns: tuple[list[str], list[str]] | None  # (unmapped, missing) as served; None: no row served to tell
    stored: tuple[IncrementalState | None, str | None]  # the incremental state as read at the start
    source_rows: int | None = None  # the extension's count probed after an incremental read
    incremental_rows_fetched: int | None = None  # rows of an incremental read found incomplete and replaced


def read_extension(source: DataExtensionSource, extension: DataExtensionConfig, settings: PipelineSettings, store: DatasetStore, *,
                   now: dt.datetime, full_refresh: bool, run_id: str) -> LandedRead:
    """Plan, read, validate and land ``extension`` in memory (see the module docstring). The source's
    errors (``ExtractError``, ``ApiError``) propagate."""
    state, state_problem = stored_state(store, extension.asset)
    plan = plan_read(extension, settings, state, now=now, full_refresh=full_refresh, state_problem=state_problem)
    if plan.mode == INCREMENTAL:  # the delta is merged into the previous dataset: load it
        previous = load_previous(store, extension)
        if previous.problem:
            plan = without_previous(plan, previous.problem)
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


def _read_once(source: DataExtensionSource, extension: DataExtensionConfig, plan: ReadPlan, previous: Previous,
               run_id: str) -> tuple[PageStream, ValidationResult, Landing]:
    # Pages are typed and checked as they arrive (the source's errors surface here, mid-read); leaving
    # the block closes the stream, so a failed validation stops the read.
    with source.read_pages(extension, since=plan.since) as extract:
        result = validate_pages(extract, extension)
    landing = land(plan, result.valid, result.quarantine.assign(_run_id=run_id), previous, extension)
    return extract, result, landing
