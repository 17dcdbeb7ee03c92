"""Crash recovery of Bulk API 2.0 jobs, at the start of every sync of a destination (before its change set is
computed, even when that run will not use Bulk): every job an earlier run left recorded is looked up and settled,
and open jobs in the org this store does not know about are reported, never touched. Records of a job that may
still be processing are never sent again (they stay pending, ``in_flight``)."""

from __future__ import annotations

from typing import Callable, Protocol

from sfmc_pipeline.crm.bulk.job_store import BulkJobStore, StoredJob, StoredRecord
from sfmc_pipeline.crm.bulk.results import BulkOutcome, JobReport
from sfmc_pipeline.errors import ApiError
from sfmc_pipeline.salesforce.api_errors import RequestLimitExceeded
from sfmc_pipeline.salesforce.bulk_api import (
    ABORTED,
    ACTIVE_STATES,
    IN_PROGRESS,
    OPEN,
    UPLOAD_COMPLETE,
    BulkIngestClient,
    JobInfo,
)


class JobLifecycle(Protocol):
    """What recovery uses of a ``BulkWriter``: its destination, job store and ingest client, and the steps of a
    job's lifecycle it shares with ``write``."""

    ingest: BulkIngestClient
    state: BulkJobStore
    destination: str
    sobject: str
    poll_timeout_seconds: float
    clock: Callable[[], float]
    log: Callable[[str], None]

    def abandon(self, token: str, job_id: str) -> bool: ...

    def wait(self, job_id: str, deadline: float, report: JobReport) -> JobInfo | None: ...

    def collect(self, token: str, info: JobInfo, records: list[StoredRecord], outcome: BulkOutcome,
                report: JobReport, status_fields: frozenset[str]) -> None: ...


def recover(writer: JobLifecycle, *, check_org: bool | None = None) -> BulkOutcome | None:
    """Settle the jobs earlier runs left recorded (``_recover_job``); None when there were none and
    ``check_org`` is not True. ``check_org``: list the org's ingest jobs to report unrecorded open ones
    (default: only when something was recorded). Never raises for a job's failure; API errors propagate."""
    stored = writer.state.jobs(writer.destination, writer.sobject)
    if not stored and not check_org:
        return None
    outcome = BulkOutcome()
    start_requests = writer.ingest.requests
    deadline = writer.clock() + writer.poll_timeout_seconds
    try:
        for job in stored:
            records = writer.state.records(job.token)
            if outcome.stopped is not None:
                outcome.mark_pending(records, job.job_id, "stopped", True, job.status_fields)
                continue
            try:
                _recover_job(writer, job, records, outcome, deadline)
            except RequestLimitExceeded as exc:
                outcome.stopped = f"Salesforce refused further requests: {exc}"
                outcome.mark_pending(records, job.job_id or "unknown", "stopped", True, job.status_fields)
        if outcome.stopped is None and (check_org or (check_org is None and stored)):
            _report_unrecorded(writer, outcome)
    finally:
        outcome.requests = writer.ingest.requests - start_requests
    for message in outcome.messages + outcome.failures:
        writer.log(f"{writer.destination}: {message}")
    outcome.messages.extend(outcome.failures)  # an earlier run's job: reported, not raised
    outcome.failures = []
    return outcome


def _recover_job(writer: JobLifecycle, job: StoredJob, records: list[StoredRecord], outcome: BulkOutcome,
                 deadline: float) -> None:
    """``Open`` (the run died before closing it): aborted and forgotten, its records sent again by the diff.
    ``UploadComplete``/``InProgress``: waited for (within the timeout), then collected; still running at the
    timeout: left recorded, its records in flight. ``JobComplete``: collected and confirmed. ``Failed``/``Aborted``:
    what it processed is collected, the rest is sent again. A job Salesforce no longer knows (terminal jobs are
    deleted after 7 days) is forgotten."""
    if job.job_id is None:
        writer.state.forget(job.token)
        outcome.mark_pending(records, None, "never_created", False, job.status_fields)
        outcome.messages.append(
            f"an earlier run died while creating a Bulk job for {len(records)} record(s); they are sent again "
            "(any job it may have created holds no data and is listed below if still open)")
        return
    try:
        info = writer.ingest.job(job.job_id)
    except RequestLimitExceeded:
        raise
    except ApiError as exc:
        if exc.status != 404:
            raise
        writer.state.forget(job.token)
        outcome.mark_pending(records, job.job_id, "job_gone", False, job.status_fields)
        outcome.messages.append(f"Bulk job {job.job_id} no longer exists in the org; its {len(records)} "
                                "record(s) are sent again")
        return
    outcome.min_requests += 1
    report = JobReport(job.job_id, info.state, len(records), polls=1, recovered=True)
    outcome.jobs.append(report)
    if info.state == OPEN:
        outcome.min_requests += 1
        if not writer.abandon(job.token, job.job_id):
            outcome.mark_pending(records, job.job_id, "open_job", True, job.status_fields)
            outcome.messages.append(f"Bulk job {job.job_id} left Open by an earlier run could not be aborted; "
                                    "it stays recorded")
            return
        report.state = ABORTED
        outcome.mark_pending(records, job.job_id, "aborted", False, job.status_fields)
        outcome.messages.append(f"aborted Bulk job {job.job_id} an earlier run left Open (never closed, nothing "
                                f"written); its {len(records)} record(s) are sent again")
        return
    if info.state in (UPLOAD_COMPLETE, IN_PROGRESS):
        info = writer.wait(job.job_id, deadline, report)
        if info is None:
            outcome.timed_out = True
            outcome.stopped = (f"Bulk job {job.job_id} of an earlier run is still {report.state} after "
                               f"{writer.poll_timeout_seconds:g}s; it stays recorded")
            outcome.mark_pending(records, job.job_id, "timeout", True, job.status_fields)
            return
    writer.collect(job.token, info, records, outcome, report, job.status_fields)


def open_jobs_in_org(writer: JobLifecycle) -> tuple[list[JobInfo], bool]:
    """``(open ingest jobs of this object in the org made by this integration's user (any user when none is
    known yet), complete listing)``."""
    jobs, complete = writer.ingest.jobs()
    users = writer.state.user_ids()
    mine = [j for j in jobs if j.object.lower() == writer.sobject.lower() and j.state in ACTIVE_STATES
            and (not users or j.created_by_id in users)]
    return mine, complete


def _report_unrecorded(writer: JobLifecycle, outcome: BulkOutcome) -> None:
    before = writer.ingest.requests
    jobs, complete = open_jobs_in_org(writer)
    outcome.min_requests += writer.ingest.requests - before
    recorded = {j.job_id for j in writer.state.jobs(writer.destination, writer.sobject)} | set(outcome.job_ids)
    outcome.unrecorded_jobs = [j for j in jobs if j.id not in recorded]
    if outcome.unrecorded_jobs:
        listed = ", ".join(f"{j.id} ({j.state}, created {j.created_date or '?'})" for j in outcome.unrecorded_jobs)
        outcome.messages.append(
            f"{len(outcome.unrecorded_jobs)} open Bulk job(s) of {writer.sobject} in the org are not recorded by "
            f"this sync and were left alone: {listed}. Abort stale ones in Setup > Bulk Data Load Jobs.")
    if not complete:
        outcome.messages.append("the org's Bulk job list was longer than the pages read; not all jobs were checked")

