"""The wiring for one destination, what the sync asset calls: prepare the local target's fields, open
the ledger and (for a Salesforce org) the Bulk writer, run the sync, read the CRM back (reconciliation;
records it no longer has are marked gone, drifted ones forgotten so the next run re-sends them), and
close everything, whatever happens."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd

from sfmc_pipeline.config.destinations import DestinationConfig
from sfmc_pipeline.config.pipeline import PipelineConfig
from sfmc_pipeline.crm.bulk.job_store import BulkJobStore
from sfmc_pipeline.crm.bulk.writer import BulkWriter
from sfmc_pipeline.crm.ledger import SyncLedger
from sfmc_pipeline.crm.local.setup import prepare_local_target
from sfmc_pipeline.crm.local.target import LocalCrmTarget
from sfmc_pipeline.crm.outcome import SyncOutcome
from sfmc_pipeline.crm.payloads import STATUS
from sfmc_pipeline.crm.reconciliation import Reconciliation, reconcile
from sfmc_pipeline.crm.sync import DestinationSync
from sfmc_pipeline.governance.policies import Allowed
from sfmc_pipeline.salesforce.records import CrmTarget
from sfmc_pipeline.salesforce.rest import SalesforceClient
from sfmc_pipeline.segments.columns import HELD, PROFILE_KEY, SEGMENT, STATUS


SYNCED_STATUS_COLUMNS = [PROFILE_KEY, SEGMENT, STATUS, HELD]  # what the sync reads of the segment statuses
SYNCED_STATUS_CATEGORIES = [SEGMENT, STATUS]  # read as categoricals: a few distinct values over millions of rows
RECONCILED_COLUMNS = ["record_id", "field", "kind", "crm_id", "value"]  # of the status rows: what it reads


@dataclass(frozen=True)
class SyncOptions:
    dry_run: bool = False
    accept_exits: bool = False
    retry_standing: bool = False


@dataclass
class SinkResult:
    outcome: SyncOutcome
    check: Reconciliation
    sync_requests: int  # API requests of the sync itself (the reconciliation counts its own)
    label: str  # the target as shown to people


def sync_destination(target: CrmTarget, pipeline: PipelineConfig, dest: DestinationConfig, statuses: pd.DataFrame,
                     profiles: pd.DataFrame, *, ledger_file: Path, run_id: str, options: SyncOptions,
                     policy_exceptions: list[Allowed], log: Callable[[str], None], info: Callable[[str], None],
                     clock: Callable[[], dt.datetime] | None = None) -> SinkResult:
    """Sync ``dest`` on ``target`` (closed on return). ``policy_exceptions``: what ``enforce`` returned (the
    caller enforces the data-usage policies before it reads anything); ``log``/``info``: warnings and
    progress; ``clock``: UTC now (default the wall clock). ``ExitGuardTripped`` propagates."""
    timing = {"clock": clock} if clock is not None else {}
    try:
        if isinstance(target, LocalCrmTarget):  # the org's fields, as an admin would have created them
            profile_columns = {c.name: c for c in pipeline.extension(pipeline.profiles.dataset).columns}
            prepare_local_target(target, dest, profile_columns, profiles)
        ledger = SyncLedger(ledger_file, target.target_id)
        try:
            sync = DestinationSync.for_pipeline(pipeline, dest, target, ledger, run_id=run_id, log=log, **timing,
                                                bulk=_bulk_writer(target, dest, pipeline, ledger_file, ledger, run_id,
                                                                  info))
            outcome = sync.run(statuses, profiles, dry_run=options.dry_run, accept_exits=options.accept_exits,
                               retry_standing=options.retry_standing, policy_exceptions=policy_exceptions)
            outcome.desired = outcome.desired.summary()  # its frames are not read after the run (memory)
            sync_requests = target.api_requests
            check = reconcile_sync(sync, target, dest, pipeline, ledger, outcome, run_id)
            if check.drifted and not options.dry_run:
                ledger.forget(dest.object, check.drifted)  # re-sent by the next run
        finally:
            ledger.close()
        label = target.target_label
    finally:
        target.close()
    return SinkResult(outcome, check, sync_requests, label)


def profile_columns(pipeline: PipelineConfig, dest: DestinationConfig) -> list[str]:
    """The profile columns the sync of ``dest`` reads: the profile key, the record key and identity columns and
    the mapped attributes (the sync asset reads only these from the profiles dataset)."""
    names = [pipeline.profile_key, dest.key_column, dest.identity_column, *dest.attribute_map]
    if dest.external_id is not None:
        names.append(dest.external_id.column)
    return list(dict.fromkeys(name for name in names if name))


def reconcile_sync(sync: DestinationSync, target: CrmTarget, dest: DestinationConfig, pipeline: PipelineConfig,
                   ledger: SyncLedger, outcome: SyncOutcome, run_id: str) -> Reconciliation:
    """Read the CRM back after ``sync`` ran; records it no longer has are marked gone (standing failures)."""
    desired = outcome.desired
    check = reconcile(
        target, dest.object, outcome.status_fields, desired.members,
        lambda: ledger.confirmed_pages(dest.object, dest.name, columns=RECONCILED_COLUMNS, kind=STATUS),
        outcome.unsettled | desired.held_records | set(outcome.standing),  # gone or rejected: not drift
        sample_size=pipeline.sync.reconciliation_sample_size, seed=run_id,
        max_not_found_share=pipeline.sync.failure_threshold,
    )
    sync.mark_not_found(sorted(check.not_found_records), outcome)
    return check


def _bulk_writer(target: CrmTarget, dest: DestinationConfig, pipeline: PipelineConfig, ledger_file: Path,
                 ledger: SyncLedger, run_id: str, log: Callable[[str], None]) -> BulkWriter | None:
    """The Bulk API 2.0 writer for a Salesforce org (the local target writes everything like Collections)."""
    if not isinstance(target, SalesforceClient):
        return None
    return BulkWriter(
        target, dest.object, dest.operation, dest.external_id.field if dest.external_id else None,
        state=BulkJobStore.beside(ledger_file, target.target_id), destination=dest.name,
        poll_timeout_seconds=pipeline.sync.bulk_poll_timeout_seconds, usage_threshold=pipeline.sync.usage_threshold,
        confirm=lambda rows: ledger.record(dest.object, dest.name, run_id, rows), log=log,
    )
