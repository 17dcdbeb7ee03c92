"""Push segment statuses and mapped attributes to one destination, exactly once per change.

1. Desired state (``payloads.py``): status values from the statuses, ``exited`` for segments the
   ledger shows as confirmed in-segment that the statuses no longer list, clears of segments no
   longer mapped to a field, and the attributes; held profiles are left as they are.
2. Preflight (``preflight.py``) against the object's describe: nothing is sent if a field is wrong.
3. Values as they will be written (``salesforce_rules.field_values``; cut to the field's length
   when the destination opts in to truncation), diffed against the ledger: only fields whose value
   differs from what was last confirmed written are sent; an unchanged input sends nothing.
4. Client-side checks (``record_checks.py``): known-bad records are rejected with Salesforce's code.
5. Exit guard (``exit_guard.py``): a run that would exit too many confirmed members sends nothing.
6. Batches of up to 200 records (``allOrNone`` false). After every batch the successful records
   are confirmed in the ledger. ``UNABLE_TO_LOCK_ROW`` records are re-sent later in the run.
   ``REQUEST_LIMIT_EXCEEDED``, or daily usage at the threshold, stops cleanly: the rest stays
   pending for the next run.
"""

from __future__ import annotations

import json
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import pandas as pd

from sfmc_pipeline.config.models import ColumnConfig, DestinationConfig, PipelineConfig, SyncSettings
from sfmc_pipeline.crm.exit_guard import ExitGuardTripped, exit_guard, explain
from sfmc_pipeline.crm.ledger import Confirmed, SyncLedger, encode
from sfmc_pipeline.crm.payloads import ATTRIBUTE, STATUS, DesiredState, build_desired_state
from sfmc_pipeline.crm.preflight import ResolvedFields, run_preflight
from sfmc_pipeline.crm.record_checks import check_record
from sfmc_pipeline.crm.records import ApiUsage, CrmTarget, RecordError
from sfmc_pipeline.crm.salesforce_client import RequestLimitExceeded
from sfmc_pipeline.crm.salesforce_rules import field_values, truncated
from sfmc_pipeline.crm.status_format import parse_entries
from sfmc_pipeline.segments.evaluate import PROFILE_KEY

ERROR_COLUMNS = ["run_id", "destination", "object", "record_id", "stage", "status_code", "message", "fields", "payload"]


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
    rejected: Counter = field(default_factory=Counter)  # client-side code -> records
    pending: int = 0
    requests: int = 0  # write requests (sObject Collections calls)
    stopped: str | None = None
    errors: list[dict] = field(default_factory=list)
    unsettled: set[str] = field(default_factory=set)  # failed, rejected or pending record ids
    cleared: Counter = field(default_factory=Counter)  # (field, segment) -> records cleared of an unmapped segment
    planned: Counter = field(default_factory=Counter)  # (field, status or "attribute") -> records (dry run)
    samples: list[dict] = field(default_factory=list)
    longest: dict[str, int] = field(default_factory=dict)
    exit_guard: pd.DataFrame | None = None
    usage: ApiUsage | None = None
    desired: DesiredState | None = None
    status_fields: dict[str, str] = field(default_factory=dict)  # segment -> status field API name in the CRM

    @property
    def failed_total(self) -> int:
        return sum(self.failed.values())

    @property
    def succeeded_or_failed(self) -> int:
        return self.succeeded + self.failed_total

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    @property
    def exit_guard_tripped(self) -> bool:
        return self.exit_guard is not None and bool(self.exit_guard["tripped"].any())


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
    ):
        """``columns``: the profile dataset's columns by name; ``exit_limits``: segment -> largest
        share of its confirmed members one run may exit (default ``settings.max_exit_share``)."""
        self.dest = dest
        self.settings = settings
        self.target = target
        self.ledger = ledger
        self.run_id = run_id
        self.profile_key = profile_key
        self.columns = dict(columns)
        self.timezone = timezone
        self.exit_limits = {s: (exit_limits or {}).get(s, settings.max_exit_share) for s in dest.segments}
        self.log = log

    @classmethod
    def for_pipeline(cls, pipeline: PipelineConfig, dest: DestinationConfig, target: CrmTarget, ledger: SyncLedger,
                     **kwargs: Any) -> DestinationSync:
        profile = pipeline.extension(pipeline.profiles.dataset)
        return cls(
            dest, pipeline.sync, target, ledger, profile_key=pipeline.profile_key,
            columns={c.name: c for c in profile.columns}, timezone=pipeline.evaluation.timezone,
            exit_limits={s: pipeline.max_exit_share_for(s) for s in dest.segments}, **kwargs,
        )

    def run(self, statuses: pd.DataFrame, profiles: pd.DataFrame, *, dry_run: bool = False,
            accept_exits: bool = False) -> SyncOutcome:
        dest = self.dest
        out = SyncOutcome(destination=dest.name, sobject=dest.object, dry_run=dry_run, target=self.target.target_id)
        confirmed = self.ledger.confirmed(dest.object, dest.name)
        desired = build_desired_state(dest, statuses, profiles, confirmed, profile_key=self.profile_key)
        out.desired = desired
        out.considered, out.skipped, out.held = desired.considered, desired.skipped, desired.held
        out.null_attributes, out.cleared = desired.null_attributes, desired.cleared
        values = desired.values
        status_rows = values[values["kind"] == STATUS]
        out.longest = status_rows.groupby("field")["value"].agg(
            lambda s: int(s.dropna().str.len().max()) if s.notna().any() else 0).to_dict()

        describe = self.target.describe(dest.object)
        resolved = run_preflight(dest, describe, out.longest, self.columns)
        out.status_fields = {segment: resolved.api_names[fld] for segment, fld in dest.segments.items()}
        values = self._without_deleted_fields(values, describe, dry_run)
        written = self._written_values(values, resolved)
        changes, owners = self._changes(written, confirmed, resolved)
        out.unchanged = out.considered - len(changes)
        to_send = self._checked(changes, resolved, out)
        out.to_send = len(to_send)

        status_api_names = set(out.status_fields.values())
        entries = desired.confirmed_entries
        current_field = {segment: fld.lower() for segment, fld in dest.segments.items()}
        in_current_field = entries[entries["field_key"] == entries["segment"].map(current_field)]
        out.exit_guard = exit_guard(in_current_field, to_send, status_api_names, self.exit_limits,
                                    min_members=self.settings.exit_guard_min_members)
        if out.exit_guard_tripped and not accept_exits:
            if not dry_run:
                raise ExitGuardTripped(explain(dest.name, out.exit_guard))
            self.log(explain(dest.name, out.exit_guard).replace("sent nothing", "would send nothing"))
        if dry_run:
            self._plan(to_send, status_api_names, out)
        else:
            self._send(to_send, owners, resolved, out)
        out.usage = self.target.api_usage
        return out

    def _without_deleted_fields(self, values: pd.DataFrame, describe, dry_run: bool) -> pd.DataFrame:
        """Drop clears of old status fields the org no longer has (nothing left to clear there), and
        forget what the ledger knew about them."""
        gone = [f for f in values.loc[values["kind"] == STATUS, "field"].unique()
                if f not in self.dest.status_fields and describe.find(f) is None]
        if not gone:
            return values
        dropped = values[values["field"].isin(gone)]
        if not dry_run:
            self.ledger.forget(self.dest.object, zip(dropped["record_id"], dropped["field"]))
        return values[~values["field"].isin(gone)]

    def _written_values(self, values: pd.DataFrame, resolved: ResolvedFields) -> pd.DataFrame:
        """``values`` with API field names and each value exactly as it will be written."""
        values = values.assign(field=[resolved.api_names.get(f, f) for f in values["field"]])
        parts = [values[values["kind"] == STATUS]]
        attributes = values[values["kind"] == ATTRIBUTE]
        for (column, name), group in attributes.groupby(["column", "field"], sort=False):
            info = resolved.info[name]
            typed = pd.Series(group["value"].tolist(), index=group.index, dtype=object)
            if column in self.columns:
                typed = pd.Series(field_values(typed, self.columns[column], info, self.timezone),
                                  index=group.index, dtype=object)
            if self.dest.truncate_long_values:
                typed = typed.map(lambda v: truncated(v, info))
            parts.append(group.assign(value=typed))
        return pd.concat(parts, ignore_index=True) if parts else values

    def _changes(self, values: pd.DataFrame, confirmed: pd.DataFrame,
                 resolved: ResolvedFields) -> tuple[dict[str, dict], dict[str, str]]:
        """``({record_id: {field: value}} of what differs from the ledger, {record_id: profile_key})``."""
        values = values.assign(encoded=[encode(v) for v in values["value"].tolist()])
        merged = values.merge(confirmed[["record_id", "field", "value"]], on=["record_id", "field"], how="left",
                              suffixes=("", "_confirmed"))
        changed = merged[merged["encoded"] != merged["value_confirmed"]]
        changes: dict[str, dict] = {}
        for rid, fld, value in zip(changed["record_id"], changed["field"], changed["value"]):
            changes.setdefault(rid, {})[fld] = value
        if self.dest.external_id is not None:  # upsert needs the key in every record, changed or not
            key_field = resolved.api_names[self.dest.external_id.field]
            keys = values[values["field"] == key_field].set_index("record_id")["value"]
            for rid, fields in changes.items():
                fields.setdefault(key_field, keys.get(rid, rid))
        owners = dict(zip(values["record_id"], values[PROFILE_KEY]))
        return dict(sorted(changes.items())), owners

    def _checked(self, changes: dict[str, dict], resolved: ResolvedFields, out: SyncOutcome) -> list[tuple[str, dict]]:
        ready = []
        check_ids = self.dest.operation == "update"
        for rid, fields in changes.items():
            error = check_record(self.dest.object, rid, fields, resolved.info, check_id=check_ids)
            if error is None:
                ready.append((rid, fields))
            else:
                out.rejected[error.status_code] += 1
                self._error(out, rid, fields, error, "rejected")
        return ready

    def _plan(self, to_send: list[tuple[str, dict]], status_fields: set[str], out: SyncOutcome) -> None:
        """``status_fields``: the API names of the destination's status fields."""
        statuses = []
        for rid, fields in to_send:
            for name, value in fields.items():
                if name not in status_fields:
                    out.planned[(name, "attribute")] += 1
                elif value is None:
                    out.planned[(name, "cleared")] += 1
                else:
                    statuses.append((name, value))
        entries = parse_entries(pd.Series([value for _, value in statuses], dtype=object))
        names = [statuses[i][0] for i in entries.index]
        out.planned.update(zip(names, entries["status"]))
        out.samples = [{"Id": rid, **fields} for rid, fields in to_send[:5]]

    def _send(self, to_send: list[tuple[str, dict]], owners: dict[str, str], resolved: ResolvedFields,
              out: SyncOutcome) -> None:
        queue = deque(to_send)
        lock_attempts: Counter = Counter()
        size = self.settings.batch_size
        status_names = set(out.status_fields.values())
        while queue:
            usage = self.target.api_usage
            if usage is not None and usage.share >= self.settings.usage_threshold:
                out.stopped = (
                    f"daily API usage {usage.used}/{usage.limit} ({usage.share:.0%}) reached the "
                    f"{self.settings.usage_threshold:.0%} threshold"
                )
                break
            batch = [queue.popleft() for _ in range(min(size, len(queue)))]
            try:
                results = self._write(batch)
            except RequestLimitExceeded as exc:
                queue.extendleft(reversed(batch))
                out.stopped = f"Salesforce refused further requests: {exc}"
                break
            out.requests += 1
            out.sent += len(batch)
            confirmed_rows = []
            for (rid, fields), result in zip(batch, results):
                if result.success:
                    out.succeeded += 1
                    out.created += bool(result.created)
                    confirmed_rows.extend(
                        Confirmed(rid, name, STATUS if name in status_names else ATTRIBUTE, owners.get(rid),
                                  result.id or rid, value)
                        for name, value in fields.items()
                    )
                elif result.error_code == "UNABLE_TO_LOCK_ROW" and lock_attempts[rid] < self.settings.lock_retries:
                    lock_attempts[rid] += 1
                    queue.append((rid, fields))  # transient: re-sent in a later request of this run
                else:
                    error = result.errors[0] if result.errors else RecordError("UNKNOWN", "no error detail returned")
                    out.failed[error.status_code] += 1
                    self._error(out, rid, fields, error, "failed")
            self.ledger.record(self.dest.object, self.dest.name, self.run_id, confirmed_rows)
        out.pending = len(queue)
        out.unsettled.update(rid for rid, _ in queue)
        if out.stopped:
            self.log(f"{self.dest.name}: stopped early, {out.pending} record(s) pending for the next run: {out.stopped}")

    def _write(self, batch: list[tuple[str, dict]]):
        obj = self.dest.object
        if self.dest.operation == "upsert":
            records = [{"attributes": {"type": obj}, **fields} for _, fields in batch]
            return self.target.upsert(obj, self._external_field(batch), records)
        records = [{"attributes": {"type": obj}, "id": rid, **fields} for rid, fields in batch]
        return self.target.update(records)

    def _external_field(self, batch) -> str:
        key = self.dest.external_id.field.lower()
        return next(name for name in batch[0][1] if name.lower() == key)

    def _error(self, out: SyncOutcome, rid: str, fields: dict[str, Any], error: RecordError, stage: str) -> None:
        out.unsettled.add(rid)
        out.errors.append(
            {
                "run_id": self.run_id, "destination": self.dest.name, "object": self.dest.object, "record_id": rid,
                "stage": stage, "status_code": error.status_code, "message": error.message,
                "fields": ",".join(error.fields), "payload": json.dumps(fields, sort_keys=True, default=str),
            }
        )
