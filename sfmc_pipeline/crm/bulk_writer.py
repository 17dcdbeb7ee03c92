"""Write one destination's change set through Salesforce Bulk API 2.0 jobs, and turn the job results into
per-record outcomes that feed the same ledger and sync-errors dataset as sObject Collections writes.

Used by the sync for large change sets (``sync.bulk_threshold``, default 2,000 records per destination, as
Salesforce suggests); smaller ones, and records Bulk cannot carry, go through sObject Collections.

How a change set is written (``BulkWriter.write``):

1. ``partition`` first sends to composite every record Bulk cannot carry: a value over Bulk's 32,000
   characters per field, a record over 400,000 characters (or 5,000 fields), the literal text ``#N/A`` (Bulk
   reads it as null), a whitespace-only text (a CSV cell Bulk may read as empty, i.e. "leave as it is"), an
   upsert without an external id value or with one shared by another record (results are matched on it), and
   a record too large for one upload.
2. The records become CSV (UTF-8, LF, header of field API names plus ``Id`` for update or the external id
   field for upsert). A field a record does not change is an empty cell (left as it is); a null (or empty
   text) is ``#N/A``; decimals are written with their exact digits (``format(d, "f")``, never through
   float); booleans as ``true``/``false``. When the CSV is larger than ``max_upload_bytes`` the records are
   split over several jobs (one upload per job), run one after the other.
3. Per job: the attempt, its record ids and the values sent are recorded in the ``BulkJobStore`` **before** the
   create call, the job id right after it. Then upload, close (``UploadComplete``), poll with backoff (1, 2,
   4 ... capped at 30 s) until the job is ``JobComplete``/``Failed``/``Aborted`` or ``poll_timeout_seconds``
   have passed.
4. Results: only the result CSVs the job's counts say are non-empty are read (successful if processed >
   failed, failed if any failed, unprocessed if fewer were processed than uploaded). Rows are matched to
   records by the ``Id`` column (update) or the external id column (upsert), never by position. Succeeded
   records carry ``sf__Id`` (the record's Id) and, for upsert, ``sf__Created``; failed records carry
   Salesforce's code, message and fields parsed from ``sf__Error``; unprocessed records, and records no result
   mentions, are pending (sent again by the next run's diff). ``confirm`` (if given) gets the ledger rows of
   the succeeded records, and only then is the job forgotten, so a crash at any point loses nothing.
5. A job that ends ``Failed`` (or is aborted by someone else) raises :class:`BulkJobFailed` naming the job id
   and Salesforce's ``errorMessage``, after whatever it did process has been collected (``.outcome``).
   ``REQUEST_LIMIT_EXCEEDED``, or daily usage at ``usage_threshold``, stops cleanly: the rest is pending. On a
   poll timeout the job stays recorded and its records are pending *and in flight*; the next run's
   ``recover`` collects it. Any other API error propagates; a job that may process stays recorded.

Crash recovery (``BulkWriter.recover``, called at the start of every sync of the destination, before the
change set is computed, even when that run will not use Bulk): every recorded job of this destination is
looked up. ``Open`` (the run died before closing it): aborted and forgotten; its records were never confirmed,
so the diff sends them again. ``UploadComplete``/``InProgress``: waited for (within the timeout), then
collected; still running at the timeout: left recorded, its records in flight. ``JobComplete``: collected and
confirmed. ``Failed``/``Aborted``: what it processed is collected, the rest is sent again by the diff. A job
Salesforce no longer knows (terminal jobs are deleted after 7 days) is forgotten. Records of a job that may
still be processing are never sent again: ``write`` leaves them pending (``in_flight``), and the caller should
drop ``in_flight()`` ids from its composite batches too. ``recover`` also lists the org's ingest jobs (``GET
jobs/ingest``) when anything was recorded, and reports open jobs of this object made by this integration's
user that this store does not know about (e.g. a crash between the create call and recording its id); it
never touches them.

State: :class:`BulkJobStore`, SQLite ``bulk_jobs.sqlite`` beside the ledger (``state/crm/bulk_jobs.sqlite``),
rows keyed by the target (``salesforce:<org id>``) and the destination, so a sandbox refresh or another
destination never picks up someone else's job.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import sqlite3
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from sfmc_pipeline.crm.ledger import Confirmed
from sfmc_pipeline.crm.payloads import ATTRIBUTE, STATUS
from sfmc_pipeline.datasets.storage import StorageError, open_state_db
from sfmc_pipeline.errors import ApiError
from sfmc_pipeline.salesforce.bulk_api import (
    ABORTED,
    ACTIVE_STATES,
    FAILED,
    IN_PROGRESS,
    MAX_FIELD_CHARACTERS,
    MAX_FIELDS_PER_RECORD,
    MAX_RECORD_CHARACTERS,
    MAX_UPLOAD_BYTES,
    NULL,
    OPEN,
    TERMINAL_STATES,
    UPLOAD_COMPLETE,
    BulkIngestClient,
    JobInfo,
    parse_error,
)
from sfmc_pipeline.salesforce.ids import is_valid_id, to_18
from sfmc_pipeline.salesforce.records import RecordError
from sfmc_pipeline.salesforce.api_errors import RequestLimitExceeded

SUCCEEDED, FAILED_RECORD, PENDING = "succeeded", "failed", "pending"
STORE_FILE_NAME = "bulk_jobs.sqlite"


# ---------------------------------------------------------------------------------------------- outcomes


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


class BulkJobFailed(ApiError):
    """A Bulk API 2.0 job ended Failed (or was aborted by someone else). ``outcome`` holds everything the
    write learned, records the job did process included (already confirmed through ``confirm``)."""

    def __init__(self, message: str, outcome: BulkOutcome):
        super().__init__(message, retryable=False, code="BULK_JOB_FAILED")
        self.outcome = outcome


# ---------------------------------------------------------------------------------------------- state


@dataclass(frozen=True)
class StoredRecord:
    record_id: str
    key: str  # the value in the key column: the Id (update) or the external id value (upsert)
    owner: str | None
    fields: Mapping[str, Any]


@dataclass(frozen=True)
class StoredJob:
    token: str
    destination: str
    sobject: str
    operation: str
    external_id_field: str | None
    job_id: str | None  # None: recorded before a create call that never answered
    phase: str  # creating | created | uploaded | closed
    status_fields: frozenset[str]
    recorded_at: str


_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS bulk_jobs (
        token TEXT PRIMARY KEY,           -- this sync's id for one job attempt, recorded before the create call
        target TEXT NOT NULL,             -- "salesforce:<org id>"
        destination TEXT NOT NULL,
        object TEXT NOT NULL,
        operation TEXT NOT NULL,          -- update | upsert
        external_id_field TEXT,
        job_id TEXT,                      -- Salesforce's job id (750...), NULL until the create call answered
        phase TEXT NOT NULL,              -- creating | created | uploaded | closed
        status_fields TEXT NOT NULL,      -- JSON list: which fields are status fields (ledger kind)
        recorded_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS bulk_job_records (
        token TEXT NOT NULL,
        record_id TEXT NOT NULL,
        key TEXT NOT NULL,
        owner TEXT,                       -- the profile key (ledger profile_key)
        fields TEXT NOT NULL,             -- JSON of the values sent (decimals exact)
        PRIMARY KEY (token, record_id)
    )""",
    """CREATE TABLE IF NOT EXISTS bulk_users (
        target TEXT NOT NULL,
        user_id TEXT NOT NULL,            -- createdById of jobs this integration made
        PRIMARY KEY (target, user_id)
    )""",
]


class BulkJobStore:
    """Bulk jobs this sync started and has not settled yet, in SQLite (one transaction per change), for one target.

    Default location: ``bulk_jobs.sqlite`` beside the ledger (:meth:`beside`). Moving the file away forgets
    in-flight jobs: the next run then sends their records again through a new job, while Salesforce may still be
    processing the old one (harmless for values that did not change in between, but it is the one case where two
    jobs carry the same change)."""

    def __init__(self, path: str | Path, target: str):
        self.path = Path(path)
        self.target = target
        try:
            self._db = open_state_db(self.path)
            for statement in _SCHEMA:
                self._db.execute(statement)
        except (sqlite3.Error, OSError) as exc:
            raise StorageError(
                f"The Bulk job state {self.path} cannot be opened ({type(exc).__name__}: {exc}). It lists Bulk API "
                "jobs that may still be writing; if the file is damaged, check Setup > Bulk Data Load Jobs for open "
                "jobs, abort them, and move the file away. If the directory is read-only, make it writable."
            ) from None

    @classmethod
    def beside(cls, ledger_path: str | Path, target: str) -> BulkJobStore:
        """The store next to the sync ledger (``state/crm/ledger.sqlite`` -> ``state/crm/bulk_jobs.sqlite``)."""
        return cls(Path(ledger_path).with_name(STORE_FILE_NAME), target)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> BulkJobStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def begin(self, destination: str, sobject: str, operation: str, external_id_field: str | None,
              status_fields: Iterable[str], records: Sequence[StoredRecord]) -> str:
        """Record a job attempt and its records before the create call; returns its token."""
        token = uuid.uuid4().hex
        now = _now()
        with self._tx():
            self._db.execute(
                "INSERT INTO bulk_jobs (token, target, destination, object, operation, external_id_field, job_id, "
                "phase, status_fields, recorded_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, NULL, 'creating', ?, ?, ?)",
                (token, self.target, destination, sobject, operation, external_id_field,
                 json.dumps(sorted(set(status_fields))), now, now),
            )
            self._db.executemany(
                "INSERT INTO bulk_job_records (token, record_id, key, owner, fields) VALUES (?, ?, ?, ?, ?)",
                [(token, r.record_id, r.key, r.owner, _encode(r.fields)) for r in records],
            )
        return token

    def attach(self, token: str, job_id: str, created_by: str | None) -> None:
        """The create call answered: remember the job id (and the user the integration runs as)."""
        with self._tx():
            self._db.execute("UPDATE bulk_jobs SET job_id = ?, phase = 'created', updated_at = ? WHERE token = ?",
                             (job_id, _now(), token))
            if created_by:
                self._db.execute("INSERT OR IGNORE INTO bulk_users (target, user_id) VALUES (?, ?)",
                                 (self.target, created_by))

    def advance(self, token: str, phase: str) -> None:
        with self._tx():
            self._db.execute("UPDATE bulk_jobs SET phase = ?, updated_at = ? WHERE token = ?", (phase, _now(), token))

    def forget(self, token: str) -> None:
        with self._tx():
            self._db.execute("DELETE FROM bulk_job_records WHERE token = ?", (token,))
            self._db.execute("DELETE FROM bulk_jobs WHERE token = ?", (token,))

    def jobs(self, destination: str, sobject: str) -> list[StoredJob]:
        rows = self._db.execute(
            "SELECT token, destination, object, operation, external_id_field, job_id, phase, status_fields, "
            "recorded_at FROM bulk_jobs WHERE target = ? AND destination = ? AND object = ? ORDER BY recorded_at, "
            "rowid", (self.target, destination, sobject)).fetchall()
        return [StoredJob(t, d, o, op, ext, jid, phase, frozenset(json.loads(sf)), at)
                for t, d, o, op, ext, jid, phase, sf, at in rows]

    def records(self, token: str) -> list[StoredRecord]:
        rows = self._db.execute("SELECT record_id, key, owner, fields FROM bulk_job_records WHERE token = ? "
                                "ORDER BY rowid", (token,)).fetchall()
        return [StoredRecord(rid, key, owner, _decode(fields)) for rid, key, owner, fields in rows]

    def in_flight(self, destination: str, sobject: str) -> dict[str, str]:
        """record id -> job id (or ``"unknown"``) of every record in a recorded job of this destination."""
        rows = self._db.execute(
            "SELECT r.record_id, j.job_id FROM bulk_job_records r JOIN bulk_jobs j ON j.token = r.token "
            "WHERE j.target = ? AND j.destination = ? AND j.object = ?", (self.target, destination, sobject))
        return {rid: job_id or "unknown" for rid, job_id in rows}

    def user_ids(self) -> set[str]:
        rows = self._db.execute("SELECT user_id FROM bulk_users WHERE target = ?", (self.target,))
        return {user for (user,) in rows}

    def _tx(self):
        db = self._db

        class _Tx:
            def __enter__(self_inner):
                db.execute("BEGIN IMMEDIATE")

            def __exit__(self_inner, exc_type, *rest):
                db.execute("ROLLBACK" if exc_type else "COMMIT")
                return False

        return _Tx()


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="microseconds")


def _encode(fields: Mapping[str, Any]) -> str:
    def typed(value: Any) -> Any:
        if isinstance(value, Decimal):
            return {"$decimal": format(value, "f")}
        raise TypeError(f"cannot record a {type(value).__name__} value")

    return json.dumps(dict(fields), default=typed, allow_nan=False)


def _decode(text: str) -> dict[str, Any]:
    def typed(obj: dict) -> Any:
        return Decimal(obj["$decimal"]) if obj.keys() == {"$decimal"} else obj

    return json.loads(text, object_hook=typed)


# ---------------------------------------------------------------------------------------------- CSV cells


def csv_cell(value: Any) -> str:
    """A value as a Bulk API 2.0 CSV cell: null (or empty text) is ``#N/A``; booleans ``true``/``false``;
    integers and decimals with their exact digits (a float through its shortest repr, never in exponent form);
    text as it is (the CSV writer quotes it when needed)."""
    if value is None or (isinstance(value, str) and value == ""):
        return NULL
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value} cannot be written to Salesforce")
        value = Decimal(repr(value))
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"{value} cannot be written to Salesforce")
        return format(value, "f")
    if isinstance(value, str):
        return value
    raise TypeError(f"a {type(value).__name__} value cannot be written as a Bulk API CSV cell")


def csv_line(cells: Sequence[str]) -> str:
    """One CSV line, comma-separated, LF-terminated. A cell is quoted (``"`` doubled inside) when it holds a comma,
    a quote, a CR or LF (a lone CR too, which Python's ``csv`` writer leaves bare), or leading/trailing
    whitespace (kept exactly, whatever the reader does with bare cells)."""
    return ",".join(_quoted(cell) for cell in cells) + "\n"


def _quoted(cell: str) -> str:
    if any(ch in cell for ch in _SPECIAL) or (cell and (cell[0].isspace() or cell[-1].isspace())):
        return '"' + cell.replace('"', '""') + '"'
    return cell


_SPECIAL = frozenset(',"\r\n')


@dataclass(frozen=True)
class _Chunk:
    records: list[StoredRecord]
    data: bytes


# ---------------------------------------------------------------------------------------------- the writer


class BulkWriter:
    """Writes one destination's records (``[(record_id, {field API name: value})]``, as the composite path gets
    them) through Bulk API 2.0 jobs. See the module docstring for the rules.

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
        self.external_id_field = external_id_field if operation == "upsert" else None
        self.key_column = external_id_field if operation == "upsert" else "Id"
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
        self.first_poll_seconds = first_poll_seconds
        self.max_poll_seconds = max_poll_seconds
        self.log = log

    # ------------------------------------------------------------------ routing

    def partition(self, records: Sequence[tuple[str, Mapping[str, Any]]]
                  ) -> tuple[list[tuple[str, Mapping[str, Any]]], list[tuple[str, Mapping[str, Any]]]]:
        """``(records Bulk can carry, records for composite)``, each in the given order (see ``composite_reason``)."""
        columns = self._columns(records)
        keys: dict[str, int] = {}
        if self.operation == "upsert":
            for rid, fields in records:
                key = self._key(rid, fields)
                if key:
                    keys[key] = keys.get(key, 0) + 1
        bulk, composite = [], []
        for rid, fields in records:
            reason = self._composite_reason(rid, fields, columns, keys)
            (composite if reason else bulk).append((rid, fields))
        return bulk, composite

    def composite_reason(self, record_id: str, fields: Mapping[str, Any]) -> str | None:
        """Why this record (on its own) must go through sObject Collections, or None when Bulk can carry it."""
        return self._composite_reason(record_id, fields, self._columns([(record_id, fields)]), {})

    def _composite_reason(self, rid: str, fields: Mapping[str, Any], columns: list[str],
                          keys: Mapping[str, int]) -> str | None:
        reason = self._value_reason(rid, fields, keys)
        if reason:
            return reason
        size = len(csv_line(columns).encode("utf-8")) + len(self._line(rid, fields, columns))
        if size > self.max_upload_bytes:
            return f"the record alone is larger than one upload ({size} > {self.max_upload_bytes} bytes)"
        return None

    def _value_reason(self, rid: str, fields: Mapping[str, Any], keys: Mapping[str, int]) -> str | None:
        """The rules of ``composite_reason`` but the upload size (checked where the CSV is built)."""
        if self.operation == "upsert":
            key = self._key(rid, fields)
            if not key:
                return f"no {self.external_id_field} value to match Bulk results on"
            if keys.get(key, 0) > 1:
                return f"{self.external_id_field} value {key!r} is shared by several records"
        if len(fields) + 1 > MAX_FIELDS_PER_RECORD:
            return f"{len(fields)} fields, over Bulk's {MAX_FIELDS_PER_RECORD} per record"
        total = 0
        for name, value in fields.items():
            if isinstance(value, str) and value == NULL:
                return f"{name} holds the text {NULL!r}, which Bulk reads as null"
            if isinstance(value, str) and value != "" and value.strip() == "":
                return f"{name} holds only whitespace, which a Bulk CSV cell may read as empty (left as it is)"
            length = len(csv_cell(value))
            if length > self.max_field_characters:
                return f"{name} has {length} characters, over Bulk's {self.max_field_characters} per field"
            total += length
        if total > self.max_record_characters:
            return f"{total} characters in the record, over Bulk's {self.max_record_characters} per record"
        return None

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
            todo.append(StoredRecord(rid, self._key(rid, fields), owners.get(rid), fields))
        if busy and len(todo) < len(records):
            outcome.messages.append(
                f"{len(records) - len(todo)} record(s) are in a Bulk job an earlier run left processing; they are "
                "not sent again until recover() has collected that job")
        keys = Counter(r.key for r in todo) if self.operation == "upsert" else {}
        for r in todo:
            reason = self._value_reason(r.record_id, r.fields, keys)
            if reason:
                raise ValueError(f"record {r.record_id} cannot go through Bulk API 2.0 ({reason}); partition() sends "
                                 "such records to composite")
        deadline = self.clock() + self.poll_timeout_seconds
        chunks = self._chunks(todo)
        try:
            for number, chunk in enumerate(chunks, start=1):
                if outcome.stopped is None:
                    outcome.stopped = self._stop_reason(deadline, number, len(chunks))
                if outcome.stopped is not None:
                    self._pending(outcome, chunk.records, None, "stopped", False, status_fields)
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

    def _run(self, chunk: _Chunk, outcome: BulkOutcome, deadline: float, status_fields: frozenset[str]) -> None:
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
                self._abandon(token, job.id)
                raise
            self.state.advance(token, "closed")
            info = self._wait(job.id, deadline, report)
            if info is None:
                outcome.timed_out = True
                outcome.stopped = (f"Bulk job {job.id} was still {report.state} after {self.poll_timeout_seconds:g}s; "
                                   "it stays recorded and the next run collects its results")
                self._pending(outcome, chunk.records, job.id, "timeout", True, status_fields)
                return
            self._collect(token, info, chunk.records, outcome, report, status_fields)
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

    def _abandon(self, token: str, job_id: str) -> bool:
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

    def _wait(self, job_id: str, deadline: float, report: JobReport) -> JobInfo | None:
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

    def _collect(self, token: str, info: JobInfo, records: list[StoredRecord], outcome: BulkOutcome,
                 report: JobReport, status_fields: frozenset[str]) -> None:
        report.state, report.processed, report.failed = info.state, info.records_processed, info.records_failed
        report.error_message = info.error_message
        lookup = self._lookup(records)
        settled: dict[str, RecordOutcome] = {}
        unmatched = 0

        def rows(fetch):
            nonlocal unmatched
            outcome.min_requests += 1
            for row in fetch(info.id):
                record = lookup(_column(row, self.key_column))
                if record is None or record.record_id in settled:
                    unmatched += 1
                    continue
                yield record, row

        if info.records_processed - info.records_failed > 0:
            for record, row in rows(self.ingest.successful_results):
                created = _flag(row.get("sf__Created")) if self.operation == "upsert" else None
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

    @staticmethod
    def _pending(outcome: BulkOutcome, records: Iterable[StoredRecord], job_id: str | None, reason: str,
                 in_flight: bool, status_fields: frozenset[str]) -> None:
        """Mark records pending unless they already have an outcome."""
        for r in records:
            if r.record_id not in outcome.records:
                outcome.records[r.record_id] = RecordOutcome(
                    r.record_id, PENDING, r.fields, r.owner, job_id, reason=reason, in_flight=in_flight,
                    status_fields=status_fields)

    # ------------------------------------------------------------------ recovery

    def in_flight(self) -> dict[str, str]:
        """record id -> job id of every record in a recorded job of this destination (``write`` does not send
        them; drop them from composite batches too, and count them as pending)."""
        return self.state.in_flight(self.destination, self.sobject)

    def recover(self, *, check_org: bool | None = None) -> BulkOutcome | None:
        """Settle the jobs earlier runs left recorded (see the module docstring); None when there were none and
        ``check_org`` is not True. ``check_org``: list the org's ingest jobs to report unrecorded open ones
        (default: only when something was recorded). Never raises for a job's failure; API errors propagate."""
        stored = self.state.jobs(self.destination, self.sobject)
        if not stored and not check_org:
            return None
        outcome = BulkOutcome()
        start_requests = self.ingest.requests
        deadline = self.clock() + self.poll_timeout_seconds
        try:
            for job in stored:
                records = self.state.records(job.token)
                if outcome.stopped is not None:
                    self._pending(outcome, records, job.job_id, "stopped", True, job.status_fields)
                    continue
                try:
                    self._recover_job(job, records, outcome, deadline)
                except RequestLimitExceeded as exc:
                    outcome.stopped = f"Salesforce refused further requests: {exc}"
                    self._pending(outcome, records, job.job_id or "unknown", "stopped", True, job.status_fields)
            if outcome.stopped is None and (check_org or (check_org is None and stored)):
                self._report_unrecorded(outcome)
        finally:
            outcome.requests = self.ingest.requests - start_requests
        for message in outcome.messages + outcome.failures:
            self.log(f"{self.destination}: {message}")
        outcome.messages.extend(outcome.failures)  # an earlier run's job: reported, not raised
        outcome.failures = []
        return outcome

    def _recover_job(self, job: StoredJob, records: list[StoredRecord], outcome: BulkOutcome,
                     deadline: float) -> None:
        if job.job_id is None:
            self.state.forget(job.token)
            self._pending(outcome, records, None, "never_created", False, job.status_fields)
            outcome.messages.append(
                f"an earlier run died while creating a Bulk job for {len(records)} record(s); they are sent again "
                "(any job it may have created holds no data and is listed below if still open)")
            return
        try:
            info = self.ingest.job(job.job_id)
        except RequestLimitExceeded:
            raise
        except ApiError as exc:
            if exc.status != 404:
                raise
            self.state.forget(job.token)
            self._pending(outcome, records, job.job_id, "job_gone", False, job.status_fields)
            outcome.messages.append(f"Bulk job {job.job_id} no longer exists in the org; its {len(records)} "
                                    "record(s) are sent again")
            return
        outcome.min_requests += 1
        report = JobReport(job.job_id, info.state, len(records), polls=1, recovered=True)
        outcome.jobs.append(report)
        if info.state == OPEN:
            outcome.min_requests += 1
            if not self._abandon(job.token, job.job_id):
                self._pending(outcome, records, job.job_id, "open_job", True, job.status_fields)
                outcome.messages.append(f"Bulk job {job.job_id} left Open by an earlier run could not be aborted; "
                                        "it stays recorded")
                return
            report.state = ABORTED
            self._pending(outcome, records, job.job_id, "aborted", False, job.status_fields)
            outcome.messages.append(f"aborted Bulk job {job.job_id} an earlier run left Open (never closed, nothing "
                                    f"written); its {len(records)} record(s) are sent again")
            return
        if info.state in (UPLOAD_COMPLETE, IN_PROGRESS):
            info = self._wait(job.job_id, deadline, report)
            if info is None:
                outcome.timed_out = True
                outcome.stopped = (f"Bulk job {job.job_id} of an earlier run is still {report.state} after "
                                   f"{self.poll_timeout_seconds:g}s; it stays recorded")
                self._pending(outcome, records, job.job_id, "timeout", True, job.status_fields)
                return
        self._collect(job.token, info, records, outcome, report, job.status_fields)

    def open_jobs_in_org(self) -> tuple[list[JobInfo], bool]:
        """``(open ingest jobs of this object in the org made by this integration's user (any user when none is
        known yet), complete listing)``."""
        jobs, complete = self.ingest.jobs()
        users = self.state.user_ids()
        mine = [j for j in jobs if j.object.lower() == self.sobject.lower() and j.state in ACTIVE_STATES
                and (not users or j.created_by_id in users)]
        return mine, complete

    def _report_unrecorded(self, outcome: BulkOutcome) -> None:
        before = self.ingest.requests
        jobs, complete = self.open_jobs_in_org()
        outcome.min_requests += self.ingest.requests - before
        recorded = {j.job_id for j in self.state.jobs(self.destination, self.sobject)} | set(outcome.job_ids)
        outcome.unrecorded_jobs = [j for j in jobs if j.id not in recorded]
        if outcome.unrecorded_jobs:
            listed = ", ".join(f"{j.id} ({j.state}, created {j.created_date or '?'})" for j in outcome.unrecorded_jobs)
            outcome.messages.append(
                f"{len(outcome.unrecorded_jobs)} open Bulk job(s) of {self.sobject} in the org are not recorded by "
                f"this sync and were left alone: {listed}. Abort stale ones in Setup > Bulk Data Load Jobs.")
        if not complete:
            outcome.messages.append("the org's Bulk job list was longer than the pages read; not all jobs were checked")

    # ------------------------------------------------------------------ CSV

    def _key(self, rid: str, fields: Mapping[str, Any]) -> str:
        if self.operation == "update":
            return rid
        wanted = self.external_id_field.lower()
        value = next((v for k, v in fields.items() if k.lower() == wanted), None)
        return "" if value is None or value == "" else csv_cell(value)

    def _columns(self, records: Iterable[tuple[str, Mapping[str, Any]]]) -> list[str]:
        """The key column, then every field (first spelling, case-insensitively unique) in first-seen order."""
        columns = {self.key_column.lower(): self.key_column}
        for _, fields in records:
            for name in fields:
                columns.setdefault(name.lower(), name)
        return list(columns.values())

    def _line(self, rid: str, fields: Mapping[str, Any], columns: list[str]) -> bytes:
        by_name = {name.lower(): value for name, value in fields.items()}
        cells = [self._key(rid, fields)]
        for column in columns[1:]:
            key = column.lower()
            cells.append(csv_cell(by_name[key]) if key in by_name else "")  # empty: left as it is
        return csv_line(cells).encode("utf-8")

    def _chunks(self, records: list[StoredRecord]) -> list[_Chunk]:
        """The records' CSV in uploads of at most ``max_upload_bytes`` (header repeated in each)."""
        if not records:
            return []
        columns = self._columns((r.record_id, r.fields) for r in records)
        header = csv_line(columns).encode("utf-8")
        chunks: list[_Chunk] = []
        part: list[StoredRecord] = []
        lines: list[bytes] = []
        size = len(header)
        for record in records:
            line = self._line(record.record_id, record.fields, columns)
            if len(header) + len(line) > self.max_upload_bytes:
                raise ValueError(f"record {record.record_id} alone is larger than one upload "
                                 f"({self.max_upload_bytes} bytes); partition() sends it to composite")
            if part and size + len(line) > self.max_upload_bytes:
                chunks.append(_Chunk(part, header + b"".join(lines)))
                part, lines, size = [], [], len(header)
            part.append(record)
            lines.append(line)
            size += len(line)
        chunks.append(_Chunk(part, header + b"".join(lines)))
        return chunks


def _column(row: Mapping[str, str], name: str) -> str | None:
    if name in row:
        return row[name]
    lowered = name.lower()
    return next((value for key, value in row.items() if key.lower() == lowered), None)


def _flag(value: str | None) -> bool | None:
    text = (value or "").strip().lower()
    return True if text == "true" else False if text == "false" else None
