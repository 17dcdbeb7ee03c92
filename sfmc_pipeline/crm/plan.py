"""The plan of one sync: from the desired state and the destination's describe to a ``ChangeSet``.

The values as they will be written are diffed against the ledger's confirmed values (``diff.py``);
records whose standing failure still applies are held back (``standing_failures.py``); known-bad
records are rejected with Salesforce's code (``record_checks.py``); records a Bulk job still
processing may write wait; the exit guard (``exit_guard.py``) measures what is left. No requests:
it works on the values it is handed (the ledger's, the standing marks', the guard window's peaks).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Mapping

import numpy as np
import pandas as pd
import pyarrow as pa

from sfmc_pipeline.crm.change_rows import ToSend, batches
from sfmc_pipeline.crm.diff import (
    Changes,
    Confirmed,
    ValueFormat,
    WrittenPart,
    collector_paused,
    diff,
    written_values,
)
from sfmc_pipeline.crm.exit_guard import guard_counts, guard_table
from sfmc_pipeline.crm.ledger_hashing import KeyedHasher
from sfmc_pipeline.crm.payloads import DesiredState
from sfmc_pipeline.crm.preflight import ResolvedFields
from sfmc_pipeline.crm.record_checks import check_record, suspect_records
from sfmc_pipeline.crm.standing_failures import StandingScreen
from sfmc_pipeline.crm.sync_errors import error_row
from sfmc_pipeline.crm.vectors import arrow, isin, map_small, parse_entries
from sfmc_pipeline.salesforce.records import MAX_RECORDS_PER_REQUEST


@dataclass
class ChangeSet:
    """What the plan decided. ``to_send``: ``(record_id, fields)`` in record-id order; ``rejected``,
    ``held_back``: code -> records; ``pending``: records a running Bulk job may still write; ``errors``: the
    sync-errors rows of the rejected records; ``unsettled``: rejected, held back or pending record ids."""

    changes: Changes
    to_send: ToSend | list[tuple[str, dict]]
    unchanged: int
    rejected: Counter = field(default_factory=Counter)
    held_back: Counter = field(default_factory=Counter)
    pending: int = 0
    errors: list[dict] = field(default_factory=list)
    unsettled: set[str] = field(default_factory=set)
    guard_counts: Counter = field(default_factory=Counter)  # ``exit_guard.guard_counts`` of what is ready to send
    exit_guard: pd.DataFrame | None = None  # the guard's verdict (``exit_guard.guard_table``), set by the sync

    @property
    def min_requests(self) -> int:
        """The fewest sObject Collections requests that carry ``to_send``."""
        return -(-len(self.to_send) // MAX_RECORDS_PER_REQUEST)

    @property
    def exit_guard_tripped(self) -> bool:
        return self.exit_guard is not None and bool(self.exit_guard["tripped"].any())


@dataclass(frozen=True)
class Planner:
    """One destination's planning rules: ``fmt`` how values are written, ``run_id`` for the error rows,
    ``exit_limits`` segment -> the largest share of its confirmed members one run may exit."""

    fmt: ValueFormat
    run_id: str
    exit_limits: Mapping[str, float]
    exit_guard_min_members: int

    def plan(self, desired: DesiredState, statuses: pd.DataFrame, resolved: ResolvedFields, confirmed: Confirmed,
             status_fields: dict[str, str], screen: StandingScreen, busy: Mapping[str, str],
             parts_out: list[WrittenPart]) -> ChangeSet:
        """``statuses``: the desired status values left to write (``desired.statuses`` without clears of
        deleted fields); ``confirmed``: the ledger's confirmed values (or their pages, ``diff``); ``status_fields``:
        segment -> API name;
        ``busy``: records a Bulk job still processing may write; ``parts_out`` receives the written values (the
        standing screen fingerprints attributes from them)."""
        parts = written_values(self.fmt, statuses, desired, resolved)
        parts_out[:] = parts
        with collector_paused():  # small containers per (record, field) row; no cycles to look for among them
            changes = diff(self.fmt.dest, parts, confirmed, resolved)
            result = ChangeSet(changes, [], unchanged=desired.considered - len(changes.records))
            self._hold_back_standing(changes, parts[0].frame, screen, result)
            to_send = self._checked(changes, parts, resolved, screen, result)
        if busy:
            waiting = [rid for rid in to_send.record_ids() if rid in busy]
            to_send = to_send.without(waiting)
            result.pending += len(waiting)
            result.unsettled.update(waiting)
        result.to_send = to_send
        result.guard_counts = self._guard_counts(desired, changes, result, status_fields)
        return result

    def guard(self, counts: Counter, window_peaks: Mapping[str, int]) -> pd.DataFrame:
        """The exit guard's verdict on ``counts`` (of every range of the sync) against the window's peaks."""
        return guard_table(counts, self.exit_limits, min_members=self.exit_guard_min_members,
                           window_peaks=window_peaks)

    def _guard_counts(self, desired: DesiredState, changes: Changes, result: ChangeSet, status_fields: dict[str, str]
                      ) -> Counter:
        """What the exit guard counts of this plan: the confirmed members, and the statuses ready to send (not
        those of records rejected, held back or waiting for a Bulk job)."""
        dest = self.fmt.dest
        entries = desired.confirmed_entries
        current_field = {segment: fld.lower() for segment, fld in dest.segments.items()}
        in_current_field = entries[(entries["field_key"] == map_small(entries["segment"], current_field))
                                   .to_numpy(dtype=bool, na_value=False)]
        ready = changes.statuses
        if result.rejected or result.held_back or result.pending:
            ready = ready[isin(ready["record_id"], result.to_send.record_ids())]
        return guard_counts(in_current_field, ready, set(status_fields.values()))

    def _hold_back_standing(self, changes: Changes, status_frame: pd.DataFrame, screen: StandingScreen,
                            result: ChangeSet) -> None:
        """Records whose standing failure still applies leave ``changes``: counted as held back, and unsettled (the
        reconciliation leaves them aside)."""
        known = list(screen.known)
        if not known:
            return
        considered = set(arrow(status_frame["record_id"]).filter(pa.array(isin(status_frame["record_id"], known)))
                         .to_pylist())
        before = {rid for rid in known if rid in changes.records}
        result.held_back = screen.hold_back(changes.records, changes.encoded, considered)
        result.unsettled.update(rid for rid in before if rid not in changes.records)

    def _checked(self, changes: Changes, parts: list[WrittenPart], resolved: ResolvedFields, screen: StandingScreen,
                 result: ChangeSet) -> ToSend:
        """The records that pass the client-side checks, in order; the others are rejected with the
        code Salesforce would give. A column-wise screen finds the records that might fail; only those
        are judged by ``check_record`` (which decides), the rest cannot fail it."""
        dest = self.fmt.dest
        check_ids = dest.operation == "update"
        suspects = suspect_records(dest.object, list(changes.records), ((p.frame, p.typed) for p in parts),
                                   resolved.info, check_id=check_ids)
        refused = []
        for rid in sorted(rid for rid in suspects if rid in changes.records):  # in record-id order
            fields = changes.records[rid]
            error = check_record(dest.object, rid, fields, resolved.info, check_id=check_ids)
            if error is not None:
                refused.append(rid)
                result.rejected[error.status_code] += 1
                result.unsettled.add(rid)
                result.errors.append(error_row(self.run_id, dest.name, dest.object, rid, fields, error, "rejected"))
                screen.rejected(rid, fields, error, changes.encoded.get(rid, ()))
        return ToSend(changes.records, refused)


def profile_fingerprints(parts: list[WrittenPart], hasher: KeyedHasher, record_ids: list[str]) -> dict[str, str]:
    """record -> keyed fingerprint of its attributes as this run would write them (a gone record is tried
    again when they change)."""
    pairs: dict[str, list[tuple[str, str]]] = {rid: [] for rid in record_ids}
    for part in parts[1:]:
        frame = part.frame
        rows = isin(frame["record_id"], record_ids) if len(frame) else np.zeros(0, dtype=bool)
        if rows.any():
            chosen = frame.loc[rows, ["record_id", "field", "encoded"]]
            for rid, name, encoded in zip(*(arrow(chosen[c]).to_pylist() for c in chosen.columns)):
                pairs[rid].append((name, encoded))
    return {rid: hasher.fingerprint(found) for rid, found in pairs.items()}


def dry_run_counts(to_send: Iterable[tuple[str, dict]], status_fields: set[str]) -> tuple[Counter, list[dict]]:
    """What a dry run would write: ``(field, status or "attribute" or "cleared") -> records``, and sample
    payloads. ``status_fields``: the API names of the destination's status fields. Counted a batch of records at a
    time."""
    planned: Counter = Counter()
    samples: list[dict] = []
    for batch in batches(to_send):
        statuses = []
        for rid, fields in batch:
            for name, value in fields.items():
                if name not in status_fields:
                    planned[(name, "attribute")] += 1
                elif value is None:
                    planned[(name, "cleared")] += 1
                else:
                    statuses.append((name, value))
        entries = parse_entries(pd.Series([value for _, value in statuses], dtype=object))
        names = [statuses[i][0] for i in entries.index]
        planned.update(zip(names, entries["status"].astype(object).where(entries["status"].notna(), None)))
        samples += [{"Id": rid, **fields} for rid, fields in batch[: 5 - len(samples)]]
    return planned, samples


def deleted_field_rows(dest_status_fields: Mapping[str, object] | set[str], statuses: pd.DataFrame, describe
                       ) -> np.ndarray | None:
    """The rows of ``statuses`` that clear old status fields the org no longer has (nothing left to clear
    there), or None when there are none."""
    gone = [f for f in statuses["field"].dropna().unique() if f not in dest_status_fields and describe.find(f) is None]
    return isin(statuses["field"], gone) if gone else None
