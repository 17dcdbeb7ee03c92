"""One sync asset per destination (group ``salesforce``): segment statuses and mapped
attributes written to Salesforce Contacts or Leads (or the local target), with checks that
reconcile segment sizes with what the CRM confirmed and flag a high failure share."""

import dagster as dg
import pandas as pd
from pydantic import Field

from sfmc_pipeline.assets.failures import api_failures
from sfmc_pipeline.assets.segments import STATUSES
from sfmc_pipeline.config.models import DestinationConfig, PipelineConfig
from sfmc_pipeline.crm.ledger import SyncLedger
from sfmc_pipeline.crm.local_target import LocalCrmTarget
from sfmc_pipeline.crm.preflight import custom_field_name
from sfmc_pipeline.crm.record_checks import REQUIRED_FIELDS
from sfmc_pipeline.crm.sync import ERROR_COLUMNS, DestinationSync, SyncOutcome, reconcile
from sfmc_pipeline.datasets.salesforce_id import KEY_PREFIXES
from sfmc_pipeline.datasets.storage import DatasetStore, write_parquet
from sfmc_pipeline.metadata import counts_table, markdown_table
from sfmc_pipeline.resources.salesforce import SalesforceResource
from sfmc_pipeline.resources.storage import StorageResource

GROUP = "salesforce"
RECONCILIATION_CHECK = "reconciliation"
FAILURE_CHECK = "failure_share"


class SyncRunConfig(dg.Config):
    dry_run: bool = Field(default=False, description="Preflight, validate and diff, but send nothing.")


def local_db_path(store: DatasetStore):
    return store.base_dir / "crm" / "local_crm.sqlite"


def ledger_path(store: DatasetStore):
    return store.state_path("crm") / "ledger.sqlite"


def sync_errors_path(store: DatasetStore, destination: str):
    return store.base_dir / "crm" / "sync_errors" / f"{destination}.parquet"


def build_crm_assets(pipeline: PipelineConfig) -> list[dg.AssetsDefinition]:
    return [build_sync_asset(dest, pipeline) for dest in pipeline.destinations]


def build_sync_asset(dest: DestinationConfig, pipeline: PipelineConfig) -> dg.AssetsDefinition:
    key = dg.AssetKey([GROUP, dest.name])
    profile_asset = pipeline.profiles.dataset

    @dg.asset(
        key=key,
        group_name=GROUP,
        kinds={"salesforce"},
        deps=[dg.AssetKey(STATUSES), dg.AssetKey(profile_asset)],
        description=(
            f"Segment statuses ({len(dest.segments)} segments) and attributes "
            f"({', '.join(dest.attribute_map.values())}) written to Salesforce {dest.object} records by "
            f"{'Id' if dest.operation == 'update' else dest.external_id.field} ({dest.operation})."
        ),
        metadata={"object": dest.object, "operation": dest.operation, "mapping": ", ".join(
            f"{s}->{f}" for s, f in sorted(dest.segments.items()))},
        check_specs=[
            dg.AssetCheckSpec(
                RECONCILIATION_CHECK,
                asset=key,
                description="For each mapped segment, members with a confirmed status in the CRM equal the "
                "segment's members minus failed, rejected and pending records.",
            ),
            dg.AssetCheckSpec(
                FAILURE_CHECK,
                asset=key,
                description=f"ERROR when more than {pipeline.sync.failure_threshold:.0%} of the records sent failed.",
            ),
        ],
    )
    def _sync(context: dg.AssetExecutionContext, config: SyncRunConfig, salesforce: SalesforceResource,
              storage: StorageResource):
        store = storage.get_store()
        statuses = store.read_dataset(STATUSES)
        profiles = store.read_dataset(profile_asset)
        with api_failures():
            mode = salesforce.mode
            target = salesforce.get_target(api_version=pipeline.sync.api_version, local_db=local_db_path(store))
        ledger = SyncLedger(ledger_path(store))
        try:
            if isinstance(target, LocalCrmTarget):
                _prepare_local_target(target, dest, profiles)
            with api_failures():
                outcome = DestinationSync(dest, pipeline.sync, target, ledger, run_id=context.run.run_id,
                                          log=context.log.warning).run(statuses, profiles, dry_run=config.dry_run)
            api_requests = target.api_requests
            # In a dry run this compares the segments with what the CRM holds now (nothing was written).
            table = reconcile(dest, statuses, ledger.confirmed(dest.object), outcome.unsettled)
        finally:
            ledger.close()
            target.close()

        errors_path = sync_errors_path(store, dest.name)
        if not config.dry_run:
            write_parquet(pd.DataFrame(outcome.errors, columns=ERROR_COLUMNS), errors_path)
        metadata = _metadata(mode, dest, pipeline, outcome, api_requests, errors_path)
        yield dg.MaterializeResult(metadata=metadata, check_results=[
            _reconciliation_result(table, outcome), _failure_result(outcome, pipeline.sync.failure_threshold)])

    return _sync


def _prepare_local_target(target: LocalCrmTarget, dest: DestinationConfig, profiles: pd.DataFrame) -> None:
    """The local target mirrors an org that has the destination's fields and the sample's records."""
    fields = [custom_field_name(f) for f in dest.status_fields]
    external = dest.external_id.field if dest.external_id else None
    target.ensure_object(dest.object, status_fields=fields, external_id_field=external)
    if dest.operation == "update":
        mine = profiles[profiles[dest.identity_column].astype("string").str.startswith(KEY_PREFIXES[dest.object])]
        column_of = {field: column for column, field in dest.attribute_map.items()}
        records = pd.DataFrame({"Id": mine[dest.identity_column]})
        for field in REQUIRED_FIELDS[dest.object]:  # a record must have its required fields to exist
            records[field] = mine[column_of[field]] if field in column_of else "(unknown)"
        target.seed(dest.object, (
            {k: (None if pd.isna(v) else str(v)) for k, v in row.items()} for row in records.to_dict("records")))


def _metadata(mode, dest, pipeline, outcome: SyncOutcome, api_requests: int, errors_path) -> dict:
    usage = outcome.usage
    metadata = {
        "mode": mode,
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
        "api_requests": api_requests,
        "write_requests": outcome.requests,
        "api_usage": f"{usage.used}/{usage.limit} ({usage.share:.1%})" if usage else "(not reported)",
        "stopped_early": outcome.stopped or "no",
    }
    if dest.operation == "upsert":
        metadata["records_created"] = outcome.created
        metadata["records_updated"] = outcome.succeeded - outcome.created
    for code, n in (outcome.failed + outcome.rejected).items():
        metadata[f"errors.{code}"] = n
    if outcome.errors:
        frame = pd.DataFrame(outcome.errors)[["record_id", "stage", "status_code", "message", "fields"]]
        metadata["failures"] = dg.MetadataValue.md(markdown_table(frame, max_rows=20, max_width=100))
        metadata["sync_errors_path"] = dg.MetadataValue.path(str(errors_path))
    if outcome.dry_run:
        metadata["would_write"] = dg.MetadataValue.md(counts_table(
            sorted(((f, s, n) for (f, s), n in outcome.planned.items())), ["field", "status", "records"]))
        metadata["sample_payloads"] = dg.MetadataValue.json(outcome.samples)
    return metadata


def _reconciliation_result(table: pd.DataFrame, outcome: SyncOutcome) -> dg.AssetCheckResult:
    mismatched = table[(table["missing"] > 0) | (table["stale"] > 0)] if len(table) else table
    return dg.AssetCheckResult(
        check_name=RECONCILIATION_CHECK,
        passed=mismatched.empty,
        severity=dg.AssetCheckSeverity.WARN if outcome.dry_run else dg.AssetCheckSeverity.ERROR,
        metadata={
            "dry_run": outcome.dry_run,
            "segments": dg.MetadataValue.md(markdown_table(table, max_rows=50)),
            "unsettled_records": len(outcome.unsettled),
            "mismatched_segments": ", ".join(mismatched["segment"]) if len(mismatched) else "none",
        },
    )


def _failure_result(outcome: SyncOutcome, threshold: float) -> dg.AssetCheckResult:
    share = outcome.failed_total / outcome.succeeded_or_failed if (outcome.succeeded or outcome.failed_total) else 0.0
    over = share > threshold
    return dg.AssetCheckResult(
        check_name=FAILURE_CHECK,
        passed=not over and not outcome.failed_total,
        severity=dg.AssetCheckSeverity.ERROR if over else dg.AssetCheckSeverity.WARN,
        metadata={"failed": outcome.failed_total, "rejected": outcome.rejected_total, "failed_share": round(share, 6),
                  "threshold": threshold, "by_code": ", ".join(f"{c}: {n}" for c, n in
                                                               (outcome.failed + outcome.rejected).most_common()) or "none"},
    )
