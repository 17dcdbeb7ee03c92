"""Push segment statuses and mapped attributes to one destination, exactly once per change.

In order: data-usage policies (a refused destination makes no request); Bulk jobs an earlier run left
are settled; the plan, a range of record ids at a time for a large destination (``ranged_plan.py``: per range
the desired state, ``payloads.py``, the preflight against the object's describe, ``preflight.py``, and the plan,
``plan.py``: diff against the ledger, standing failures, client-side checks, the exit guard's counts); the exit
guard's verdict on the whole; then, unless it is a dry run or the guard trips, the send (``send.py``).
The result is a ``SyncOutcome`` (``outcome.py``).
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Callable, Mapping

import pandas as pd

from sfmc_pipeline.config.data_extensions import ColumnConfig
from sfmc_pipeline.config.destinations import DestinationConfig, SyncSettings
from sfmc_pipeline.config.pipeline import PipelineConfig
from sfmc_pipeline.crm.bulk.writer import BulkWriter
from sfmc_pipeline.crm.diff import ValueFormat
from sfmc_pipeline.crm.exit_guard import ExitGuardTripped, explain
from sfmc_pipeline.crm.exit_window import ExitWindow
from sfmc_pipeline.crm.ledger import SyncLedger
from sfmc_pipeline.crm.outcome import SyncOutcome, build_outcome
from sfmc_pipeline.crm.plan import Planner, dry_run_counts
from sfmc_pipeline.crm.ranged_plan import RangedPlanner
from sfmc_pipeline.crm.send import Sender
from sfmc_pipeline.crm.standing_failures import StandingFailures, StandingScreen
from sfmc_pipeline.governance.lineage import identifying_fields
from sfmc_pipeline.governance.policies import Allowed, enforce
from sfmc_pipeline.salesforce.records import CrmTarget, RecordError

NOT_FOUND = "NOT_FOUND"  # the code of a record the reconciliation found absent from the CRM


class DestinationSync:
    def __init__(
        self,
        dest: DestinationConfig,
        settings: SyncSettings,
        target: CrmTarget,
        ledger: SyncLedger,
        *,
        run_id: str,
        profile_key: str,
        columns: Mapping[str, ColumnConfig],
        timezone: str = "UTC",
        exit_limits: Mapping[str, float] | None = None,
        log: Callable[[str], None] = lambda message: None,
        bulk: BulkWriter | None = None,
        pipeline: PipelineConfig | None = None,
        identifying: frozenset[str] = frozenset(),
        guard_window_days: int = 7,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.timezone.utc),
    ):
        """``columns``: the profile dataset's columns by name; ``exit_limits``: segment -> largest
        share of its confirmed members one run may exit (default ``settings.max_exit_share``); ``bulk``:
        the Bulk API 2.0 writer for change sets of at least ``settings.bulk_threshold`` records (None:
        sObject Collections only, e.g. the local target); ``pipeline``: the config whose data-usage
        policies the sync enforces before anything else (``for_pipeline`` passes it); ``identifying``: the
        fields (any case) whose values the ledger keeps as keyed hashes; ``guard_window_days``: the exit
        guard's window; ``clock``: the time of a run (UTC), for the guard window and the standing failures."""
        self.dest, self.pipeline, self.settings, self.target, self.ledger = dest, pipeline, settings, target, ledger
        self.run_id, self.profile_key, self.columns, self.timezone = run_id, profile_key, dict(columns), timezone
        self.exit_limits = {s: (exit_limits or {}).get(s, settings.max_exit_share) for s in dest.segments}
        self.log, self.bulk, self.guard_window_days, self.clock = log, bulk, guard_window_days, clock
        self.identifying = frozenset(f.lower() for f in identifying)
        self.sender = Sender(dest, settings, target, ledger, run_id=run_id, log=log, bulk=bulk)
        self._planner: RangedPlanner | None = None  # the run's plan (fingerprints of attributes, for standing failures)
        self._screen: StandingScreen | None = None

    @classmethod
    def for_pipeline(cls, pipeline: PipelineConfig, dest: DestinationConfig, target: CrmTarget, ledger: SyncLedger,
                     **kwargs: Any) -> DestinationSync:
        profile = pipeline.extension(pipeline.profiles.dataset)
        return cls(
            dest, pipeline.sync, target, ledger, profile_key=pipeline.profile_key,
            columns={c.name: c for c in profile.columns}, timezone=pipeline.evaluation.timezone,
            exit_limits={s: pipeline.max_exit_share_for(s) for s in dest.segments}, pipeline=pipeline,
            identifying=identifying_fields(pipeline, dest), guard_window_days=pipeline.settings.guard_window_days,
            **kwargs,
        )

    def run(self, statuses: pd.DataFrame, profiles: pd.DataFrame, *, dry_run: bool = False,
            accept_exits: bool = False, retry_standing: bool = False,
            policy_exceptions: list[Allowed] | None = None) -> SyncOutcome:
        """``retry_standing``: send the records held back by a standing failure again (an operator's reset, e.g.
        after restoring deleted records or changing a validation rule); their results set their marks anew.
        ``policy_exceptions``: what ``enforce`` returned when the caller already enforced the data-usage
        policies (the sink does, before it reads anything); otherwise they are enforced here, first."""
        dest, ledger = self.dest, self.ledger
        if policy_exceptions is None:  # a refused destination makes no request at all (not even a login)
            policy_exceptions = enforce(self.pipeline, dest) if self.pipeline is not None else []
        base = SyncOutcome(destination=dest.name, sobject=dest.object, dry_run=dry_run, target=self.target.target_id,
                           policy_exceptions=policy_exceptions)
        now = self.clock()
        self.sender.start()
        ledger.protect(dest.object, dest.name, self.identifying)  # before anything is confirmed or read
        self._screen = screen = StandingScreen(
            StandingFailures(ledger, dest.object, dest.name), lambda: ledger.hasher, self.run_id, now, dry_run=dry_run,
            retry=retry_standing, profile_fingerprints=lambda ids: self._planner.fingerprints(ids))
        busy: dict[str, str] = {}
        if self.bulk is not None and not dry_run:
            self.sender.recover_bulk()  # settles jobs an earlier run left, before the ledger is read
            busy = self.bulk.in_flight()  # records a job still processing may write: not sent again
        fmt = ValueFormat(dest, self.columns, self.timezone, self.identifying, lambda: ledger.hasher)
        planner = Planner(fmt, self.run_id, self.exit_limits, self.settings.exit_guard_min_members)
        self._planner = ranged = RangedPlanner(dest, self.target, ledger, planner, self.columns,
                                               profile_key=self.profile_key,
                                               partition_records=self.settings.partition_records,
                                               spill_dir=ledger.path.parent / "sync-spill")
        try:
            return self._planned_run(ranged, base, statuses, profiles, screen, busy, now, dry_run=dry_run,
                                     accept_exits=accept_exits)
        finally:
            ranged.close()

    def _planned_run(self, ranged: RangedPlanner, base: SyncOutcome, statuses: pd.DataFrame, profiles: pd.DataFrame,
                     screen: StandingScreen, busy: dict[str, str], now: dt.datetime, *, dry_run: bool,
                     accept_exits: bool) -> SyncOutcome:
        """Plan every range, judge the whole change set (exit guard), then send it (or count it, in a dry run)."""
        dest, ledger = self.dest, self.ledger
        planned = ranged.plan(statuses, profiles, screen, busy, dry_run=dry_run)
        plan, desired = planned.plan, planned.desired
        base.desired, base.longest, base.status_fields = desired, planned.longest, planned.status_fields
        base.ranges = planned.ranges
        base.considered, base.skipped, base.held = desired.considered, desired.skipped, desired.held
        base.null_attributes, base.cleared = desired.null_attributes, desired.cleared
        status_names = set(base.status_fields.values())
        window = ExitWindow(ledger, dest.object, dest.name)
        plan.exit_guard = ranged.planner.guard(plan.guard_counts, window.peaks(now, self.guard_window_days))

        guard, min_members = plan.exit_guard, self.settings.exit_guard_min_members
        if plan.exit_guard_tripped and not accept_exits:
            message = explain(dest.name, guard, self.guard_window_days, min_members)
            if not dry_run:
                raise ExitGuardTripped(message)
            self.log(message.replace("sent nothing", "would send nothing"))
        if dry_run:
            base.planned, base.samples = dry_run_counts(plan.to_send, status_names)
            out = build_outcome(base, plan, self.sender.result)
            out.standing = dict(screen.known)
        else:
            window.record(self.run_id, now, dict(zip(guard["segment"], guard["confirmed_members"])),
                          accepted=set(guard.loc[guard["tripped"], "segment"]) if accept_exits else set())
            screen.flush()  # marks settled before anything is sent (obsolete ones, new client-side rejections)
            sent = self.sender.send(plan.to_send, plan.changes, screen, status_names, plan.pending)
            out = build_outcome(base, plan, sent)
            out.standing = screen.store.load()
        out.usage = self.target.api_usage
        return out

    def mark_not_found(self, record_ids: list[str], out: SyncOutcome) -> None:
        """Records the reconciliation read back as absent from the CRM (deleted, or no longer visible to the
        integration user), after ``run``: marked gone like a write that met ``ENTITY_IS_DELETED``, so they are
        held back until their profile changes; ``out.standing`` is updated. Nothing in a dry run."""
        if not record_ids or self._screen is None or out.dry_run:
            return
        error = RecordError(NOT_FOUND, "not found when read back after the sync: deleted, or not visible to the "
                            "integration user", ())
        for rid in record_ids:
            self._screen.gone(rid, error)
        self._screen.flush()
        out.standing = self._screen.store.load()


