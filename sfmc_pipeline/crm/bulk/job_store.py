"""The Bulk jobs this sync started and has not settled yet: SQLite ``bulk_jobs.sqlite`` beside the ledger
(``state/crm/bulk_jobs.sqlite``). A job attempt and its records are recorded before the create call, so a crash at
any point leaves enough for ``recover`` to collect or abort it. Rows are keyed by the target (``salesforce:<org
id>``) and the destination, so a sandbox refresh or another destination never picks up someone else's job."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import uuid
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from sfmc_pipeline.datasets.storage import StorageError, open_state_db

STORE_FILE_NAME = "bulk_jobs.sqlite"


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
