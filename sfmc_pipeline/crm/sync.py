"""Push segment statuses and mapped attributes to one destination, exactly once per change.

1. Desired state (payloads.py) from the statuses, plus ``exited`` for any segment the ledger
   shows as confirmed in-segment but which the statuses no longer list (so a failed exit write
   is retried and the CRM never keeps a stale membership).
2. Preflight (preflight.py) against the object's describe: nothing is sent if a field is wrong.
3. Diff against the ledger: only fields whose value differs from what was last confirmed
   written are sent; an unchanged input sends nothing.
4. Client-side checks (record_checks.py): known-bad records are rejected with Salesforce's code.
5. Batches of up to 200 records (``allOrNone`` false). After every batch the successful records
   are confirmed in the ledger. ``UNABLE_TO_LOCK_ROW`` records are re-sent later in the run.
   ``REQUEST_LIMIT_EXCEEDED``, or daily usage at the threshold, stops cleanly: the rest stays
   pending for the next run.
"""

from __future__ import annotations

import json
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Callable

import pandas as pd

from sfmc_pipeline.config.models import DestinationConfig, SyncSettings
from sfmc_pipeline.crm.ledger import SyncLedger, encode
from sfmc_pipeline.crm.payloads import build_desired_state, json_value
from sfmc_pipeline.crm.preflight import ResolvedFields, custom_field_name, run_preflight
from sfmc_pipeline.crm.record_checks import check_record
from sfmc_pipeline.crm.records import ApiUsage, CrmTarget, RecordError
from sfmc_pipeline.crm.salesforce_client import RequestLimitExceeded
from sfmc_pipeline.datasets.salesforce_id import KEY_PREFIXES

IN_SEGMENT = ("realized", "existing")
ERROR_COLUMNS = ["run_id", "destination", "object", "record_id", "stage", "status_code", "message", "fields", "payload"]


@dataclass
class SyncOutcome:
    destination: str
    sobject: str
    dry_run: bool
    considered: int = 0
    unchanged: int = 0
    skipped: int = 0
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
    planned: Counter = field(default_factory=Counter)  # (field, status or "attribute") -> records (dry run)
    samples: list[dict] = field(default_factory=list)
    longest: dict[str, int] = field(default_factory=dict)
    usage: ApiUsage | None = None

    @property
    def failed_total(self) -> int:
        return sum(self.failed.values())

    @property
    def succeeded_or_failed(self) -> int:
        return self.succeeded + self.failed_total

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())


def confirmed_memberships(dest: DestinationConfig, confirmed: pd.DataFrame) -> pd.DataFrame:
    """``record_id, segment`` pairs whose confirmed status field value says realized or existing."""
    names: set[str] = set()
    for fld in dest.status_fields:
        names |= {fld.lower(), custom_field_name(fld).lower()}  # the ledger holds API names
    rows = confirmed[confirmed["field"].str.lower().isin(names) & confirmed["value"].notna()]
    entries = pd.DataFrame({"record_id": rows["record_id"].to_numpy(),
                            "entry": rows["value"].map(json.loads).str.split(";").to_numpy()}).explode("entry")
    parts = entries["entry"].str.split(":", n=1, expand=True).reindex(columns=[0, 1])
    entries = entries.assign(segment=parts[0], status=parts[1])
    keep = entries["status"].isin(IN_SEGMENT) & entries["segment"].isin(list(dest.segments))
    return entries.loc[keep, ["record_id", "segment"]].drop_duplicates(ignore_index=True)


def add_ledger_exits(dest: DestinationConfig, statuses: pd.DataFrame, confirmed: pd.DataFrame) -> pd.DataFrame:
    """Statuses plus ``exited`` rows for segments the ledger shows as in-segment but the statuses
    no longer mention (the profile left, and its exit was not yet confirmed written)."""
    in_crm = confirmed_memberships(dest, confirmed).rename(columns={"record_id": "SubscriberKey"})
    known = statuses[["SubscriberKey", "segment"]].astype(object)
    lost = in_crm.astype(object).merge(known, on=["SubscriberKey", "segment"], how="left", indicator=True)
    exits = lost.loc[lost["_merge"] == "left_only", ["SubscriberKey", "segment"]].assign(status="exited")
    if exits.empty:
        return statuses
    return pd.concat([statuses[["SubscriberKey", "segment", "status"]], exits], ignore_index=True)


class DestinationSync:
    def __init__(
        self,
        dest: DestinationConfig,
        settings: SyncSettings,
        target: CrmTarget,
        ledger: SyncLedger,
        *,
        run_id: str,
        log: Callable[[str], None] = lambda message: None,
    ):
        self.dest = dest
        self.settings = settings
        self.target = target
        self.ledger = ledger
        self.run_id = run_id
        self.log = log

    def run(self, statuses: pd.DataFrame, profiles: pd.DataFrame, *, dry_run: bool = False) -> SyncOutcome:
        dest = self.dest
        out = SyncOutcome(destination=dest.name, sobject=dest.object, dry_run=dry_run)
        confirmed = self.ledger.confirmed(dest.object)
        desired = build_desired_state(dest, add_ledger_exits(dest, statuses, confirmed), profiles)
        out.considered, out.skipped = desired.considered, desired.skipped
        values = desired.values
        status_rows = values[values["field"].isin(list(dest.status_fields))]
        out.longest = status_rows.groupby("field")["value"].agg(lambda s: int(s.str.len().max())).to_dict()

        resolved = run_preflight(dest, self.target.describe(dest.object), out.longest)
        changes = self._changes(values, confirmed, resolved)
        out.unchanged = out.considered - len(changes)
        to_send = self._checked(changes, resolved, out)
        out.to_send = len(to_send)
        if dry_run:
            self._plan(to_send, {resolved.api_names[f] for f in dest.status_fields}, out)
        else:
            self._send(to_send, out)
        out.usage = self.target.api_usage
        return out

    def _changes(self, values: pd.DataFrame, confirmed: pd.DataFrame, resolved: ResolvedFields) -> dict[str, dict]:
        values = values.assign(
            field=values["field"].map(resolved.api_names), encoded=[encode(v) for v in values["value"].tolist()]
        )
        merged = values.merge(confirmed, on=["record_id", "field"], how="left", suffixes=("", "_confirmed"))
        changed = merged[merged["encoded"] != merged["value_confirmed"]]
        changes: dict[str, dict] = {}
        for rid, fld, value in zip(changed["record_id"], changed["field"], changed["value"]):
            changes.setdefault(rid, {})[fld] = json_value(value)
        if self.dest.external_id is not None:  # upsert needs the key in every record, changed or not
            key_field = resolved.api_names[self.dest.external_id.field]
            keys = values[values["field"] == key_field].set_index("record_id")["value"]
            for rid, fields in changes.items():
                fields.setdefault(key_field, keys.get(rid))
        return dict(sorted(changes.items()))

    def _checked(self, changes: dict[str, dict], resolved: ResolvedFields, out: SyncOutcome) -> list[tuple[str, dict]]:
        ready = []
        check_ids = self.dest.operation == "update"
        for rid, fields in changes.items():
            fields, error = check_record(
                self.dest.object, rid, fields, resolved.info, truncate=self.dest.truncate_long_values,
                prefix=KEY_PREFIXES[self.dest.object], check_id=check_ids,
            )
            if error is None:
                ready.append((rid, fields))
            else:
                out.rejected[error.status_code] += 1
                self._error(out, rid, fields, error, "rejected")
        return ready

    def _plan(self, to_send: list[tuple[str, dict]], status_fields: set[str], out: SyncOutcome) -> None:
        """``status_fields``: the API names of the destination's status fields."""
        for rid, fields in to_send:
            for name, value in fields.items():
                if name in status_fields and value:
                    for entry in str(value).split(";"):
                        out.planned[(name, entry.split(":", 1)[1])] += 1
                else:
                    out.planned[(name, "attribute")] += 1
        out.samples = [{"Id": rid, **fields} for rid, fields in to_send[:5]]

    def _send(self, to_send: list[tuple[str, dict]], out: SyncOutcome) -> None:
        queue = deque(to_send)
        lock_attempts: Counter = Counter()
        size = self.settings.batch_size
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
                    confirmed_rows.extend((rid, name, value) for name, value in fields.items())
                elif result.error_code == "UNABLE_TO_LOCK_ROW" and lock_attempts[rid] < self.settings.lock_retries:
                    lock_attempts[rid] += 1
                    queue.append((rid, fields))  # transient: re-sent in a later request of this run
                else:
                    error = result.errors[0] if result.errors else RecordError("UNKNOWN", "no error detail returned")
                    out.failed[error.status_code] += 1
                    self._error(out, rid, fields, error, "failed")
            self.ledger.record(self.dest.object, self.run_id, confirmed_rows)
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


def reconcile(dest: DestinationConfig, statuses: pd.DataFrame, confirmed: pd.DataFrame, unsettled: set[str]) -> pd.DataFrame:
    """Per mapped segment: current members (for this object) vs members with a confirmed in-segment
    status in the ledger, both without the unsettled (failed, rejected, pending) records."""
    prefix = KEY_PREFIXES[dest.object] if dest.operation == "update" else ""
    current = statuses[statuses["status"].isin(IN_SEGMENT) & statuses["SubscriberKey"].str.startswith(prefix)]
    in_crm_all = confirmed_memberships(dest, confirmed)
    rows = []
    for segment, fld in sorted(dest.segments.items()):
        members = set(current.loc[current["segment"] == segment, "SubscriberKey"]) - unsettled
        in_crm = set(in_crm_all.loc[in_crm_all["segment"] == segment, "record_id"]) - unsettled
        rows.append({"segment": segment, "field": fld, "members": len(members), "confirmed_in_crm": len(in_crm),
                     "missing": len(members - in_crm), "stale": len(in_crm - members)})
    return pd.DataFrame(rows)
