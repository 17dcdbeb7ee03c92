"""A local, embedded CRM target: Salesforce Contacts and Leads kept in a SQLite database.

Without Salesforce credentials the CRM sink writes here instead, so a newcomer can watch the whole flow
work end to end. ``LocalCrmTarget`` implements the same ``CrmTarget`` protocol as the Salesforce client
(``sfmc_pipeline/salesforce/records.py``) and mimics Salesforce's describe and sObject Collections contract
(update/upsert of at most 200 records with positional per-record results, retrieve by Id), so the *same*
sink code runs against either target:

* ``target_id`` is ``local:<uuid4>``, created when the file is first opened and kept in its ``_meta`` table:
  the same file keeps its id, a new file gets a new one.

* ``describe`` answers like Salesforce's describe: ``Id`` (type ``id``, not updateable, ``idLookup``), the
  standard fields (``string``/``email`` with their lengths, required ones not nillable) and the segment
  status fields (custom Long Text Area: ``textarea``, ``extraTypeInfo`` ``plaintextarea``).
* ``update`` and ``upsert`` take at most 200 records (more is a ``ValueError``, like the HTTP 400), never
  roll back valid records because of invalid ones (``allOrNone`` false), and return one ``RecordResult``
  per record, in request order. A failed record carries the Salesforce ``statusCode``/message/fields and
  no id: ``MALFORMED_ID``, ``INVALID_FIELD``, ``INVALID_FIELD_FOR_INSERT_UPDATE``,
  ``INVALID_CROSS_REFERENCE_KEY``, ``STRING_TOO_LONG``, ``INVALID_EMAIL_ADDRESS``, ``REQUIRED_FIELD_MISSING``
  (and, for upserts, ``MISSING_ARGUMENT``, ``DUPLICATE_VALUE``, ``DUPLICATE_EXTERNAL_ID``).
  Other request-level problems (no ``attributes.type``, more than 10 same-type chunks, a value that is
  not a JSON scalar, an unusable external-id field) raise ``ValueError``; an object that was never set up
  with ``ensure_object`` raises ``KeyError`` everywhere (``describe`` included). ``decimal.Decimal`` values
  are stored as their exact text (``format(d, "f")``: all digits, no exponent).
* ``retrieve`` answers like the sObject Collections retrieve: one item per id, in order, None for an id
  that is malformed, of another object or not there; an unknown field raises ``ValueError`` (the HTTP 400).
  It counts one API request per 2,000 ids, as Salesforce would.

Storage: one table per object (``Contact``, ``Lead``) whose columns are the field API names, all values
TEXT, keyed by the 18-character Id; field metadata lives in the ``_fields`` table, the counters behind
ids created by upserts in ``_id_counters``, and the target id in ``_meta``. Salesforce stores an empty
string as null, so does this target.

See the result of a run::

    sqlite3 data/storage/crm/local_crm.sqlite 'select Id, new_customer__c from Contact limit 5'
"""

from __future__ import annotations

import math
import re
import sqlite3
import threading
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import pandas as pd

from sfmc_pipeline.salesforce.ids import KEY_PREFIXES, is_valid_id, to_18, valid_id_mask
from sfmc_pipeline.salesforce.records import (
    MAX_RECORDS_PER_REQUEST,
    MAX_RETRIEVE_IDS_PER_REQUEST,
    ApiUsage,
    Describe,
    FieldInfo,
    RecordError,
    RecordResult,
)
from sfmc_pipeline.salesforce.rules import (
    STANDARD_FIELDS,
    malformed_id,
    missing_required,
    value_error,
)

__all__ = [
    "LocalCrmTarget",
    "KEY_PREFIXES",
    "MAX_CHUNKS_PER_REQUEST",
    "MAX_LONG_TEXT_LENGTH",
    "DEFAULT_STATUS_FIELD_LENGTH",
]

"""The objects this target knows, with the 3-character key prefix of their record ids."""

MAX_CHUNKS_PER_REQUEST = 10
"""An update may mix types, but at most this many runs of consecutive same-type records (as in Salesforce)."""

DEFAULT_STATUS_FIELD_LENGTH = 32768  # Long Text Area default
MAX_LONG_TEXT_LENGTH = 131072  # Long Text Area maximum
EXTERNAL_ID_LENGTH = 255

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_CREATED_ID_INFIX = "Lc"  # ids created by upserts: prefix + "Lc" + 10 base-62 digits (15 chars) + checksum


@dataclass(frozen=True)
class _Field:
    """One row of the ``_fields`` table."""

    name: str
    label: str
    type: str  # "id", "string", "email", "textarea"
    length: int
    required: bool = False
    custom: bool = False
    updateable: bool = True
    external_id: bool = False
    id_lookup: bool = False
    extra_type_info: str | None = None

    def info(self) -> FieldInfo:
        return FieldInfo(
            name=self.name,
            type=self.type,
            length=self.length,
            label=self.label,
            updateable=self.updateable,
            createable=self.updateable,
            nillable=not self.required,
            custom=self.custom,
            external_id=self.external_id,
            id_lookup=self.id_lookup,
            extra_type_info=self.extra_type_info,
        )


def _standard_fields(sobject: str) -> list[_Field]:
    """``Id`` and the object's standard fields as Salesforce describes them (``salesforce_rules``)."""
    return [
        _Field("Id", f"{sobject} ID", "id", 18, required=True, updateable=False, id_lookup=True),
        *(_Field(f.name, f.label, f.type, f.length, required=f.required, extra_type_info=f.extra_type_info,
                 id_lookup=f.type == "email") for f in STANDARD_FIELDS[sobject]),
    ]


def _identifier(name: str, what: str = "name") -> str:
    """``name`` if it is a plain SQL identifier, else ``ValueError``; the result is safe to double-quote."""
    if not isinstance(name, str) or not _IDENTIFIER.match(name):
        raise ValueError(f"invalid {what} {name!r}: must match {_IDENTIFIER.pattern}")
    return name


def _q(name: str) -> str:
    """A validated identifier, double-quoted for SQL."""
    return f'"{_identifier(name)}"'


def _base62(n: int, width: int) -> str:
    digits = ""
    while n:
        n, rem = divmod(n, 62)
        digits = _BASE62[rem] + digits
    if len(digits) > width:
        raise ValueError(f"id counter overflow ({width} base-62 digits)")
    return digits.rjust(width, "0")


def _error(code: str, message: str, fields: Sequence[str] = ()) -> RecordResult:
    return RecordResult(success=False, errors=(RecordError(code, message, tuple(fields)),))


def _as_text(value: Any) -> str | None:
    """A JSON scalar as it would be stored in a text field (``""`` becomes null, as in Salesforce)."""
    if value is None or isinstance(value, str):
        return value or None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal) and value.is_finite():
        return format(value, "f")
    if isinstance(value, int) or (isinstance(value, float) and math.isfinite(value)):
        return str(value)
    raise ValueError(
        f"field values must be strings, finite numbers (int, float, Decimal), booleans or null, got {value!r}"
    )


class LocalCrmTarget:
    """``CrmTarget`` against a SQLite file: same per-record rules and results as Salesforce's sObject Collections."""

    mode = "local"

    def __init__(self, db_path: str | Path):
        self.db_path = Path(db_path)
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we open transactions ourselves (so DDL is transactional too).
        self._open(sqlite3.connect(self.db_path, isolation_level=None, check_same_thread=False, timeout=30))

    @classmethod
    def snapshot(cls, db_path: str | Path) -> LocalCrmTarget:
        """An in-memory copy of the target at ``db_path`` (empty when the file does not exist yet): the fields and
        records the sync would find there, to try its setup and preflight (``sfmc-pipeline check``) without
        creating or changing the file."""
        target = cls.__new__(cls)
        target.db_path = Path(db_path)
        conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        if target.db_path.exists():
            source = sqlite3.connect(f"{target.db_path.resolve().as_uri()}?mode=ro", uri=True)
            try:
                source.backup(conn)
            finally:
                source.close()
        target._open(conn)
        return target

    def _open(self, conn: sqlite3.Connection) -> None:
        self._lock = threading.RLock()
        self._conn = conn
        self._requests = 0
        with self._transaction() as cur:
            cur.execute(
                """CREATE TABLE IF NOT EXISTS _fields (
                       sobject TEXT NOT NULL, name TEXT NOT NULL, position INTEGER NOT NULL,
                       label TEXT NOT NULL, type TEXT NOT NULL, length INTEGER NOT NULL,
                       required INTEGER NOT NULL, custom INTEGER NOT NULL, updateable INTEGER NOT NULL,
                       external_id INTEGER NOT NULL, id_lookup INTEGER NOT NULL, extra_type_info TEXT,
                       PRIMARY KEY (sobject, name))"""
            )
            cur.execute(
                "CREATE TABLE IF NOT EXISTS _id_counters (sobject TEXT PRIMARY KEY, last INTEGER NOT NULL)"
            )
            cur.execute("CREATE TABLE IF NOT EXISTS _meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            cur.execute("INSERT OR IGNORE INTO _meta VALUES ('target_id', ?)", (f"local:{uuid.uuid4()}",))
            (self._target_id,) = cur.execute("SELECT value FROM _meta WHERE key = 'target_id'").fetchone()

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> LocalCrmTarget:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Cursor]:
        """One write transaction (``BEGIN IMMEDIATE``): committed on success, rolled back on any exception."""
        with self._lock:
            cur = self._conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield cur
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")

    # ------------------------------------------------------------------ schema

    def ensure_object(
        self,
        sobject: str,
        *,
        status_fields: Iterable[str] = (),
        status_field_length: int = DEFAULT_STATUS_FIELD_LENGTH,
        external_id_field: str | None = None,
        custom_fields: Mapping[str, tuple[str, int]] | None = None,
    ) -> None:
        """Create the ``sobject`` table ("Contact" or "Lead") with its standard fields if missing, and add any
        missing status fields (custom Long Text Area, ``status_field_length`` characters), the optional
        external-id field (custom text(255), ``externalId``) and ``custom_fields`` (name ending in ``__c`` ->
        (describe type, length), e.g. mapped attributes). Existing fields are left as they are."""
        if sobject not in KEY_PREFIXES:
            raise ValueError(f"unsupported sobject {sobject!r}: the local CRM knows {sorted(KEY_PREFIXES)}")
        if not 1 <= status_field_length <= MAX_LONG_TEXT_LENGTH:
            raise ValueError(f"status_field_length must be 1..{MAX_LONG_TEXT_LENGTH}, got {status_field_length}")
        wanted = list(_standard_fields(sobject))
        for name in status_fields:
            wanted.append(
                _Field(_custom_name(name), _label(name), "textarea", status_field_length,
                       custom=True, extra_type_info="plaintextarea")
            )
        if external_id_field is not None:
            wanted.append(
                _Field(_custom_name(external_id_field), _label(external_id_field), "string", EXTERNAL_ID_LENGTH,
                       custom=True, external_id=True, id_lookup=True)
            )
        for name, (type_, length) in (custom_fields or {}).items():
            wanted.append(_Field(_custom_name(name), _label(name), type_, length, custom=True,
                                 extra_type_info="plaintextarea" if type_ == "textarea" else None))
        with self._transaction() as cur:
            cur.execute(f"CREATE TABLE IF NOT EXISTS {_q(sobject)} (\"Id\" TEXT PRIMARY KEY NOT NULL)")
            known = {f.name.lower() for f in self._fields(sobject)}
            columns = {row[1].lower() for row in cur.execute(f"PRAGMA table_info({_q(sobject)})")}
            position = len(known)
            for fdef in wanted:
                if fdef.name.lower() in known:
                    continue  # already there (names are case-insensitive, as in Salesforce)
                if fdef.name.lower() not in columns:
                    cur.execute(f"ALTER TABLE {_q(sobject)} ADD COLUMN {_q(fdef.name)} TEXT")
                cur.execute(
                    "INSERT INTO _fields VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (sobject, fdef.name, position, fdef.label, fdef.type, fdef.length, fdef.required, fdef.custom,
                     fdef.updateable, fdef.external_id, fdef.id_lookup, fdef.extra_type_info),
                )
                known.add(fdef.name.lower())
                position += 1

    def seed(self, sobject: str, rows: Iterable[Mapping[str, Any]]) -> int:
        """Insert the rows whose ``Id`` is not there yet and return how many were inserted. Keys are ``Id`` plus
        field names of ``sobject`` (case-insensitive); existing rows are never overwritten."""
        name = self._object_name(sobject)
        fields = self._fields(name)
        prefix = KEY_PREFIXES[name]
        prepared: list[dict[str, str | None]] = []
        for row in rows:
            values: dict[str, str | None] = {}
            for key, value in row.items():
                fdef = _find(fields, key)
                if fdef is None:
                    raise ValueError(f"{name} has no field {key!r} (known: {[f.name for f in fields]})")
                values[fdef.name] = _as_text(value)
            record_id = _normalise_id(values.get("Id"), prefix)
            if record_id is None:
                raise ValueError(f"seed row {dict(row)!r} needs a well-formed {name} Id (prefix {prefix})")
            values["Id"] = record_id
            prepared.append(values)
        inserted = 0
        with self._transaction() as cur:
            for values in prepared:
                columns = ", ".join(_q(c) for c in values)
                marks = ", ".join("?" for _ in values)
                cur.execute(f"INSERT OR IGNORE INTO {_q(name)} ({columns}) VALUES ({marks})", list(values.values()))
                inserted += cur.rowcount
        return inserted

    # ------------------------------------------------------------------ CrmTarget

    @property
    def target_id(self) -> str:
        """``local:<uuid4>``, persisted in the file's ``_meta`` table."""
        return self._target_id

    @property
    def target_label(self) -> str:
        return f"local target {self.db_path.resolve()} ({self._target_id})"

    @property
    def api_usage(self) -> ApiUsage | None:
        return None  # no daily API allocation locally

    @property
    def api_requests(self) -> int:
        """describe/update/upsert calls, plus one per 2,000 ids retrieved, so far (as API requests; calls refused
        for > 200 records not counted)."""
        return self._requests

    def describe(self, sobject: str) -> Describe:
        self._requests += 1
        name = self._object_name(sobject)
        return Describe(sobject=name, fields={f.name: f.info() for f in self._fields(name)})

    def update(self, records: Sequence[Mapping[str, Any]]) -> list[RecordResult]:
        """Update records by Id: ``{"attributes": {"type": "Contact"}, "Id": "003...", "<Field>": value}``."""
        records = list(records)
        _check_count(records)
        self._requests += 1
        known = self._known_objects()
        types = [self._object_name(_record_type(r, i), known) for i, r in enumerate(records)]
        chunks = sum(1 for i, t in enumerate(types) if i == 0 or types[i - 1] != t)
        if chunks > MAX_CHUNKS_PER_REQUEST:
            raise ValueError(
                f"{chunks} chunks of same-type records; at most {MAX_CHUNKS_PER_REQUEST} per request "
                "(group Contacts together and Leads together)"
            )
        fields = {t: self._fields(t) for t in set(types)}
        raw_ids = [next((v for k, v in r.items() if k.lower() == "id"), None) for r in records]

        results: list[RecordResult] = []
        with self._transaction() as cur:  # checks and writes see one consistent state
            for record, sobject, raw_id in zip(records, types, raw_ids):
                values = {k: v for k, v in record.items() if k != "attributes" and k.lower() != "id"}
                result = self._check_update(sobject, fields[sobject], raw_id, values)
                if isinstance(result, RecordResult):
                    results.append(result)
                else:
                    record_id, resolved = result
                    _write(cur, sobject, record_id, resolved)
                    results.append(RecordResult(success=True, id=record_id))
        return results

    def upsert(
        self, sobject: str, external_id_field: str, records: Sequence[Mapping[str, Any]]
    ) -> list[RecordResult]:
        """Upsert ``sobject`` records keyed by ``external_id_field``; results carry ``created``."""
        records = list(records)
        _check_count(records)
        self._requests += 1
        name = self._object_name(sobject)
        fields = self._fields(name)
        ext = _find(fields, external_id_field)
        if ext is None:
            raise ValueError(f"Provided external ID field does not exist or is not accessible: {external_id_field}")
        if not ext.external_id:
            raise ValueError(f"Field {ext.name} is not an External ID or indexed field for {name}")
        for index, record in enumerate(records):
            if _record_type(record, index).lower() != name.lower():
                raise ValueError(f"record {index}: every record of an upsert must be a {name}")

        keys = [_external_key(record, ext) for record in records]
        key_counts: dict[str, int] = {}
        for key in keys:
            if key is not None:
                key_counts[key] = key_counts.get(key, 0) + 1
        results: list[RecordResult] = []
        with self._transaction() as cur:  # checks and writes see one consistent state
            existing = self._external_id_index(name, ext)  # keys are distinct, so writes can't change a match
            for record, key in zip(records, keys):
                values = {k: v for k, v in record.items() if k != "attributes"}
                result = self._check_upsert(name, fields, ext, values, key, key_counts, existing)
                if isinstance(result, RecordResult):
                    results.append(result)
                    continue
                record_id, resolved = result
                created = record_id is None
                if created:
                    record_id = self._new_id(cur, name)
                    cur.execute(f"INSERT INTO {_q(name)} (\"Id\") VALUES (?)", (record_id,))
                _write(cur, name, record_id, resolved)
                results.append(RecordResult(success=True, id=record_id, created=created))
        return results

    def retrieve(self, sobject: str, ids: Sequence[str], fields: Sequence[str]) -> list[dict[str, Any] | None]:
        """Current ``fields`` (stored text) of the ``ids`` records, in the order of ``ids``: ``{"Id": ..., <field as
        requested>: value}``, or None where the id is malformed, of another object or not there."""
        name = self._object_name(sobject)
        known = self._fields(name)
        resolved = []
        for requested in fields:
            fdef = _find(known, requested) if isinstance(requested, str) else None
            if fdef is None:
                raise ValueError(f"INVALID_FIELD: No such column {requested!r} on entity {name!r}")
            resolved.append((requested, fdef.name))
        ids = list(ids)
        if not all(isinstance(i, str) for i in ids):
            raise ValueError("record ids must be strings")
        if not ids:
            return []
        self._requests += math.ceil(len(ids) / MAX_RETRIEVE_IDS_PER_REQUEST)
        prefix = KEY_PREFIXES[name]
        wanted = [to_18(i[:15]) if ok and i.startswith(prefix) else None for i, ok in zip(ids, _well_formed(ids))]
        present = sorted({i for i in wanted if i is not None})
        columns = ", ".join(_q(c) for c in dict.fromkeys(["Id", *(c for _, c in resolved)]))
        rows: dict[str, dict[str, Any]] = {}
        with self._lock:
            for start in range(0, len(present), 500):
                chunk = present[start : start + 500]
                marks = ", ".join("?" for _ in chunk)
                cur = self._conn.execute(f"SELECT {columns} FROM {_q(name)} WHERE \"Id\" IN ({marks})", chunk)
                names = [d[0] for d in cur.description]
                for row in cur.fetchall():
                    rows[row[0]] = dict(zip(names, row))
        found = [rows.get(i) if i is not None else None for i in wanted]
        return [None if row is None else {"Id": row["Id"], **{r: row[c] for r, c in resolved}} for row in found]

    # ------------------------------------------------------------------ inspection

    def read(self, sobject: str) -> list[dict[str, Any]]:
        """All rows of ``sobject`` in insertion order, as ``{field name: value}``."""
        name = self._object_name(sobject)
        with self._lock:
            cur = self._conn.execute(f"SELECT * FROM {_q(name)} ORDER BY rowid")
            columns = [d[0] for d in cur.description]
            return [dict(zip(columns, row)) for row in cur.fetchall()]

    # ------------------------------------------------------------------ internals

    def _object_name(self, sobject: Any, known: Sequence[str] | None = None) -> str:
        """The canonical name of an object set up with ``ensure_object`` (case-insensitive), else ``KeyError``."""
        known = self._known_objects() if known is None else known
        for name in known:
            if isinstance(sobject, str) and name.lower() == sobject.lower():
                return name
        raise KeyError(
            f"unknown sobject {sobject!r}: the local CRM has {known or 'no objects'}; "
            "call ensure_object(...) first"
        )

    def _known_objects(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._conn.execute("SELECT DISTINCT sobject FROM _fields ORDER BY sobject")]

    def _fields(self, sobject: str) -> list[_Field]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT name, label, type, length, required, custom, updateable, external_id, id_lookup, "
                "extra_type_info FROM _fields WHERE sobject = ? ORDER BY position",
                (sobject,),
            ).fetchall()
        return [
            _Field(name, label, type_, length, bool(req), bool(custom), bool(upd), bool(ext), bool(lookup), extra)
            for name, label, type_, length, req, custom, upd, ext, lookup, extra in rows
        ]

    def _check_update(
        self, sobject: str, fields: list[_Field], raw_id: Any, values: Mapping[str, Any]
    ) -> RecordResult | tuple[str, dict[str, str | None]]:
        """A failed result, or (18-char id, values by field name) to write. Checks in Salesforce's order."""
        if raw_id in (None, ""):
            return _error("MISSING_ARGUMENT", "Id not specified in an update call")
        error = malformed_id(sobject, raw_id)
        if error is not None:
            return RecordResult(success=False, errors=(error,))
        record_id = to_18(raw_id[:15])
        resolved = _resolve_fields(sobject, fields, values)
        if isinstance(resolved, RecordResult):
            return resolved
        with self._lock:
            found = self._conn.execute(f"SELECT 1 FROM {_q(sobject)} WHERE \"Id\" = ?", (record_id,)).fetchone()
        if found is None:
            return _error("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id")
        problem = _value_problem(fields, resolved, creating=False)
        return problem or (record_id, resolved)

    def _check_upsert(
        self,
        sobject: str,
        fields: list[_Field],
        ext: _Field,
        values: Mapping[str, Any],
        key: str | None,
        key_counts: Mapping[str, int],
        existing: Mapping[str, list[str]],
    ) -> RecordResult | tuple[str | None, dict[str, str | None]]:
        """A failed result, or (matched id or None to create, values by field name) to write."""
        if any(k.lower() == "id" for k in values):
            return _error("INVALID_FIELD", "Record Id is not supported as the key of an upsert by external id", ["Id"])
        if key is None:
            return _error("MISSING_ARGUMENT", f"{ext.name} not specified")
        if key_counts[key] > 1:
            shown = next(v for k, v in values.items() if k.lower() == ext.name.lower())
            return _error("DUPLICATE_VALUE", f"Duplicate external id specified: {shown}", [ext.name])
        matches = existing.get(key, [])
        if len(matches) > 1:
            return _error(
                "DUPLICATE_EXTERNAL_ID",
                f"{ext.label}: more than one record found for external id field: [{', '.join(matches)}]",
                [ext.name],
            )
        resolved = _resolve_fields(sobject, fields, values)
        if isinstance(resolved, RecordResult):
            return resolved
        match = matches[0] if matches else None
        problem = _value_problem(fields, resolved, creating=match is None)
        return problem or (match, resolved)

    def _external_id_index(self, sobject: str, ext: _Field) -> dict[str, list[str]]:
        """Existing records by lower-cased external id value (text external ids match case-insensitively)."""
        index: dict[str, list[str]] = {}
        with self._lock:
            rows = self._conn.execute(
                f"SELECT \"Id\", {_q(ext.name)} FROM {_q(sobject)} WHERE {_q(ext.name)} IS NOT NULL ORDER BY rowid"
            ).fetchall()
        for record_id, value in rows:
            index.setdefault(value.lower(), []).append(record_id)
        return index

    def _new_id(self, cur: sqlite3.Cursor, sobject: str) -> str:
        """The next unused id for a created record: prefix + "Lc" + a persisted base-62 counter, as 18 chars."""
        row = cur.execute("SELECT last FROM _id_counters WHERE sobject = ?", (sobject,)).fetchone()
        counter = row[0] if row else 0
        while True:
            counter += 1
            record_id = to_18(KEY_PREFIXES[sobject] + _CREATED_ID_INFIX + _base62(counter, 10))
            if cur.execute(f"SELECT 1 FROM {_q(sobject)} WHERE \"Id\" = ?", (record_id,)).fetchone() is None:
                break
        cur.execute(
            "INSERT INTO _id_counters VALUES (?, ?) ON CONFLICT(sobject) DO UPDATE SET last = excluded.last",
            (sobject, counter),
        )
        return record_id


# ---------------------------------------------------------------------- module helpers


def _custom_name(name: str) -> str:
    _identifier(name, "custom field name")
    if not name.lower().endswith("__c"):
        raise ValueError(f"custom field {name!r} must end in '__c', as Salesforce custom field API names do")
    return name


def _label(name: str) -> str:
    return name[:-3] if name.lower().endswith("__c") else name


def _find(fields: Sequence[_Field], name: str) -> _Field | None:
    lowered = name.lower()
    return next((f for f in fields if f.name.lower() == lowered), None)


def _check_count(records: Sequence[Any]) -> None:
    if len(records) > MAX_RECORDS_PER_REQUEST:
        raise ValueError(
            f"{len(records)} records: cannot submit more than {MAX_RECORDS_PER_REQUEST} records into this call"
        )


def _record_type(record: Mapping[str, Any], index: int) -> str:
    attributes = record.get("attributes")
    sobject = attributes.get("type") if isinstance(attributes, Mapping) else None
    if not isinstance(sobject, str) or not sobject:
        raise ValueError(f"No SObject type found in the attributes of the record at index {index}")
    return sobject


def _well_formed(raw_ids: Sequence[Any]) -> list[bool]:
    """``is_valid_id`` for each value (vectorised, one call per request); non-strings are not well formed."""
    texts = pd.Series([v if isinstance(v, str) and v else None for v in raw_ids], dtype="string")
    mask = valid_id_mask(texts) & texts.notna()
    return mask.tolist()


def _normalise_id(value: Any, prefix: str) -> str | None:
    """The 18-character form of a well-formed id with ``prefix``, else None."""
    if not isinstance(value, str) or not value.startswith(prefix) or not is_valid_id(value):
        return None
    return to_18(value[:15])


def _external_key(record: Mapping[str, Any], ext: _Field) -> str | None:
    value = next((v for k, v in record.items() if k.lower() == ext.name.lower()), None)
    text = _as_text(value)
    return None if text is None else text.lower()


def _resolve_fields(
    sobject: str, fields: Sequence[_Field], values: Mapping[str, Any]
) -> RecordResult | dict[str, str | None]:
    """Field names -> describe names (INVALID_FIELD first, then INVALID_FIELD_FOR_INSERT_UPDATE), values as text."""
    resolved: dict[str, tuple[_Field, Any]] = {}
    for key, value in values.items():
        fdef = _find(fields, key)
        if fdef is None:
            return _error("INVALID_FIELD", f"No such column '{key}' on sobject of type {sobject}")
        resolved[fdef.name] = (fdef, value)
    for fdef, _ in resolved.values():
        if not fdef.updateable:
            return _error(
                "INVALID_FIELD_FOR_INSERT_UPDATE",
                f"Unable to create/update fields: {fdef.name}. Please check the security settings of this field "
                "and verify that it is read/write for your profile or permission set.",
                [fdef.name],
            )
    return {name: _as_text(value) for name, (_, value) in resolved.items()}


def _value_problem(
    fields: Sequence[_Field], values: Mapping[str, str | None], *, creating: bool
) -> RecordResult | None:
    """STRING_TOO_LONG, then INVALID_EMAIL_ADDRESS, then REQUIRED_FIELD_MISSING (all fields on create, else only
    the required fields this record sets to null), by Salesforce's rules (``salesforce_rules``)."""
    by_name = {f.name: f for f in fields}
    for check in ("STRING_TOO_LONG", "INVALID_EMAIL_ADDRESS"):
        for name, value in values.items():
            error = value_error(by_name[name].info(), value) if value is not None else None
            if error is not None and error.status_code == check:
                return RecordResult(success=False, errors=(error,))
    if creating:
        missing = [f.name for f in fields if f.required and f.updateable and values.get(f.name) is None]
    else:
        missing = [name for name, value in values.items() if value is None and by_name[name].required]
    if missing:
        return RecordResult(success=False, errors=(missing_required(missing),))
    return None


def _write(cur: sqlite3.Cursor, sobject: str, record_id: str, values: Mapping[str, str | None]) -> None:
    if not values:
        return
    assignments = ", ".join(f"{_q(name)} = ?" for name in values)
    cur.execute(f"UPDATE {_q(sobject)} SET {assignments} WHERE \"Id\" = ?", [*values.values(), record_id])
