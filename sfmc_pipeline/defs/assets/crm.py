"""One sync asset per destination (group ``salesforce``): segment statuses and mapped
attributes written to Salesforce Contacts or Leads (or the local target), with checks that
reconcile segment sizes with what the CRM itself holds and flag a high failure share."""

import datetime as dt
from typing import Callable

import dagster as dg
import pandas as pd
from pydantic import Field

from sfmc_pipeline.config.destinations import DestinationConfig
from sfmc_pipeline.config.pipeline import PipelineConfig
from sfmc_pipeline.crm.exit_guard import ExitGuardTripped
from sfmc_pipeline.crm.outcome import SyncOutcome
from sfmc_pipeline.crm.reconciliation import Reconciliation
from sfmc_pipeline.crm.sink import (
    SYNCED_STATUS_CATEGORIES,
    SYNCED_STATUS_COLUMNS,
    SyncOptions,
    profile_columns,
    sync_destination,
)
from sfmc_pipeline.crm.sync_errors import ERROR_COLUMNS
from sfmc_pipeline.datasets.storage import DatasetStore, write_parquet
from sfmc_pipeline.defs.assets.dry_run import SYNC_KEY_PREFIX, is_dry_run
from sfmc_pipeline.defs.assets.failures import api_failures
from sfmc_pipeline.defs.assets.segments import STATUSES
from sfmc_pipeline.defs.assets.standing_metadata import standing_metadata
from sfmc_pipeline.defs.metadata import counts_table, markdown_table
from sfmc_pipeline.defs.resources.salesforce import SalesforceResource
from sfmc_pipeline.defs.resources.storage import StorageResource
from sfmc_pipeline.governance.lineage import destination_flows
from sfmc_pipeline.governance.masking import Masker
from sfmc_pipeline.governance.policies import Allowed, enforce, split

GROUP = SYNC_KEY_PREFIX
POOL = "salesforce_api"  # sync steps hold a slot of this Dagster pool while they write (.dagster_home/dagster.yaml)
RECONCILIATION_CHECK = "reconciliation"
FAILURE_THRESHOLD_CHECK = "failed_records_below_threshold"
CLEAN_SYNC_CHECK = "no_failed_records"


class SyncRunConfig(dg.Config):
    dry_run: bool = Field(
        default=False,
        description="Preflight, validate and diff, but send nothing; the whole run then commits no state "
        "(segment baseline, volume-guard counts, ledger).",
    )
    accept_exits: bool = Field(
        default=False,
        description="Send even when the exit guard finds more exits than a segment allows (in this run or over the "
        "guard window); the accepted segments start a new guard window.",
    )
    retry_standing_failures: bool = Field(
        default=False,
        description="Send again the records held back by a standing failure (deleted in the CRM, or values "
        "Salesforce rejected), e.g. after restoring records or changing a validation rule; their results set "
        "their marks anew.",
    )


def local_db_path(store: DatasetStore):
    return store.base_dir / "crm" / "local_crm.sqlite"


def ledger_path(store: DatasetStore):
    return store.state_path("crm") / "ledger.sqlite"


def sync_errors_path(store: DatasetStore, destination: str):
    return store.base_dir / "crm" / "sync_errors" / f"{destination}.parquet"


def build_crm_assets(pipeline: PipelineConfig, *, clock: Callable[[], dt.datetime] | None = None
                     ) -> list[dg.AssetsDefinition]:
    return [build_sync_asset(dest, pipeline, clock=clock) for dest in pipeline.destinations]


def build_sync_asset(dest: DestinationConfig, pipeline: PipelineConfig, *,
                     clock: Callable[[], dt.datetime] | None = None) -> dg.AssetsDefinition:
    """``clock`` (UTC now; default the wall clock) dates each sync: the exit guard's window, standing failures."""
    key = dg.AssetKey([GROUP, dest.name])
    profile_asset = pipeline.profiles.dataset
    masker = Masker.for_pipeline(pipeline)  # identifying values in metadata, logs and errors

    @dg.asset(
        key=key,
        group_name=GROUP,
        pool=POOL,
        kinds={"salesforce"},
        deps=[dg.AssetKey(STATUSES), dg.AssetKey(profile_asset)],
        description=(
            f"Segment statuses ({len(dest.segments)} segments) and attributes "
            f"({', '.join(dest.attribute_map.values())}) written to Salesforce {dest.object} records by "
            f"{'Id' if dest.operation == 'update' else dest.external_id.field} ({dest.operation})."
        ),
        metadata={"object": dest.object, "operation": dest.operation, "mapping": ", ".join(
            f"{s}->{f}" for s, f in sorted(dest.segments.items())), **data_usage_metadata(pipeline, dest)},
        check_specs=[
            dg.AssetCheckSpec(
                RECONCILIATION_CHECK,
                asset=key,
                description="Reads the status fields back from the CRM (all managed records, or a random sample "
                f"of {pipeline.sync.reconciliation_sample_size:,}): per mapped segment the CRM shows exactly the "
                "segment's members (failed, rejected, pending and held records aside), and no record holds "
                "something other than what was last confirmed written.",
            ),
            dg.AssetCheckSpec(
                FAILURE_THRESHOLD_CHECK,
                asset=key,
                description=f"At most {pipeline.sync.failure_threshold:.0%} of the records sent failed in Salesforce "
                "for the first time (a record already standing failed the same way is not counted again); above "
                "that the step fails (the records that went through stay written).",
            ),
            dg.AssetCheckSpec(
                CLEAN_SYNC_CHECK,
                asset=key,
                description="No record failed or was rejected, and none stands failed (deleted in the CRM, or values "
                "Salesforce rejects). A WARN only: the failures, with Salesforce's codes, are in the metadata and the "
                "sync-errors dataset; transient ones are retried by the next run, standing ones when their values "
                "change (or with run config retry_standing_failures).",
            ),
        ],
    )
    def _sync(context: dg.AssetExecutionContext, config: SyncRunConfig, salesforce: SalesforceResource,
              storage: StorageResource):
        dry_run = config.dry_run or is_dry_run(context)  # a run with any dry sync sends nothing anywhere
        with api_failures(context.retry_number, mask=masker.text), storage.writing(context) as store:
            allowed = enforce(pipeline, dest)  # data-usage policies: refused before anything is read or requested
            statuses = store.read_dataset(STATUSES, columns=SYNCED_STATUS_COLUMNS,
                                          categories=SYNCED_STATUS_CATEGORIES)
            profiles = store.read_dataset(profile_asset, columns=profile_columns(pipeline, dest))
            mode = salesforce.mode
            target = salesforce.get_target(api_version=pipeline.sync.api_version, local_db=local_db_path(store))
            options = SyncOptions(dry_run=dry_run, accept_exits=config.accept_exits,
                                  retry_standing=config.retry_standing_failures)
            try:
                result = sync_destination(target, pipeline, dest, statuses, profiles, ledger_file=ledger_path(store),
                                          run_id=context.run.run_id, options=options, policy_exceptions=allowed,
                                          log=masker.log(context.log.warning), info=masker.log(context.log.info),
                                          clock=clock)
            except ExitGuardTripped as exc:
                raise dg.Failure(description=masker.text(str(exc)), allow_retries=False) from None
            outcome, check, sync_requests, label = result.outcome, result.check, result.sync_requests, result.label
            errors_path = sync_errors_path(store, dest.name)
            if not dry_run:
                write_parquet(pd.DataFrame(outcome.errors, columns=ERROR_COLUMNS), errors_path)

        metadata = _metadata(mode, label, dest, pipeline, outcome, sync_requests, check, errors_path, masker)
        context.log.info(
            f"{dest.name} ({label}): {outcome.considered} records considered, {outcome.unchanged} unchanged, "
            f"{outcome.sent} sent, {outcome.succeeded} succeeded, {outcome.failed_total} failed, "
            f"{outcome.rejected_total} rejected, {outcome.pending} pending, {outcome.held} held"
            + (f", {outcome.held_back_total} held back by a standing failure ({len(outcome.standing)} standing)"
               if outcome.standing else "")
            + (" (dry run: nothing sent)" if outcome.dry_run else "")
        )
        reconciliation = _reconciliation_result(check, outcome)
        failures = _failure_results(outcome, pipeline.sync.failure_threshold)
        yield dg.MaterializeResult(metadata=metadata, check_results=[reconciliation, *failures])
        if not failures[0].passed and not outcome.dry_run:
            raise dg.Failure(
                description=(
                    f"{dest.name}: {outcome.failed_total} of {outcome.succeeded_or_failed} records sent failed in "
                    f"{label}, above the {pipeline.sync.failure_threshold:.0%} threshold "
                    f"({_failure_codes(outcome)}). The records that went through are written; the failed "
                    f"ones are in {errors_path} with Salesforce's message, and the next run sends them again."
                ),
                allow_retries=False,
            )
        if not reconciliation.passed and not outcome.dry_run:
            raise dg.Failure(
                description=(
                    f"Reconciliation of {dest.name}: the CRM does not hold what the segments say "
                    f"({_reconciliation_summary(check)}). Drifted records were marked for re-sending on the next run; "
                    "see the reconciliation check for the numbers per segment."
                ),
                allow_retries=False,
            )

    return _sync


def _metadata(mode, label, dest, pipeline, outcome: SyncOutcome, sync_requests: int, check: Reconciliation,
              errors_path, masker: Masker) -> dict:
    """``masker``: the failures and sample payloads are masked as they are shown (the sync-errors dataset
    keeps full values)."""
    usage = outcome.usage
    metadata = {
        "mode": mode,
        "target": label,
        "object": dest.object,
        "operation": dest.operation,
        "api_version": pipeline.sync.api_version if mode == "salesforce" else "(local target)",
        "dry_run": outcome.dry_run,
        "records_considered": outcome.considered,
        "records_unchanged": outcome.unchanged,
        "records_to_send": outcome.to_send,
        "records_sent": outcome.sent,
        "records_succeeded": outcome.succeeded,
        "records_failed": outcome.failed_total,
        "records_rejected": outcome.rejected_total,
        "records_skipped": outcome.skipped,
        "records_pending": outcome.pending,
        "record_ranges_planned": outcome.ranges,
        "profiles_held": outcome.held,
        "null_attributes_left_as_they_are": outcome.null_attributes,
        "api_requests": sync_requests,
        "reconciliation_api_requests": check.api_requests,
        "write_requests": outcome.requests,
        "write_requests_minimum": outcome.min_requests,
        "write_path": ("Bulk API 2.0" + (" + sObject Collections" if outcome.requests else "")) if outcome.bulk_jobs
        else "sObject Collections",
        "requests_in_flight_max": outcome.max_in_flight,
        "api_usage": f"{usage.used}/{usage.limit} ({usage.share:.1%})" if usage else "(not reported)",
        "stopped_early": outcome.stopped or "no",
    }
    if outcome.bulk_jobs or outcome.bulk_requests:
        metadata["bulk_jobs"] = ", ".join(outcome.bulk_jobs) or "(none this run)"
        metadata["bulk_requests"] = outcome.bulk_requests
        metadata["bulk_records_recovered"] = outcome.bulk_recovered
    if dest.operation == "upsert":
        metadata["records_created"] = outcome.created
        metadata["records_updated"] = outcome.succeeded - outcome.created
    for code, n in (outcome.failed + outcome.rejected).items():
        metadata[f"errors.{code}"] = n
    metadata.update(standing_metadata(outcome, dest, masker))
    if outcome.policy_exceptions:  # pairings a policy refuses that this destination allows on purpose
        metadata["policy_exceptions_applied"] = dg.MetadataValue.md(exceptions_table(outcome.policy_exceptions))
    if outcome.cleared:
        metadata["cleared_unmapped_segments"] = dg.MetadataValue.md(counts_table(
            sorted((f, s, n) for (f, s), n in outcome.cleared.items()), ["field", "segment no longer mapped", "records"]))
    if outcome.exit_guard is not None and len(outcome.exit_guard):
        metadata["exit_guard"] = dg.MetadataValue.md(markdown_table(outcome.exit_guard, max_rows=50))
    if outcome.errors:
        shown = ["record_id", "stage", "status_code", "message", "fields"]
        metadata["failures"] = dg.MetadataValue.md(markdown_table(
            pd.DataFrame(outcome.errors), max_rows=20, max_width=100,
            shown=lambda rows: pd.DataFrame(masker.failures(rows.to_dict("records"), dest))[shown]))
        metadata["sync_errors_path"] = dg.MetadataValue.path(str(errors_path))
    if outcome.dry_run:
        metadata["would_write"] = dg.MetadataValue.md(counts_table(
            sorted(((f, s, n) for (f, s), n in outcome.planned.items())), ["field", "status", "records"]))
        metadata["sample_payloads"] = dg.MetadataValue.json(masker.payloads(outcome.samples, dest))
    return metadata


def _reconciliation_summary(check: Reconciliation) -> str:
    not_found = (f"; {check.not_found} not in the CRM any more (marked gone)" if check.not_found else "")
    too_many = (f", more than {check.max_not_found_share:.0%} of those read back: if the integration user lost access "
                "to them (sharing, permissions), restore it and reset them with `sfmc-pipeline ledger reset`"
                if check.too_many_not_found else "")
    return (f"{int(check.table['missing'].sum())} missing, {int(check.table['stale'].sum())} stale, "
            f"{check.drifted_records} drifted of {check.checked_records} records read back{not_found}{too_many}")


def _reconciliation_result(check: Reconciliation, outcome: SyncOutcome) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=RECONCILIATION_CHECK,
        passed=check.passed,
        severity=dg.AssetCheckSeverity.WARN if outcome.dry_run else dg.AssetCheckSeverity.ERROR,
        metadata={
            "dry_run": outcome.dry_run,
            "segments": dg.MetadataValue.md(markdown_table(check.table, max_rows=50)),
            "summary": _reconciliation_summary(check),
            "managed_records": check.managed_records,
            "records_read_back": check.checked_records,
            "sampled": check.sampled,
            "drifted_records": check.drifted_records,
            "records_not_in_crm": check.not_found,
            "unsettled_records": len(outcome.unsettled),
            "api_requests": check.api_requests,
        },
    )


def _failure_results(outcome: SyncOutcome, threshold: float) -> list[dg.AssetCheckResult]:
    """The threshold counts this run's new failures (a record failing again the way it already stood failed, after
    its values changed, is not new); the WARN also covers the records that stand failed."""
    sent = outcome.succeeded_or_failed
    share = outcome.new_failures / sent if sent else 0.0
    metadata = {"failed": outcome.new_failures, "failed_again": outcome.failed_total - outcome.new_failures,
                "rejected": outcome.rejected_total, "failed_share": round(share, 6), "threshold": threshold,
                "by_code": _failure_codes(outcome), "standing_failures": len(outcome.standing),
                "held_back_standing": outcome.held_back_total}
    clean = not (outcome.failed_total or outcome.rejected_total or outcome.standing)
    return [
        dg.AssetCheckResult(check_name=FAILURE_THRESHOLD_CHECK, passed=share <= threshold,
                            severity=dg.AssetCheckSeverity.ERROR, metadata=metadata),
        dg.AssetCheckResult(check_name=CLEAN_SYNC_CHECK, passed=clean, severity=dg.AssetCheckSeverity.WARN,
                            metadata=metadata),
    ]


def _failure_codes(outcome: SyncOutcome) -> str:
    return ", ".join(f"{c}: {n}" for c, n in (outcome.failed + outcome.rejected).most_common()) or "none"


def data_usage_metadata(pipeline: PipelineConfig, dest: DestinationConfig) -> dict:
    """What a reviewer needs to see what flows where: the destination's marketing actions, every
    field it writes with the labelled columns it comes from, and the exceptions it holds."""
    rows = [(flow.field, flow.holds, ", ".join(sorted({s.describe() for s in flow.sources})) or "-",
             ", ".join(flow.labels) or "-") for flow in destination_flows(pipeline, dest)]
    metadata = {
        "marketing_actions": ", ".join(dest.marketing_actions),
        "data_usage": dg.MetadataValue.md(counts_table(rows, ["field", "holds", "labelled columns", "labels"])),
    }
    _, allowed = split(pipeline, dest)
    if allowed:
        metadata["policy_exceptions"] = dg.MetadataValue.md(exceptions_table(allowed))
    return metadata


def exceptions_table(allowed: list[Allowed]) -> str:
    return counts_table(
        [(a.violation.flow.describe(), a.violation.source.describe(), a.violation.source.label,
          a.violation.policy.name, a.violation.action, a.exception.reason) for a in allowed],
        ["allowed", "column", "label", "policy", "action", "reason"],
    )
