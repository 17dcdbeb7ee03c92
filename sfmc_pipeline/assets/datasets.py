"""One asset per configured Data Extension: read it, type it, validate it, land it as parquet.

Valid rows go to ``datasets/<asset>.parquet``; rows that fail a check go to
``quarantine/<asset>.parquet`` with the reasons. Both are replaced atomically on every run. When
the quarantined share is above the threshold the materialization fails (the previous dataset
stays in place) and the ``quarantine_below_threshold`` check reports an error. The volume guard
(``datasets/volume.py``) fails an empty extract, or one that lost more than the allowed share of
its rows, the same way (check ``row_volume_stable``).

An extension with an ``incremental_column`` is read incrementally once it has a high-water mark
(``datasets/incremental.py`` decides full or incremental and keeps the mark, ``datasets/merge.py``
merges the delta into the dataset and the quarantine); the threshold and the volume guard apply to the
merged dataset, and the mark only moves when the materialization succeeds
outside a dry run. Run config ``full_refresh: true`` reads every row.

Pages flow from the source to the parquet file without the whole read ever being held raw: the
source's ``read_pages`` (a ``PageStream``; ``read`` as one page for a source without it, see
``open_read``) feeds ``validate_pages``, which types and checks the pages batch by batch, keeps the
typed rows that passed, the primary keys as hashes and the raw values of failed rows only, finds
primary-key duplicates on the keys at the end, and returns the valid rows as one frame (strings
shared with the kept batches, not copied). A full read then replaces the dataset, knowing of the
previous one only its row hashes (``rows_changed``); an incremental read merges its (small) delta
into the previous dataset in memory. The dataset is written a row group at a time.
"""

import datetime as dt
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import dagster as dg
import pandas as pd
from pydantic import Field

from sfmc_pipeline.assets.dry_run import is_dry_run
from sfmc_pipeline.assets.failures import api_failures
from sfmc_pipeline.config.models import DataExtensionConfig, PipelineConfig
from sfmc_pipeline.datasets.incremental import (
    INCREMENTAL, IncrementalState, ReadPlan, load_previous, next_state, plan_read, record_state, stored_state, utc_now,
)
from sfmc_pipeline.datasets.merge import Landing, land, previous_for_full_read
from sfmc_pipeline.datasets.schemas import table_schema
from sfmc_pipeline.datasets.validation import ValidationResult, validate_pages
from sfmc_pipeline.datasets.volume import VolumeState, VolumeVerdict
from sfmc_pipeline.governance.masking import Masker
from sfmc_pipeline.metadata import counts_table, markdown_table
from sfmc_pipeline.resources.sfmc import SfmcResource
from sfmc_pipeline.resources.storage import StorageResource
from sfmc_pipeline.sfmc.source import ExtractError

GROUP = "sfmc_datasets"
POOL = "sfmc_api"  # dataset steps hold a slot of this Dagster pool while they read (.dagster_home/dagster.yaml)
THRESHOLD_CHECK = "quarantine_below_threshold"
CLEAN_CHECK = "no_rows_quarantined"
VOLUME_CHECK = "row_volume_stable"


class DatasetRunConfig(dg.Config):
    accept_volume_change: bool = Field(
        default=False,
        description="Accept an empty extract or a drop in rows beyond the volume guard's limit, for this run.",
    )
    full_refresh: bool = Field(
        default=False,
        description="Read every row of the Data Extension, even if it is read incrementally (incremental_column).",
    )


def build_dataset_assets(pipeline: PipelineConfig, *, clock: Callable[[], dt.datetime] = utc_now
                         ) -> list[dg.AssetsDefinition]:
    return [build_dataset_asset(ext, pipeline, clock=clock) for ext in pipeline.data_extensions]


def build_dataset_asset(extension: DataExtensionConfig, pipeline: PipelineConfig, *,
                        clock: Callable[[], dt.datetime] = utc_now) -> dg.AssetsDefinition:
    """``clock`` (UTC now) dates the read: the window, the mark's cap and the periodic full refresh."""
    threshold = pipeline.threshold_for(extension)
    max_drop = pipeline.max_row_drop_for(extension)
    masker = Masker.for_pipeline(pipeline)  # identifying values in metadata, logs and errors

    @dg.asset(
        name=extension.asset,
        group_name=GROUP,
        pool=POOL,
        kinds={"sfmc", "pandas", "parquet"},
        description=_description(extension),
        metadata={
            "dagster/column_schema": table_schema(extension, pipeline.governance.labels),
            "sfmc_external_key": extension.key,
            "primary_key": ", ".join(extension.primary_key) or "(none)",
            "quarantine_threshold": threshold,
            **({"incremental_column": extension.incremental_column} if extension.incremental_column else {}),
        },
        check_specs=[
            dg.AssetCheckSpec(
                THRESHOLD_CHECK,
                asset=extension.asset,
                description=(
                    f"At most {threshold:.0%} of the rows read failed the schema; above that the materialization "
                    "fails (ERROR) and the previous dataset stays in place."
                ),
            ),
            dg.AssetCheckSpec(
                CLEAN_CHECK,
                asset=extension.asset,
                description=(
                    "Every row read passed the schema. A WARN only: quarantined rows below the threshold are "
                    "expected now and then; their reasons are in the metadata and the quarantine dataset."
                ),
            ),
            dg.AssetCheckSpec(
                VOLUME_CHECK,
                asset=extension.asset,
                description=(
                    "The extract is not empty" + (" (empty is allowed here)" if extension.allow_empty else "")
                    + f" and its valid rows did not drop by more than {max_drop:.0%} since the last successful "
                    "materialization; otherwise the materialization fails and nothing downstream runs."
                ),
            ),
        ],
    )
    def _dataset(context: dg.AssetExecutionContext, config: DatasetRunConfig, sfmc: SfmcResource,
                 storage: StorageResource):
        now = clock()
        with api_failures(context.retry_number, mask=masker.text):
            mode = sfmc.mode
            store = storage.claim(context)  # the run's storage lease first: refused before reading anything
            state, state_problem = stored_state(store, extension.asset)
            plan = plan_read(extension, pipeline.settings, state, now=now, full_refresh=config.full_refresh,
                             state_problem=state_problem)
            if plan.mode == INCREMENTAL:  # the delta is merged into the previous dataset: load it
                previous = load_previous(store, extension)
                plan = plan_read(extension, pipeline.settings, state, now=now, full_refresh=config.full_refresh,
                                 state_problem=state_problem, previous_problem=previous.problem)
            else:  # a full read replaces it: only its row hashes (rows_changed), and the quarantine if kept
                previous = previous_for_full_read(store, extension, with_quarantine=plan.tracks_mark)
            source = sfmc.get_source(page_size=pipeline.settings.page_size,
                                     concurrency=pipeline.settings.concurrent_page_reads)
            # Pages are typed and checked as they arrive (the source's errors surface here, mid-read).
            with open_read(source, extension, plan.since) as extract:
                result = validate_pages(extract.pages, extension)
        landing = land(plan, result.valid, result.quarantine.assign(_run_id=context.run.run_id), previous, extension)
        context.log.info(
            f"{extension.key}: {_read_summary(plan, extension)} from {extract.source} (mode {mode}): "
            f"{result.rows_read} rows fetched, {result.rows_valid} valid, {result.rows_quarantined} quarantined; "
            f"{landing.rows_changed} rows changed, {len(landing.valid)} rows in the dataset"
        )
        with api_failures(context.retry_number, mask=masker.text), storage.writing(context) as store:
            if plan.tracks_mark and stored_state(store, extension.asset) != (state, state_problem):
                raise ExtractError(
                    f"{extension.asset}: another run landed this dataset while this run read {extension.key!r}, "
                    "so this read is not merged into it; the step is tried again.",
                    retryable=True,
                )
            share = QuarantineShare(quarantined=len(landing.quarantine), rows=len(landing.valid) + len(landing.quarantine))
            over_threshold = share.value > threshold
            checks = _quarantine_checks(result, share, threshold, over_threshold, masker, extension.asset)
            volume_state = VolumeState(store)
            volume = VolumeVerdict(rows_valid=len(landing.valid), previous=volume_state.last(extension.asset),
                                   max_drop=max_drop, allow_empty=extension.allow_empty)
            volume_check = _volume_result(volume, config.accept_volume_change)
            failing = over_threshold or not volume_check.passed
            quarantine = landing.quarantine_if_failed if failing else landing.quarantine
            quarantine_path = store.write_quarantine(extension.asset, quarantine)
            landed_state = None
            if plan.tracks_mark:
                landed_state = next_state(plan, landing.valid, extension, now=now, run_id=context.run.run_id)
            metadata = {**_metadata(mode, extract, result, threshold, quarantine_path, masker, extension.asset),
                        **_read_metadata(plan, result, landing, len(quarantine), None if failing else landed_state)}
            if over_threshold:
                yield from checks
                yield volume_check
                raise dg.Failure(
                    description=(
                        f"{extension.key}: {share.quarantined} of {share.rows} rows ({share.value:.1%}) failed "
                        "validation" + (f" ({result.rows_quarantined} of the {result.rows_read} rows this incremental "
                                         "read fetched)" if plan.mode == INCREMENTAL else "")
                        + f", above the {threshold:.0%} threshold; the dataset was not updated. Top reasons: "
                        + "; ".join(f"{masker.reasons(reason, extension.asset)} ({n})"
                                    for reason, n in result.top_reasons(3))
                        + f". Quarantined rows: {quarantine_path}"
                    ),
                    metadata=metadata,
                    allow_retries=False,
                )
            if not volume_check.passed:
                yield from checks
                yield volume_check
                raise dg.Failure(description=volume.explain(extension.asset), metadata=metadata, allow_retries=False)
            dataset_path = store.write_dataset(extension.asset, landing.valid)
            if is_dry_run(context):
                context.log.info(f"{extension.asset}: dry run, the volume guard's count stays at {volume.previous}"
                                 + (" and the high-water mark is not stored" if plan.tracks_mark else ""))
            else:
                volume_state.record(extension.asset, len(landing.valid), context.run.run_id)
                if plan.tracks_mark:
                    record_state(store, extension.asset, landed_state)
        if result.rows_quarantined:
            context.log.warning(
                f"{extension.key}: {result.rows_quarantined} row(s) quarantined to {quarantine_path}"
            )
        if not volume.passed:
            context.log.warning(
                f"{volume.summary(extension.asset)}; accepted for this run (accept_volume_change), so the dataset "
                "was updated" + ("" if is_dry_run(context) else " and its row count is the guard's new baseline")
            )
        yield dg.MaterializeResult(
            metadata={
                **metadata,
                "dataset_path": dg.MetadataValue.path(str(dataset_path)),
                "preview": dg.MetadataValue.md(markdown_table(
                    landing.valid, max_rows=5, shown=lambda rows: masker.frame(rows, extension.asset))),
            },
            check_results=[*checks, volume_check],
        )

    return _dataset


def _description(extension: DataExtensionConfig) -> str:
    first = extension.description or f"Rows of the SFMC Data Extension {extension.key!r}."
    incremental = (
        f" Read incrementally on `{extension.incremental_column}` (the rows changed since the last read, merged "
        "by primary key; run config `full_refresh: true` reads every row)." if extension.incremental_column else ""
    )
    return (
        f"{first}\n\nSource: SFMC Data Extension with external key `{extension.key}` "
        "(or its sample extract in data/sample). Valid rows only; rejected rows are in the quarantine dataset."
        + incremental
    )


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


def _metadata(mode: str, extract: PagedRead, result: ValidationResult, threshold: float, quarantine_path,
              masker: Masker, dataset: str) -> dict:
    """``masker``: the quarantine's reasons are masked as they are shown (the quarantine file keeps them)."""
    metadata = {
        "source_mode": mode,
        "source": extract.source,
        "rows_read": result.rows_read,
        "rows_valid": result.rows_valid,
        "rows_quarantined": result.rows_quarantined,
        "quarantined_share": round(result.quarantined_share, 6),
        "quarantine_threshold": threshold,
        "quarantine_path": dg.MetadataValue.path(str(quarantine_path)),
        "top_quarantine_reasons": dg.MetadataValue.md(
            counts_table(_masked_reasons(result, 10, masker, dataset), ["reason", "rows"]) if result.rows_quarantined
            else "_(none)_"
        ),
        "api_calls": extract.api_calls,
    }
    if result.rows_quarantined:
        metadata["quarantine_preview"] = dg.MetadataValue.md(
            markdown_table(result.quarantine[["_row_number", "_reasons"]], max_rows=10, max_width=160,
                           shown=lambda rows: masker.reason_frame(rows, dataset))
        )
    if extract.unmapped_columns:
        metadata["unmapped_columns"] = ", ".join(extract.unmapped_columns)
    if extract.missing_columns:
        metadata["missing_columns"] = ", ".join(extract.missing_columns)
    return metadata


def _read_summary(plan: ReadPlan, extension: DataExtensionConfig) -> str:
    if plan.mode == INCREMENTAL:
        return f"incremental read (rows with {extension.incremental_column} at or after {_iso(plan.since)})"
    return f"full read ({plan.detail})"


def _read_metadata(plan: ReadPlan, result: ValidationResult, landing: Landing, quarantine_rows: int,
                   landed: IncrementalState | None) -> dict:
    """How the dataset was read and what changed. ``rows_read`` / ``rows_valid`` / ``rows_quarantined``
    describe the rows fetched (an incremental read's delta); ``dagster/row_count`` is the whole dataset's
    and ``quarantine_row_count`` the whole quarantine's. ``landed``: the state this run stores (None when
    it fails: the stored mark stays)."""
    metadata = {
        "read_mode": plan.mode,
        "rows_fetched": result.rows_read,
        "rows_changed": landing.rows_changed,
        "dagster/row_count": len(landing.valid),
        "quarantine_row_count": quarantine_rows,
    }
    if plan.mode == INCREMENTAL:
        metadata["window_start"] = _iso(plan.since)
    else:
        metadata["full_read_reason"] = plan.reason
    if plan.tracks_mark:
        kept = landed or plan.state
        mark = kept.high_water_mark if kept else None
        metadata["high_water_mark"] = _iso(mark) if mark else "(none yet)"
    return metadata


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).isoformat()


def _volume_result(volume: VolumeVerdict, accepted: bool) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=VOLUME_CHECK,
        passed=volume.passed or accepted,
        severity=dg.AssetCheckSeverity.WARN if accepted else dg.AssetCheckSeverity.ERROR,
        metadata={
            "rows_valid": volume.rows_valid,
            "previous_rows_valid": volume.previous if volume.previous is not None else "(first materialization)",
            "drop": round(volume.drop, 6),
            "max_drop": volume.max_drop,
            "allow_empty": volume.allow_empty,
            "accepted_by_run_config": accepted and not volume.passed,
        },
    )


@dataclass(frozen=True)
class QuarantineShare:
    """Quarantined rows among all the rows the dataset stands for (its valid rows and its quarantine). For a
    full read that is the extract; for an incremental read the merged dataset, so the threshold means the same
    whatever the size of the delta (one bad row in a 10-row delta is not 10% of the Data Extension)."""

    quarantined: int
    rows: int

    @property
    def value(self) -> float:
        return self.quarantined / self.rows if self.rows else 0.0


def _masked_reasons(result: ValidationResult, limit: int, masker: Masker, dataset: str) -> list[tuple[str, int]]:
    return [(masker.reasons(reason, dataset), n) for reason, n in result.top_reasons(limit)]


def _quarantine_checks(result: ValidationResult, share: QuarantineShare, threshold: float,
                       over_threshold: bool, masker: Masker, dataset: str) -> list[dg.AssetCheckResult]:
    metadata = {
        "rows_read": result.rows_read,
        "rows_quarantined": result.rows_quarantined,
        "dataset_rows": share.rows,
        "dataset_rows_quarantined": share.quarantined,
        "dataset_quarantined_share": round(share.value, 6),
        "threshold": threshold,
        "top_reasons": dg.MetadataValue.md(
            counts_table(_masked_reasons(result, 5, masker, dataset), ["reason", "rows"]) if result.rows_quarantined
            else "_(none)_"
        ),
    }
    return [
        dg.AssetCheckResult(
            check_name=THRESHOLD_CHECK, passed=not over_threshold, severity=dg.AssetCheckSeverity.ERROR,
            metadata=metadata,
        ),
        dg.AssetCheckResult(
            check_name=CLEAN_CHECK, passed=share.quarantined == 0, severity=dg.AssetCheckSeverity.WARN,
            metadata=metadata,
        ),
    ]
