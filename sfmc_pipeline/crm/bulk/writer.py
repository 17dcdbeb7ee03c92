"""Write one destination's change set through Salesforce Bulk API 2.0 jobs (used by the sync for change sets
of at least ``sync.bulk_threshold`` records; smaller ones, and records Bulk cannot carry, go through sObject
Collections). Per job: record it (``BulkJobStore``) before the create call, upload, close, poll with backoff,
then match the result CSVs to the records and confirm the succeeded ones before the job is forgotten, so a
crash at any point loses nothing. Jobs an earlier run left are settled by ``recovery``."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any, Callable, Iterable, Mapping, Sequence

from sfmc_pipeline.crm.bulk.csv_format import (
    Chunk,
    CsvLayout,
    column,
    flag,
)
from sfmc_pipeline.crm.bulk.job_store import BulkJobStore, StoredRecord
from sfmc_pipeline.crm.bulk.recovery import open_jobs_in_org, recover
from sfmc_pipeline.crm.bulk.results import (
    FAILED_RECORD,
    PENDING,
    SUCCEEDED,
    BulkJobFailed,
    BulkOutcome,
    JobReport,
    RecordOutcome,
)
from sfmc_pipeline.crm.bulk.routing import BulkRouting
from sfmc_pipeline.crm.ledger import Confirmed
from sfmc_pipeline.errors import ApiError
from sfmc_pipeline.salesforce.api_errors import RequestLimitExceeded
from sfmc_pipeline.salesforce.bulk_api import (
    ABORTED,
    FAILED,
    MAX_FIELD_CHARACTERS,
    MAX_RECORD_CHARACTERS,
    MAX_UPLOAD_BYTES,
    OPEN,
    TERMINAL_STATES,
    BulkIngestClient,
    JobInfo,
    parse_error,
)
from sfmc_pipeline.salesforce.ids import is_valid_id, to_18


class BulkWriter:
    """Writes one destination's records (``[(record_id, {field API name: value})]``, as the composite path gets
    them) through Bulk API 2.0 jobs, one upload per job, run one after the other. A job that ends ``Failed`` (or is
    aborted by someone else) raises :class:`BulkJobFailed` after what it processed is collected.
    ``REQUEST_LIMIT_EXCEEDED``, or daily usage at ``usage_threshold``, stops cleanly: the rest is pending. On a poll
    timeout (``poll_timeout_seconds``) the job stays recorded and its records are pending and in flight, for the
    next run's ``recover``. Any other API error propagates; a job that may process stays recorded.

    ``client``: a ``SalesforceClient``; ``state``: a :class:`BulkJobStore` for the client's target;
    ``destination``: the destination's name (scopes recorded jobs; defaults to ``sobject``); ``confirm``: called
    with the ledger rows of each job's succeeded records before the job is forgotten (e.g.
    ``lambda rows: ledger.record(obj, dest.name, run_id, rows)``); ``usage_threshold``: stop before a job when
    the daily API usage share (``Sforce-Limit-Info``) has reached it."""

    def __init__(
        self,
        client: Any,
        sobject: str,
        operation: str = "update",
        external_id_field: str | None = None,
        *,
        state: BulkJobStore,
        destination: str | None = None,
        poll_timeout_seconds: float = 1800,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        confirm: Callable[[list[Confirmed]], None] | None = None,
        usage_threshold: float | None = None,
        max_upload_bytes: int = MAX_UPLOAD_BYTES,
        max_field_characters: int = MAX_FIELD_CHARACTERS,
        max_record_characters: int = MAX_RECORD_CHARACTERS,
        first_poll_seconds: float = 1.0,
        max_poll_seconds: float = 30.0,
        log: Callable[[str], None] = lambda message: None,
    ):
        if operation not in ("update", "upsert"):
            raise ValueError(f"operation must be 'update' or 'upsert', got {operation!r}")
        if operation == "upsert" and not external_id_field:
            raise ValueError("an upsert needs external_id_field")
        self.client = client
        self.ingest = BulkIngestClient(client)
        self.sobject = sobject
        self.operation = operation
        self.csv = CsvLayout(operation, external_id_field)
        self.external_id_field = self.csv.external_id_field
        self.key_column = self.csv.key_column
        self.state = state
        self.destination = destination or sobject
        self.poll_timeout_seconds = poll_timeout_seconds
        self.sleep = sleep
        self.clock = clock
        self.confirm = confirm
        self.usage_threshold = usage_threshold
        self.max_upload_bytes = max_upload_bytes
        self.max_field_characters = max_field_characters
        self.max_record_characters = max_record_characters
        self.routing = BulkRouting(self.csv, max_upload_bytes, max_field_characters, max_record_characters)
        self.first_poll_seconds = first_poll_seconds
        self.max_poll_seconds = max_poll_seconds
        self.log = log

    # ------------------------------------------------------------------ routing (routing.py)

    def partition(self, records: Sequence[tuple[str, Mapping[str, Any]]]
                  ) -> tuple[list[tuple[str, Mapping[str, Any]]], list[tuple[str, Mapping[str, Any]]]]:
        """``(records Bulk can carry, records for composite)``, each in the given order (``BulkRouting``)."""
        return self.routing.partition(records)

    def composite_reason(self, record_id: str, fields: Mapping[str, Any]) -> str | None:
        """Why this record (on its own) must go through sObject Collections, or None when Bulk can carry it."""
        return self.routing.composite_reason(record_id, fields)

    # ------------------------------------------------------------------ writing

    def write(self, records: Sequence[tuple[str, Mapping[str, Any]]], *,
              owners: Mapping[str, str | None] | None = None, status_fields: Iterable[str] = ()) -> BulkOutcome:
        """Write ``records`` (already ``partition``-ed) and return every record's outcome. ``owners``: record id ->
        profile key (ledger ``profile_key``); ``status_fields``: the API names of status fields (ledger ``kind``).
        Records of a recorded job that may still be processing are not sent (pending, ``in_flight``). Raises
        :class:`BulkJobFailed` when a job ended Failed or was aborted by someone else; ``ValueError`` for a
        record ``partition`` would have sent to composite."""
        outcome = BulkOutcome()
        status_fields = frozenset(status_fields)
        owners = owners or {}
        start_requests = self.ingest.requests
        busy = self.state.in_flight(self.destination, self.sobject)
        todo: list[StoredRecord] = []
        for rid, fields in records:
            fields = dict(fields)
            if rid in busy:
                outcome.records[rid] = RecordOutcome(rid, PENDING, fields, owners.get(rid), job_id=busy[rid],
                                                     reason="in_flight", in_flight=True, status_fields=status_fields)
                continue
            todo.append(StoredRecord(rid, self.csv.key(rid, fields), owners.get(rid), fields))
        if busy and len(todo) < len(records):
            outcome.messages.append(
                f"{len(records) - len(todo)} record(s) are in a Bulk job an earlier run left processing; they are "
                "not sent again until recover() has collected that job")
        keys = Counter(r.key for r in todo) if self.operation == "upsert" else {}
        for r in todo:
            reason = self.routing.value_reason(r.record_id, r.fields, keys)
            if reason:
                raise ValueError(f"record {r.record_id} cannot go through Bulk API 2.0 ({reason}); partition() sends "
                                 "such records to composite")
        deadline = self.clock() + self.poll_timeout_seconds
        chunks = self.csv.chunks(todo, self.max_upload_bytes)
        try:
            for number, chunk in enumerate(chunks, start=1):
                if outcome.stopped is None:
                    outcome.stopped = self._stop_reason(deadline, number, len(chunks))
                if outcome.stopped is not None:
                    outcome.mark_pending(chunk.records, None, "stopped", False, status_fields)
                    continue
                self._run(chunk, outcome, deadline, status_fields)
        finally:
            outcome.requests = self.ingest.requests - start_requests
        for message in outcome.messages:
            self.log(f"{self.destination}: {message}")
        if outcome.stopped:
            self.log(f"{self.destination}: Bulk write stopped, {len(outcome.pending)} record(s) pending: "
                     f"{outcome.stopped}")
        if outcome.failures:
            raise BulkJobFailed("; ".join(outcome.failures), outcome)
        return outcome

    def _stop_reason(self, deadline: float, number: int, total: int) -> str | None:
        usage = self.client.api_usage
        if self.usage_threshold is not None and usage is not None and usage.share >= self.usage_threshold:
            return (f"daily API usage {usage.used}/{usage.limit} ({usage.share:.0%}) reached the "
                    f"{self.usage_threshold:.0%} threshold")
        if self.clock() >= deadline:
            return f"the {self.poll_timeout_seconds:g}s Bulk poll timeout passed before job {number} of {total}"
        return None

    def _run(self, chunk: Chunk, outcome: BulkOutcome, deadline: float, status_fields: frozenset[str]) -> None:
        """One job: record, create, upload, close, wait, collect. ``REQUEST_LIMIT_EXCEEDED`` stops cleanly (the
        records are pending; in flight while the job stays recorded)."""
        token = self.state.begin(self.destination, self.sobject, self.operation, self.external_id_field,
                                 status_fields, chunk.records)
        job_id: str | None = None
        try:
            try:
                job = self.ingest.create_job(self.sobject, self.operation, self.external_id_field)
            except ApiError as exc:
                if exc.status is not None and 400 <= exc.status < 500:
                    self.state.forget(token)  # refused: no job exists
                raise
            job_id = job.id
            self.state.attach(token, job.id, job.created_by_id)
            report = JobReport(job.id, job.state, len(chunk.records))
            outcome.jobs.append(report)
            outcome.min_requests += 4  # create, upload, close, one poll
            try:
                self.ingest.upload(job.id, chunk.data)
                self.state.advance(token, "uploaded")
                self._close(job.id)
            except Exception:  # a crash (BaseException) leaves the job recorded for recover()
                self.abandon(token, job.id)
                raise
            self.state.advance(token, "closed")
            info = self.wait(job.id, deadline, report)
            if info is None:
                outcome.timed_out = True
                outcome.stopped = (f"Bulk job {job.id} was still {report.state} after {self.poll_timeout_seconds:g}s; "
                                   "it stays recorded and the next run collects its results")
                outcome.mark_pending(chunk.records, job.id, "timeout", True, status_fields)
                return
            self.collect(token, info, chunk.records, outcome, report, status_fields)
        except RequestLimitExceeded as exc:
            outcome.stopped = f"Salesforce refused further requests: {exc}"
            recorded = self.state.in_flight(self.destination, self.sobject)
            for r in chunk.records:
                if r.record_id not in outcome.records:
                    flying = r.record_id in recorded
                    outcome.records[r.record_id] = RecordOutcome(
                        r.record_id, PENDING, r.fields, r.owner, job_id, reason="stopped", in_flight=flying,
                        status_fields=status_fields)

    def _close(self, job_id: str) -> JobInfo:
        try:
            return self.ingest.close(job_id)
        except RequestLimitExceeded:
            raise
        except ApiError:
            info = self.ingest.job(job_id)  # a resent close the first attempt already applied is refused
            if info.state != OPEN:
                return info
            raise

    def abandon(self, token: str, job_id: str) -> bool:
        """After a failed upload or close, or for a job an earlier run left Open: abort it so it can never process,
        and forget it (True). When even that is not possible it stays recorded (False): ``recover`` tries again."""
        try:
            self.ingest.abort(job_id)
        except ApiError:
            try:
                state = self.ingest.job(job_id).state
            except ApiError:
                return False
            if state not in (ABORTED, FAILED):
                return False
        self.state.forget(token)
        return True

    def wait(self, job_id: str, deadline: float, report: JobReport) -> JobInfo | None:
        """Poll with backoff until the job is terminal (its info) or the deadline has passed (None)."""
        delay = self.first_poll_seconds
        while True:
            remaining = deadline - self.clock()
            if remaining <= 0 and report.polls:
                return None
            self.sleep(max(0.0, min(delay, remaining)))
            info = self.ingest.job(job_id)
            report.polls += 1
            report.state = info.state
            if info.state in TERMINAL_STATES:
                return info
            if self.clock() >= deadline:
                return None
            delay = min(delay * 2, self.max_poll_seconds)

    # ------------------------------------------------------------------ results

    def collect(self, token: str, info: JobInfo, records: list[StoredRecord], outcome: BulkOutcome,
                report: JobReport, status_fields: frozenset[str]) -> None:
        """Read the result CSVs the job's counts say are non-empty and match their rows to ``records`` by the key
        column, never by position: succeeded (``sf__Id``, upsert ``sf__Created``), failed (``sf__Error``),
        unprocessed or in no result (pending). ``confirm`` gets the succeeded rows, then the job is forgotten."""
        report.state, report.processed, report.failed = info.state, info.records_processed, info.records_failed
        report.error_message = info.error_message
        lookup = self._lookup(records)
        settled: dict[str, RecordOutcome] = {}
        unmatched = 0

        def rows(fetch):
            nonlocal unmatched
            outcome.min_requests += 1
            for row in fetch(info.id):
                record = lookup(column(row, self.key_column))
                if record is None or record.record_id in settled:
                    unmatched += 1
                    continue
                yield record, row

        if info.records_processed - info.records_failed > 0:
            for record, row in rows(self.ingest.successful_results):
                created = flag(row.get("sf__Created")) if self.operation == "upsert" else None
                settled[record.record_id] = RecordOutcome(
                    record.record_id, SUCCEEDED, record.fields, record.owner, info.id,
                    crm_id=(row.get("sf__Id") or "").strip() or None, created=created, status_fields=status_fields)
        if info.records_failed > 0:
            for record, row in rows(self.ingest.failed_results):
                settled[record.record_id] = RecordOutcome(
                    record.record_id, FAILED_RECORD, record.fields, record.owner, info.id,
                    crm_id=(row.get("sf__Id") or "").strip() or None, errors=(parse_error(row.get("sf__Error", "")),),
                    status_fields=status_fields)
        if info.records_processed < len(records):
            for record, _ in rows(self.ingest.unprocessed_records):
                settled[record.record_id] = RecordOutcome(
                    record.record_id, PENDING, record.fields, record.owner, info.id, reason="unprocessed",
                    status_fields=status_fields)
        for record in records:
            if record.record_id not in settled:
                settled[record.record_id] = RecordOutcome(
                    record.record_id, PENDING, record.fields, record.owner, info.id, reason="not_reported",
                    status_fields=status_fields)
        if unmatched:
            outcome.messages.append(f"Bulk job {info.id}: {unmatched} result row(s) matched no record sent")
        missing = sum(r.reason == "not_reported" for r in settled.values())
        if missing:
            outcome.messages.append(f"Bulk job {info.id}: {missing} record(s) are in no result; they stay pending")
        settled = {r.record_id: settled[r.record_id] for r in records}  # in the order sent, whatever the results'
        confirmed = [row for r in settled.values() for row in r.confirmed()]
        if self.confirm is not None and confirmed:
            self.confirm(confirmed)  # before the job is forgotten: a crash in between collects it again
        self.state.forget(token)
        outcome.records.update(settled)
        if info.state in (FAILED, ABORTED):
            said = f": {info.error_message}" if info.error_message else ""
            outcome.failures.append(
                f"Salesforce Bulk API 2.0 job {info.id} ({self.operation} of {self.sobject}) ended {info.state}{said} "
                f"({info.records_processed} of {len(records)} record(s) processed, {info.records_failed} failed; the "
                "rest are sent again by the next run)")

    def _lookup(self, records: list[StoredRecord]) -> Callable[[str | None], StoredRecord | None]:
        exact = {r.key: r for r in records}
        by18 = {to_18(r.key[:15]): r for r in records if self.operation == "update" and is_valid_id(r.key)}

        def find(key: str | None) -> StoredRecord | None:
            if key is None:
                return None
            found = exact.get(key)
            if found is None and self.operation == "update" and is_valid_id(key):
                found = by18.get(to_18(key[:15]))
            return found

        return find

    # ------------------------------------------------------------------ recovery (recovery.py)

    def in_flight(self) -> dict[str, str]:
        """record id -> job id of every record in a recorded job of this destination (``write`` does not send
        them; drop them from composite batches too, and count them as pending)."""
        return self.state.in_flight(self.destination, self.sobject)

    def recover(self, *, check_org: bool | None = None) -> BulkOutcome | None:
        """Settle the jobs earlier runs left recorded (``recovery.recover``)."""
        return recover(self, check_org=check_org)

    def open_jobs_in_org(self) -> tuple[list[JobInfo], bool]:
        """Open ingest jobs of this object in the org made by this integration's user (``recovery``)."""
        return open_jobs_in_org(self)
