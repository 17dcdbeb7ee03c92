"""One asset per configured Data Extension: read it, type it, validate it, land it as parquet.

Valid rows go to ``datasets/<asset>.parquet``; rows that fail a check go to
``quarantine/<asset>.parquet`` with the reasons. Both are replaced atomically on every run. When
the quarantined share is above the threshold the materialization fails (the previous dataset
stays in place) and the ``validation`` check reports an error. The volume guard
(``datasets/volume.py``) fails an empty extract, or one that lost more than the allowed share of
its rows, the same way (check ``row_volume_stable``).
"""


import dagster as dg
from pydantic import Field

from sfmc_pipeline.assets.dry_run import is_dry_run
from sfmc_pipeline.assets.failures import api_failures
from sfmc_pipeline.config.models import DataExtensionConfig, PipelineConfig
from sfmc_pipeline.datasets.schemas import table_schema
from sfmc_pipeline.datasets.validation import ValidationResult, validate_extract
from sfmc_pipeline.datasets.volume import VolumeState, VolumeVerdict
from sfmc_pipeline.metadata import counts_table, markdown_table
from sfmc_pipeline.resources.sfmc import SfmcResource
from sfmc_pipeline.resources.storage import StorageResource
from sfmc_pipeline.sfmc.source import RawExtract

GROUP = "sfmc_datasets"
THRESHOLD_CHECK = "quarantine_below_threshold"
CLEAN_CHECK = "no_rows_quarantined"
VOLUME_CHECK = "row_volume_stable"


class DatasetRunConfig(dg.Config):
    accept_volume_change: bool = Field(
        default=False,
        description="Accept an empty extract or a drop in rows beyond the volume guard's limit, for this run.",
    )


def build_dataset_assets(pipeline: PipelineConfig) -> list[dg.AssetsDefinition]:
    return [build_dataset_asset(ext, pipeline) for ext in pipeline.data_extensions]


def build_dataset_asset(extension: DataExtensionConfig, pipeline: PipelineConfig) -> dg.AssetsDefinition:
    threshold = pipeline.threshold_for(extension)
    max_drop = pipeline.max_row_drop_for(extension)

    @dg.asset(
        name=extension.asset,
        group_name=GROUP,
        kinds={"sfmc", "pandas", "parquet"},
        description=_description(extension),
        metadata={
            "dagster/column_schema": table_schema(extension),
            "sfmc_external_key": extension.key,
            "primary_key": ", ".join(extension.primary_key) or "(none)",
            "quarantine_threshold": threshold,
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
        with api_failures(context.retry_number):
            mode = sfmc.mode
            extract = sfmc.get_source(page_size=pipeline.settings.page_size).read(extension)
        result = validate_extract(extract.frame, extension)
        context.log.info(
            f"{extension.key}: {result.rows_read} rows read from {extract.source} (mode {mode}): "
            f"{result.rows_valid} valid, {result.rows_quarantined} quarantined"
        )
        with api_failures(context.retry_number), storage.writing(context) as store:
            quarantine = result.quarantine.assign(_run_id=context.run.run_id)
            quarantine_path = store.write_quarantine(extension.asset, quarantine)
            metadata = _metadata(mode, extract, result, threshold, quarantine_path)

            over_threshold = result.quarantined_share > threshold
            checks = _quarantine_checks(result, threshold, over_threshold)
            volume_state = VolumeState(store)
            volume = VolumeVerdict(rows_valid=result.rows_valid, previous=volume_state.last(extension.asset),
                                   max_drop=max_drop, allow_empty=extension.allow_empty)
            volume_check = _volume_result(volume, config.accept_volume_change)
            if over_threshold:
                yield from checks
                yield volume_check
                raise dg.Failure(
                    description=(
                        f"{extension.key}: {result.rows_quarantined} of {result.rows_read} rows "
                        f"({result.quarantined_share:.1%}) failed validation, above the {threshold:.0%} "
                        f"threshold; the dataset was not updated. Top reasons: "
                        + "; ".join(f"{reason} ({n})" for reason, n in result.top_reasons(3))
                        + f". Quarantined rows: {quarantine_path}"
                    ),
                    metadata=metadata,
                    allow_retries=False,
                )
            if not volume_check.passed:
                yield from checks
                yield volume_check
                raise dg.Failure(description=volume.explain(extension.asset), metadata=metadata, allow_retries=False)
            dataset_path = store.write_dataset(extension.asset, result.valid)
            if is_dry_run(context):
                context.log.info(f"{extension.asset}: dry run, the volume guard's count stays at {volume.previous}")
            else:
                volume_state.record(extension.asset, result.rows_valid, context.run.run_id)
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
                "preview": dg.MetadataValue.md(markdown_table(result.valid, max_rows=5)),
            },
            check_results=[*checks, volume_check],
        )

    return _dataset


def _description(extension: DataExtensionConfig) -> str:
    first = extension.description or f"Rows of the SFMC Data Extension {extension.key!r}."
    return (
        f"{first}\n\nSource: SFMC Data Extension with external key `{extension.key}` "
        "(or its sample extract in data/sample). Valid rows only; rejected rows are in the quarantine dataset."
    )


def _metadata(mode: str, extract: RawExtract, result: ValidationResult, threshold: float, quarantine_path) -> dict:
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
            counts_table(result.top_reasons(10), ["reason", "rows"]) if result.rows_quarantined else "_(none)_"
        ),
        "dagster/row_count": result.rows_valid,
        "api_calls": extract.api_calls,
    }
    if result.rows_quarantined:
        metadata["quarantine_preview"] = dg.MetadataValue.md(
            markdown_table(result.quarantine[["_row_number", "_reasons"]], max_rows=10, max_width=160)
        )
    if extract.unmapped_columns:
        metadata["unmapped_columns"] = ", ".join(extract.unmapped_columns)
    if extract.missing_columns:
        metadata["missing_columns"] = ", ".join(extract.missing_columns)
    return metadata


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


def _quarantine_checks(result: ValidationResult, threshold: float, over_threshold: bool) -> list[dg.AssetCheckResult]:
    metadata = {
        "rows_read": result.rows_read,
        "rows_quarantined": result.rows_quarantined,
        "quarantined_share": round(result.quarantined_share, 6),
        "threshold": threshold,
        "top_reasons": dg.MetadataValue.md(
            counts_table(result.top_reasons(5), ["reason", "rows"]) if result.rows_quarantined else "_(none)_"
        ),
    }
    return [
        dg.AssetCheckResult(
            check_name=THRESHOLD_CHECK, passed=not over_threshold, severity=dg.AssetCheckSeverity.ERROR,
            metadata=metadata,
        ),
        dg.AssetCheckResult(
            check_name=CLEAN_CHECK, passed=result.rows_quarantined == 0, severity=dg.AssetCheckSeverity.WARN,
            metadata=metadata,
        ),
    ]
