"""The dataset asset's checks: their specs and their results, for a landed read and for a failed one.

A check result describes the dataset it is reported against. Dagster shows a check of a failed run
next to the latest materialization, the dataset that stays in place: so the check that failed
reports the refused read's figures next to it, every other quarantine or volume check reports the
dataset in place (never "0 rows, passed" for an empty read), and a check that could not be verified
never passes (``configured_columns_served`` warns "not verified" when no row was served).
"""

from __future__ import annotations

import dagster as dg

from sfmc_pipeline.config.data_extensions import DataExtensionConfig
from sfmc_pipeline.datasets.landing import InPlace, QuarantineShare
from sfmc_pipeline.datasets.validation import ValidationResult
from sfmc_pipeline.datasets.volume import VolumeVerdict
from sfmc_pipeline.defs.metadata import counts_table

THRESHOLD_CHECK = "quarantine_below_threshold"
CLEAN_CHECK = "no_rows_quarantined"
VOLUME_CHECK = "row_volume_stable"
COLUMNS_CHECK = "configured_columns_served"
FUTURE_CHECK = "no_future_dated_rows"

LANDED = "the dataset this run landed"
IN_PLACE = "the dataset in place (landed by an earlier run): this run failed and did not replace it"


def check_specs(extension: DataExtensionConfig, threshold: float, max_drop: float, window_days: int
                ) -> list[dg.AssetCheckSpec]:
    asset = extension.asset
    specs = [
        dg.AssetCheckSpec(THRESHOLD_CHECK, asset=asset, description=(
            f"At most {threshold:.0%} of the rows read failed the schema; above that the materialization fails "
            "(ERROR) and the previous dataset stays in place.")),
        dg.AssetCheckSpec(CLEAN_CHECK, asset=asset, description=(
            "Every row read passed the schema. A WARN only: quarantined rows below the threshold are expected now "
            "and then; their reasons are in the metadata and the quarantine dataset.")),
        dg.AssetCheckSpec(VOLUME_CHECK, asset=asset, description=(
            "The extract is not empty" + (" (empty is allowed here)" if extension.allow_empty else "")
            + f" and its valid rows did not drop by more than {max_drop:.0%} below the most of the successful "
            f"materializations in the last {window_days} day(s) (settings.guard_window_days); otherwise the "
            "materialization fails and nothing downstream runs.")),
        dg.AssetCheckSpec(COLUMNS_CHECK, asset=asset, description=(
            "Every configured column is a field the Data Extension serves. A WARN: a missing column lands as "
            "empty (a required one quarantines every row); a renamed field or a typo in the config is the usual "
            "cause. Not verified (a WARN saying so) when the extension served no row.")),
    ]
    if extension.incremental_column:
        specs.append(dg.AssetCheckSpec(FUTURE_CHECK, asset=asset, description=(
            f"No row's {extension.incremental_column} is later than the time of the read. A WARN: such rows never "
            "move the incremental window (the high-water mark stays at the newest real date), but a date in the "
            "future is usually a typo or a placeholder.")))
    return specs


def _share_metadata(share: QuarantineShare, threshold: float, describes: str) -> dict:
    return {
        "dataset_rows": share.rows,
        "dataset_rows_quarantined": share.quarantined,
        "dataset_quarantined_share": round(share.value, 6),
        "threshold": threshold,
        "describes": describes,
    }


def quarantine_checks(result: ValidationResult, share: QuarantineShare, threshold: float, top_reasons: list,
                      ) -> list[dg.AssetCheckResult]:
    """Both quarantine checks of a landed read (``share``: the landed dataset's)."""
    metadata = {
        "rows_read": result.rows_read,
        "rows_quarantined": result.rows_quarantined,
        **_share_metadata(share, threshold, LANDED),
        "top_reasons": _reasons_table(top_reasons),
    }
    return [
        dg.AssetCheckResult(check_name=THRESHOLD_CHECK, passed=share.value <= threshold,
                            severity=dg.AssetCheckSeverity.ERROR, metadata=metadata),
        dg.AssetCheckResult(check_name=CLEAN_CHECK, passed=share.quarantined == 0, severity=dg.AssetCheckSeverity.WARN,
                            metadata=metadata),
    ]


def refused_threshold_check(result: ValidationResult, refused: QuarantineShare, threshold: float, top_reasons: list,
                            rejected_path, in_place: InPlace | None) -> dg.AssetCheckResult:
    """The threshold check of a read whose landing was refused: its figures and the dataset in place."""
    metadata = {
        "rows_read": result.rows_read,
        "rows_quarantined": result.rows_quarantined,
        "refused_dataset_rows": refused.rows,
        "refused_rows_quarantined": refused.quarantined,
        "refused_quarantined_share": round(refused.value, 6),
        "refused_quarantine_path": dg.MetadataValue.path(str(rejected_path)),
        "top_reasons": _reasons_table(top_reasons),
        **(_share_metadata(in_place.share, threshold, IN_PLACE) if in_place else
           {"threshold": threshold, "describes": "the refused read (there is no dataset in place yet)"}),
    }
    return dg.AssetCheckResult(check_name=THRESHOLD_CHECK, passed=False, severity=dg.AssetCheckSeverity.ERROR,
                               metadata=metadata)


def in_place_quarantine_checks(in_place: InPlace, threshold: float, *, only_clean: bool = False
                               ) -> list[dg.AssetCheckResult]:
    """The quarantine checks of the dataset in place (after a failed run), from its files."""
    share = in_place.share
    metadata = _share_metadata(share, threshold, IN_PLACE)
    results = [dg.AssetCheckResult(check_name=CLEAN_CHECK, passed=share.quarantined == 0,
                                   severity=dg.AssetCheckSeverity.WARN, metadata=metadata)]
    if not only_clean:
        results.insert(0, dg.AssetCheckResult(check_name=THRESHOLD_CHECK, passed=share.value <= threshold,
                                              severity=dg.AssetCheckSeverity.ERROR, metadata=metadata))
    return results


def volume_check(volume: VolumeVerdict, *, accepted: bool = False, describes: str = LANDED,
                 in_place: InPlace | None = None, window_days: int) -> dg.AssetCheckResult:
    """``row_volume_stable`` for ``volume`` (a landed read, a refused one, or the dataset in place)."""
    reference = volume.reference
    metadata = {
        "rows_valid": volume.rows_valid,
        "previous_rows_valid": volume.previous if volume.previous is not None else "(first materialization)",
        "reference_rows_valid": reference.rows_valid if reference else "(first materialization)",
        "reference_materialized_at": (reference.success.materialized_at.isoformat(timespec="seconds")
                                      if reference and reference.success.materialized_at else "(unknown)"),
        "guard_window_days": window_days,
        "drop": round(volume.drop, 6),
        "max_drop": volume.max_drop,
        "allow_empty": volume.allow_empty,
        "accepted_by_run_config": accepted,
        "describes": describes,
    }
    if in_place is not None:
        metadata["dataset_rows_valid"] = in_place.rows_valid  # what stays in place
    return dg.AssetCheckResult(
        check_name=VOLUME_CHECK, passed=volume.passed or accepted,
        severity=dg.AssetCheckSeverity.WARN if accepted else dg.AssetCheckSeverity.ERROR, metadata=metadata)


def columns_check(extension: DataExtensionConfig, unmapped: list[str], missing: list[str]) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=COLUMNS_CHECK, passed=not missing, severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "missing_columns": ", ".join(missing) or "(none)",
            "unknown_columns": ", ".join(unmapped) or "(none)",
            "configured_columns": len(extension.columns),
        },
    )


def columns_unknown() -> dg.AssetCheckResult:
    """The columns check when no row was served (an empty extension): not verified, so not passed."""
    return dg.AssetCheckResult(
        check_name=COLUMNS_CHECK, passed=False, severity=dg.AssetCheckSeverity.WARN,
        metadata={"missing_columns": "(unknown)", "unknown_columns": "(unknown)",
                  "not_verified": "the Data Extension served no row, so its fields are unknown; the next run that "
                                  "reads a row checks them"},
    )


def future_check(rows: int, preview: str | None, mark) -> dg.AssetCheckResult:
    metadata = {"future_dated_rows": rows, "high_water_mark": mark}
    if preview:
        metadata["future_dated_preview"] = dg.MetadataValue.md(preview)
    return dg.AssetCheckResult(check_name=FUTURE_CHECK, passed=rows == 0, severity=dg.AssetCheckSeverity.WARN,
                               metadata=metadata)


def _reasons_table(top_reasons: list) -> dg.MetadataValue:
    return dg.MetadataValue.md(counts_table(top_reasons, ["reason", "rows"]) if top_reasons else "_(none)_")
