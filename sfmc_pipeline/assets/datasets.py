"""One asset per configured Data Extension: read it, type it, validate it, land it as parquet.

Valid rows go to ``datasets/<asset>.parquet``; rows that fail a check go to
``quarantine/<asset>.parquet`` with the reasons. Both are replaced atomically on every run. When
the quarantined share is above the threshold the materialization fails (the previous dataset
stays in place) and the ``validation`` check reports an error.
"""


import dagster as dg

from sfmc_pipeline.assets.failures import api_failures
from sfmc_pipeline.config.models import DataExtensionConfig, PipelineConfig
from sfmc_pipeline.datasets.schemas import table_schema
from sfmc_pipeline.datasets.validation import ValidationResult, validate_extract
from sfmc_pipeline.metadata import counts_table, markdown_table
from sfmc_pipeline.resources.sfmc import SfmcResource
from sfmc_pipeline.resources.storage import StorageResource
from sfmc_pipeline.sfmc.source import RawExtract

GROUP = "sfmc_datasets"
VALIDATION_CHECK = "validation"


def build_dataset_assets(config: PipelineConfig) -> list[dg.AssetsDefinition]:
    return [build_dataset_asset(ext, config) for ext in config.data_extensions]


def build_dataset_asset(extension: DataExtensionConfig, config: PipelineConfig) -> dg.AssetsDefinition:
    threshold = config.threshold_for(extension)

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
                VALIDATION_CHECK,
                asset=extension.asset,
                description=(
                    "Rows that failed the schema are quarantined: WARN when any were, ERROR when "
                    f"more than {threshold:.0%} were (the materialization then fails)."
                ),
            )
        ],
    )
    def _dataset(context: dg.AssetExecutionContext, sfmc: SfmcResource, storage: StorageResource):
        with api_failures():
            mode = sfmc.mode
            extract = sfmc.get_source(page_size=config.settings.page_size).read(extension)
        context.log.info(f"{extension.key}: {len(extract.frame)} rows read from {extract.source} (mode {mode})")

        result = validate_extract(extract.frame, extension)
        store = storage.get_store()
        quarantine = result.quarantine.assign(_run_id=context.run.run_id)
        quarantine_path = store.write_quarantine(extension.asset, quarantine)
        metadata = _metadata(mode, extract, result, threshold, quarantine_path)

        over_threshold = result.quarantined_share > threshold
        check = _check_result(result, threshold, over_threshold)
        if over_threshold:
            yield check
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
        dataset_path = store.write_dataset(extension.asset, result.valid)
        if result.rows_quarantined:
            context.log.warning(
                f"{extension.key}: {result.rows_quarantined} row(s) quarantined to {quarantine_path}"
            )
        yield dg.MaterializeResult(
            metadata={
                **metadata,
                "dataset_path": dg.MetadataValue.path(str(dataset_path)),
                "preview": dg.MetadataValue.md(markdown_table(result.valid, max_rows=5)),
            },
            check_results=[check],
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


def _check_result(result: ValidationResult, threshold: float, over_threshold: bool) -> dg.AssetCheckResult:
    if over_threshold:
        severity, passed = dg.AssetCheckSeverity.ERROR, False
    elif result.rows_quarantined:
        severity, passed = dg.AssetCheckSeverity.WARN, False
    else:
        severity, passed = dg.AssetCheckSeverity.WARN, True
    return dg.AssetCheckResult(
        check_name=VALIDATION_CHECK,
        passed=passed,
        severity=severity,
        metadata={
            "rows_read": result.rows_read,
            "rows_quarantined": result.rows_quarantined,
            "quarantined_share": round(result.quarantined_share, 6),
            "threshold": threshold,
            "top_reasons": dg.MetadataValue.md(
                counts_table(result.top_reasons(5), ["reason", "rows"]) if result.rows_quarantined else "_(none)_"
            ),
        },
    )
