"""The write step: a checked change set goes out through sObject Collections (batches of up to 200,
``allOrNone`` false, up to ``sync.concurrent_requests`` in flight against a target that declares it can
take them) or, at ``sync.bulk_threshold`` records and more, through a Bulk API 2.0 job (the records Bulk
cannot carry, and its lock failures, through Collections). Every result is confirmed in the ledger as
it comes back, in this thread (one SQLite writer), so a killed run loses at most the batches in flight.
``UNABLE_TO_LOCK_ROW`` records are re-sent later in the run and halve the requests in flight;
``REQUEST_LIMIT_EXCEEDED``, or daily usage at the threshold, stops submitting (the rest stays pending)."""

from __future__ import annotations

from collections import Counter, deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from itertools import chain, islice
from typing import Any, Callable, Iterable, Iterator, Sequence

from sfmc_pipeline.config.destinations import DestinationConfig, SyncSettings
from sfmc_pipeline.crm.bulk.results import (
    FAILED_RECORD,
    SUCCEEDED,
    BulkJobFailed,
    BulkOutcome,
)
from sfmc_pipeline.crm.bulk.writer import BulkWriter
from sfmc_pipeline.crm.change_rows import batches
from sfmc_pipeline.crm.diff import Changes
from sfmc_pipeline.crm.ledger import Confirmed, SyncLedger
from sfmc_pipeline.crm.payloads import ATTRIBUTE, STATUS
from sfmc_pipeline.crm.standing_failures import StandingScreen
from sfmc_pipeline.crm.sync_errors import error_row
from sfmc_pipeline.salesforce.api_errors import RequestLimitExceeded
from sfmc_pipeline.salesforce.records import (
    MAX_RECORDS_PER_REQUEST,
    CrmTarget,
    RecordError,
    RecordResult,
)

LOCKED = "UNABLE_TO_LOCK_ROW"


@dataclass
class Sent:
    """What the send step did, filled as results come back."""

    sent: int = 0  # record sends, re-sends included
    succeeded: int = 0
    created: int = 0
    failed: Counter = field(default_factory=Counter)  # Salesforce statusCode -> records
    repeated: Counter = field(default_factory=Counter)  # of ``failed``: failing again the way they stood failed
    pending: int = 0  # records left for the next run (stopped, or a Bulk job not finished)
    requests: int = 0  # write requests (sObject Collections calls)
    min_requests: int | None = None  # the fewest write requests for the change set, when Bulk took part of it
    concurrency: int = 1  # write requests allowed in flight at once at the end (lock errors halve it)
    max_in_flight: int = 0
    bulk_requests: int = 0  # Bulk API 2.0 requests (jobs, uploads, polls, results; recovery of earlier jobs)
    bulk_jobs: list[str] = field(default_factory=list)
    bulk_recovered: int = 0  # records of an earlier run's Bulk job confirmed at the start of this run
    stopped: str | None = None
    errors: list[dict] = field(default_factory=list)  # sync-errors rows, in the order of the batches
    unsettled: set[str] = field(default_factory=set)  # failed or pending record ids


class SendQueue:
    """The records still to send, in order: those put back at the front (a refused batch), then the change set's
    records, read as they are taken (a batch at a time, never all at once), then those added at the back (lock
    retries)."""

    def __init__(self, records: Iterable[tuple[str, dict]]):
        self._front: deque = deque()
        self._back: deque = deque()
        self._rest = iter(records)
        self._left = len(records)  # type: ignore[arg-type]

    def __len__(self) -> int:
        return len(self._front) + self._left + len(self._back)

    def __bool__(self) -> bool:
        return len(self) > 0

    def popleft(self) -> tuple[str, dict]:
        if self._front:
            return self._front.popleft()
        if self._left:
            self._left -= 1
            return next(self._rest)
        return self._back.popleft()

    def extend(self, records: Iterable[tuple[str, dict]]) -> None:
        self._back.extend(records)

    def extendleft(self, records: Iterable[tuple[str, dict]]) -> None:
        self._front.extendleft(records)

    def __iter__(self) -> Iterator[tuple[str, dict]]:
        yield from self._front
        yield from islice(self._rest, self._left)
        yield from self._back


class Sender:
    """Sends one destination's change sets; ``result`` accumulates what happened over the run."""

    def __init__(self, dest: DestinationConfig, settings: SyncSettings, target: CrmTarget, ledger: SyncLedger, *,
                 run_id: str, log: Callable[[str], None], bulk: BulkWriter | None):
        self.dest, self.settings, self.target, self.ledger = dest, settings, target, ledger
        self.run_id, self.log, self.bulk = run_id, log, bulk
        self.result = Sent()
        self._changes: Changes | None = None
        self._screen: StandingScreen | None = None
        self._status_names: set[str] = set()

    def start(self) -> None:
        """A new run: nothing sent yet."""
        self.result = Sent()

    def recover_bulk(self) -> None:
        """Settle the Bulk jobs an earlier run left (a crash, a poll timeout): before the ledger is read."""
        recovered = self.bulk.recover()
        if recovered is None:
            return
        self.result.bulk_requests += recovered.requests
        self.result.bulk_recovered = len(recovered.succeeded)
        for message in recovered.messages:
            self.log(f"{self.dest.name}: {message}")

    def send(self, to_send: Sequence[tuple[str, dict]], changes: Changes, screen: StandingScreen,
             status_names: set[str], pending_before: int) -> Sent:
        """Every ``(record_id, fields)`` of ``to_send`` goes out and each per-record result is confirmed as it
        comes back. ``changes``: the diff (owners, ledger texts); ``status_names``: the API names of the status
        fields; ``pending_before``: records the plan already left pending (for the log line)."""
        self._changes, self._screen, self._status_names = changes, screen, status_names
        try:
            if self.bulk is not None and len(to_send) >= self.settings.bulk_threshold:
                to_send = self._send_bulk_parts(to_send)
            self.send_collections(to_send, pending_before)
        finally:
            self._changes = None  # the change set's per-record values: not held past the send
        return self.result

    # ------------------------------------------------------------------ Bulk API 2.0

    def _send_bulk_parts(self, to_send: Iterable[tuple[str, dict]]) -> list[tuple[str, dict]]:
        """A large change set through Bulk API 2.0, ``sync.partition_records`` records at a time (each part one or
        more jobs, its CSV made from that part only); returns the records for sObject Collections: those Bulk cannot
        carry, and its lock failures."""
        composite: list[tuple[str, dict]] = []
        bulk_requests = 0
        parts = batches(to_send, self.settings.partition_records)
        for part in parts:
            if self.result.stopped:  # an earlier part stopped (daily usage, poll timeout): the rest waits
                for rid, _ in chain(part, chain.from_iterable(parts)):
                    self.result.pending += 1
                    self.result.unsettled.add(rid)
                break
            bulk_records, others = self.bulk.partition(part)
            del part
            composite += others
            if bulk_records:
                locked, least = self.send_bulk(bulk_records)
                composite += locked
                bulk_requests += least
        self.result.min_requests = bulk_requests + -(-len(composite) // MAX_RECORDS_PER_REQUEST)
        return composite

    def send_bulk(self, records: list[tuple[str, dict]]) -> tuple[list[tuple[str, dict]], int]:
        """One Bulk API 2.0 write; its results are counted like Collections results and its successes
        confirmed in the ledger (by the writer, job by job). Returns the records that hit
        ``UNABLE_TO_LOCK_ROW``, to be re-sent through Collections in this run, and the fewest requests the write
        needed."""
        try:
            outcome = self.bulk.write(records, owners=self._changes.owners, status_fields=self._status_names)
        except BulkJobFailed as exc:
            self._count_bulk(exc.outcome, sent=len(records))
            raise
        return self._count_bulk(outcome, sent=len(records)), outcome.min_requests

    def _count_bulk(self, outcome: BulkOutcome, *, sent: int) -> list[tuple[str, dict]]:
        result = self.result
        result.sent += sent
        result.bulk_requests += outcome.requests
        result.bulk_jobs.extend(outcome.job_ids)
        locked: list[tuple[str, dict]] = []
        for record in outcome.records.values():
            if record.status == SUCCEEDED:
                result.succeeded += 1
                result.created += bool(record.created)
                self._screen.succeeded([record.record_id])
            elif record.status == FAILED_RECORD:
                error = record.error or RecordError("UNKNOWN", "no error detail returned")
                if error.status_code == LOCKED and self.settings.lock_retries:
                    locked.append((record.record_id, dict(record.fields)))
                    continue
                self._failed(record.record_id, dict(record.fields), error)
                result.errors.append(self._error_row(record.record_id, dict(record.fields), error))
            else:  # pending: unprocessed, timed out or stopped; the next run settles or re-sends it
                result.pending += 1
                result.unsettled.add(record.record_id)
        self._screen.flush()
        if outcome.stopped:
            result.stopped = outcome.stopped
        return locked

    # ------------------------------------------------------------------ sObject Collections

    def concurrency(self) -> int:
        """Requests in flight at once: ``sync.concurrent_requests`` for a target whose class declares
        ``supports_concurrent_requests`` (the Salesforce client), else one (the local SQLite target,
        and any wrapper that does not say it is thread-safe)."""
        if getattr(type(self.target), "supports_concurrent_requests", False):
            return max(1, int(self.settings.concurrent_requests))
        return 1

    def send_collections(self, to_send: Sequence[tuple[str, dict]], pending_before: int = 0) -> None:
        """sObject Collections batches of ``batch_size``, up to ``concurrency()`` in flight.

        Which batches go out when: the first batch goes alone (it logs in if needed and brings back the
        org's usage before more requests are in flight); after it, full batches go out while fewer than
        the limit are in flight; the last, partial batch waits until nothing else is in flight, so that
        records handed back for a lock retry can ride along in it. Before each submission the daily
        usage is checked. Results are handled here, in this thread, as they complete: counted,
        confirmed in the ledger (one transaction each) and lock failures queued for a re-send."""
        result = self.result
        queue = SendQueue(to_send)
        lock_attempts: Counter = Counter()
        limit = self.concurrency()
        result.concurrency = limit
        batch_errors: list[tuple[int, list[dict]]] = []
        if limit == 1:
            self._send_sequentially(queue, lock_attempts, batch_errors)
        else:
            self._send_concurrently(queue, lock_attempts, batch_errors, limit)
        for _, errors in sorted(batch_errors, key=lambda item: item[0]):
            result.errors.extend(errors)
        result.pending += len(queue)
        result.unsettled.update(rid for rid, _ in queue)
        if result.stopped:
            self.log(f"{self.dest.name}: stopped early, {pending_before + result.pending} record(s) pending for "
                     f"the next run: {result.stopped}")

    def _usage_stop(self) -> bool:
        usage = self.target.api_usage
        if usage is not None and usage.share >= self.settings.usage_threshold:
            self.result.stopped = (
                f"daily API usage {usage.used}/{usage.limit} ({usage.share:.0%}) reached the "
                f"{self.settings.usage_threshold:.0%} threshold"
            )
            return True
        return False

    def _send_sequentially(self, queue: SendQueue, lock_attempts: Counter, batch_errors: list) -> None:
        size = self.settings.batch_size
        number = 0
        while queue:
            if self._usage_stop():
                break
            batch = [queue.popleft() for _ in range(min(size, len(queue)))]
            self.result.max_in_flight = max(self.result.max_in_flight, 1)
            try:
                results = self._write(batch)
            except RequestLimitExceeded as exc:
                queue.extendleft(reversed(batch))
                self.result.stopped = f"Salesforce refused further requests: {exc}"
                break
            number += 1
            retry, errors, _ = self._confirm(batch, results, lock_attempts)
            batch_errors.append((number, errors))
            queue.extend(retry)

    def _send_concurrently(self, queue: SendQueue, lock_attempts: Counter, batch_errors: list, limit: int) -> None:
        result = self.result
        size = self.settings.batch_size
        in_flight: dict[Future, tuple[int, list]] = {}
        number = completed = 0
        failure: BaseException | None = None
        pool = ThreadPoolExecutor(max_workers=limit, thread_name_prefix=f"sync-{self.dest.name}")
        clean = False
        try:
            while True:
                while queue and result.stopped is None and failure is None:
                    alone = not in_flight
                    full = len(queue) >= size
                    if not alone and (completed == 0 or len(in_flight) >= limit or not full):
                        break
                    if self._usage_stop():
                        break
                    batch = [queue.popleft() for _ in range(min(size, len(queue)))]
                    number += 1
                    in_flight[pool.submit(self._write, batch)] = (number, batch)
                    result.max_in_flight = max(result.max_in_flight, len(in_flight))
                if not in_flight:
                    break
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in sorted(done, key=lambda f: in_flight[f][0]):
                    seq, batch = in_flight.pop(future)
                    try:
                        results = future.result()
                    except RequestLimitExceeded as exc:
                        queue.extendleft(reversed(batch))
                        result.stopped = result.stopped or f"Salesforce refused further requests: {exc}"
                        continue
                    except BaseException as exc:  # noqa: BLE001 - re-raised once the batches in flight are recorded
                        failure = failure or exc
                        continue
                    completed += 1
                    retry, errors, locked = self._confirm(batch, results, lock_attempts)
                    batch_errors.append((seq, errors))
                    queue.extend(retry)
                    if locked and limit > 1:
                        limit = max(1, limit // 2)
                        result.concurrency = limit
                        self.log(f"{self.dest.name}: {LOCKED} in a batch; at most {limit} request(s) in flight "
                                 "for the rest of the run")
            clean = True
        finally:
            # normally nothing is in flight here; after an interrupt the requests finish on their own
            pool.shutdown(wait=clean, cancel_futures=True)
        if failure is not None:
            raise failure

    def _confirm(self, batch: list[tuple[str, dict]], results: list[RecordResult], lock_attempts: Counter
                 ) -> tuple[list[tuple[str, dict]], list[dict], bool]:
        """Count one batch's per-record results and confirm its successes in the ledger (one
        transaction). Returns ``(records to re-send for a lock retry, error rows, whether any record
        hit UNABLE_TO_LOCK_ROW)``."""
        result = self.result
        result.requests += 1
        result.sent += len(batch)
        confirmed_rows: list[Confirmed] = []
        retry: list[tuple[str, dict]] = []
        errors: list[dict] = []
        locked = False
        succeeded: list[str] = []
        encoded, owners = self._changes.encoded, self._changes.owners
        for (rid, fields), outcome in zip(batch, results):
            if outcome.success:
                result.succeeded += 1
                result.created += bool(outcome.created)
                succeeded.append(rid)
                texts = encoded.get(rid, ())
                owner, crm_id = owners.get(rid), outcome.id or rid
                confirmed_rows.extend(
                    Confirmed(rid, name, STATUS if name in self._status_names else ATTRIBUTE, owner, crm_id, value,
                              texts[i] if i < len(texts) else None)  # the upsert key added last: encoded then
                    for i, (name, value) in enumerate(fields.items())
                )
                continue
            if outcome.error_code == LOCKED:
                locked = True
                if lock_attempts[rid] < self.settings.lock_retries:
                    lock_attempts[rid] += 1
                    retry.append((rid, fields))  # transient: re-sent in a later request of this run
                    continue
            error = outcome.errors[0] if outcome.errors else RecordError("UNKNOWN", "no error detail returned")
            self._failed(rid, fields, error)
            errors.append(self._error_row(rid, fields, error))
        self.ledger.record(self.dest.object, self.dest.name, self.run_id, confirmed_rows)
        self._screen.succeeded(succeeded)
        self._screen.flush()
        return retry, errors, locked

    def _failed(self, rid: str, fields: dict[str, Any], error: RecordError) -> None:
        """Count a record Salesforce refused, and mark it when its failure stands (gone, or its values rejected)."""
        self.result.failed[error.status_code] += 1
        self.result.unsettled.add(rid)
        fields = self._changes.records.get(rid, fields)  # as the diff made them: the field order of their texts
        if self._screen.failed(rid, fields, error, self._changes.encoded.get(rid, ())):
            self.result.repeated[error.status_code] += 1

    def _error_row(self, rid: str, fields: dict[str, Any], error: RecordError) -> dict:
        return error_row(self.run_id, self.dest.name, self.dest.object, rid, fields, error, "failed")

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
