"""Salesforce Bulk API 2.0 ingest client: jobs, CSV uploads and result CSVs, over the REST client's session.

Every call is one API request, counted in ``Sforce-Limit-Info`` like any other REST call. Errors, login, 401
re-login, retries, limit info and redaction are the ``SalesforceClient``'s (``SalesforceClient.request``). Each
method says the contract of its call, from Salesforce's Bulk API 2.0 documentation.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

from sfmc_pipeline.errors import ApiError
from sfmc_pipeline.salesforce.records import RecordError

OPEN, UPLOAD_COMPLETE, IN_PROGRESS = "Open", "UploadComplete", "InProgress"
JOB_COMPLETE, FAILED, ABORTED = "JobComplete", "Failed", "Aborted"
TERMINAL_STATES = frozenset({JOB_COMPLETE, FAILED, ABORTED})
ACTIVE_STATES = frozenset({OPEN, UPLOAD_COMPLETE, IN_PROGRESS})

MAX_UPLOAD_BYTES = 100_000_000
"""Raw CSV bytes per upload: 150 MB after base64 encoding is about 112 MB raw; Salesforce recommends at most 100 MB."""
MAX_FIELD_CHARACTERS = 32_000
"""Bulk API 2.0 limit on the characters of one field value (below a Long Text Area's 131,072)."""
MAX_RECORD_CHARACTERS = 400_000
"""Bulk API 2.0 limit on the characters of one record."""
MAX_FIELDS_PER_RECORD = 5_000
NULL = "#N/A"
"""The CSV cell that sets a field to null (an empty cell leaves the field as it is)."""

_CSV = "text/csv"
_JSON = "application/json"
_STATUS_CODE = re.compile(r"^[A-Z][A-Z0-9_]*$")
_FIELD_LIST = re.compile(r"^[A-Za-z][A-Za-z0-9_]*(?:\s*,\s*[A-Za-z][A-Za-z0-9_]*)*$")
_API_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_JOB_ID = re.compile(r"^[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?$")


@dataclass(frozen=True)
class JobInfo:
    """An ingest job as Salesforce reports it."""

    id: str
    state: str
    object: str = ""
    operation: str = ""
    external_id_field: str | None = None
    created_by_id: str | None = None
    created_date: str | None = None
    line_ending: str | None = None
    column_delimiter: str | None = None
    records_processed: int = 0
    records_failed: int = 0
    error_message: str | None = None
    job_type: str | None = None

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> JobInfo:
        def count(key: str) -> int:
            try:
                return int(data.get(key) or 0)
            except (TypeError, ValueError):
                return 0

        return cls(
            id=str(data["id"]),
            state=str(data.get("state") or ""),
            object=str(data.get("object") or ""),
            operation=str(data.get("operation") or ""),
            external_id_field=data.get("externalIdFieldName") or None,
            created_by_id=data.get("createdById") or None,
            created_date=data.get("createdDate") or None,
            line_ending=data.get("lineEnding") or None,
            column_delimiter=data.get("columnDelimiter") or None,
            records_processed=count("numberRecordsProcessed"),
            records_failed=count("numberRecordsFailed"),
            error_message=data.get("errorMessage") or None,
            job_type=data.get("jobType") or None,
        )

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES


class BulkIngestClient:
    """Bulk API 2.0 ingest calls through a ``SalesforceClient`` (its ``request`` method). ``requests`` counts the
    API requests sent through this object (one per call; transport retries not included).

    Every call is safe to resend: a resent create can at worst leave an extra empty ``Open`` job that nobody
    closes, so it never processes anything; a resent upload or close that the first attempt already applied is
    refused by Salesforce, and the writer then reads the job's state."""

    def __init__(self, client: Any):
        self.client = client
        self.requests = 0

    # ------------------------------------------------------------------ jobs

    def create_job(self, sobject: str, operation: str, external_id_field: str | None = None, *,
                   line_ending: str = "LF") -> JobInfo:
        """``POST jobs/ingest`` (JSON ``object``, ``operation``, ``externalIdFieldName`` for an upsert, CSV with
        ``lineEnding`` and ``COMMA`` delimiter): a job in state ``Open``, answered with its job info."""
        if operation not in ("update", "upsert"):
            raise ValueError(f"operation must be 'update' or 'upsert', got {operation!r}")
        spec: dict[str, Any] = {"object": _name(sobject, "sobject"), "operation": operation, "contentType": "CSV",
                                "lineEnding": line_ending, "columnDelimiter": "COMMA"}
        if operation == "upsert":
            if not external_id_field:
                raise ValueError("an upsert job needs external_id_field")
            spec["externalIdFieldName"] = _name(external_id_field, "external_id_field")
        what = f"Bulk API 2.0 job creation ({operation} of {sobject})"
        job = self._job_json("POST", "jobs/ingest", what, body=spec)
        if not job.id or not _JOB_ID.match(job.id):
            raise ApiError(f"Salesforce {what} answered without a usable job id ({job.id!r}).")
        return job

    def upload(self, job_id: str, data: bytes) -> None:
        """``PUT jobs/ingest/{id}/batches``: upload the job's CSV (``Content-Type: text/csv``, one upload per job
        here, at most ``MAX_UPLOAD_BYTES``); Salesforce answers 201 Created. The first row holds the field API
        names (``Id`` for an update, the external id field for an upsert); the line ending must be the job's.
        Real orgs serve the job's ``contentUrl`` without a leading slash or host, so it is never used: the path
        is built from the job id, under the client's API version."""
        self._send("PUT", f"jobs/ingest/{_job(job_id)}/batches", f"Bulk API 2.0 upload to job {job_id}",
                   body=data, content_type=_CSV, accept=_JSON)

    def close(self, job_id: str) -> JobInfo:
        """``PATCH jobs/ingest/{id}`` to ``UploadComplete``: Salesforce starts processing the uploaded data only
        then."""
        return self._set_state(job_id, UPLOAD_COMPLETE, "close")

    def abort(self, job_id: str) -> JobInfo:
        """``PATCH jobs/ingest/{id}`` to ``Aborted``."""
        return self._set_state(job_id, ABORTED, "abort")

    def job(self, job_id: str) -> JobInfo:
        """``GET jobs/ingest/{id}``: its ``state`` (``Open``, ``UploadComplete``, ``InProgress``, ``JobComplete``,
        ``Failed``, ``Aborted``), records processed and failed, ``errorMessage``."""
        return self._job_json("GET", f"jobs/ingest/{_job(job_id)}", f"Bulk API 2.0 job info of {job_id}")

    def jobs(self, *, max_pages: int = 20) -> tuple[list[JobInfo], bool]:
        """``(the org's Bulk API 2.0 ingest jobs, complete)``: follows ``nextRecordsUrl`` for at most ``max_pages``
        requests; ``complete`` is False when more pages were left unread."""
        path = "jobs/ingest?jobType=V2Ingest"
        found: list[JobInfo] = []
        for _ in range(max_pages):
            response = self._send("GET", path, "Bulk API 2.0 job list", accept=_JSON)
            data = _json_object(response, "Bulk API 2.0 job list")
            records = data.get("records") or []
            if not isinstance(records, list):
                raise ApiError("Salesforce Bulk API 2.0 job list has no 'records' array.")
            found.extend(JobInfo.from_api(r) for r in records if isinstance(r, Mapping) and r.get("id"))
            next_url = data.get("nextRecordsUrl")
            if data.get("done", True) or not next_url:
                return found, True
            path = str(next_url)
        return found, False

    # ------------------------------------------------------------------ results
    # CSV in no guaranteed order, so callers join them on Id or the external id, never on position.
    # successfulResults/: sf__Id, sf__Created + the uploaded columns; failedResults/: sf__Id, sf__Error
    # (``parse_error``) + the uploaded columns; unprocessedrecords/: the uploaded columns.

    def successful_results(self, job_id: str) -> list[dict[str, str]]:
        return self._results(job_id, "successfulResults", "successful results")

    def failed_results(self, job_id: str) -> list[dict[str, str]]:
        return self._results(job_id, "failedResults", "failed results")

    def unprocessed_records(self, job_id: str) -> list[dict[str, str]]:
        return self._results(job_id, "unprocessedrecords", "unprocessed records")

    # ------------------------------------------------------------------ internals

    def _set_state(self, job_id: str, state: str, verb: str) -> JobInfo:
        return self._job_json("PATCH", f"jobs/ingest/{_job(job_id)}", f"Bulk API 2.0 {verb} of job {job_id}",
                              body={"state": state})

    def _job_json(self, method: str, path: str, what: str, *, body: Any = None) -> JobInfo:
        data = None if body is None else json.dumps(body).encode("ascii")
        response = self._send(method, path, what, body=data, content_type=None if body is None else _JSON,
                              accept=_JSON)
        info = _json_object(response, what)
        if not info.get("id"):
            raise ApiError(f"Salesforce {what} answered HTTP {response.status_code} without a job id.")
        return JobInfo.from_api(info)

    def _results(self, job_id: str, resource: str, label: str) -> list[dict[str, str]]:
        response = self._send("GET", f"jobs/ingest/{_job(job_id)}/{resource}/",
                              f"Bulk API 2.0 {label} of job {job_id}", accept=_CSV)
        try:
            text = response.content.decode("utf-8-sig")  # never requests' ISO-8859-1 guess for text/*
        except UnicodeDecodeError as exc:
            raise ApiError(f"Salesforce Bulk API 2.0 {label} of job {job_id} are not UTF-8 ({exc}).") from None
        return list(read_csv(text))

    def _send(self, method: str, path: str, what: str, **kwargs: Any):
        self.requests += 1
        return self.client.request(method, path, what=what, **kwargs)


# ---------------------------------------------------------------------------------------------- CSV


def read_csv(text: str) -> Iterator[dict[str, str]]:
    """Rows of a Bulk result CSV as ``{column: cell}`` (quoted cells may hold commas, quotes and line breaks)."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header = next(reader, None)
    if not header:
        return
    for row in reader:
        if not row:
            continue
        yield dict(zip(header, row + [""] * (len(header) - len(row))))


def parse_error(text: str) -> RecordError:
    """``sf__Error`` as a ``RecordError``, in each shape orgs serve: ``STATUS_CODE:message:fields`` (``--`` for no
    fields), ``STATUS_CODE:message``, and a bare ``STATUS_CODE`` with no message (classified by that code, so a bare
    ``UNABLE_TO_LOCK_ROW`` is retried like any lock). The message itself may contain colons: a last part after a
    colon is a field list only when it directly follows the colon (messages put a space there) and names API fields.
    A cell that does not start with a status code is ``UNKNOWN`` with the whole text."""
    text = (text or "").strip()
    if _STATUS_CODE.match(text):
        return RecordError(text, "")
    code, sep, rest = text.partition(":")
    if not sep or not _STATUS_CODE.match(code):
        return RecordError("UNKNOWN", text or "no error detail returned")
    message, sep, tail = rest.rpartition(":")
    if not sep:
        return RecordError(code, rest)
    if tail.strip() in ("--", ""):
        return RecordError(code, message)
    if not tail[:1].isspace() and _FIELD_LIST.match(tail.strip()):
        return RecordError(code, message, tuple(f.strip() for f in tail.split(",")))
    return RecordError(code, rest)


def _json_object(response, what: str) -> dict:
    try:
        data = response.json()
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise ApiError(f"Salesforce {what} answered HTTP {response.status_code} without the expected JSON object.")
    return data


def _name(value: str, what: str) -> str:
    if not isinstance(value, str) or not _API_NAME.match(value):
        raise ValueError(f"{what} must be a Salesforce API name such as 'Contact' or 'Ext_Id__c', got {value!r}")
    return value


def _job(job_id: str) -> str:
    if not isinstance(job_id, str) or not _JOB_ID.match(job_id):
        raise ValueError(f"not a Bulk API job id: {job_id!r}")
    return job_id
