"""What one sync of a destination did (``SyncOutcome``), built from the plan (``crm/plan.py``: what
was considered, held back, rejected) and the send (``crm/send.py``: what went out and how it came
back), with the figures derived from them; and the rows of the sync-errors dataset."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import pandas as pd

from sfmc_pipeline.crm.payloads import DesiredState
from sfmc_pipeline.crm.plan import ChangeSet
from sfmc_pipeline.crm.send import Sent
from sfmc_pipeline.crm.standing_failures import Standing
from sfmc_pipeline.governance.policies import Allowed
from sfmc_pipeline.salesforce.records import ApiUsage


@dataclass
class SyncOutcome:
    destination: str
    sobject: str
    dry_run: bool
    target: str = ""
    considered: int = 0
    unchanged: int = 0
    skipped: int = 0
    held: int = 0
    null_attributes: int = 0
    to_send: int = 0
    sent: int = 0  # record sends, re-sends included
    succeeded: int = 0
    created: int = 0
    failed: Counter = field(default_factory=Counter)  # Salesforce statusCode -> records
    repeated: Counter = field(default_factory=Counter)  # of ``failed``: records failing again the way they stood failed
    rejected: Counter = field(default_factory=Counter)  # client-side code -> records
    held_back: Counter = field(default_factory=Counter)  # code -> records not sent: their standing failure still applies
    standing: dict[str, Standing] = field(default_factory=dict)  # the destination's standing failures after the run
    pending: int = 0
    requests: int = 0  # write requests (sObject Collections calls)
    min_requests: int = 0  # the fewest write requests that carry the change set: ceil(to_send / 200)
    concurrency: int = 1  # write requests allowed in flight at once at the end of the run (lock errors halve it)
    max_in_flight: int = 0  # the most write requests that were in flight at once
    bulk_requests: int = 0  # Bulk API 2.0 requests (jobs, uploads, polls, results; recovery of earlier jobs)
    bulk_jobs: list[str] = field(default_factory=list)  # ids of the Bulk jobs this run created
    bulk_recovered: int = 0  # records of an earlier run's Bulk job confirmed at the start of this run
    stopped: str | None = None
    errors: list[dict] = field(default_factory=list)
    unsettled: set[str] = field(default_factory=set)  # failed, rejected or pending record ids
    cleared: Counter = field(default_factory=Counter)  # (field, segment) -> records cleared of an unmapped segment
    planned: Counter = field(default_factory=Counter)  # (field, status or "attribute") -> records (dry run)
    samples: list[dict] = field(default_factory=list)
    policy_exceptions: list[Allowed] = field(default_factory=list)  # pairings a policy refuses, allowed on purpose
    longest: dict[str, int] = field(default_factory=dict)
    exit_guard: pd.DataFrame | None = None
    usage: ApiUsage | None = None
    desired: DesiredState | None = None
    status_fields: dict[str, str] = field(default_factory=dict)  # segment -> status field API name in the CRM
    ranges: int = 1  # ranges of record ids the plan was made in (``sync.partition_records`` records each)

    @property
    def failed_total(self) -> int:
        return sum(self.failed.values())

    @property
    def new_failures(self) -> int:
        """Failed records that did not stand failed the same way before this run (what the threshold counts)."""
        return self.failed_total - sum(self.repeated.values())

    @property
    def held_back_total(self) -> int:
        return sum(self.held_back.values())

    @property
    def succeeded_or_failed(self) -> int:
        return self.succeeded + self.failed_total

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    @property
    def exit_guard_tripped(self) -> bool:
        return self.exit_guard is not None and bool(self.exit_guard["tripped"].any())


def build_outcome(base: SyncOutcome, plan: ChangeSet, sent: Sent) -> SyncOutcome:
    """``base`` (what the run knew before planning: the desired state, the status fields) with the plan's
    and the send's figures; a dry run's ``sent`` is empty."""
    out = base
    out.unchanged, out.to_send = plan.unchanged, len(plan.to_send)
    out.rejected, out.held_back, out.exit_guard = plan.rejected, plan.held_back, plan.exit_guard
    out.min_requests = plan.min_requests if sent.min_requests is None else sent.min_requests
    out.pending = plan.pending + sent.pending
    out.errors = plan.errors + sent.errors
    out.unsettled = plan.unsettled | sent.unsettled
    for name in ("sent", "succeeded", "created", "failed", "repeated", "requests", "concurrency", "max_in_flight",
                 "bulk_requests", "bulk_jobs", "bulk_recovered", "stopped"):
        setattr(out, name, getattr(sent, name))
    return out
