"""One asset per configured Data Extension: read it, type it, validate it, land it as parquet.

The work is in ``datasets/``: ``reading.read_extension`` plans the read (full or incremental), reads
and validates it page by page and merges it in memory; ``landing.land_read`` writes it, or refuses it
when the quarantine threshold or the volume guard fails (the dataset and its quarantine stay in
place). This module maps their outcome to logs, metadata and the checks (``dataset_checks.py``).
Run config ``full_refresh: true`` reads every row; ``accept_volume_change: true`` accepts a drop.
"""

import datetime as dt
from typing import Callable

import dagster as dg
import pandas as pd
from pydantic import Field

from sfmc_pipeline.config.data_extensions import DataExtensionConfig
from sfmc_pipeline.config.pipeline import PipelineConfig
from sfmc_pipeline.datasets.incremental import (
    INCOMPLETE,
    INCREMENTAL,
    ReadPlan,
    future_dated,
    utc_now,
)
from sfmc_pipeline.datasets.landing import InPlace, Landed, LandingRules, land_read
from sfmc_pipeline.datasets.reading import LandedRead, read_extension
from sfmc_pipeline.datasets.schemas import table_schema
from sfmc_pipeline.datasets.storage import DatasetStore, StorageError
from sfmc_pipeline.defs.assets import dataset_checks as checks
from sfmc_pipeline.defs.assets.dry_run import is_dry_run
from sfmc_pipeline.defs.assets.failures import api_failures
from sfmc_pipeline.defs.metadata import counts_table, markdown_table
from sfmc_pipeline.defs.resources.sfmc import SfmcResource
from sfmc_pipeline.defs.resources.storage import StorageResource
from sfmc_pipeline.governance.masking import Masker

GROUP = "sfmc_datasets"
POOL = "sfmc_api"  # dataset steps hold a slot of this Dagster pool while they read (.dagster_home/dagster.yaml)
THRESHOLD_CHECK, CLEAN_CHECK, VOLUME_CHECK = checks.THRESHOLD_CHECK, checks.CLEAN_CHECK, checks.VOLUME_CHECK


class DatasetRunConfig(dg.Config):
    accept_volume_change: bool = Field(
        default=False,
        description="Accept an empty extract or a drop in rows beyond the volume guard's limit, for this run (it "
        "starts a new comparison window).",
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
    """``clock`` (UTC now) dates the read: the window, the mark, future-dated rows, the periodic full refresh
    and the volume guard's window."""
    threshold = pipeline.threshold_for(extension)
    max_drop = pipeline.max_row_drop_for(extension)
    window_days = pipeline.settings.guard_window_days
    rules = LandingRules(extension, threshold, max_drop, window_days)
    masker = Masker.for_pipeline(pipeline)  # identifying values in metadata, logs and errors
    asset = extension.asset

    @dg.asset(
        name=asset,
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
        check_specs=checks.check_specs(extension, threshold, max_drop, window_days),
    )
    def _dataset(context: dg.AssetExecutionContext, config: DatasetRunConfig, sfmc: SfmcResource,
                 storage: StorageResource):
        now, run_id = clock(), context.run.run_id
        store = None
        try:
            with api_failures(context.retry_number, mask=masker.text):
                mode = sfmc.mode
                store = storage.claim(context)  # the run's storage lease first: refused before reading anything
                source = sfmc.get_source(page_size=pipeline.settings.page_size,
                                         concurrency=pipeline.settings.concurrent_page_reads)
                read = read_extension(source, extension, pipeline.settings, store, now=now,
                                      full_refresh=config.full_refresh, run_id=run_id)
        except dg.Failure:
            if store is not None:  # the checks describe the dataset that stays in place
                yield from _in_place_checks(store, now)
            raise
        plan, result, landing = read.plan, read.result, read.landing
        context.log.info(
            f"{extension.key}: {_read_summary(plan, extension)} from {read.extract.source} (mode {mode}): "
            f"{result.rows_read} rows fetched, {result.rows_valid} valid, {result.rows_quarantined} quarantined; "
            f"{landing.rows_changed} rows changed, {len(landing.valid)} rows in the dataset"
        )
        _log_read_problems(context, read, now)
        with api_failures(context.retry_number, mask=masker.text), storage.writing(context) as store:
            landed = land_read(store, read, rules, accept_volume_change=config.accept_volume_change,
                               dry_run=is_dry_run(context), now=now, run_id=run_id)
            refusal = landed.refusal
            if refusal is not None:
                metadata = _metadata(mode, read, threshold, store.quarantine_path(asset), None, now)
                for counted in ("dagster/row_count", "quarantine_row_count"):  # nothing landed: not the asset's
                    metadata.pop(counted)
                metadata.update(refused_row_count=len(landing.valid),
                                refused_quarantine_row_count=len(landing.quarantine),
                                rejected_quarantine_path=dg.MetadataValue.path(str(refusal.rejected)))
                yield from _refused_checks(read, landed, store, now)
                description = (_threshold_failure(read, landed.share, refusal.rejected) if refusal.over_threshold
                               else f"{landed.volume.explain(asset)} The quarantine it would have landed: "
                                    f"{refusal.rejected}")
                raise dg.Failure(description=description, metadata=metadata, allow_retries=False)
            if is_dry_run(context):
                context.log.info(f"{asset}: dry run, the volume guard's counts stay as they were"
                                 + (" and the high-water mark is not stored" if plan.tracks_mark else ""))
        volume, accepted, quarantine_path = landed.volume, landed.accepted, landed.quarantine_path
        if result.rows_quarantined:
            context.log.warning(f"{extension.key}: {result.rows_quarantined} row(s) quarantined to {quarantine_path}")
        if not volume.passed:
            context.log.warning(
                f"{volume.summary(asset)}; accepted for this run (accept_volume_change), so the dataset was updated"
                + ("" if is_dry_run(context) else
                   " and its row count is the guard's new baseline (a new window starts)")
            )
        metadata = _metadata(mode, read, threshold, quarantine_path, landed.state, now)
        results = [*checks.quarantine_checks(result, landed.share, threshold, _reasons(result, 5)),
                   checks.volume_check(volume, accepted=accepted, window_days=window_days)]
        results.append(checks.columns_check(extension, *read.columns) if read.columns is not None
                       else checks.columns_unknown())
        if extension.incremental_column:
            preview = metadata.get("future_dated_preview")
            results.append(checks.future_check(metadata["future_dated_rows"], preview.value if preview else None,
                                               metadata.get("high_water_mark", "(not kept: no primary key)")))
        yield dg.MaterializeResult(
            metadata={
                **metadata,
                "dataset_path": dg.MetadataValue.path(str(landed.dataset_path)),
                "preview": dg.MetadataValue.md(markdown_table(
                    landing.valid, max_rows=5, shown=lambda rows: masker.frame(rows, asset))),
            },
            check_results=results,
        )

    def _log_read_problems(context, read: LandedRead, now: dt.datetime) -> None:
        """What a user must see on every run: a read that was incomplete, columns the extension does not serve,
        rows dated in the future."""
        if read.plan.reason and read.plan.reason.startswith(INCOMPLETE):
            context.log.warning(
                f"{extension.key}: {read.plan.reason}; the incremental read ({read.incremental_rows_fetched} rows) was "
                "discarded and every row read instead. Rows arrived with an incremental_column value before the "
                "window, or were deleted in SFMC. If this happens on every run (an extension re-imported or pruned "
                "daily), reading it in full (no incremental_column) costs the same."
            )
        if read.columns is not None and read.columns[1]:
            context.log.warning(
                f"{extension.key}: configured column(s) {', '.join(read.columns[1])} are not served by the Data "
                f"Extension (it serves {', '.join(read.columns[0]) or 'no other field'} besides the configured ones); "
                "they land empty. Fix the column names in the pipeline config, or add the fields to the Data Extension."
            )
        if extension.incremental_column:
            future = int(future_dated(read.landing.valid, extension, now).sum())
            if future:
                context.log.warning(
                    f"{extension.key}: {future} row(s) dated in the future ({extension.incremental_column} later "
                    f"than the time of the read, {_iso(now)}); they do not move the high-water mark. Correct their "
                    "dates in SFMC (the future_dated_preview metadata shows them)."
                )

    def _refused_checks(read: LandedRead, landed: Landed, store: DatasetStore, now: dt.datetime):
        """The checks of a run whose landing was refused: the failing ones with the refused figures, the others
        describing the dataset in place (when there is one)."""
        refusal, volume = landed.refusal, landed.volume
        in_place, over_threshold = refusal.in_place, refusal.over_threshold
        if over_threshold:
            yield checks.refused_threshold_check(read.result, landed.share, threshold, _reasons(read.result, 5),
                                                 refusal.rejected, in_place)
        if in_place is not None:
            yield from checks.in_place_quarantine_checks(in_place, threshold, only_clean=over_threshold)
        if not volume.passed:
            yield checks.volume_check(volume, accepted=landed.accepted, describes="the refused read",
                                      in_place=in_place, window_days=window_days)
        elif in_place is not None:
            yield _in_place_volume(store, in_place, now)
        if read.columns is not None:  # what the extension served this run, whatever became of the read
            yield checks.columns_check(extension, *read.columns)

    def _in_place_checks(store: DatasetStore, now: dt.datetime):
        """After a read that failed: the quarantine and volume checks of the dataset in place, if any."""
        try:
            in_place = InPlace.load(store, asset)
            if in_place is None:
                return
            volume = _in_place_volume(store, in_place, now)
        except StorageError:
            return  # nothing verifiable to report: the step's failure says what happened
        yield from checks.in_place_quarantine_checks(in_place, threshold)
        yield volume

    def _in_place_volume(store: DatasetStore, in_place: InPlace, now: dt.datetime) -> dg.AssetCheckResult:
        verdict = rules.volume(store, in_place.rows_valid, now)
        return checks.volume_check(verdict, describes=checks.IN_PLACE, window_days=window_days)

    def _threshold_failure(read: LandedRead, share, rejected) -> str:
        """The threshold's failure: the rows, the reasons, where they are, and the fix."""
        result, incremental = read.result, read.plan.mode == INCREMENTAL
        held = share.quarantined - result.rows_quarantined
        reasons = "; ".join(f"{reason} ({n})" for reason, n in _reasons(result, 3))
        keys = _key_sample(result.quarantine)
        return (
            f"{extension.key}: {share.quarantined} of {share.rows} rows ({share.value:.1%}) failed validation, above "
            f"the {threshold:.0%} threshold, so the dataset was not updated: the previous dataset and its quarantine "
            f"stay in place. This {'incremental' if incremental else 'full'} read fetched {result.rows_read} rows and "
            f"quarantined {result.rows_quarantined}"
            + (f" ({keys})" if keys else "") + (f"; top reasons: {reasons}" if reasons else "")
            + (f"; {held} more row(s) were already held in the quarantine from earlier runs" if held else "")
            + f". The quarantine this run would have landed is in {rejected} (for inspection only). Fix: correct "
            f"these rows in the Data Extension {extension.key!r}, or the column rules in the pipeline config if the "
            "rows are right; the next run reads them again"
            + (" from the same window (the high-water mark did not move), no full_refresh needed" if incremental
               else "") + "."
        )

    def _key_sample(quarantine: pd.DataFrame, shown: int = 5) -> str:
        """The first quarantined rows, named by primary key (masked where identifying) or row number."""
        if quarantine.empty:
            return ""
        names = list(extension.primary_key) or ["_row_number"]
        head = masker.frame(quarantine[names].head(shown), asset)
        values = [", ".join(str(v) for v in row) for row in head.itertuples(index=False)]
        more = f" and {len(quarantine) - shown} more" if len(quarantine) > shown else ""
        return f"{', '.join(names)}: " + "; ".join(values) + more

    def _reasons(result, limit: int) -> list[tuple[str, int]]:
        return [(masker.reasons(reason, asset), n) for reason, n in result.top_reasons(limit)]

    def _metadata(mode: str, read: LandedRead, limit: float, quarantine_path, landed, now: dt.datetime) -> dict:
        """What the run read and landed (``landed``: the incremental state it stores; None when it fails)."""
        result, landing, plan = read.result, read.landing, read.plan
        metadata = {
            "source_mode": mode,
            "source": read.extract.source,
            "rows_read": result.rows_read,
            "rows_valid": result.rows_valid,
            "rows_quarantined": result.rows_quarantined,
            "quarantined_share": round(result.quarantined_share, 6),
            "quarantine_threshold": limit,
            "quarantine_path": dg.MetadataValue.path(str(quarantine_path)),
            "top_quarantine_reasons": dg.MetadataValue.md(
                counts_table(_reasons(result, 10), ["reason", "rows"]) if result.rows_quarantined else "_(none)_"),
            "api_calls": read.api_calls,
            "read_mode": plan.mode,
            "rows_fetched": result.rows_read,
            "rows_changed": landing.rows_changed,
            "dagster/row_count": len(landing.valid),
            "quarantine_row_count": len(landing.quarantine),
        }
        if result.rows_quarantined:
            metadata["quarantine_preview"] = dg.MetadataValue.md(markdown_table(
                result.quarantine[["_row_number", "_reasons"]], max_rows=10, max_width=160,
                shown=lambda rows: masker.reason_frame(rows, asset)))
        if read.columns is not None and read.columns[0]:
            metadata["unmapped_columns"] = ", ".join(read.columns[0])
        if read.columns is not None and read.columns[1]:
            metadata["missing_columns"] = ", ".join(read.columns[1])
        if plan.mode == INCREMENTAL:
            metadata["window_start"] = _iso(plan.since)
        else:
            metadata["full_read_reason"] = plan.reason
        if read.source_rows is not None:
            metadata["source_row_count"] = read.source_rows
        if plan.tracks_mark:
            kept = landed or plan.state
            mark = kept.high_water_mark if kept else None
            metadata["high_water_mark"] = _iso(mark) if mark else "(none yet)"
        if extension.incremental_column:
            future = landing.valid[future_dated(landing.valid, extension, now)]
            metadata["future_dated_rows"] = len(future)
            if len(future):
                metadata["future_dated_preview"] = dg.MetadataValue.md(markdown_table(
                    future, max_rows=5, shown=lambda rows: masker.frame(rows, asset)))
        return metadata

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


def _read_summary(plan: ReadPlan, extension: DataExtensionConfig) -> str:
    if plan.mode == INCREMENTAL:
        return f"incremental read (rows with {extension.incremental_column} at or after {_iso(plan.since)})"
    return f"full read ({plan.detail})"


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).isoformat()
