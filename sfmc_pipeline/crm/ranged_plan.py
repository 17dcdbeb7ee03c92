"""The whole change set of one sync, planned a range of record ids at a time (``record_ranges.py``).

Per range: the ledger's rows of the range, the desired state (``payloads.py``), the preflight of its values against
the object's describe (fetched once), the clears of status fields the org no longer has, and the plan
(``plan.py``). The ranges' figures add up to the figures of the whole (every one is about distinct records), the
exit guard's counts included, so the guard judges the whole change set before anything is sent. With one range
(up to ``sync.partition_records`` records) the plan stays in memory as it is; with more, each range's records to
send go to a spill file (``change_spill.py``) and the range's values are let go of.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
import pandas as pd
import pyarrow as pa

from sfmc_pipeline.config.data_extensions import ColumnConfig
from sfmc_pipeline.config.destinations import DestinationConfig
from sfmc_pipeline.crm.change_spill import ChangeSpill, SpilledChanges, SpilledRecords
from sfmc_pipeline.crm.diff import ValueFormat, WrittenPart, longest, written_values
from sfmc_pipeline.crm.ledger import SyncLedger
from sfmc_pipeline.crm.payloads import DesiredState, build_desired_state
from sfmc_pipeline.crm.plan import ChangeSet, Planner, deleted_field_rows, profile_fingerprints
from sfmc_pipeline.crm.preflight import ResolvedFields, run_preflight
from sfmc_pipeline.crm.record_ranges import RecordRanges
from sfmc_pipeline.crm.standing_failures import StandingScreen
from sfmc_pipeline.salesforce.records import CrmTarget

LEDGER_COLUMNS = ["record_id", "field", "kind", "profile_key", "value"]  # what the desired state and diff read
DIFF_COLUMNS = ["record_id", "field", "value"]  # what the diff reads (``diff.LedgerValues``)


@dataclass
class PlannedSync:
    """The plan of every range: ``plan`` (its ``to_send`` and ``changes`` from the spill when there were several
    ranges), the desired state's summary, the status fields' longest values and API names."""

    plan: ChangeSet
    desired: DesiredState
    longest: dict[str, int] = field(default_factory=dict)
    status_fields: dict[str, str] = field(default_factory=dict)  # segment -> API name
    ranges: int = 1  # ranges of record ids planned one after the other


class RangedPlanner:
    """Plans one destination's sync range by range (``plan``); keeps what the standing failures need afterwards
    (``fingerprints``) and the spill until ``close``."""

    def __init__(self, dest: DestinationConfig, target: CrmTarget, ledger: SyncLedger, planner: Planner,
                 columns: dict[str, ColumnConfig], *, profile_key: str, partition_records: int, spill_dir: Path):
        self.dest, self.target, self.ledger, self.planner = dest, target, ledger, planner
        self.columns, self.profile_key = columns, profile_key
        self.partition_records, self.spill_dir = partition_records, spill_dir
        self.parts: list[WrittenPart] = []  # the written values of the range being planned (or of the only range)
        self.ranges: RecordRanges | None = None
        self._resolved: ResolvedFields | None = None
        self._planning = False
        self._spill: ChangeSpill | None = None

    @property
    def fmt(self) -> ValueFormat:
        return self.planner.fmt

    def plan(self, statuses: pd.DataFrame, profiles: pd.DataFrame, screen: StandingScreen, busy: dict[str, str], *,
             dry_run: bool) -> PlannedSync:
        """Every range planned in record-id order; ``busy``: records a Bulk job still processing may write."""
        dest, ledger = self.dest, self.ledger
        self.ranges = ranges = RecordRanges.split(dest, statuses, profiles, ledger, profile_key=self.profile_key,
                                                  size=self.partition_records)
        if len(ranges) > 1:
            self._spill = ChangeSpill(self.spill_dir, dest.name)
        describe = None
        total: PlannedSync | None = None
        self._planning = True
        try:
            for index in ranges:
                records = ranges.records(index)
                desired = self._desired(index)  # the diff reads the ledger again, a page at a time
                lengths = longest(desired.statuses)
                if describe is None:
                    describe = self.target.describe(dest.object)
                self._resolved = resolved = run_preflight(dest, describe, lengths, self.columns)
                status_fields = {segment: resolved.api_names[fld] for segment, fld in dest.segments.items()}
                statuses_now = desired.statuses
                deleted = deleted_field_rows(dest.status_fields, statuses_now, describe)
                if deleted is not None:  # forget what the ledger knew about status fields the org no longer has
                    if not dry_run:
                        rows = statuses_now[deleted]
                        ledger.forget(dest.object, zip(rows["record_id"], rows["field"]))
                    statuses_now = statuses_now[~deleted]
                pages = lambda: ledger.confirmed_pages(  # noqa: E731
                    dest.object, dest.name, columns=DIFF_COLUMNS, records=records)
                plan = self.planner.plan(desired, statuses_now, resolved, pages, status_fields, screen, busy,
                                         self.parts)
                del statuses_now
                if self._spill is not None:
                    changes = plan.changes
                    self._spill.add((rid, fields, changes.encoded.get(rid, ()), changes.owners.get(rid))
                                    for rid, fields in plan.to_send)
                    plan.changes = plan.to_send = None
                    self.parts.clear()
                part = PlannedSync(plan, desired.summary(), lengths, status_fields)
                total = part if total is None else _added(total, part)
        finally:
            self._planning = False
        if self._spill is not None:
            total.plan.to_send, total.plan.changes = SpilledRecords(self._spill), SpilledChanges(self._spill)
        total.ranges = len(ranges)
        return total

    def fingerprints(self, record_ids: list[str]) -> dict[str, str]:
        """record -> keyed fingerprint of its attributes as this run writes them (``plan.profile_fingerprints``):
        from the range being planned, or, after planning several ranges, from their written values made again (a
        record found gone is rare)."""
        hasher = self.ledger.hasher
        if self._planning or self.ranges is None or len(self.ranges) == 1:
            return profile_fingerprints(self.parts, hasher, record_ids)
        by_range: dict[int, list[str]] = {}
        for rid, index in zip(record_ids, self.ranges.range_of(record_ids).tolist()):
            by_range.setdefault(index, []).append(rid)
        found: dict[str, str] = {}
        for index, chosen in sorted(by_range.items()):
            desired = self._desired(index)  # the range's written values, made again
            parts = written_values(self.fmt, desired.statuses, desired, self._resolved)
            found.update(profile_fingerprints(parts, hasher, chosen))
        return found

    def _desired(self, index: int) -> DesiredState:
        """The desired state of range ``index``, from its inputs and its part of the ledger."""
        dest = self.dest
        confirmed = self.ledger.confirmed(dest.object, dest.name, columns=LEDGER_COLUMNS,
                                          records=self.ranges.records(index))
        inputs = self.ranges.inputs(index, confirmed)
        return build_desired_state(dest, inputs.statuses, inputs.profiles, confirmed, profile_key=self.profile_key,
                                   mentioned=inputs.mentioned)

    def close(self) -> None:
        """Remove the spill (the planned records on disk)."""
        if self._spill is not None:
            self._spill.close()
            self._spill = None


def _added(total: PlannedSync, part: PlannedSync) -> PlannedSync:
    """``total`` with the next range's figures added (the ranges hold distinct records)."""
    plan, more = total.plan, part.plan
    plan.unchanged += more.unchanged
    plan.rejected.update(more.rejected)
    plan.held_back.update(more.held_back)
    plan.pending += more.pending
    plan.errors.extend(more.errors)
    plan.unsettled |= more.unsettled
    plan.guard_counts.update(more.guard_counts)
    desired, other = total.desired, part.desired
    members = {segment: pa.concat_arrays([ids, other.members.get(segment, ids[:0])])
               for segment, ids in desired.members.items()}
    total.desired = replace(
        desired, considered=desired.considered + other.considered, skipped=desired.skipped + other.skipped,
        held=desired.held + other.held, null_attributes=desired.null_attributes + other.null_attributes,
        cleared=desired.cleared + other.cleared, members=members, held_records=desired.held_records | other.held_records)
    total.longest = {name: max(total.longest.get(name, 0), part.longest.get(name, 0))
                     for name in sorted(set(total.longest) | set(part.longest))}
    return total
