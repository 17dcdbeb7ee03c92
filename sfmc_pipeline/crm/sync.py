"""Push segment statuses and mapped attributes to one destination, exactly once per change.

1. Desired state (``payloads.py``): status values from the statuses, ``exited`` for segments the
   ledger shows as confirmed in-segment that the statuses no longer list, clears of segments no
   longer mapped to a field, and the attributes; held profiles are left as they are.
2. Preflight (``preflight.py``) against the object's describe: nothing is sent if a field is wrong.
3. Values as they will be written (``salesforce_rules.field_values``; cut to the field's length
   when the destination opts in to truncation), diffed against the ledger: only fields whose value
   differs from what was last confirmed written are sent; an unchanged input sends nothing.
4. Client-side checks (``record_checks.py``): known-bad records are rejected with Salesforce's code.
   Records whose failure stands (``standing_failures.py``: gone from the CRM, or values Salesforce
   rejected) are held back until their attributes or values change; they are reported, not re-sent.
5. Exit guard (``exit_guard.py``): a run that would exit too many confirmed members, in this run or
   over the guard window (``exit_window.py``), sends nothing.
6. Batches of up to 200 records (``allOrNone`` false), up to ``sync.concurrent_requests`` in flight
   at once (against a target that declares it can take them; the local target gets one at a time).
   Every batch result is confirmed in the ledger as it comes back, in this thread (one SQLite writer),
   so a killed run loses at most the batches in flight: at most ``concurrent_requests``, re-sent by
   the next run. ``UNABLE_TO_LOCK_ROW`` records are re-sent later in the run, and halve the number
   of requests in flight for the rest of it. ``REQUEST_LIMIT_EXCEEDED``, or daily usage at the
   threshold, stops submitting: the batches in flight finish and are recorded, the rest stays
   pending for the next run.
7. A change set of at least ``sync.bulk_threshold`` records (2,000) goes through a Bulk API 2.0 job
   instead (``bulk_writer.py``), the records Bulk cannot carry through Collections. Its results are
   matched by Id and confirmed in the same ledger, its failures reported like Collections failures.
   A job an earlier run left (a crash, a poll timeout) is settled at the start of the next run, before
   the ledger is read, and its records are never sent twice while it may still apply them.

Steps 1 to 5 work on whole columns (``vectors.py``): an unchanged re-run of 200,000 records
(1.2 million ledger rows) takes about 2.5 s of this code on a 2-core machine and two API requests
(login, describe); a record becomes a Python dict only when it is about to be sent.
"""

from __future__ import annotations

import datetime as dt
import gc
import json
import math
from collections import Counter, deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from sfmc_pipeline.config.data_extensions import ColumnConfig
from sfmc_pipeline.config.destinations import DestinationConfig, SyncSettings
from sfmc_pipeline.config.pipeline import PipelineConfig
from sfmc_pipeline.crm.bulk.results import (
    FAILED_RECORD,
    SUCCEEDED,
    BulkJobFailed,
    BulkOutcome,
)
from sfmc_pipeline.crm.bulk.writer import BulkWriter
from sfmc_pipeline.crm.exit_guard import ExitGuardTripped, exit_guard, explain
from sfmc_pipeline.crm.exit_window import ExitWindow
from sfmc_pipeline.crm.ledger import Confirmed, SyncLedger, encode
from sfmc_pipeline.crm.payloads import (
    ATTRIBUTE,
    STATUS,
    DesiredState,
    build_desired_state,
)
from sfmc_pipeline.crm.preflight import ResolvedFields, preflight_destination
from sfmc_pipeline.crm.record_checks import check_record
from sfmc_pipeline.crm.standing_failures import (
    Standing,
    StandingFailures,
    StandingScreen,
)
from sfmc_pipeline.crm.vectors import (
    TEXT,
    arrow,
    isin,
    json_texts,
    map_small,
    parse_entries,
    sorted_rows,
    text,
)
from sfmc_pipeline.governance.lineage import identifying_fields
from sfmc_pipeline.governance.policies import Allowed, enforce
from sfmc_pipeline.salesforce.ids import KEY_PREFIXES, valid_id_mask
from sfmc_pipeline.salesforce.records import (
    MAX_RECORDS_PER_REQUEST,
    ApiUsage,
    CrmTarget,
    RecordError,
    RecordResult,
)
from sfmc_pipeline.salesforce.api_errors import RequestLimitExceeded
from sfmc_pipeline.salesforce.rules import (
    EMAIL,
    REQUIRED_FIELDS,
    TEXT_FIELD_TYPES,
    field_values,
    truncated,
)
from sfmc_pipeline.segments.evaluate import PROFILE_KEY

ERROR_COLUMNS = ["run_id", "destination", "object", "record_id", "stage", "status_code", "message", "fields", "payload"]
LOCKED = "UNABLE_TO_LOCK_ROW"
NOT_FOUND = "NOT_FOUND"  # the code of a record the reconciliation found absent from the CRM
LEDGER_COLUMNS = ["record_id", "field", "kind", "profile_key", "value"]  # what the diff reads (not crm_id)
_NOT_BLANK = r"[\pL\pN\pP\pS]"  # a letter, digit, punctuation or symbol: never whitespace, so not blank


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


@dataclass
class _Written:
    """One part of the values as they will be written (the status fields, or one attribute), one row
    per (record, field): ``record_id, profile_key, field`` (API name), ``encoded`` (the ledger's JSON
    text) and ``value``: ``str`` (missing: None) or, for typed attributes, Python objects."""

    kind: str
    frame: pd.DataFrame
    typed: bool = False  # ``value`` holds Python objects (not only strings and nulls)

    def python_values(self, rows: np.ndarray) -> list[Any]:
        """The values of the rows selected by the bool mask ``rows``, as Python objects (None for null)."""
        if self.typed:
            return list(self.frame["value"].to_numpy()[rows])
        return arrow(self.frame["value"]).filter(pa.array(rows)).to_pylist()


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
        self.dest = dest
        self.pipeline = pipeline
        self.settings = settings
        self.target = target
        self.ledger = ledger
        self.run_id = run_id
        self.profile_key = profile_key
        self.columns = dict(columns)
        self.timezone = timezone
        self.exit_limits = {s: (exit_limits or {}).get(s, settings.max_exit_share) for s in dest.segments}
        self.log = log
        self.bulk = bulk
        self.identifying = frozenset(f.lower() for f in identifying)
        self.guard_window_days = guard_window_days
        self.clock = clock
        self._encoded: dict[str, tuple] = {}  # record -> the ledger texts of its values to send, in field order
        self._parts: list[_Written] = []  # the values as they will be written (for fingerprints of attributes)
        self._changed: dict[str, dict] = {}  # record -> its fields to send, as the diff made them
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
            accept_exits: bool = False, retry_standing: bool = False) -> SyncOutcome:
        """``retry_standing``: send the records held back by a standing failure again (an operator's reset, e.g.
        after restoring deleted records or changing a validation rule); their results set their marks anew."""
        dest = self.dest
        # Data-usage policies first: a refused destination makes no request at all (not even a login).
        allowed = enforce(self.pipeline, dest) if self.pipeline is not None else []
        out = SyncOutcome(destination=dest.name, sobject=dest.object, dry_run=dry_run, target=self.target.target_id,
                          policy_exceptions=allowed)
        now = self.clock()
        self.ledger.protect(dest.object, dest.name, self.identifying)  # before anything is confirmed or read
        self._screen = StandingScreen(StandingFailures(self.ledger, dest.object, dest.name), lambda: self.ledger.hasher,
                                      self.run_id, now, dry_run=dry_run, retry=retry_standing,
                                      profile_fingerprints=self._profile_fingerprints)
        busy: dict[str, str] = {}
        if self.bulk is not None and not dry_run:
            self._recover_bulk(out)  # settles jobs an earlier run left, before the ledger is read
            busy = self.bulk.in_flight()  # records a job still processing may write: not sent again
        confirmed = self.ledger.confirmed(dest.object, dest.name, columns=LEDGER_COLUMNS)
        desired = build_desired_state(dest, statuses, profiles, confirmed, profile_key=self.profile_key)
        out.desired = desired
        out.considered, out.skipped, out.held = desired.considered, desired.skipped, desired.held
        out.null_attributes, out.cleared = desired.null_attributes, desired.cleared
        out.longest = _longest(desired.statuses)

        describe, resolved = preflight_destination(self.target, dest, out.longest, self.columns)
        out.status_fields = {segment: resolved.api_names[fld] for segment, fld in dest.segments.items()}
        statuses_now = self._without_deleted_fields(desired.statuses, describe, dry_run)
        written = self._written_values(statuses_now, desired, resolved)
        self._parts = written
        with _collector_paused():  # a first sync makes a dict per record; no cycles to look for among them
            changes, owners, changed_statuses = self._changes(written, confirmed, resolved)
            self._changed = changes
            out.unchanged = out.considered - len(changes)
            self._hold_back_standing(changes, written[0].frame, out)
            to_send = self._checked(changes, written, resolved, out)
        if busy:
            held_back = [rid for rid, _ in to_send if rid in busy]
            to_send = [(rid, fields) for rid, fields in to_send if rid not in busy]
            out.pending += len(held_back)
            out.unsettled.update(held_back)
        out.to_send = len(to_send)
        out.min_requests = math.ceil(len(to_send) / MAX_RECORDS_PER_REQUEST)

        status_api_names = set(out.status_fields.values())
        entries = desired.confirmed_entries
        current_field = {segment: fld.lower() for segment, fld in dest.segments.items()}
        in_current_field = entries[(entries["field_key"] == map_small(entries["segment"], current_field))
                                   .to_numpy(dtype=bool, na_value=False)]
        ready = changed_statuses[isin(changed_statuses["record_id"], [rid for rid, _ in to_send])] \
            if out.rejected_total or out.held_back_total else changed_statuses
        window = ExitWindow(self.ledger, dest.object, dest.name)
        min_members = self.settings.exit_guard_min_members
        out.exit_guard = exit_guard(in_current_field, ready, status_api_names, self.exit_limits,
                                    min_members=min_members, window_peaks=window.peaks(now, self.guard_window_days))
        if out.exit_guard_tripped and not accept_exits:
            message = explain(dest.name, out.exit_guard, self.guard_window_days, min_members)
            if not dry_run:
                raise ExitGuardTripped(message)
            self.log(message.replace("sent nothing", "would send nothing"))
        if dry_run:
            self._plan(to_send, status_api_names, out)
            out.standing = dict(self._screen.known)
        else:
            guard = out.exit_guard
            window.record(self.run_id, now, dict(zip(guard["segment"], guard["confirmed_members"])),
                          accepted=set(guard.loc[guard["tripped"], "segment"]) if accept_exits else set())
            self._screen.flush()  # marks settled before anything is sent (obsolete ones, new client-side rejections)
            self._send(to_send, owners, resolved, out)
            out.standing = self._screen.store.load()
        out.usage = self.target.api_usage
        return out

    # ------------------------------------------------------------------ standing failures

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

    def _hold_back_standing(self, changes: dict[str, dict], status_frame: pd.DataFrame, out: SyncOutcome) -> None:
        """Records whose standing failure still applies leave ``changes``: counted as held back, and unsettled (the
        reconciliation leaves them aside)."""
        known = list(self._screen.known)
        if not known:
            return
        considered = set(arrow(status_frame["record_id"]).filter(pa.array(isin(status_frame["record_id"], known)))
                         .to_pylist())
        before = set(changes) & set(known)
        out.held_back = self._screen.hold_back(changes, self._encoded, considered)
        out.unsettled.update(rid for rid in before if rid not in changes)

    def _profile_fingerprints(self, record_ids: list[str]) -> dict[str, str]:
        """record -> keyed fingerprint of its attributes as this run would write them (a gone record is tried
        again when they change)."""
        pairs: dict[str, list[tuple[str, str]]] = {rid: [] for rid in record_ids}
        for part in self._parts[1:]:
            frame = part.frame
            rows = isin(frame["record_id"], record_ids) if len(frame) else np.zeros(0, dtype=bool)
            if rows.any():
                chosen = frame.loc[rows, ["record_id", "field", "encoded"]]
                for rid, name, encoded in zip(*(arrow(chosen[c]).to_pylist() for c in chosen.columns)):
                    pairs[rid].append((name, encoded))
        hasher = self.ledger.hasher
        return {rid: hasher.fingerprint(found) for rid, found in pairs.items()}

    # ------------------------------------------------------------------ the change set, column-wise

    def _without_deleted_fields(self, statuses: pd.DataFrame, describe, dry_run: bool) -> pd.DataFrame:
        """Drop clears of old status fields the org no longer has (nothing left to clear there), and
        forget what the ledger knew about them."""
        gone = [f for f in statuses["field"].dropna().unique()
                if f not in self.dest.status_fields and describe.find(f) is None]
        if not gone:
            return statuses
        dropped = isin(statuses["field"], gone)
        if not dry_run:
            rows = statuses[dropped]
            self.ledger.forget(self.dest.object, zip(rows["record_id"], rows["field"]))
        return statuses[~dropped]

    def _written_values(self, statuses: pd.DataFrame, desired: DesiredState,
                        resolved: ResolvedFields) -> list[_Written]:
        """The values with API field names, each exactly as it will be written, in parts: the status
        fields first, then one part per attribute (column, field) in mapping order."""
        api_names = resolved.api_names
        names = map_small(statuses["field"], api_names)
        status_frame = pd.DataFrame({
            "record_id": text(statuses["record_id"]), PROFILE_KEY: text(statuses[PROFILE_KEY]),
            "field": text(names.where(names.notna(), statuses["field"]).astype(TEXT)),
            "value": text(statuses["value"]), "clearing": statuses["clearing"].to_numpy(dtype=bool),
        })
        status_frame["encoded"] = json_texts(status_frame["value"])
        parts = [_Written(STATUS, status_frame)]
        for attribute in desired.attributes:
            name = api_names.get(attribute.field, attribute.field)
            info = resolved.info[name]
            values = attribute.values["value"]
            column = self.columns.get(attribute.column)
            frame = pd.DataFrame({"record_id": attribute.values["record_id"],
                                  PROFILE_KEY: attribute.values[PROFILE_KEY],
                                  "field": text([name] * len(values))})
            if column is not None and column.type.is_text and isinstance(values.dtype, pd.StringDtype):
                # text to a text field: the value is the string itself (``field_values`` gives str(v))
                typed = text(values)
                if self.dest.truncate_long_values and info.type in TEXT_FIELD_TYPES and info.length:
                    cut = pc.utf8_slice_codeunits(arrow(typed), 0, info.length)
                    typed = text(cut, index=typed.index)
                frame["value"] = typed.array
                frame["encoded"] = self._ledger_texts(json_texts(frame["value"]), name, attribute.field)
                parts.append(_Written(ATTRIBUTE, frame))
                continue
            objects = pd.Series(values.astype(object).where(values.notna(), None).tolist(), dtype=object)
            if column is not None:
                objects = pd.Series(field_values(objects, column, info, self.timezone), dtype=object)
            if self.dest.truncate_long_values:
                objects = pd.Series([truncated(v, info) for v in objects.tolist()], dtype=object)
            frame["value"] = objects.to_numpy()
            frame["encoded"] = self._ledger_texts(text([encode(v) for v in objects.tolist()]), name,
                                                  attribute.field)
            parts.append(_Written(ATTRIBUTE, frame, typed=True))
        return parts

    def _ledger_texts(self, encoded: pd.Series, *names: str) -> pd.Series:
        """The texts the ledger holds for these values of a field (its API name, and its name as configured): keyed
        hashes for an identifying field."""
        if not any(name.lower() in self.identifying for name in names):
            return encoded
        return text(self.ledger.hasher.texts(arrow(encoded)), index=encoded.index)

    def _changes(self, parts: list[_Written], confirmed: pd.DataFrame, resolved: ResolvedFields
                 ) -> tuple[dict[str, dict], dict[str, str], pd.DataFrame]:
        """``({record_id: {field: value}} of what differs from the ledger, sorted by record id;
        {record_id: profile_key}; the changed status values as a frame: record_id, field, value)``.
        Also fills ``self._encoded`` with the ledger text of each value to send. A record's fields
        come in the order of the parts: its status fields by (profile, field), its clears, then the
        attributes in mapping order (a later value for the same field wins)."""
        ledger = _LedgerValues(confirmed)
        changed_rows = [ledger.differs(part.frame) for part in parts]
        statuses = parts[0].frame[changed_rows[0]]
        if len(statuses) > 1:
            statuses = sorted_rows(statuses, ["record_id", "clearing", PROFILE_KEY, "field"])
        changed_statuses = statuses[["record_id", "field", "value"]].drop_duplicates(["record_id", "field"], keep="last")
        ids, names, texts = [arrow(statuses["record_id"])], [arrow(statuses["field"])], [arrow(statuses["encoded"])]
        values = arrow(statuses["value"]).to_pylist()
        for part, rows in zip(parts[1:], changed_rows[1:]):
            frame = part.frame[rows]
            ids.append(arrow(frame["record_id"]))
            names.append(arrow(frame["field"]))
            texts.append(arrow(frame["encoded"]))
            values.extend(part.python_values(rows))
        changes, self._encoded = _by_record(pa.concat_arrays(ids), pa.concat_arrays(names), values,
                                            pa.concat_arrays(texts))
        if self.dest.external_id is not None:  # upsert needs the key in every record, changed or not
            key_field = resolved.api_names[self.dest.external_id.field]
            key_values: dict[str, Any] = {}
            for part in parts[1:]:
                if len(part.frame) and part.frame["field"].iloc[0] == key_field:
                    key_values.update(zip(arrow(part.frame["record_id"]).to_pylist(),
                                          part.python_values(np.ones(len(part.frame), dtype=bool))))
            for rid, fields in changes.items():
                fields.setdefault(key_field, key_values.get(rid, rid))
        return changes, _owners(parts, list(changes)) if changes else {}, changed_statuses

    def _checked(self, changes: dict[str, dict], parts: list[_Written], resolved: ResolvedFields,
                 out: SyncOutcome) -> list[tuple[str, dict]]:
        """The records that pass the client-side checks, in order; the others are rejected with the
        code Salesforce would give. A column-wise screen finds the records that might fail; only those
        go through ``check_record`` (the rules), the rest cannot fail it."""
        suspects = self._suspects(changes, parts, resolved)
        ready = []
        check_ids = self.dest.operation == "update"
        for rid, fields in changes.items():
            error = None
            if rid in suspects:
                error = check_record(self.dest.object, rid, fields, resolved.info, check_id=check_ids)
            if error is None:
                ready.append((rid, fields))
            else:
                out.rejected[error.status_code] += 1
                self._error(out, rid, fields, error, "rejected")
                self._screen.rejected(rid, fields, error, self._encoded.get(rid, ()))
        return ready

    def _suspects(self, changes: dict[str, dict], parts: list[_Written], resolved: ResolvedFields) -> set[str]:
        """Records ``check_record`` might reject: a malformed Id (updates); a blank value in a required
        field; text longer than its field; a text in an email field that the address pattern (RE2, no
        newline before the end) does not match; any value of a typed attribute that is text or null."""
        if not changes:
            return set()
        ids = list(changes)
        suspects: set[str] = set()
        if self.dest.operation == "update":
            frame = pd.Series(ids, dtype=TEXT)
            good = valid_id_mask(frame).to_numpy(dtype=bool) & frame.str.startswith(
                KEY_PREFIXES[self.dest.object]).to_numpy(dtype=bool, na_value=False)
            suspects.update(np.asarray(ids, dtype=object)[~good])
        required = {name.lower() for name in REQUIRED_FIELDS.get(self.dest.object, ())}
        for part in parts:
            frame = part.frame
            if frame.empty:
                continue
            rows = isin(frame["record_id"], ids)
            if not rows.any():
                continue
            frame = frame[rows]
            if part.typed:
                values = frame["value"].tolist()
                odd = np.fromiter((v is None or isinstance(v, str) for v in values), dtype=bool, count=len(values))
                suspects.update(arrow(frame["record_id"]).filter(pa.array(odd)).to_pylist())
                continue
            values = arrow(frame["value"])
            flagged = np.zeros(len(frame), dtype=bool)
            for name in frame["field"].unique():
                at = (frame["field"] == name).to_numpy(dtype=bool)
                these = values.filter(pa.array(at))
                bad = np.zeros(len(these), dtype=bool)
                if name.lower() in required:
                    blank = pc.invert(pc.match_substring_regex(these, _NOT_BLANK)).fill_null(True)
                    bad |= blank.to_numpy(zero_copy_only=False).astype(bool)
                info = resolved.info.get(name)
                if info is not None and info.type in TEXT_FIELD_TYPES and info.length:
                    bad |= pc.greater(pc.utf8_length(these), info.length).fill_null(False).to_numpy(
                        zero_copy_only=False).astype(bool)
                if info is not None and info.type == "email":
                    plain = pc.match_substring_regex(these, EMAIL.pattern).fill_null(True)
                    empty = pc.equal(these, "").fill_null(True)
                    bad |= ~(plain.to_numpy(zero_copy_only=False).astype(bool)
                             | empty.to_numpy(zero_copy_only=False).astype(bool))
                flagged[np.flatnonzero(at)[bad]] = True
            if flagged.any():
                suspects.update(arrow(frame["record_id"]).filter(pa.array(flagged)).to_pylist())
        return suspects

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
        out.planned.update(zip(names, entries["status"].astype(object).where(entries["status"].notna(), None)))
        out.samples = [{"Id": rid, **fields} for rid, fields in to_send[:5]]

    # ------------------------------------------------------------------ sending

    def _send(self, to_send: list[tuple[str, dict]], owners: dict[str, str], resolved: ResolvedFields,
              out: SyncOutcome) -> None:
        """The write step: every ``(record_id, fields)`` of ``to_send`` goes out, and each per-record
        result is confirmed (``_confirm``) as it comes back. Change sets are written through sObject
        Collections (``_send_collections``), or, at ``bulk_threshold`` records and more, through a Bulk API
        2.0 job (``_send_bulk``) with the records Bulk cannot carry (and its lock failures) going through
        Collections."""
        if self.bulk is not None and len(to_send) >= self.settings.bulk_threshold:
            bulk_records, composite = self.bulk.partition(to_send)
            out.min_requests = math.ceil(len(composite) / MAX_RECORDS_PER_REQUEST)
            if bulk_records:
                composite += self._send_bulk(bulk_records, owners, out)
            to_send = composite
        self._send_collections(to_send, owners, out)

    def _send_bulk(self, records: list[tuple[str, dict]], owners: dict[str, str], out: SyncOutcome
                   ) -> list[tuple[str, dict]]:
        """One Bulk API 2.0 write; its results are counted like Collections results and its successes
        confirmed in the ledger (by the writer, job by job). Returns the records that hit
        ``UNABLE_TO_LOCK_ROW``, to be re-sent through Collections in this run."""
        status_names = set(out.status_fields.values())
        try:
            outcome = self.bulk.write(records, owners=owners, status_fields=status_names)
        except BulkJobFailed as exc:
            self._count_bulk(exc.outcome, out, sent=len(records))
            raise
        locked = self._count_bulk(outcome, out, sent=len(records))
        out.min_requests += outcome.min_requests
        return locked

    def _recover_bulk(self, out: SyncOutcome) -> None:
        recovered = self.bulk.recover()
        if recovered is None:
            return
        out.bulk_requests += recovered.requests
        out.bulk_recovered = len(recovered.succeeded)
        for message in recovered.messages:
            self.log(f"{self.dest.name}: {message}")

    def _count_bulk(self, outcome: BulkOutcome, out: SyncOutcome, *, sent: int) -> list[tuple[str, dict]]:
        out.sent += sent
        out.bulk_requests += outcome.requests
        out.bulk_jobs.extend(outcome.job_ids)
        locked: list[tuple[str, dict]] = []
        for record in outcome.records.values():
            if record.status == SUCCEEDED:
                out.succeeded += 1
                out.created += bool(record.created)
                self._screen.succeeded([record.record_id])
            elif record.status == FAILED_RECORD:
                error = record.error or RecordError("UNKNOWN", "no error detail returned")
                if error.status_code == LOCKED and self.settings.lock_retries:
                    locked.append((record.record_id, dict(record.fields)))
                    continue
                self._failed(record.record_id, dict(record.fields), error, out)
                self._error(out, record.record_id, dict(record.fields), error, "failed")
            else:  # pending: unprocessed, timed out or stopped; the next run settles or re-sends it
                out.pending += 1
                out.unsettled.add(record.record_id)
        self._screen.flush()
        if outcome.stopped:
            out.stopped = outcome.stopped
        return locked

    def _concurrency(self) -> int:
        """Requests in flight at once: ``sync.concurrent_requests`` for a target whose class declares
        ``supports_concurrent_requests`` (the Salesforce client), else one (the local SQLite target,
        and any wrapper that does not say it is thread-safe)."""
        if getattr(type(self.target), "supports_concurrent_requests", False):
            return max(1, int(self.settings.concurrent_requests))
        return 1

    def _send_collections(self, to_send: list[tuple[str, dict]], owners: dict[str, str], out: SyncOutcome) -> None:
        """sObject Collections batches of ``batch_size``, up to ``_concurrency()`` in flight.

        Which batches go out when: the first batch goes alone (it logs in if needed and brings back the
        org's usage before more requests are in flight); after it, full batches go out while fewer than
        the limit are in flight; the last, partial batch waits until nothing else is in flight, so that
        records handed back for a lock retry can ride along in it. Before each submission the daily
        usage is checked. Results are handled here, in this thread, as they complete: counted,
        confirmed in the ledger (one transaction each) and lock failures queued for a re-send."""
        queue = deque(to_send)
        lock_attempts: Counter = Counter()
        status_names = set(out.status_fields.values())
        limit = self._concurrency()
        out.concurrency = limit
        batch_errors: list[tuple[int, list[dict]]] = []
        if limit == 1:
            self._send_sequentially(queue, lock_attempts, owners, status_names, out, batch_errors)
        else:
            self._send_concurrently(queue, lock_attempts, owners, status_names, out, batch_errors, limit)
        for _, errors in sorted(batch_errors, key=lambda item: item[0]):
            out.errors.extend(errors)
        out.pending += len(queue)
        out.unsettled.update(rid for rid, _ in queue)
        if out.stopped:
            self.log(f"{self.dest.name}: stopped early, {out.pending} record(s) pending for the next run: {out.stopped}")

    def _usage_stop(self, out: SyncOutcome) -> bool:
        usage = self.target.api_usage
        if usage is not None and usage.share >= self.settings.usage_threshold:
            out.stopped = (
                f"daily API usage {usage.used}/{usage.limit} ({usage.share:.0%}) reached the "
                f"{self.settings.usage_threshold:.0%} threshold"
            )
            return True
        return False

    def _send_sequentially(self, queue: deque, lock_attempts: Counter, owners: dict[str, str],
                           status_names: set[str], out: SyncOutcome, batch_errors: list) -> None:
        size = self.settings.batch_size
        number = 0
        while queue:
            if self._usage_stop(out):
                break
            batch = [queue.popleft() for _ in range(min(size, len(queue)))]
            out.max_in_flight = max(out.max_in_flight, 1)
            try:
                results = self._write(batch)
            except RequestLimitExceeded as exc:
                queue.extendleft(reversed(batch))
                out.stopped = f"Salesforce refused further requests: {exc}"
                break
            number += 1
            retry, errors, _ = self._confirm(batch, results, owners, status_names, lock_attempts, out)
            batch_errors.append((number, errors))
            queue.extend(retry)

    def _send_concurrently(self, queue: deque, lock_attempts: Counter, owners: dict[str, str],
                           status_names: set[str], out: SyncOutcome, batch_errors: list, limit: int) -> None:
        size = self.settings.batch_size
        in_flight: dict[Future, tuple[int, list]] = {}
        number = completed = 0
        failure: BaseException | None = None
        pool = ThreadPoolExecutor(max_workers=limit, thread_name_prefix=f"sync-{self.dest.name}")
        clean = False
        try:
            while True:
                while queue and out.stopped is None and failure is None:
                    alone = not in_flight
                    full = len(queue) >= size
                    if not alone and (completed == 0 or len(in_flight) >= limit or not full):
                        break
                    if self._usage_stop(out):
                        break
                    batch = [queue.popleft() for _ in range(min(size, len(queue)))]
                    number += 1
                    in_flight[pool.submit(self._write, batch)] = (number, batch)
                    out.max_in_flight = max(out.max_in_flight, len(in_flight))
                if not in_flight:
                    break
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in sorted(done, key=lambda f: in_flight[f][0]):
                    seq, batch = in_flight.pop(future)
                    try:
                        results = future.result()
                    except RequestLimitExceeded as exc:
                        queue.extendleft(reversed(batch))
                        out.stopped = out.stopped or f"Salesforce refused further requests: {exc}"
                        continue
                    except BaseException as exc:  # noqa: BLE001 - re-raised once the batches in flight are recorded
                        failure = failure or exc
                        continue
                    completed += 1
                    retry, errors, locked = self._confirm(batch, results, owners, status_names, lock_attempts, out)
                    batch_errors.append((seq, errors))
                    queue.extend(retry)
                    if locked and limit > 1:
                        limit = max(1, limit // 2)
                        out.concurrency = limit
                        self.log(f"{self.dest.name}: {LOCKED} in a batch; at most {limit} request(s) in flight "
                                 "for the rest of the run")
            clean = True
        finally:
            # normally nothing is in flight here; after an interrupt the requests finish on their own
            pool.shutdown(wait=clean, cancel_futures=True)
        if failure is not None:
            raise failure

    def _confirm(self, batch: list[tuple[str, dict]], results: list[RecordResult], owners: dict[str, str],
                 status_names: set[str], lock_attempts: Counter, out: SyncOutcome
                 ) -> tuple[list[tuple[str, dict]], list[dict], bool]:
        """Count one batch's per-record results and confirm its successes in the ledger (one
        transaction). Returns ``(records to re-send for a lock retry, error rows, whether any record
        hit UNABLE_TO_LOCK_ROW)``."""
        out.requests += 1
        out.sent += len(batch)
        confirmed_rows: list[Confirmed] = []
        retry: list[tuple[str, dict]] = []
        errors: list[dict] = []
        locked = False
        succeeded: list[str] = []
        for (rid, fields), result in zip(batch, results):
            if result.success:
                out.succeeded += 1
                out.created += bool(result.created)
                succeeded.append(rid)
                texts = self._encoded.get(rid, ())
                owner, crm_id = owners.get(rid), result.id or rid
                confirmed_rows.extend(
                    Confirmed(rid, name, STATUS if name in status_names else ATTRIBUTE, owner, crm_id, value,
                              texts[i] if i < len(texts) else None)  # the upsert key added last: encoded then
                    for i, (name, value) in enumerate(fields.items())
                )
                continue
            if result.error_code == LOCKED:
                locked = True
                if lock_attempts[rid] < self.settings.lock_retries:
                    lock_attempts[rid] += 1
                    retry.append((rid, fields))  # transient: re-sent in a later request of this run
                    continue
            error = result.errors[0] if result.errors else RecordError("UNKNOWN", "no error detail returned")
            self._failed(rid, fields, error, out)
            errors.append(self._error_row(rid, fields, error, "failed"))
        self.ledger.record(self.dest.object, self.dest.name, self.run_id, confirmed_rows)
        self._screen.succeeded(succeeded)
        self._screen.flush()
        return retry, errors, locked

    def _failed(self, rid: str, fields: dict[str, Any], error: RecordError, out: SyncOutcome) -> None:
        """Count a record Salesforce refused, and mark it when its failure stands (gone, or its values rejected)."""
        out.failed[error.status_code] += 1
        out.unsettled.add(rid)
        fields = self._changed.get(rid, fields)  # as the diff made them: the field order of their ledger texts
        if self._screen.failed(rid, fields, error, self._encoded.get(rid, ())):
            out.repeated[error.status_code] += 1

    def _write(self, batch: list[tuple[str, dict]]) -> list[RecordResult]:
        """Send one batch; one result per record, in order (runs in a worker thread)."""
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
        out.errors.append(self._error_row(rid, fields, error, stage))

    def _error_row(self, rid: str, fields: dict[str, Any], error: RecordError, stage: str) -> dict:
        return {
            "run_id": self.run_id, "destination": self.dest.name, "object": self.dest.object, "record_id": rid,
            "stage": stage, "status_code": error.status_code, "message": error.message,
            "fields": ",".join(error.fields), "payload": json.dumps(fields, sort_keys=True, default=str),
        }


@contextmanager
def _collector_paused():
    """Pause the cyclic garbage collector while millions of small containers are made (it would
    otherwise walk them again and again); objects are still freed by reference counting."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _by_record(ids: pa.Array, names: pa.Array, values: list, texts: pa.Array
               ) -> tuple[dict[str, dict], dict[str, tuple]]:
    """``({record_id: {field: value}}, {record_id: ledger texts, in the order of the fields}})`` from
    rows in the order their fields should take, the records in record-id order: one stable sort,
    then one ``dict(zip(...))`` per record rather than a dict operation per row (when every record
    has the same fields in the same order, as in a first sync, straight from the columns)."""
    if not len(ids):
        return {}, {}
    order = pc.array_sort_indices(ids, order="ascending")  # stable
    ids = ids.take(order)
    starts = np.flatnonzero(np.concatenate([[True], pc.not_equal(ids.slice(1), ids.slice(0, len(ids) - 1))
                                            .to_numpy(zero_copy_only=False).astype(bool)]))
    record_ids = ids.take(pa.array(starts)).to_pylist()
    at = order.to_numpy(zero_copy_only=False)
    fields = names.take(order).to_pylist()
    typed = np.asarray(values, dtype=object)[at].tolist()
    encoded = texts.take(order).to_pylist()
    width = len(fields) // len(record_ids)
    if width * len(record_ids) == len(fields) and np.all(np.diff(starts) == width):
        grid = np.asarray(fields, dtype=object).reshape(-1, width)
        if (grid == grid[0]).all() and len(set(grid[0])) == width:  # the same fields, once each, everywhere
            header = list(grid[0])
            rows = zip(*(typed[i::width] for i in range(width)))
            changes = dict(zip(record_ids, (dict(zip(header, row)) for row in rows)))
            return changes, dict(zip(record_ids, zip(*(encoded[i::width] for i in range(width)))))
    ends = np.append(starts[1:], len(fields))
    changes, encodings = {}, {}
    for rid, a, b in zip(record_ids, starts.tolist(), ends.tolist()):
        record = changes[rid] = dict(zip(fields[a:b], typed[a:b]))
        if len(record) == b - a:
            encodings[rid] = tuple(encoded[a:b])
        else:  # a field given twice: the last value (and its text) wins, at the field's first place
            texts_of = dict(zip(fields[a:b], encoded[a:b]))
            encodings[rid] = tuple(texts_of[name] for name in record)
    return changes, encodings


def _owners(parts: list[_Written], record_ids: list[str]) -> dict[str, str]:
    """record -> the profile key of its last row over all parts (what ``dict(zip(...))`` over every
    row gives), for the given records."""
    wanted = pa.array(record_ids, pa.large_string())
    frames = [p.frame.loc[isin(p.frame["record_id"], wanted), ["record_id", PROFILE_KEY]] for p in parts]
    rows = pd.concat(frames, ignore_index=True).drop_duplicates("record_id", keep="last")
    return dict(zip(arrow(rows["record_id"]).to_pylist(), arrow(rows[PROFILE_KEY]).to_pylist()))


class _LedgerValues:
    """The confirmed texts of one ledger read, by field: each field's (record ids, values) is picked
    out once (on the dictionary codes of the field column) and shared by every part's diff."""

    def __init__(self, confirmed: pd.DataFrame):
        self._fields = arrow(confirmed["field"]).dictionary_encode() if len(confirmed) else None
        self._ids = arrow(confirmed["record_id"]) if len(confirmed) else None
        self._values = arrow(confirmed["value"]) if len(confirmed) else None
        self._codes = {} if self._fields is None else {
            name: code for code, name in enumerate(self._fields.dictionary.to_pylist())}
        self._by_field: dict[str, tuple[pa.Array, pa.Array]] = {}

    def of(self, name: str) -> tuple[pa.Array, pa.Array] | None:
        """(record ids, confirmed texts) of ``name``, or None when the ledger has none."""
        code = self._codes.get(name)
        if code is None:
            return None
        if name not in self._by_field:
            rows = pc.equal(self._fields.indices, pa.scalar(code, self._fields.indices.type)).fill_null(False)
            self._by_field[name] = (self._ids.filter(rows), self._values.filter(rows))
        return self._by_field[name]

    def differs(self, frame: pd.DataFrame) -> np.ndarray:
        """True for each row of ``frame`` (``record_id, field, encoded``) whose (record, field) the
        ledger has not confirmed, or confirmed with another text: one hash lookup of record ids per field."""
        changed = np.ones(len(frame), dtype=bool)
        if frame.empty or not self._codes:
            return changed
        fields, ids, encoded = arrow(frame["field"]), arrow(frame["record_id"]), arrow(frame["encoded"])
        names = pc.unique(fields).to_pylist()
        for name in names:
            known = self.of(name)
            if known is None:
                continue
            ledger_ids, ledger_values = known
            if len(names) == 1:
                rows, part_ids, part_texts = None, ids, encoded
            else:
                rows = pc.equal(fields, pa.scalar(name, pa.large_string())).fill_null(False)
                part_ids, part_texts = ids.filter(rows), encoded.filter(rows)
            at = pc.index_in(part_ids, value_set=ledger_ids)
            same = pc.and_(pc.is_valid(at), pc.equal(part_texts, ledger_values.take(at.fill_null(0))).fill_null(False))
            same = same.to_numpy(zero_copy_only=False)
            if rows is None:
                changed[same] = False
            else:
                changed[np.flatnonzero(rows.to_numpy(zero_copy_only=False))] = ~same
        return changed


def _longest(statuses: pd.DataFrame) -> dict[str, int]:
    """Status field (as in the desired state) -> the longest value to write to it (0: only clears)."""
    if statuses.empty:
        return {}
    table = pa.table({"field": arrow(statuses["field"]), "length": pc.utf8_length(arrow(statuses["value"]))})
    longest = table.group_by("field").aggregate([("length", "max")]).to_pydict()
    return {name: int(n or 0) for name, n in sorted(zip(longest["field"], longest["length_max"]))
            if name is not None}
