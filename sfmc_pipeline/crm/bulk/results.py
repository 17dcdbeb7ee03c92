"""What a Bulk API 2.0 write or recovery learned: each record's outcome, each job's report, and the error a
job that ended Failed raises. Succeeded records turn into the ledger rows the sync confirms."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from sfmc_pipeline.crm.ledger import Confirmed
from sfmc_pipeline.crm.payloads import ATTRIBUTE, STATUS
from sfmc_pipeline.errors import ApiError
from sfmc_pipeline.salesforce.bulk_api import JobInfo
from sfmc_pipeline.salesforce.records import RecordError

SUCCEEDED, FAILED_RECORD, PENDING = "succeeded", "failed", "pending"


@dataclass(frozen=True)
class RecordOutcome:
    """What became of one record. ``record_id`` is the caller's key (the Id for update, the external id value
    for upsert); ``fields`` are the values sent. ``status``: ``succeeded`` (``crm_id`` = ``sf__Id``; ``created``
    for upsert), ``failed`` (``errors`` from ``sf__Error``) or ``pending`` (not written: ``reason`` says why;
    ``in_flight`` when a recorded job may still write it, so it must not be sent again before ``recover``)."""

    record_id: str
    status: str
    fields: Mapping[str, Any]
    owner: str | None = None
    job_id: str | None = None
    crm_id: str | None = None
    created: bool | None = None
    errors: tuple[RecordError, ...] = ()
    reason: str | None = None  # pending: unprocessed, not_reported, timeout, stopped, in_flight, aborted, ...
    in_flight: bool = False
    status_fields: frozenset[str] = frozenset()

    @property
    def error(self) -> RecordError:
        """The first error of a failed record (``UNKNOWN`` when Salesforce gave none)."""
        return self.errors[0] if self.errors else RecordError("UNKNOWN", "no error detail returned")

    def confirmed(self) -> list[Confirmed]:
        """Ledger rows for a succeeded record: one per field sent (``crm_id`` falls back to ``record_id``)."""
        if self.status != SUCCEEDED:
            return []
        return [
            Confirmed(self.record_id, name, STATUS if name in self.status_fields else ATTRIBUTE, self.owner,
                      self.crm_id or self.record_id, value)
            for name, value in self.fields.items()
        ]


@dataclass
class JobReport:
    job_id: str
    state: str
    records: int
    processed: int = 0
    failed: int = 0
    polls: int = 0
    error_message: str | None = None
    recovered: bool = False  # recorded by an earlier run


@dataclass
class BulkOutcome:
    """Per-record outcomes of ``write`` or ``recover``, keyed by record id, plus what it cost.

    ``requests``: API requests sent (job calls, polls, results; transport retries not counted).
    ``min_requests``: what the same work needs at the least: per job create + upload + close + one poll + each
    non-empty result CSV (a recovered job: one look-up, + abort, + each non-empty result CSV), + the pages of
    the job list; ``requests - min_requests`` is the extra polls."""

    records: dict[str, RecordOutcome] = field(default_factory=dict)
    jobs: list[JobReport] = field(default_factory=list)
    requests: int = 0
    min_requests: int = 0
    stopped: str | None = None
    timed_out: bool = False
    failures: list[str] = field(default_factory=list)  # jobs that ended Failed/Aborted, with Salesforce's message
    unrecorded_jobs: list[JobInfo] = field(default_factory=list)  # open jobs in the org this store does not know
    messages: list[str] = field(default_factory=list)

    @property
    def job_id(self) -> str | None:
        """The first job's id (a change set under ``max_upload_bytes`` has exactly one)."""
        return self.jobs[0].job_id if self.jobs else None

    @property
    def job_ids(self) -> list[str]:
        return [j.job_id for j in self.jobs]

    def _with(self, status: str) -> list[RecordOutcome]:
        return [r for r in self.records.values() if r.status == status]

    @property
    def succeeded(self) -> list[RecordOutcome]:
        return self._with(SUCCEEDED)

    @property
    def failed(self) -> list[RecordOutcome]:
        return self._with(FAILED_RECORD)

    @property
    def pending(self) -> list[RecordOutcome]:
        return self._with(PENDING)

    @property
    def in_flight(self) -> set[str]:
        return {r.record_id for r in self.records.values() if r.in_flight}

    @property
    def created(self) -> int:
        return sum(bool(r.created) for r in self.succeeded)

    def confirmed_rows(self) -> list[Confirmed]:
        """Ledger rows of every succeeded record (already passed to ``confirm`` when the writer has one)."""
        return [row for r in self.succeeded for row in r.confirmed()]

    def mark_pending(self, records: Iterable[Any], job_id: str | None, reason: str, in_flight: bool,
                     status_fields: frozenset[str]) -> None:
        """Mark records (``StoredRecord``s) pending unless they already have an outcome."""
        for r in records:
            if r.record_id not in self.records:
                self.records[r.record_id] = RecordOutcome(
                    r.record_id, PENDING, r.fields, r.owner, job_id, reason=reason, in_flight=in_flight,
                    status_fields=status_fields)


class BulkJobFailed(ApiError):
    """A Bulk API 2.0 job ended Failed (or was aborted by someone else). ``outcome`` holds everything the
    write learned, records the job did process included (already confirmed through ``confirm``)."""

    def __init__(self, message: str, outcome: BulkOutcome):
        super().__init__(message, retryable=False, code="BULK_JOB_FAILED")
        self.outcome = outcome
