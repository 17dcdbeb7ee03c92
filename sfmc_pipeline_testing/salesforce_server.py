"""A stateful fake Salesforce org (Platform REST API) for real-HTTP tests.

It imitates the documented Salesforce OAuth and REST contract our client relies on:

* ``POST /services/oauth2/token``: OAuth 2.0 username-password flow (``grant_type=password``, password = password +
  security token), client-credentials flow, and JWT bearer flow (``grant_type=urn:ietf:params:oauth:grant-type:
  jwt-bearer&assertion=JWT``: RS256, verified with ``jwt_public_key``; ``iss`` the client id, ``sub`` the username,
  ``aud`` one of ``jwt_audiences``, ``exp`` in the future and at most 5 minutes ahead). The client id and secret
  may come in the form body or with HTTP Basic client authentication (``Authorization: Basic
  base64(id:secret)``), as orgs accept. Success bodies have ``access_token, instance_url, id, token_type,
  issued_at`` (epoch ms string) and ``signature``; no ``expires_in`` and no refresh token; ``token_fields_omitted``
  leaves some out, as recorded password-flow responses do. ``id`` is the identity URL
  ``{base_url}/id/{org_id}/{user_id}`` (each server is its own org, with a random ``org_id``; ``identity_org_id_length
  = 15`` writes its 15-character form); ``identity_in_token = False`` leaves it out; ``instance_url`` (default
  ``base_url``) can be set to another URL. Errors are HTTP 400 with ``{"error": ..., "error_description": ...}``
  (the JWT ones, ``invalid assertion``, ``audience is invalid``, ``user hasn't approved this consumer``, follow
  reports, not a live org).
* ``GET /services/oauth2/userinfo`` (Bearer): ``{"sub", "user_id", "organization_id", "preferred_username", ...}``;
  401 ``INVALID_SESSION_ID`` without a valid token. Token and userinfo calls do not count toward API usage and carry
  no ``Sforce-Limit-Info``.
* ``/services/data/vNN.N/...`` needs ``Authorization: Bearer <token>``; otherwise 401
  ``[{"message":"Session expired or invalid","errorCode":"INVALID_SESSION_ID"}]``. Every other response there carries
  ``Sforce-Limit-Info: api-usage=USED/LIMIT`` and each such request adds 1 to USED.
* ``GET .../limits/``, ``GET .../sobjects/{Contact|Lead}/describe``,
  ``GET .../query?q=SELECT <fields> FROM Organization`` (SOQL, only the one-row ``Organization`` object: ``Id``,
  ``Name``, ``OrganizationType``, ``IsSandbox``, ``InstanceName``; another object is 400 ``INVALID_TYPE``, an unknown
  field 400 ``INVALID_FIELD``, anything else 400 ``MALFORMED_QUERY``),
  ``PATCH .../composite/sobjects`` (update by Id, <= 200 records, positional results),
  ``PATCH .../composite/sobjects/{SObject}/{ExternalIdField}`` (upsert by external id, ``created`` flag) and
  ``POST .../composite/sobjects/{SObject}`` with ``{"ids": [...], "fields": [...]}`` (retrieve, <= 2,000 ids: an
  array in the order of ``ids``, ``null`` for unknown, malformed, other-object or deleted ids, else
  ``{"attributes": {"type", "url"}, "<Field>": value, ...}`` with describe names; an unknown field is 400
  ``INVALID_FIELD``).
* JSON bodies are read with exact decimals (``parse_float=decimal.Decimal``), so stored numbers keep their digits.
  Values are checked against field types, request-level like Salesforce's deserialiser (HTTP 400
  ``JSON_PARSER_ERROR`` "Cannot deserialize instance of date from VALUE_STRING value ..."): ``date`` takes
  ``"YYYY-MM-DD"``, ``datetime`` an ISO 8601 string (``2026-11-20T18:00:00Z``, an offset, or none),
  ``double``/``currency``/``percent`` a JSON number or a numeric string (stored as ``Decimal``), ``int`` a JSON
  integer, ``boolean`` a JSON boolean; null (or ``""``) is always accepted here. Text types take any scalar.
* Request-level errors are JSON arrays ``[{"message":..., "errorCode":...}]`` (``request_errors_as_object``: a
  ``composite/sobjects`` one is the single object, as some orgs answer); per-record errors are
  ``{"statusCode":..., "message":..., "fields":[...]}`` inside a ``{"success": false, "errors": [...]}`` result
  that has no ``id``.
* Bulk API 2.0 ingest (``update`` and ``upsert``, CSV), stateful, each request one API request like the others:
  ``POST .../jobs/ingest`` (JSON job spec; answers the job info, state ``Open``; upsert needs an external id
  ``externalIdFieldName``), ``PUT .../jobs/ingest/{id}/batches`` (``text/csv``, **201**, one upload per Open job,
  at most ``bulk_max_upload_bytes`` else 413), ``PATCH .../jobs/ingest/{id}`` ``{"state": "UploadComplete" |
  "Aborted"}``, ``GET .../jobs/ingest/{id}`` (job info with ``numberRecordsProcessed``, ``numberRecordsFailed``,
  ``errorMessage``), ``GET .../jobs/ingest`` (``{"done", "records", "nextRecordsUrl"}``, ``bulk_list_page_size``
  per page), ``DELETE`` of a finished job, and the CSV results ``successfulResults`` (``sf__Id, sf__Created`` +
  the uploaded cells), ``failedResults`` (``sf__Id`` (empty), ``sf__Error`` = ``CODE:message:fields`` or ``--``,
  or exactly the text given to ``reject_bulk_records``, e.g. a bare ``UNABLE_TO_LOCK_ROW``)
  and ``unprocessedrecords``, all quoted, in a shuffled order (``bulk_result_order``). Job-state errors are 400
  ``INVALIDJOBSTATE``, an unknown job 404 ``NOT_FOUND``. A closed job answers ``InProgress`` for
  ``bulk_polls_before_complete`` polls (default 0), then is processed at the next poll: an empty cell leaves a
  field as it is, ``#N/A`` sets null, cells are typed by the field (``true``/``false``, integers, exact decimals;
  a cell that does not fit is a per-record ``INVALID_TYPE_ON_FIELD_IN_RECORD``), and each row goes through the
  same checks as the composite endpoint (``MALFORMED_ID``, ``INVALID_CROSS_REFERENCE_KEY``,
  ``ENTITY_IS_DELETED``, ``STRING_TOO_LONG``, ``INVALID_EMAIL_ADDRESS``, ``REQUIRED_FIELD_MISSING``, locks, upsert
  ``DUPLICATE_VALUE``...). The job fails (``Failed`` + ``errorMessage``) for an unknown or duplicate header field,
  a line ending other than the job's ``lineEnding``, a wrong number of cells, a cell over 32,000 or a row over
  400,000 characters, or no data. (Job-level messages and the status codes of job-state errors follow Bulk API
  conventions but are not confirmed against a live org.)

Validation rules (:meth:`FakeSalesforceServer.add_validation_rule`): a write that leaves a field with a value the
rule rejects fails with ``FIELD_CUSTOM_VALIDATION_EXCEPTION`` (composite and Bulk, update and upsert).

Fault injection: :meth:`FakeSalesforceServer.expire_sessions`, :meth:`~FakeSalesforceServer.fail_next`,
:meth:`~FakeSalesforceServer.exceed_request_limit_after`, :meth:`~FakeSalesforceServer.refuse_concurrent_next`
(403 ``ConcurrentPerOrgLongTxn Limit exceeded.``), :meth:`~FakeSalesforceServer.lock_rows_next`,
:meth:`~FakeSalesforceServer.drop_connection_next`; for Bulk jobs :meth:`~FakeSalesforceServer.fail_next_bulk_job`,
:meth:`~FakeSalesforceServer.leave_unprocessed_next`, :meth:`~FakeSalesforceServer.reject_bulk_records`,
:meth:`~FakeSalesforceServer.stall_bulk_jobs` (poll timeouts), :meth:`~FakeSalesforceServer.seed_bulk_job` (a job
left ``Open``/``UploadComplete`` by a crashed client, or another integration's) and
:meth:`~FakeSalesforceServer.process_bulk_jobs`.

Only the standard library is used for serving (``ThreadingHTTPServer`` on ``127.0.0.1``, port 0, one thread per
connection; the HTTP scaffolding is shared with the fake SFMC server in ``http_scaffold``). All state is guarded by
one lock, so tests may drive it from several threads; it is not held while a request waits out ``latency`` (alias
``latency_seconds``) or its response is written. ``max_in_flight`` is the most requests it was serving at once.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import hashlib
import hmac
import io
import json
import random
import re
import secrets
import string
import time
import traceback
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Callable
from urllib.parse import parse_qs, unquote_plus, urlsplit

import jwt

from sfmc_pipeline.salesforce.ids import CONTACT_PREFIX, LEAD_PREFIX, to_18
from sfmc_pipeline_testing.http_scaffold import (
    FakeRequestHandler,
    FakeServerBase,
    Fault,
    FaultQueue,
)
from sfmc_pipeline_testing.http_scaffold import Response as _Response

__all__ = [
    "FakeSalesforceServer",
    "RecordedRequest",
    "fake_id",
    "MAX_COLLECTION_RECORDS",
    "MAX_COLLECTION_CHUNKS",
    "MAX_RETRIEVE_IDS",
    "MAX_BULK_FIELD_CHARACTERS",
    "MAX_BULK_RECORD_CHARACTERS",
    "MAX_BULK_UPLOAD_BYTES",
]

MAX_COLLECTION_RECORDS = 200
"""sObject Collections accept at most this many records per request."""

MAX_COLLECTION_CHUNKS = 10
"""sObject Collections process consecutive same-type records as one chunk; at most this many chunks per request."""

MAX_RETRIEVE_IDS = 2000
"""sObject Collections retrieve (POST) accepts at most this many ids per request."""

MAX_BULK_FIELD_CHARACTERS = 32000
"""Bulk API 2.0: characters per field value (a longer one fails the job here)."""

MAX_BULK_RECORD_CHARACTERS = 400000
"""Bulk API 2.0: characters per record (a longer one fails the job here)."""

MAX_BULK_UPLOAD_BYTES = 150 * 1024 * 1024 * 3 // 4
"""Bulk API 2.0: one upload is at most 150 MB after base64 encoding, i.e. this many raw bytes."""

_JSON_CT = "application/json;charset=UTF-8"
_BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
_ID_SHAPE = re.compile(r"^[A-Za-z0-9]{15}(?:[A-Z0-5]{3})?$")
_DATA_PATH = re.compile(r"^/services/data(?:/(?P<version>[^/]+)(?P<rest>/.*)?)?/?$")
_VERSION = re.compile(r"^v(?P<major>\d{2})\.\d$")
_EMAIL_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_EMAIL = re.compile(rf"^[A-Za-z0-9.!#$%&'*+/=?^_`{{|}}~-]+@{_EMAIL_LABEL}(?:\.{_EMAIL_LABEL})+$")
_MIN_VERSION, _MAX_VERSION = 20, 67
# Describe types whose values are strings limited by ``length``.
_STRING_TYPES = frozenset(
    {"string", "textarea", "email", "phone", "url", "picklist", "multipicklist", "combobox", "encryptedstring"}
)
_NUMBER_TYPES = frozenset({"double", "currency", "percent"})
_SOAP_TYPES = {"id": "tns:ID", "date": "xsd:date", "datetime": "xsd:dateTime", "int": "xsd:int",
               "boolean": "xsd:boolean", **{t: "xsd:double" for t in _NUMBER_TYPES}}
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}(?::?\d{2})?)?$")
_NUMERIC = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$")
_SOQL = re.compile(r"^\s*SELECT\s+(?P<fields>[A-Za-z_][A-Za-z0-9_]*(?:\s*,\s*[A-Za-z_][A-Za-z0-9_]*)*)\s+FROM\s+"
                   r"(?P<object>[A-Za-z_][A-Za-z0-9_]*)\s*$", re.IGNORECASE)

_INVALID_SESSION = [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]
_NOT_FOUND = [{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}]
_LIMIT_EXCEEDED = [{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}]
_CONCURRENT_LIMIT = [{"message": "ConcurrentPerOrgLongTxn Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}]
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
JWT_AUDIENCES = ("https://login.salesforce.com", "https://test.salesforce.com")
_ROLLED_BACK = {
    "statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK",
    "message": "Record rolled back because not all records were valid and the request was using AllOrNone header",
    "fields": [],
}


def fake_id(prefix: str, n: int) -> str:
    """A deterministic, well-formed 18-character Salesforce id: ``prefix`` (e.g. ``"003"``) + a base-62 number.

    Handy for seeding records: ``fake_id(CONTACT_PREFIX, 1)``. Ids created by the fake's upserts use a different
    infix, so they never collide with ids made here.
    """
    return to_18(prefix + "Fk" + _base62(n, 10))


def _base62(n: int, width: int) -> str:
    if n < 0:
        raise ValueError("n must be >= 0")
    digits = []
    while n:
        n, rem = divmod(n, 62)
        digits.append(_BASE62[rem])
    text = "".join(reversed(digits)) or "0"
    if len(text) > width:
        raise ValueError(f"{n} does not fit in {width} base-62 digits")
    return text.rjust(width, "0")


def _well_formed_id(value: Any) -> bool:
    """Same rule as ``salesforce_id.is_valid_id`` (15 chars, or 18 with the right checksum), without pandas."""
    if not isinstance(value, str) or not _ID_SHAPE.match(value):
        return False
    return len(value) == 15 or to_18(value[:15]) == value


@dataclass
class RecordedRequest:
    """One HTTP request the fake received (recorded before any fault injection is applied)."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: str
    json: Any = None
    status: int | None = None
    """The HTTP status the fake answered with; ``None`` while in flight or when the connection was dropped."""

    def header(self, name: str, default: str | None = None) -> str | None:
        """Case-insensitive request header lookup."""
        lowered = name.lower()
        for key, value in self.headers.items():
            if key.lower() == lowered:
                return value
        return default


@dataclass
class _Field:
    name: str
    label: str
    type: str
    length: int
    updateable: bool
    createable: bool
    nillable: bool
    custom: bool
    external_id: bool
    id_lookup: bool
    extra_type_info: str | None
    unique: bool = False

    def describe(self) -> dict[str, Any]:
        byte_length = self.length * 3 if self.type in _STRING_TYPES else (18 if self.type == "id" else 0)
        return {
            "name": self.name,
            "label": self.label,
            "type": self.type,
            "soapType": _SOAP_TYPES.get(self.type, "xsd:string" if self.type in _STRING_TYPES else "xsd:anyType"),
            "length": self.length,
            "byteLength": byte_length,
            "updateable": self.updateable,
            "createable": self.createable,
            "nillable": self.nillable,
            "custom": self.custom,
            "externalId": self.external_id,
            "idLookup": self.id_lookup,
            "unique": self.unique,
            "extraTypeInfo": self.extra_type_info,
            "filterable": not (self.type == "textarea" and self.length > 255),
            "htmlFormatted": self.extra_type_info == "richtextarea",
            "defaultedOnCreate": self.type == "id",
            "calculated": False,
        }


@dataclass
class _SObject:
    name: str
    label: str
    label_plural: str
    key_prefix: str
    fields: dict[str, _Field] = field(default_factory=dict)  # lower-cased name -> field

    def field(self, name: str) -> _Field | None:
        return self.fields.get(name.lower())

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.label,
            "labelPlural": self.label_plural,
            "keyPrefix": self.key_prefix,
            "custom": False,
            "createable": True,
            "updateable": True,
            "deletable": True,
            "queryable": True,
            "fields": [f.describe() for f in self.fields.values()],
        }


def _json_response(status: int, payload: Any, headers: list[tuple[str, str]] | None = None) -> _Response:
    body = _dumps(payload).encode("utf-8")
    return _Response(status, body, [("Content-Type", _JSON_CT), *(headers or [])])


def _dumps(value: Any) -> str:
    """``json.dumps``, with ``Decimal`` written as an exact number (stored values keep the digits they came with)."""
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))}: {_dumps(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_dumps(v) for v in value) + "]"
    return json.dumps(value)


def _loads(text: str) -> Any:
    """JSON as Salesforce reads it: exact decimals, no NaN/Infinity."""

    def constant(name: str) -> Any:
        raise ValueError(f"Non-standard token '{name}'")

    return json.loads(text, parse_float=Decimal, parse_constant=constant)


def _parse_json(body: str) -> Any:
    """The request body as JSON, else 400 JSON_PARSER_ERROR with a Jackson-style message."""
    if not body.strip():
        raise _RequestError(400, "JSON_PARSER_ERROR", "No content to map due to end-of-input at [line:1, column:0]")
    try:
        return _loads(body)
    except json.JSONDecodeError as exc:
        if exc.pos < len(exc.doc):
            ch = exc.doc[exc.pos]
            message = (
                f"Unexpected character ('{ch}' (code {ord(ch)})): expected a valid value (number, String, array, "
                f"object, 'true', 'false' or 'null') at [line:{exc.lineno}, column:{exc.colno}]"
            )
        else:
            message = f"Unexpected end-of-input at [line:{exc.lineno}, column:{exc.colno}]"
        raise _RequestError(400, "JSON_PARSER_ERROR", message) from None
    except ValueError as exc:
        raise _RequestError(400, "JSON_PARSER_ERROR", str(exc)) from None


def _typed_value(fdef: _Field, value: Any) -> Any:
    """``value`` as stored in a field of ``fdef.type``; 400 JSON_PARSER_ERROR when the JSON type does not fit."""
    if value is None or value == "" or fdef.type not in _SOAP_TYPES or fdef.type == "id":
        return value
    if fdef.type == "boolean":
        fits = isinstance(value, bool)
    elif isinstance(value, bool):
        fits = False
    elif fdef.type == "int":
        fits = isinstance(value, int)
    elif fdef.type in _NUMBER_TYPES:
        if isinstance(value, str) and _NUMERIC.match(value):
            return Decimal(value)
        fits = isinstance(value, (int, Decimal))
    else:
        pattern = _DATE if fdef.type == "date" else _DATETIME
        parse = dt.date.fromisoformat if fdef.type == "date" else dt.datetime.fromisoformat
        fits = isinstance(value, str) and bool(pattern.match(value))
        try:
            fits = fits and bool(parse(value.replace("Z", "+00:00")))
        except ValueError:
            fits = False
    if fits:
        return value
    token = (
        ("VALUE_TRUE" if value else "VALUE_FALSE") if isinstance(value, bool)
        else "VALUE_NUMBER_INT" if isinstance(value, int)
        else "VALUE_NUMBER_FLOAT" if isinstance(value, (float, Decimal))
        else "VALUE_STRING"
    )
    raise _RequestError(
        400,
        "JSON_PARSER_ERROR",
        f"Cannot deserialize instance of {_SOAP_TYPES[fdef.type].split(':')[1].lower()} from {token} value "
        f"{_dumps(value).strip(chr(34))} or request may be missing a required field",
    )


def _record_error(code: str, message: str, fields: list[str] | None = None) -> dict[str, Any]:
    return {"statusCode": code, "message": message, "fields": list(fields or [])}


class _RequestError(Exception):
    """A request-level (non-2xx) error with a Salesforce error-array body."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.body = [{"message": message, "errorCode": code}]


def _standard_sobjects() -> dict[str, _SObject]:
    def std(name, label, type_, length, *, nillable=True, updateable=True, extra=None, id_lookup=False):
        return _Field(
            name=name, label=label, type=type_, length=length, updateable=updateable, createable=updateable,
            nillable=nillable, custom=False, external_id=False, id_lookup=id_lookup, extra_type_info=extra,
        )

    contact = _SObject("Contact", "Contact", "Contacts", CONTACT_PREFIX)
    lead = _SObject("Lead", "Lead", "Leads", LEAD_PREFIX)
    for sobject in (contact, lead):
        id_field = std("Id", f"{sobject.label} ID", "id", 18, nillable=False, updateable=False, id_lookup=True)
        sobject.fields["id"] = id_field
        sobject.fields["lastname"] = std("LastName", "Last Name", "string", 80, nillable=False, extra="personname")
        sobject.fields["firstname"] = std("FirstName", "First Name", "string", 40, extra="personname")
        if sobject is lead:
            sobject.fields["company"] = std("Company", "Company", "string", 255, nillable=False)
        sobject.fields["email"] = std("Email", "Email", "email", 80, id_lookup=True)
    return {"Contact": contact, "Lead": lead}


@dataclass
class _Raw:
    """A non-JSON API response body (Bulk CSV results, the empty 201 of an upload)."""

    body: bytes
    content_type: str | None = None


@dataclass
class _BulkJob:
    id: str
    object: str
    operation: str
    external_id_field: str | None
    line_ending: str
    column_delimiter: str
    created_by_id: str
    created_date: str
    state: str = "Open"
    data: str | None = None
    polls: int = 0
    processed: int = 0
    failed: int = 0
    error_message: str | None = None
    successful: list[list[str]] = field(default_factory=list)  # sf__Id, sf__Created + the uploaded cells
    failures: list[list[str]] = field(default_factory=list)  # sf__Id, sf__Error + the uploaded cells
    unprocessed: list[list[str]] = field(default_factory=list)
    header: list[str] = field(default_factory=list)

    def info(self, api_version: str, *, full: bool = True) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "operation": self.operation,
            "object": self.object,
            "createdById": self.created_by_id,
            "createdDate": self.created_date,
            "systemModstamp": self.created_date,
            "state": self.state,
            "concurrencyMode": "Parallel",
            "contentType": "CSV",
            "apiVersion": Decimal(api_version),
            "contentUrl": f"services/data/v{api_version}/jobs/ingest/{self.id}/batches",
            "lineEnding": self.line_ending,
            "columnDelimiter": self.column_delimiter,
        }
        if self.external_id_field:
            body["externalIdFieldName"] = self.external_id_field
        if full:
            body.update({
                "jobType": "V2Ingest",
                "numberRecordsProcessed": self.processed,
                "numberRecordsFailed": self.failed,
                "retries": 0,
                "totalProcessingTime": 0,
                "apiActiveProcessingTime": 0,
                "apexProcessingTime": 0,
            })
            if self.error_message:
                body["errorMessage"] = self.error_message
        return body

_BULK_TERMINAL = frozenset({"JobComplete", "Failed", "Aborted"})
_BULK_DELIMITERS = {"COMMA": ",", "TAB": "\t", "PIPE": "|", "SEMICOLON": ";", "CARET": "^", "BACKQUOTE": "`"}
_BULK_INT = re.compile(r"^[+-]?\d+$")


def _bulk_line_ending(text: str) -> str | None:
    """``"LF"``/``"CRLF"``: the line ending of the rows (line breaks inside quoted cells do not count); None for
    one line, ``"mixed"`` when both occur."""
    found: set[str] = set()
    quoted = False
    for index, ch in enumerate(text):
        if ch == '"':
            quoted = not quoted
        elif ch == "\n" and not quoted:
            found.add("CRLF" if index and text[index - 1] == "\r" else "LF")
    return None if not found else found.pop() if len(found) == 1 else "mixed"


def _bulk_value(fdef: _Field, cell: str) -> Any:
    """A CSV cell as the JSON value the composite endpoint would get for the field's type (type checks follow)."""
    if fdef.type == "boolean" and cell.lower() in ("true", "false", "1", "0"):
        return cell.lower() in ("true", "1")
    if fdef.type == "int" and _BULK_INT.match(cell):
        return int(cell)
    return cell  # text; numbers, dates and datetimes are checked (and numbers made Decimal) by _typed_value


class _Handler(FakeRequestHandler):
    """The shared handler (:mod:`~sfmc_pipeline_testing.http_scaffold`), with ``HEAD`` too."""

    server_version = "FakeSalesforce/1.0"

    do_HEAD = FakeRequestHandler._dispatch


class FakeSalesforceServer(FakeServerBase):
    """A fake Salesforce org (login + Platform REST API) served on ``127.0.0.1:<random port>``.

    ``base_url`` is both the login URL (``base_url + "/services/oauth2/token"``) and the ``instance_url``.
    Contact and Lead are seeded with the standard fields ``Id, LastName, FirstName, Email`` (+ ``Company`` on Lead);
    add custom fields with :meth:`add_field` and records with :meth:`add_record`.

    Public state (read it after the HTTP calls under test have returned):

    * ``records``: sobject -> 18-char Id -> field values (``{"Id": ..., "LastName": ..., ...}``, describe names).
    * ``write_log``: every applied record write ``(sobject, Id, fields written)`` in order.
    * ``requests``: every :class:`RecordedRequest`, token calls included.
    * ``api_usage`` / ``daily_api_limit``: the numbers behind ``Sforce-Limit-Info``.
    * ``org_id`` / ``user_id``: this org's random 18-character ids (in the identity URL and userinfo).
    * ``latency`` (alias ``latency_seconds``, also as the constructor argument): seconds each request waits before
      it is handled (a network round trip), concurrently with others; may be changed later.
    * ``in_flight`` / ``max_in_flight``: requests being handled right now (from their arrival until their answer
      starts) and the most at once so far (set it to 0, or call :meth:`reset_max_in_flight`, to measure a phase).
    """

    def __init__(
        self,
        *,
        client_id: str = "fake-consumer-key",
        client_secret: str = "fake-consumer-secret",
        username: str = "user@example.com",
        password: str = "pw",
        security_token: str = "TOKEN123",
        api_version: str = "66.0",
        daily_api_limit: int = 15000,
        identity_in_token: bool = True,
        organization_name: str = "Fake Org",
        is_sandbox: bool = False,
        latency: float = 0.0,
        latency_seconds: float | None = None,
        jwt_public_key: Any = None,
        jwt_audiences: tuple[str, ...] = JWT_AUDIENCES,
    ) -> None:
        if latency_seconds is not None:  # the earlier name of ``latency``
            if latency:
                raise TypeError("give latency or latency_seconds, not both")
            latency = latency_seconds
        super().__init__(latency=latency)  # ValueError if < 0
        self.client_id = client_id
        self.client_secret = client_secret
        self.username = username
        self.password = password
        self.security_token = security_token
        self.api_version = api_version
        self.daily_api_limit = daily_api_limit
        self.identity_in_token = identity_in_token
        """False: token responses leave out ``id`` (the identity URL); clients must ask userinfo for the org."""
        self.organization_name = organization_name
        """``Organization.Name`` (SOQL ``SELECT Name FROM Organization``)."""
        self.is_sandbox = is_sandbox
        """``Organization.IsSandbox``."""
        self.jwt_public_key = jwt_public_key
        """The public key (PEM or a ``cryptography`` key) of the certificate uploaded to the app: JWT assertions are
        verified with it (None: the JWT bearer flow is not set up, every assertion is ``invalid_grant``)."""
        self.jwt_audiences = tuple(jwt_audiences)
        """The ``aud`` values accepted in a JWT assertion."""
        self.token_fields_omitted: tuple[str, ...] = ()
        """Fields left out of token responses (e.g. ``("token_type", "issued_at", "signature")``, as recorded)."""
        self.identity_org_id_length = 18
        """15: the identity URL carries the org id's 15-character form (as some recorded responses do)."""
        self.instance_url: str | None = None
        """The ``instance_url`` token responses name (None: ``base_url``)."""
        self.request_errors_as_object = False
        """True: a request-level error of ``composite/sobjects`` is one JSON object, not an array."""
        self.api_usage = 0
        self.records: dict[str, dict[str, dict[str, Any]]] = {"Contact": {}, "Lead": {}}
        self.write_log: list[tuple[str, str, dict[str, Any]]] = []
        self.requests: list[RecordedRequest] = []
        self.deleted_ids: dict[str, set[str]] = {"Contact": set(), "Lead": set()}
        self.issued_tokens: list[str] = []
        self._sobjects = _standard_sobjects()
        self._valid_tokens: set[str] = set()
        self._faults = FaultQueue()
        self._locks: dict[str, int] = {}
        self._limit_countdown: int | None = None
        self._limit_blocked = False
        self._created_counter = 0
        self.bulk_jobs: dict[str, _BulkJob] = {}
        """Bulk API 2.0 ingest jobs by id (:meth:`bulk_job` gives the JSON view)."""
        self.bulk_polls_before_complete = 0
        """Job-info polls of a closed job that still answer ``InProgress`` before it is processed (0: the first)."""
        self.bulk_result_order = "shuffled"
        """Order of Bulk result rows: ``"shuffled"`` (seeded by the job id), ``"reversed"`` or ``"input"``."""
        self.bulk_list_page_size = 1000
        """Jobs per page of ``GET jobs/ingest`` (``nextRecordsUrl`` for the rest)."""
        self.bulk_max_upload_bytes = MAX_BULK_UPLOAD_BYTES
        """A larger upload is refused with 413."""
        self._bulk_counter = 0
        self._bulk_faults: list[dict[str, Any]] = []
        self._bulk_record_errors: dict[str, tuple[str, str, list[str]] | str] = {}
        self._bulk_stalled = False
        self._validation_rules: list[tuple[str, str, Callable[[Any], bool], str]] = []
        self._org_id = to_18("00D" + "Fk" + _base62(secrets.randbelow(62**10), 10))
        self._user_id = to_18("005" + "Fk" + _base62(secrets.randbelow(62**10), 10))

    # ------------------------------------------------------------------ lifecycle

    # start(), stop(), the context manager and port: FakeServerBase

    _handler_class = _Handler
    _thread_name = "fake-salesforce"  # threads fake-salesforce-PORT and fake-salesforce-conn-PORT

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` once started (no trailing slash; it stays after ``stop()``), ``""`` before."""
        return super().base_url if self._port is not None else ""

    @property
    def latency_seconds(self) -> float:
        """The earlier name of ``latency`` (seconds each request waits before it is handled)."""
        return self.latency

    @latency_seconds.setter
    def latency_seconds(self, value: float) -> None:
        self.latency = value

    # ------------------------------------------------------------------ convenience URLs

    @property
    def token_url(self) -> str:
        """``base_url + "/services/oauth2/token"``."""
        return f"{self.base_url}/services/oauth2/token"

    @property
    def api_url(self) -> str:
        """``base_url + "/services/data/v{api_version}"`` (no trailing slash)."""
        return f"{self.base_url}/services/data/v{self.api_version}"

    @property
    def org_id(self) -> str:
        """This org's 18-character id (``00D...``), random per server instance."""
        return self._org_id

    @property
    def user_id(self) -> str:
        """The 18-character id (``005...``) of the user every token belongs to."""
        return self._user_id

    @property
    def identity_url(self) -> str:
        """``base_url + "/id/{org_id}/{user_id}"``, the ``id`` of token responses."""
        return f"{self.base_url}/id/{self._org_id}/{self._user_id}"

    @property
    def handler_errors(self) -> list[str]:
        """Tracebacks of unexpected exceptions inside the fake (each also answered 500 UNKNOWN_EXCEPTION), and of
        any exception that ended a connection's handler (``errors`` has the exceptions themselves)."""
        return ["".join(traceback.format_exception(type(e), e, e.__traceback__)) for e in self.errors]

    # ------------------------------------------------------------------ schema and data seeding

    def add_field(
        self,
        sobject: str,
        name: str,
        *,
        type: str = "textarea",  # noqa: A002 - mirrors the describe property name
        length: int = 32768,
        updateable: bool = True,
        extra_type_info: str | None = "plaintextarea",
        custom: bool | None = None,
        external_id: bool = False,
        label: str | None = None,
        nillable: bool = True,
        unique: bool = False,
    ) -> None:
        """Add (or replace, matched case-insensitively) a field in ``sobject``'s describe.

        ``custom`` defaults to ``name.endswith("__c")``; ``label`` defaults to the name without ``__c``.
        ``extraTypeInfo`` is reported as given for ``textarea`` fields; for other types the default
        ``"plaintextarea"`` is reported as ``null`` (pass another value to force it). ``external_id=True`` also makes
        the field ``idLookup``. ``createable`` follows ``updateable``.
        """
        with self._lock:
            obj = self._sobject(sobject)
            if type != "textarea" and extra_type_info == "plaintextarea":
                extra_type_info = None
            is_custom = name.lower().endswith("__c") if custom is None else custom
            default_label = name[:-3] if name.lower().endswith("__c") else name
            obj.fields[name.lower()] = _Field(
                name=name,
                label=label or default_label,
                type=type,
                length=length,
                updateable=updateable,
                createable=updateable,
                nillable=nillable,
                custom=is_custom,
                external_id=external_id,
                id_lookup=external_id,
                extra_type_info=extra_type_info,
                unique=unique,
            )

    def remove_field(self, sobject: str, name: str) -> None:
        """Remove a field (case-insensitive) from the describe; existing record values for it are dropped too."""
        with self._lock:
            obj = self._sobject(sobject)
            removed = obj.fields.pop(name.lower(), None)
            if removed is None:
                raise KeyError(f"{sobject} has no field {name!r}")
            for values in self.records[obj.name].values():
                values.pop(removed.name, None)

    def describe_fields(self, sobject: str) -> list[dict[str, Any]]:
        """The ``fields`` array the describe endpoint would return for ``sobject`` (no HTTP, no usage)."""
        with self._lock:
            return [f.describe() for f in self._sobject(sobject).fields.values()]

    def add_record(self, sobject: str, record_id: str, **fields: Any) -> None:
        """Seed a record. ``record_id`` may be 15 or 18 characters and must carry the sobject's key prefix;
        it is stored under its 18-character form. Field names are matched case-insensitively against the describe
        (unknown names raise ``KeyError``) and stored under the describe name."""
        with self._lock:
            obj = self._sobject(sobject)
            if not _well_formed_id(record_id) or not record_id.startswith(obj.key_prefix):
                raise ValueError(f"{record_id!r} is not a well-formed {obj.name} id (prefix {obj.key_prefix})")
            rid = to_18(record_id[:15])
            values: dict[str, Any] = {"Id": rid}
            for key, value in fields.items():
                fdef = obj.field(key)
                if fdef is None:
                    raise KeyError(f"{obj.name} has no field {key!r}; add it with add_field first")
                if fdef.name != "Id":
                    values[fdef.name] = value
            self.records[obj.name][rid] = values
            self.deleted_ids[obj.name].discard(rid)

    def delete_record(self, sobject: str, record_id: str) -> None:
        """Move a record to the recycle bin: it stays in ``records`` (and in ``deleted_ids``), updates to it fail with
        ENTITY_IS_DELETED, and upserts no longer match it."""
        with self._lock:
            obj = self._sobject(sobject)
            rid = self._normalise_id(record_id)
            if rid not in self.records[obj.name]:
                raise KeyError(f"no {obj.name} record {record_id!r}")
            self.deleted_ids[obj.name].add(rid)

    def new_record_id(self, sobject: str) -> str:
        """A fresh, unused, well-formed 18-character id with ``sobject``'s key prefix (not added to ``records``)."""
        with self._lock:
            return self._next_created_id(self._sobject(sobject))

    # ------------------------------------------------------------------ sessions, limits and faults

    def issue_token(self) -> str:
        """A valid access token without an HTTP round trip (no request is recorded)."""
        with self._lock:
            return self._new_token()

    def expire_sessions(self) -> None:
        """Invalidate every access token issued so far: API calls using them get 401 INVALID_SESSION_ID."""
        with self._lock:
            self._valid_tokens.clear()

    def set_api_usage(self, used: int) -> None:
        """Set the current 24 h API usage count (the USED in ``Sforce-Limit-Info: api-usage=USED/LIMIT``).

        Usage above ``daily_api_limit`` blocks API calls with 403 REQUEST_LIMIT_EXCEEDED, as a real org does."""
        with self._lock:
            self.api_usage = used

    def fail_next(
        self,
        status: int,
        *,
        path_contains: str = "",
        times: int = 1,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer the next ``times`` requests whose path contains ``path_contains`` with ``status``.

        Applies to any path (the token endpoint included) before authentication. ``body`` defaults to a Salesforce
        error array for the status (503 SERVER_UNAVAILABLE, 403 REQUEST_LIMIT_EXCEEDED, 500 UNKNOWN_EXCEPTION, 401
        INVALID_SESSION_ID, 404 NOT_FOUND, ...); a ``str``/``bytes`` body is sent raw as ``text/html`` (as an edge proxy
        would), anything else as JSON. ``headers`` are added to the response. Rules are consumed first-in first-out.
        """
        with self._lock:  # ValueError unless times >= 1
            self._faults.add(Fault("fail", path_contains, times, status=status, body=body,
                                   headers=dict(headers or {})))

    def exceed_request_limit_after(self, n_requests: int) -> None:
        """After ``n_requests`` more successful (2xx) API requests, every API request gets 403 REQUEST_LIMIT_EXCEEDED
        ``TotalRequests Limit exceeded.`` until :meth:`reset_request_limit`. ``0`` blocks immediately."""
        if n_requests < 0:
            raise ValueError("n_requests must be >= 0")
        with self._lock:
            self._limit_countdown = n_requests
            self._limit_blocked = n_requests == 0

    def refuse_concurrent_next(self, *, path_contains: str = "/services/data", times: int = 1) -> None:
        """The next ``times`` API requests whose path contains ``path_contains`` get 403 REQUEST_LIMIT_EXCEEDED
        ``ConcurrentPerOrgLongTxn Limit exceeded.`` (too many long-running requests at once: transient)."""
        self.fail_next(403, path_contains=path_contains, times=times, body=_CONCURRENT_LIMIT)

    def reset_request_limit(self) -> None:
        """Lift the block set by :meth:`exceed_request_limit_after` (``api_usage`` is left as it is)."""
        with self._lock:
            self._limit_countdown = None
            self._limit_blocked = False

    def lock_rows_next(self, record_ids: list[str], times: int = 1) -> None:
        """The next ``times`` writes to each of these records fail per record with UNABLE_TO_LOCK_ROW."""
        with self._lock:
            for record_id in record_ids:
                rid = self._normalise_id(record_id)
                self._locks[rid] = self._locks.get(rid, 0) + times

    def drop_connection_next(self, *, path_contains: str = "", times: int = 1) -> None:
        """Close the socket without any response for the next ``times`` requests whose path contains
        ``path_contains`` (after reading the request body; nothing is applied and usage is not counted)."""
        with self._lock:
            self._faults.add(Fault("drop", path_contains, times))

    def api_requests(self, path_contains: str = "", method: str | None = None) -> list[RecordedRequest]:
        """Recorded ``/services/data/...`` requests, optionally filtered by path substring and method."""
        with self._lock:
            return [
                r
                for r in self.requests
                if r.path.startswith("/services/data")
                and path_contains in r.path
                and (method is None or r.method == method)
            ]

    def token_requests(self) -> list[RecordedRequest]:
        """Recorded ``/services/oauth2/token`` requests."""
        with self._lock:
            return [r for r in self.requests if r.path.startswith("/services/oauth2/token")]

    def userinfo_requests(self) -> list[RecordedRequest]:
        """Recorded ``/services/oauth2/userinfo`` requests."""
        with self._lock:
            return [r for r in self.requests if r.path.startswith("/services/oauth2/userinfo")]

    # ------------------------------------------------------------------ Bulk API 2.0 ingest: state and faults

    def bulk_requests(self, path_suffix: str = "", method: str | None = None) -> list[RecordedRequest]:
        """Recorded ``/services/data/vNN.N/jobs/ingest...`` requests (optionally ending with ``path_suffix``)."""
        return [r for r in self.api_requests("/jobs/ingest", method) if r.path.rstrip("/").endswith(path_suffix)]

    def bulk_job(self, job_id: str) -> dict[str, Any]:
        """The job info ``GET jobs/ingest/{id}`` would answer, plus ``"data"`` (the uploaded CSV text or None);
        no HTTP, no usage, no processing."""
        with self._lock:
            job = self.bulk_jobs[job_id]
            return {**job.info(self.api_version), "data": job.data}

    def seed_bulk_job(
        self,
        sobject: str,
        operation: str = "update",
        *,
        csv_text: str | None = None,
        state: str = "Open",
        external_id_field: str | None = None,
        created_by_id: str | None = None,
    ) -> str:
        """Create an ingest job directly (no HTTP), e.g. another integration's open job, or one "left behind" by a
        crashed client: ``state`` ``Open`` (with or without ``csv_text``), ``UploadComplete`` (needs ``csv_text``;
        processed on the next poll as usual) or ``Aborted``. Returns the job id."""
        if state not in ("Open", "UploadComplete", "Aborted"):
            raise ValueError("state must be Open, UploadComplete or Aborted")
        if state == "UploadComplete" and csv_text is None:
            raise ValueError("an UploadComplete job needs csv_text")
        with self._lock:
            obj = self._sobject(sobject)
            job = self._new_bulk_job(obj, operation, external_id_field, "LF", "COMMA", created_by_id)
            job.data = csv_text
            job.state = state
            return job.id

    def process_bulk_jobs(self) -> list[str]:
        """Finish every ``UploadComplete``/``InProgress`` job now (stalled ones too), as Salesforce would while no
        client is polling (e.g. between a crashed run and the next one). Returns their ids."""
        with self._lock:
            done = []
            for job in self.bulk_jobs.values():
                if job.state in ("UploadComplete", "InProgress"):
                    self._process_bulk_job(job)
                    done.append(job.id)
            return done

    def stall_bulk_jobs(self, stalled: bool = True) -> None:
        """``True``: closed jobs stay ``InProgress`` however often they are polled (a poll timeout); ``False``:
        they finish again on the next poll (``process_bulk_jobs`` finishes them at once)."""
        with self._lock:
            self._bulk_stalled = stalled

    def fail_next_bulk_job(self, error_message: str = "InvalidBatch : Failed to process the job", *,
                           process_first: int = 0) -> None:
        """The next job to be processed processes its first ``process_first`` rows (applied, in its successful
        and failed results), then ends ``Failed`` with ``errorMessage``; its other rows are unprocessed."""
        with self._lock:
            self._bulk_faults.append({"kind": "fail", "message": error_message, "process_first": process_first})

    def leave_unprocessed_next(self, count: int, *, state: str = "JobComplete") -> None:
        """The next job to be processed leaves its last ``count`` rows unprocessed (not applied; in
        ``unprocessedrecords``) and ends in ``state``."""
        if count < 1:
            raise ValueError("count must be >= 1")
        with self._lock:
            self._bulk_faults.append({"kind": "unprocessed", "count": count, "state": state})

    def reject_bulk_records(self, errors: dict[str, tuple[str, str, list[str]] | str]) -> None:
        """Per-record failures for rows that would otherwise succeed, keyed by the row's key cell (``Id`` for
        update, the external id value for upsert): ``(statusCode, message, fields)``, e.g. a validation rule's
        ``("FIELD_CUSTOM_VALIDATION_EXCEPTION", "Email must be corporate", ["Email"])``, served as
        ``CODE:message:fields``; or a string, served as the ``sf__Error`` cell exactly (a bare ``UNABLE_TO_LOCK_ROW``,
        ``CODE:message``). Applies to every Bulk job until replaced (an empty dict clears it)."""
        with self._lock:
            self._bulk_record_errors = {key: value if isinstance(value, str) else (value[0], value[1], list(value[2]))
                                        for key, value in errors.items()}

    def add_validation_rule(self, sobject: str, field: str, rejects: Callable[[Any], bool], message: str) -> None:
        """A validation rule on ``field``: a write (composite or Bulk, update or upsert) after which the record's
        value of ``field`` satisfies ``rejects`` fails with ``FIELD_CUSTOM_VALIDATION_EXCEPTION``, ``message`` and
        ``fields: [field]`` (the rule's error shown at the field), as an org's validation rule does."""
        with self._lock:
            fdef = self._sobject(sobject).field(field)
            if fdef is None:
                raise KeyError(f"{sobject} has no field {field!r}")
            self._validation_rules.append((self._sobject(sobject).name, fdef.name, rejects, message))

    def _validation_error(self, obj: _SObject, existing: dict[str, Any], values: dict[str, Any]) -> dict | None:
        for sobject, name, rejects, message in self._validation_rules:
            if sobject == obj.name and rejects(values.get(name, existing.get(name))):
                return _record_error("FIELD_CUSTOM_VALIDATION_EXCEPTION", message, [name])
        return None

    # ------------------------------------------------------------------ internals: helpers

    def _sobject(self, name: str) -> _SObject:
        obj = self._lookup_sobject(name)
        if obj is None:
            raise KeyError(f"unknown sobject {name!r} (this fake knows {sorted(self._sobjects)})")
        return obj

    def _lookup_sobject(self, name: Any) -> _SObject | None:
        if not isinstance(name, str):
            return None
        for key, obj in self._sobjects.items():
            if key.lower() == name.lower():
                return obj
        return None

    @staticmethod
    def _normalise_id(record_id: str) -> str:
        if not _well_formed_id(record_id):
            raise ValueError(f"{record_id!r} is not a well-formed Salesforce id")
        return to_18(record_id[:15])

    def _new_token(self) -> str:
        alphabet = string.ascii_letters + string.digits + "._"
        token = self._org_id[:15] + "!AR" + "".join(secrets.choice(alphabet) for _ in range(93))
        self._valid_tokens.add(token)
        self.issued_tokens.append(token)
        return token

    def _next_created_id(self, obj: _SObject) -> str:
        while True:
            self._created_counter += 1
            rid = to_18(obj.key_prefix + "Up" + _base62(self._created_counter, 10))
            if rid not in self.records[obj.name]:
                return rid

    def _limit_header(self) -> tuple[str, str]:
        return ("Sforce-Limit-Info", f"api-usage={self.api_usage}/{self.daily_api_limit}")

    @staticmethod
    def _default_fault_body(status: int) -> Any:
        if status == 503:
            return [{"message": "Server unavailable", "errorCode": "SERVER_UNAVAILABLE"}]
        if status == 403:
            return _LIMIT_EXCEEDED
        if status == 401:
            return _INVALID_SESSION
        if status == 404:
            return _NOT_FOUND
        if status == 400:
            return [{"message": "Bad request", "errorCode": "INVALID_INPUT"}]
        return [
            {
                "message": "An unexpected error occurred. Please include this ErrorId if you contact support: "
                "1234567890-12345 (-1234567890)",
                "errorCode": "UNKNOWN_EXCEPTION",
            }
        ]

    # ------------------------------------------------------------------ internals: dispatch

    def _handle(self, method: str, target: str, raw_headers: Any, raw: bytes) -> _Response | None:
        headers = dict(raw_headers.items())
        parts = urlsplit(target)
        path = parts.path
        body_text = raw.decode("utf-8", errors="replace")
        parsed_json: Any = None
        if body_text:
            try:
                parsed_json = _loads(body_text)
            except ValueError:
                parsed_json = None
        recorded = RecordedRequest(
            method=method,
            path=path,
            query=parse_qs(parts.query, keep_blank_values=True),
            headers=headers,
            body=body_text,
            json=parsed_json,
        )
        with self._lock:
            self.requests.append(recorded)
            try:
                result = self._route(method, path, headers, body_text, recorded)
            except Exception as exc:  # pragma: no cover - a bug in the fake; make it visible
                self._record_internal_error(exc)
                result = _json_response(500, self._default_fault_body(500))
            if isinstance(result, _Response):
                recorded.status = result.status
            return result

    def _route(
        self, method: str, path: str, headers: dict[str, str], body: str, recorded: RecordedRequest
    ) -> _Response | None:
        is_api = path.startswith("/services/data/") and path.rstrip("/") != "/services/data"
        fault = self._faults.take(path)
        if fault is not None and fault.kind == "drop":
            return None
        if fault is not None:
            extra = list((fault.headers or {}).items())
            if is_api and fault.status != 401:
                self.api_usage += 1
                extra.append(self._limit_header())
            payload = self._default_fault_body(fault.status) if fault.body is None else fault.body
            if isinstance(payload, (str, bytes)):
                data = payload.encode("utf-8") if isinstance(payload, str) else payload
                ctype = [("Content-Type", "text/html;charset=UTF-8")] if not any(
                    k.lower() == "content-type" for k, _ in extra
                ) else []
                return _Response(fault.status, data, ctype + extra)
            return _json_response(fault.status, payload, extra)

        if path.rstrip("/") == "/services/oauth2/token":
            return self._handle_token(method, headers, body)
        if path.rstrip("/") == "/services/oauth2/userinfo":
            return self._handle_userinfo(method, headers)
        if path.rstrip("/") == "/services/data":
            return self._handle_versions(method)
        if not is_api:
            return _json_response(404, _NOT_FOUND)

        # ---- authenticated API call
        if not self._authorized(headers):
            return self._unauthorized()
        self.api_usage += 1
        limit_header = [self._limit_header()]
        if self._limit_blocked or self.api_usage > self.daily_api_limit:
            return _json_response(403, _LIMIT_EXCEEDED, limit_header)

        match = _DATA_PATH.match(path)
        version_match = _VERSION.match(match.group("version") or "") if match else None
        if not version_match or not (_MIN_VERSION <= int(version_match.group("major")) <= _MAX_VERSION):
            return _json_response(404, _NOT_FOUND, limit_header)
        version = match.group("version")
        rest = (match.group("rest") or "").rstrip("/")
        try:
            if rest == "/jobs/ingest" or rest.startswith("/jobs/ingest/"):
                status, payload = self._handle_bulk(method, version, rest, headers, body, recorded.query)
            else:
                status, payload = self._handle_api(method, version, rest, body, recorded.query)
        except _RequestError as err:
            status, payload = err.status, err.body
            if self.request_errors_as_object and rest.startswith("/composite/sobjects"):
                payload = err.body[0]
        if 200 <= status < 300 and self._limit_countdown is not None:
            self._limit_countdown -= 1
            if self._limit_countdown <= 0:
                self._limit_blocked = True
        if isinstance(payload, _Raw):
            content_type = [("Content-Type", payload.content_type)] if payload.content_type else []
            return _Response(status, payload.body, content_type + limit_header)
        return _json_response(status, payload, limit_header)

    def _authorized(self, headers: dict[str, str]) -> bool:
        auth = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
        scheme, _, token = auth.partition(" ")
        return scheme.lower() in ("bearer", "oauth") and token.strip() in self._valid_tokens

    @staticmethod
    def _unauthorized() -> _Response:
        return _json_response(401, _INVALID_SESSION, [("WWW-Authenticate", 'Token realm="fake-salesforce"')])

    def _handle_versions(self, method: str) -> _Response:
        if method not in ("GET", "HEAD"):
            return _json_response(405, self._method_not_allowed(method, "GET,HEAD"))
        versions = [
            {"label": f"v{v}.0", "url": f"/services/data/v{v}.0", "version": f"{v}.0"}
            for v in range(_MIN_VERSION, _MAX_VERSION + 1)
        ]
        return _json_response(200, versions)

    @staticmethod
    def _method_not_allowed(method: str, allowed: str) -> list[dict[str, str]]:
        message = f"HTTP Method '{method}' not allowed. Allowed are {allowed}"
        return [{"errorCode": "METHOD_NOT_ALLOWED", "message": message}]

    # ------------------------------------------------------------------ internals: OAuth

    def _handle_token(self, method: str, headers: dict[str, str], body: str) -> _Response:
        no_store = [("Cache-Control", "no-cache,must-revalidate,max-age=0,no-store,private")]
        if method != "POST":
            return _json_response(
                400, {"error": "invalid_request", "error_description": "must use HTTP POST"}, no_store
            )
        ctype = next((v for k, v in headers.items() if k.lower() == "content-type"), "")
        form = parse_qs(body, keep_blank_values=True) if "application/x-www-form-urlencoded" in ctype.lower() else {}
        params = {k: v[0] for k, v in form.items()}

        def error(code: str, description: str) -> _Response:
            return _json_response(400, {"error": code, "error_description": description}, no_store)

        basic = self._basic_client_auth(headers)
        if basic is not None:  # HTTP Basic client authentication (RFC 6749 2.3.1): id and secret form-encoded
            params["client_id"], params["client_secret"] = basic
        grant = params.get("grant_type")
        if grant not in ("password", "client_credentials", JWT_GRANT):
            return error("unsupported_grant_type", "grant type not supported")
        if grant == JWT_GRANT:
            refusal = self._jwt_refusal(params.get("assertion") or "")
            if refusal is not None:
                return error(*refusal)
        elif params.get("client_id") != self.client_id:
            return error("invalid_client_id", "client identifier invalid")
        elif params.get("client_secret") != self.client_secret:
            return error("invalid_client", "invalid client credentials")
        if grant == "password" and (
            params.get("username") != self.username or params.get("password") != self.password + self.security_token
        ):
            return error("invalid_grant", "authentication failure")

        token = self._new_token()
        issued_at = str(int(time.time() * 1000))
        identity = self.identity_url
        if self.identity_org_id_length == 15:
            identity = identity.replace(self._org_id, self._org_id[:15])
        signature = base64.b64encode(
            hmac.new(self.client_secret.encode(), (identity + issued_at).encode(), hashlib.sha256).digest()
        ).decode()
        payload: dict[str, Any] = {
            "access_token": token,
            "instance_url": self.instance_url or self.base_url,
            "id": identity,
            "token_type": "Bearer",
            "issued_at": issued_at,
            "signature": signature,
        }
        if not self.identity_in_token:
            del payload["id"]
        if grant == "client_credentials":
            payload["scope"] = "api"
        for name in self.token_fields_omitted:
            payload.pop(name, None)
        return _json_response(200, payload, no_store)

    @staticmethod
    def _basic_client_auth(headers: dict[str, str]) -> tuple[str, str] | None:
        auth = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
        scheme, _, credential = auth.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            decoded = base64.b64decode(credential.strip(), validate=True).decode("utf-8")
        except ValueError:
            return None
        client_id, _, secret = decoded.partition(":")
        return unquote_plus(client_id), unquote_plus(secret)

    def _jwt_refusal(self, assertion: str) -> tuple[str, str] | None:
        """None for an assertion this org accepts, else ``(error, error_description)``."""
        if self.jwt_public_key is None:
            return "invalid_grant", "invalid assertion"
        try:
            claims = jwt.decode(assertion, self.jwt_public_key, algorithms=["RS256"],
                                options={"verify_aud": False, "require": ["iss", "sub", "aud", "exp"]})
        except jwt.PyJWTError:
            return "invalid_grant", "invalid assertion"
        if claims["iss"] != self.client_id:
            return "invalid_client_id", "client identifier invalid"
        if claims["aud"] not in self.jwt_audiences:
            return "invalid_grant", "audience is invalid"
        if not isinstance(claims["exp"], int) or claims["exp"] > time.time() + 300:
            return "invalid_grant", "invalid assertion"
        if claims["sub"] != self.username:
            return "invalid_grant", "user hasn't approved this consumer"
        return None

    def _handle_userinfo(self, method: str, headers: dict[str, str]) -> _Response:
        if method != "GET":
            return _json_response(405, self._method_not_allowed(method, "GET"))
        if not self._authorized(headers):
            return self._unauthorized()
        return _json_response(200, {
            "sub": self.identity_url,
            "user_id": self._user_id,
            "organization_id": self._org_id,
            "preferred_username": self.username,
            "nickname": self.username.split("@")[0],
            "name": "Fake User",
            "email": self.username,
            "email_verified": True,
            "zoneinfo": "Europe/Berlin",
            "locale": "en_US",
            "user_type": "STANDARD",
            "active": True,
        })

    # ------------------------------------------------------------------ internals: REST resources

    def _handle_api(
        self, method: str, version: str, rest: str, body: str, query: dict[str, list[str]] | None = None
    ) -> tuple[int, Any]:
        segments = [s for s in rest.split("/") if s]
        if not segments:
            self._require(method, "GET")
            prefix = f"/services/data/{version}"
            return 200, {
                "limits": f"{prefix}/limits",
                "sobjects": f"{prefix}/sobjects",
                "composite": f"{prefix}/composite",
            }
        if segments == ["limits"]:
            self._require(method, "GET")
            return 200, self._limits_payload()
        if segments == ["query"]:
            self._require(method, "GET")
            return 200, self._soql((query or {}).get("q", [""])[0], version)
        if segments == ["sobjects"]:
            self._require(method, "GET")
            return 200, {
                "encoding": "UTF-8",
                "maxBatchSize": MAX_COLLECTION_RECORDS,
                "sobjects": [
                    {"name": o.name, "label": o.label, "keyPrefix": o.key_prefix, "custom": False, "updateable": True}
                    for o in self._sobjects.values()
                ],
            }
        if len(segments) == 3 and segments[0] == "sobjects" and segments[2] == "describe":
            self._require(method, "GET")
            obj = self._lookup_sobject(segments[1])
            if obj is None:
                return 404, _NOT_FOUND
            return 200, obj.describe()
        if segments[:2] == ["composite", "sobjects"] and len(segments) == 3:
            self._require(method, "POST")
            return 200, self._collection_retrieve(version, segments[2], body)
        if segments[:2] == ["composite", "sobjects"] and len(segments) in (2, 4):
            self._require(method, "PATCH")
            if len(segments) == 2:
                return 200, self._collection_update(body)
            return 200, self._collection_upsert(segments[2], segments[3], body)
        return 404, _NOT_FOUND

    def _require(self, method: str, allowed: str) -> None:
        if method != allowed:
            raise _RequestError(405, "METHOD_NOT_ALLOWED", f"HTTP Method '{method}' not allowed. Allowed are {allowed}")

    def _limits_payload(self) -> dict[str, Any]:
        remaining = max(self.daily_api_limit - self.api_usage, 0)
        return {
            "DailyApiRequests": {"Max": self.daily_api_limit, "Remaining": remaining},
            "DailyBulkApiBatches": {"Max": 15000, "Remaining": 15000},
            "DailyBulkV2QueryJobs": {"Max": 10000, "Remaining": 10000},
            "DailyBulkV2QueryFileStorageMB": {"Max": 976562, "Remaining": 976562},
            "DataStorageMB": {"Max": 5, "Remaining": 5},
        }

    def _organization_record(self) -> dict[str, Any]:
        return {
            "Id": self._org_id,
            "Name": self.organization_name,
            "OrganizationType": "Developer Edition",
            "IsSandbox": self.is_sandbox,
            "InstanceName": "FAKE1",
        }

    def _soql(self, soql: str, version: str) -> dict[str, Any]:
        """``SELECT f1, f2 FROM Organization`` (the only object this fake can query), as Salesforce answers it."""
        match = _SOQL.match(soql)
        if not soql.strip():
            raise _RequestError(400, "MALFORMED_QUERY", "A query string has to be specified")
        if match is None:
            raise _RequestError(400, "MALFORMED_QUERY", f"unexpected token: {soql.split()[0] if soql.split() else ''}")
        if match.group("object").lower() != "organization":
            raise _RequestError(
                400,
                "INVALID_TYPE",
                f"sObject type '{match.group('object')}' is not supported. If you are attempting to use a custom "
                "object, be sure to append the '__c' after the entity name.",
            )
        record = self._organization_record()
        by_lower = {name.lower(): name for name in record}
        fields = [f.strip() for f in match.group("fields").split(",")]
        row: dict[str, Any] = {
            "attributes": {"type": "Organization", "url": f"/services/data/{version}/sobjects/Organization/{self._org_id}"}
        }
        for name in fields:
            if name.lower() not in by_lower:
                raise _RequestError(400, "INVALID_FIELD", f"No such column '{name}' on entity 'Organization'.")
            row[by_lower[name.lower()]] = record[by_lower[name.lower()]]
        return {"totalSize": 1, "done": True, "records": [row]}

    # ------------------------------------------------------------------ internals: sObject Collections

    def _collection_retrieve(self, version: str, sobject_name: str, body: str) -> list[dict[str, Any] | None]:
        obj = self._lookup_sobject(sobject_name)
        if obj is None:
            raise _RequestError(404, "NOT_FOUND", "The requested resource does not exist")
        doc = _parse_json(body)
        if not isinstance(doc, dict):
            raise _RequestError(400, "JSON_PARSER_ERROR", "Cannot deserialize instance of SObjectCollectionRetrieve")
        for key in ("ids", "fields"):
            if not doc.get(key):
                raise _RequestError(400, "MISSING_ARGUMENT", f"Required parameter '{key}' is missing")
            if not isinstance(doc[key], list) or not all(isinstance(v, str) for v in doc[key]):
                raise _RequestError(400, "JSON_PARSER_ERROR", f"Cannot deserialize instance of string list for {key}")
        ids, names = doc["ids"], doc["fields"]
        if len(ids) > MAX_RETRIEVE_IDS:
            raise _RequestError(
                400, "EXCEEDED_ID_LIMIT", f"id limit reached. cannot retrieve more than {MAX_RETRIEVE_IDS} ids"
            )
        fields = []
        for name in names:
            fdef = obj.field(name)
            if fdef is None:
                raise _RequestError(
                    400,
                    "INVALID_FIELD",
                    f"No such column '{name}' on entity '{obj.name}'. If you are attempting to use a custom field, be "
                    "sure to append the '__c' after the custom field name. Please reference your WSDL or the describe "
                    "call for the appropriate names.",
                )
            fields.append(fdef)
        items: list[dict[str, Any] | None] = []
        for raw in ids:
            rid = to_18(raw[:15]) if _well_formed_id(raw) and raw.startswith(obj.key_prefix) else None
            record = self.records[obj.name].get(rid) if rid else None
            if record is None or rid in self.deleted_ids[obj.name]:
                items.append(None)
                continue
            url = f"/services/data/{version}/sobjects/{obj.name}/{rid}"
            items.append({"attributes": {"type": obj.name, "url": url}, **{f.name: record.get(f.name) for f in fields}})
        return items

    @staticmethod
    def _parse_collection(body: str) -> tuple[bool, list[dict[str, Any]]]:
        doc = _parse_json(body)
        if not isinstance(doc, dict):
            raise _RequestError(
                400, "JSON_PARSER_ERROR", "Cannot deserialize instance of SObjectCollection out of START_ARRAY token"
            )
        all_or_none = doc.get("allOrNone", False)
        if not isinstance(all_or_none, bool):
            raise _RequestError(400, "JSON_PARSER_ERROR", "Cannot deserialize value of type `boolean` for allOrNone")
        records = doc.get("records")
        if records is None:
            raise _RequestError(400, "MISSING_ARGUMENT", "Required parameter 'records' is missing")
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise _RequestError(
                400,
                "JSON_PARSER_ERROR",
                "Cannot deserialize instance of SObject list: records must be an array of objects",
            )
        if len(records) > MAX_COLLECTION_RECORDS:
            raise _RequestError(
                400,
                "EXCEEDED_ID_LIMIT",
                f"record limit reached. cannot submit more than {MAX_COLLECTION_RECORDS} records into this call",
            )
        for index, record in enumerate(records):
            attributes = record.get("attributes")
            sobject_type = attributes.get("type") if isinstance(attributes, dict) else None
            if not isinstance(sobject_type, str) or not sobject_type:
                raise _RequestError(
                    400, "INVALID_TYPE", f"No SObject type found in the attributes of the record at index {index}"
                )
            for value in record.values():
                if isinstance(value, (list, dict)) and value is not attributes:
                    raise _RequestError(
                        400, "JSON_PARSER_ERROR", "Cannot deserialize instance of string out of START_ARRAY token"
                    )
        return all_or_none, records

    def _field_checks(
        self, obj: _SObject, values: dict[str, Any], *, creating: bool, skip: frozenset[str] = frozenset()
    ) -> tuple[dict[str, Any], list[dict[str, Any]]] | dict[str, Any]:
        """Resolve field names; return (normalised values, []) or an error dict for the first name problem."""
        resolved: dict[str, Any] = {}
        for key, value in values.items():
            fdef = obj.field(key)
            if fdef is None:
                return _record_error("INVALID_FIELD", f"No such column '{key}' on sobject of type {obj.name}", [])
            allowed = fdef.createable if creating else fdef.updateable
            if not allowed and fdef.name not in skip:
                return _record_error(
                    "INVALID_FIELD_FOR_INSERT_UPDATE",
                    f"Unable to create/update fields: {fdef.name}. Please check the security settings of this "
                    "field and verify that it is read/write for your profile or permission set.",
                    [fdef.name],
                )
            if isinstance(value, bool) and fdef.type in _STRING_TYPES:
                value = "true" if value else "false"
            elif isinstance(value, (int, float, Decimal)) and fdef.type in _STRING_TYPES:
                value = str(value)
            resolved[fdef.name] = _typed_value(fdef, value)
        return resolved, []

    @staticmethod
    def _value_checks(obj: _SObject, values: dict[str, Any], *, creating: bool) -> dict[str, Any] | None:
        for name, value in values.items():
            fdef = obj.field(name)
            assert fdef is not None
            if fdef.type in _STRING_TYPES and isinstance(value, str) and fdef.length and len(value) > fdef.length:
                shown = value if len(value) <= 255 else value[:252] + "..."
                return _record_error(
                    "STRING_TOO_LONG",
                    f"{fdef.label}: data value too large: {shown} (max length={fdef.length})",
                    [fdef.name],
                )
        for name, value in values.items():
            fdef = obj.field(name)
            assert fdef is not None
            if fdef.type == "email" and isinstance(value, str) and value != "" and not _EMAIL.match(value):
                return _record_error(
                    "INVALID_EMAIL_ADDRESS", f"{fdef.label}: invalid email address: {value}", [fdef.name]
                )
        if creating:
            missing = [
                f.name
                for f in obj.fields.values()
                if not f.nillable and f.createable and f.type != "id" and values.get(f.name) in (None, "")
            ]
        else:
            missing = [name for name, value in values.items() if value in (None, "") and not obj.field(name).nillable]
        if missing:
            message = f"Required fields are missing: [{', '.join(missing)}]"
            return _record_error("REQUIRED_FIELD_MISSING", message, missing)
        return None

    @staticmethod
    def _check_types(obj: _SObject, record: dict[str, Any]) -> None:
        """Request-level: every value of a known field must deserialise into the field's type (400 otherwise)."""
        for key, value in record.items():
            fdef = obj.field(key) if key != "attributes" else None
            if fdef is not None:
                _typed_value(fdef, value)

    def _lock_check(self, rid: str) -> dict[str, Any] | None:
        if self._locks.get(rid, 0) > 0:
            self._locks[rid] -= 1
            if self._locks[rid] == 0:
                del self._locks[rid]
            return _record_error(
                "UNABLE_TO_LOCK_ROW", f"unable to obtain exclusive access to this record or 1 records: {rid}", []
            )
        return None

    def _collection_update(self, body: str) -> list[dict[str, Any]]:
        all_or_none, records = self._parse_collection(body)
        objects: list[_SObject] = []
        for record in records:
            obj = self._lookup_sobject(record["attributes"]["type"])
            if obj is None:
                raise _RequestError(
                    400, "INVALID_TYPE", f"sObject type '{record['attributes']['type']}' is not supported."
                )
            objects.append(obj)
        chunks = sum(1 for i, obj in enumerate(objects) if i == 0 or objects[i - 1] is not obj)
        if chunks > MAX_COLLECTION_CHUNKS:
            raise _RequestError(
                400,
                "INVALID_BATCH_REQUEST",
                f"Cannot have more than {MAX_COLLECTION_CHUNKS} chunks in a single operation. "
                "Please rearrange the data to reduce chunking.",
            )

        for record, obj in zip(records, objects):
            self._check_types(obj, record)
        outcomes: list[tuple[str, _SObject, str, dict[str, Any]] | dict[str, Any]] = []
        for record, obj in zip(records, objects):
            outcomes.append(self._check_update(obj, record))
        return self._commit(outcomes, all_or_none, upsert=False)

    def _check_update(self, obj: _SObject, record: dict[str, Any]):
        id_keys = [k for k in record if k.lower() == "id"]
        raw_id = record[id_keys[0]] if id_keys else None
        if raw_id in (None, ""):
            return _record_error("MISSING_ARGUMENT", "Id not specified in an update call", [])
        if not _well_formed_id(raw_id) or not raw_id.startswith(obj.key_prefix):
            return _record_error("MALFORMED_ID", f"{obj.label} ID: id value of incorrect type: {raw_id}", ["Id"])
        rid = to_18(raw_id[:15])
        values = {k: v for k, v in record.items() if k != "attributes" and k not in id_keys}
        checked = self._field_checks(obj, values, creating=False)
        if isinstance(checked, dict):
            return checked
        resolved = checked[0]
        if rid not in self.records[obj.name]:
            return _record_error("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", [])
        if rid in self.deleted_ids[obj.name]:
            return _record_error("ENTITY_IS_DELETED", "entity is deleted", [])
        problem = (self._value_checks(obj, resolved, creating=False)
                   or self._validation_error(obj, self.records[obj.name][rid], resolved) or self._lock_check(rid))
        if problem:
            return problem
        return ("updated", obj, rid, resolved)

    def _collection_upsert(self, sobject_name: str, ext_field_name: str, body: str) -> list[dict[str, Any]]:
        obj = self._lookup_sobject(sobject_name)
        if obj is None:
            raise _RequestError(404, "NOT_FOUND", "The requested resource does not exist")
        ext = obj.field(ext_field_name)
        if ext is None:
            raise _RequestError(
                400,
                "INVALID_FIELD",
                f"Provided external ID field does not exist or is not accessible: {ext_field_name}",
            )
        if not ext.external_id:
            raise _RequestError(
                400, "INVALID_FIELD", f"Field {ext.name} is not an External ID or indexed field for {obj.name}"
            )
        all_or_none, records = self._parse_collection(body)
        for record in records:
            if self._lookup_sobject(record["attributes"]["type"]) is not obj:
                raise _RequestError(
                    400,
                    "INVALID_TYPE",
                    f"All records in an upsert request must be of the type in the URI ({obj.name}); "
                    f"got {record['attributes']['type']}",
                )

        for record in records:
            self._check_types(obj, record)

        def ext_key(value: Any) -> str:
            return str(value).lower() if ext.type in _STRING_TYPES else str(value)

        keys: list[str | None] = []
        for record in records:
            value = next((v for k, v in record.items() if k.lower() == ext.name.lower()), None)
            keys.append(None if value in (None, "") else ext_key(value))
        seen: dict[str, int] = {}
        for key in keys:
            if key is not None:
                seen[key] = seen.get(key, 0) + 1

        outcomes = []
        for record, key in zip(records, keys):
            outcomes.append(self._check_upsert(obj, ext, record, key, seen, ext_key))
        return self._commit(outcomes, all_or_none, upsert=True)

    def _check_upsert(self, obj: _SObject, ext: _Field, record: dict[str, Any], key, seen, ext_key):
        if any(k.lower() == "id" for k in record):
            return _record_error(
                "INVALID_FIELD", "Record Id is not supported as the key of an upsert by external id", ["Id"]
            )
        if key is None:
            return _record_error("MISSING_ARGUMENT", f"{ext.name} not specified", [])
        values = {k: v for k, v in record.items() if k != "attributes"}
        if seen[key] > 1:
            shown = next(v for k, v in values.items() if k.lower() == ext.name.lower())
            return _record_error("DUPLICATE_VALUE", f"Duplicate external id specified: {shown}", [ext.name])
        matches = [
            rid
            for rid, existing in self.records[obj.name].items()
            if rid not in self.deleted_ids[obj.name]
            and existing.get(ext.name) not in (None, "")
            and ext_key(existing[ext.name]) == key
        ]
        if len(matches) > 1:
            return _record_error(
                "DUPLICATE_EXTERNAL_ID",
                f"{ext.label}: more than one record found for external id field: [{', '.join(matches)}]",
                [ext.name],
            )
        creating = not matches
        checked = self._field_checks(obj, values, creating=creating, skip=frozenset({ext.name}))
        if isinstance(checked, dict):
            return checked
        resolved = checked[0]
        existing = {} if creating else self.records[obj.name][matches[0]]
        problem = self._value_checks(obj, resolved, creating=creating) or self._validation_error(obj, existing, resolved)
        if problem:
            return problem
        if creating:
            return ("created", obj, None, resolved)
        problem = self._lock_check(matches[0])
        if problem:
            return problem
        return ("updated", obj, matches[0], resolved)

    def _commit(self, outcomes: list, all_or_none: bool, *, upsert: bool) -> list[dict[str, Any]]:
        failed = any(isinstance(o, dict) for o in outcomes)
        results: list[dict[str, Any]] = []
        for outcome in outcomes:
            if isinstance(outcome, dict):
                results.append({"success": False, "errors": [outcome]})
                continue
            if all_or_none and failed:
                results.append({"success": False, "errors": [dict(_ROLLED_BACK)]})
                continue
            action, obj, rid, values = outcome
            if action == "created":
                rid = self._next_created_id(obj)
                self.records[obj.name][rid] = {"Id": rid, **values}
            else:
                self.records[obj.name][rid].update(values)
            self.write_log.append((obj.name, rid, dict(values)))
            result: dict[str, Any] = {"id": rid, "success": True, "errors": []}
            if upsert:
                result["created"] = action == "created"
            results.append(result)
        return results

    # ------------------------------------------------------------------ internals: Bulk API 2.0 ingest

    def _new_bulk_job(self, obj: _SObject, operation: str, external_id_field: str | None, line_ending: str,
                      column_delimiter: str, created_by_id: str | None) -> _BulkJob:
        self._bulk_counter += 1
        job_id = to_18("750" + "Fk" + _base62(self._bulk_counter, 10))
        now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000+0000")
        job = _BulkJob(job_id, obj.name, operation, external_id_field, line_ending, column_delimiter,
                       created_by_id or self._user_id, now)
        self.bulk_jobs[job_id] = job
        return job

    def _handle_bulk(self, method: str, version: str, rest: str, headers: dict[str, str], body: str,
                     query: dict[str, list[str]]) -> tuple[int, Any]:
        segments = [s for s in rest.split("/") if s][2:]  # after "jobs", "ingest"
        api_version = version[1:]
        if not segments:
            if method == "POST":
                return 200, self._bulk_create(api_version, body)
            self._require(method, "GET")
            return 200, self._bulk_list(version, query)
        job = self.bulk_jobs.get(segments[0])
        if job is None:
            return 404, _NOT_FOUND
        if len(segments) == 1:
            if method == "PATCH":
                return 200, self._bulk_set_state(job, api_version, body)
            if method == "DELETE":
                if job.state not in _BULK_TERMINAL:
                    raise _RequestError(400, "INVALIDJOBSTATE", f"Cannot delete a job in state {job.state}")
                del self.bulk_jobs[job.id]
                return 204, _Raw(b"")
            self._require(method, "GET")
            self._bulk_poll(job)
            return 200, job.info(api_version)
        if len(segments) == 2 and segments[1] == "batches":
            self._require(method, "PUT")
            return self._bulk_upload(job, headers, body)
        resources = {"successfulresults": "successful", "failedresults": "failures", "unprocessedrecords": "unprocessed"}
        if len(segments) == 2 and segments[1].lower() in resources:
            self._require(method, "GET")
            if job.state not in _BULK_TERMINAL:
                raise _RequestError(400, "INVALIDJOBSTATE", f"Results are available once the job is complete; job "
                                                            f"{job.id} is {job.state}")
            kind = resources[segments[1].lower()]
            prefix = {"successful": ["sf__Id", "sf__Created"], "failures": ["sf__Id", "sf__Error"],
                      "unprocessed": []}[kind]
            return 200, _Raw(self._bulk_csv([prefix + job.header, *self._bulk_ordered(job, getattr(job, kind))],
                                            job), "text/csv")
        return 404, _NOT_FOUND

    def _bulk_create(self, api_version: str, body: str) -> dict[str, Any]:
        spec = _parse_json(body)
        if not isinstance(spec, dict):
            raise _RequestError(400, "JSON_PARSER_ERROR", "Cannot deserialize instance of JobInfo from START_ARRAY")
        obj = self._lookup_sobject(spec.get("object"))
        if obj is None:
            raise _RequestError(400, "INVALIDJOB", f"InvalidJob : Invalid object: {spec.get('object')}")
        operation = spec.get("operation")
        if operation not in ("update", "upsert"):
            raise _RequestError(400, "INVALIDJOB", f"InvalidJob : This fake supports update and upsert, got "
                                                   f"{operation!r}")
        if spec.get("contentType", "CSV") != "CSV":
            raise _RequestError(400, "INVALIDJOB", "InvalidJob : contentType must be CSV")
        line_ending = spec.get("lineEnding", "LF")
        delimiter = spec.get("columnDelimiter", "COMMA")
        if line_ending not in ("LF", "CRLF") or delimiter not in _BULK_DELIMITERS:
            raise _RequestError(400, "INVALIDJOB", "InvalidJob : invalid lineEnding or columnDelimiter")
        ext_name = spec.get("externalIdFieldName")
        if operation == "upsert":
            ext = obj.field(ext_name) if isinstance(ext_name, str) else None
            if not ext_name:
                raise _RequestError(400, "INVALIDJOB", f"InvalidJob : External ID was blank for {obj.name}. An "
                                                       "External ID must be specified for upsert.")
            if ext is None or not (ext.external_id or ext.id_lookup):
                raise _RequestError(400, "INVALIDJOB", f"InvalidJob : Field {ext_name} is not an External ID or "
                                                       f"indexed field for {obj.name}")
            ext_name = ext.name
        else:
            ext_name = None
        job = self._new_bulk_job(obj, operation, ext_name, line_ending, delimiter, None)
        return job.info(api_version, full=False)

    def _bulk_list(self, version: str, query: dict[str, list[str]]) -> dict[str, Any]:
        jobs = [j for j in self.bulk_jobs.values()]
        job_type = (query.get("jobType") or [None])[0]
        if job_type not in (None, "V2Ingest"):
            jobs = []
        start = int((query.get("queryLocator") or ["0"])[0] or 0)
        page = jobs[start:start + self.bulk_list_page_size]
        done = start + self.bulk_list_page_size >= len(jobs)
        next_url = None
        if not done:
            extra = f"&jobType={job_type}" if job_type else ""
            next_url = f"/services/data/{version}/jobs/ingest?queryLocator={start + self.bulk_list_page_size}{extra}"
        return {"done": done, "records": [j.info(version[1:], full=False) for j in page], "nextRecordsUrl": next_url}

    def _bulk_set_state(self, job: _BulkJob, api_version: str, body: str) -> dict[str, Any]:
        spec = _parse_json(body)
        wanted = spec.get("state") if isinstance(spec, dict) else None
        if wanted == "UploadComplete":
            if job.state != "Open":
                raise _RequestError(400, "INVALIDJOBSTATE", f"Job {job.id} is {job.state}, not Open: it cannot be "
                                                            "closed")
            job.state = "UploadComplete"
            job.polls = 0
        elif wanted == "Aborted":
            if job.state in _BULK_TERMINAL:
                raise _RequestError(400, "INVALIDJOBSTATE", f"Job {job.id} is already {job.state}: it cannot be "
                                                            "aborted")
            job.state = "Aborted"
        else:
            raise _RequestError(400, "INVALIDJOBSTATE", f"Invalid state for a job update: {wanted!r}")
        return job.info(api_version, full=False)

    def _bulk_upload(self, job: _BulkJob, headers: dict[str, str], body: str) -> tuple[int, Any]:
        ctype = next((v for k, v in headers.items() if k.lower() == "content-type"), "")
        if ctype.split(";")[0].strip().lower() != "text/csv":
            raise _RequestError(400, "INVALID_CONTENT_TYPE", f"Content-Type must be text/csv, got {ctype!r}")
        if job.state != "Open":
            raise _RequestError(400, "INVALIDJOBSTATE", f"Job {job.id} is {job.state}: data can only be uploaded to "
                                                        "an Open job")
        if job.data is not None:
            raise _RequestError(400, "INVALIDJOBSTATE", f"Job {job.id} already has its data: one upload per job")
        if len(body.encode("utf-8")) > self.bulk_max_upload_bytes:
            raise _RequestError(413, "REQUEST_ENTITY_TOO_LARGE",
                                f"The upload exceeds the maximum of {self.bulk_max_upload_bytes} bytes")
        job.data = body
        return 201, _Raw(b"")

    def _bulk_poll(self, job: _BulkJob) -> None:
        if job.state not in ("UploadComplete", "InProgress"):
            return
        if self._bulk_stalled:
            job.state = "InProgress"
            return
        job.polls += 1
        if job.polls > self.bulk_polls_before_complete:
            self._process_bulk_job(job)
        else:
            job.state = "InProgress"

    def _bulk_fail(self, job: _BulkJob, message: str) -> None:
        """The whole job fails: nothing is applied; the rows (when they can be read) are its unprocessed records."""
        job.state, job.error_message = "Failed", message
        try:
            rows = [r for r in csv.reader(io.StringIO(job.data or "", newline=""),
                                          delimiter=_BULK_DELIMITERS[job.column_delimiter]) if r]
        except csv.Error:
            rows = []
        if rows:
            job.header, job.unprocessed = rows[0], rows[1:]

    def _process_bulk_job(self, job: _BulkJob) -> None:
        """Apply the uploaded CSV with the composite endpoint's per-record rules; set results and the final state."""
        obj = self._sobject(job.object)
        if not job.data:
            return self._bulk_fail(job, "InvalidBatch : No data was uploaded for this job")
        if _bulk_line_ending(job.data) not in (None, job.line_ending):
            return self._bulk_fail(
                job, f"ClientInputError : LineEnding is invalid on user data. Current LineEnding setting is "
                     f"{job.line_ending}")
        try:
            rows = list(csv.reader(io.StringIO(job.data, newline=""), delimiter=_BULK_DELIMITERS[job.column_delimiter],
                                   strict=True))
        except csv.Error as exc:
            return self._bulk_fail(job, f"ClientInputError : Failed to parse CSV: {exc}")
        rows = [row for row in rows if row]
        if not rows:
            return self._bulk_fail(job, "InvalidBatch : No data was uploaded for this job")
        header, data = rows[0], rows[1:]
        job.header = header
        columns: list[_Field | None] = []  # None: the Id column of an update
        seen_names: set[str] = set()
        for name in header:
            if name.lower() in seen_names:
                return self._bulk_fail(job, f"InvalidBatch : Duplicate field name: {name}")
            seen_names.add(name.lower())
            fdef = obj.field(name)
            if fdef is None:
                return self._bulk_fail(job, f"InvalidBatch : Field name not found : {name}")
            columns.append(None if fdef.name == "Id" and job.operation == "update" else fdef)
        ext = obj.field(job.external_id_field) if job.external_id_field else None
        key_index = next((i for i, f in enumerate(columns) if (f is None if ext is None else f is ext)), None)
        if key_index is None:
            missing = ext.name if ext is not None else "Id"
            return self._bulk_fail(job, f"InvalidBatch : Required column is missing from the header: {missing}")
        for number, row in enumerate(data, start=2):
            if len(row) != len(header):
                return self._bulk_fail(job, f"ClientInputError : Wrong number of columns in row {number}: "
                                            f"{len(row)} instead of {len(header)}")
            if sum(len(cell) for cell in row) > MAX_BULK_RECORD_CHARACTERS:
                return self._bulk_fail(job, f"InvalidBatch : Record in row {number} exceeds the maximum of "
                                            f"{MAX_BULK_RECORD_CHARACTERS} characters")
            for name, cell in zip(header, row):
                if len(cell) > MAX_BULK_FIELD_CHARACTERS:
                    return self._bulk_fail(job, f"InvalidBatch : Field {name} in row {number} exceeds the maximum of "
                                                f"{MAX_BULK_FIELD_CHARACTERS} characters")

        final_state, message, last = "JobComplete", None, len(data)
        fault = self._bulk_faults.pop(0) if self._bulk_faults else None
        if fault is not None and fault["kind"] == "fail":
            final_state, message, last = "Failed", fault["message"], min(fault["process_first"], len(data))
        elif fault is not None:
            final_state, last = fault["state"], max(len(data) - fault["count"], 0)
        processed, job.unprocessed = data[:last], [list(row) for row in data[last:]]

        def ext_key(value: Any) -> str:
            return str(value).lower() if ext is not None and ext.type in _STRING_TYPES else str(value)

        records, keys = [], []
        for row in processed:
            record: dict[str, Any] = {"attributes": {"type": obj.name}}
            for fdef, name, cell in zip(columns, header, row):
                if cell == "":
                    continue  # an empty cell leaves the field as it is
                record["Id" if fdef is None else fdef.name] = (
                    None if cell == "#N/A" else cell if fdef is None else _bulk_value(fdef, cell))
            records.append(record)
            key = row[key_index]
            keys.append(None if key in ("", "#N/A") else ext_key(key))
        counts: dict[str, int] = {}
        for key in keys:
            if key is not None:
                counts[key] = counts.get(key, 0) + 1
        outcomes = []
        for row, record, key in zip(processed, records, keys):
            try:
                self._check_types(obj, record)
            except _RequestError as err:
                outcomes.append(_record_error("INVALID_TYPE_ON_FIELD_IN_RECORD", err.body[0]["message"], []))
                continue
            if ext is None:
                outcome = self._check_update(obj, record)
            else:
                outcome = self._check_upsert(obj, ext, record, key, counts, ext_key)
            rejection = self._bulk_record_errors.get(row[key_index])
            if isinstance(rejection, str) and not isinstance(outcome, dict):
                code = rejection.partition(":")[0]
                outcome = {**_record_error(code, rejection), "sf__Error": rejection}
            elif rejection is not None and not isinstance(outcome, dict):
                outcome = _record_error(*rejection)
            outcomes.append(outcome)
        results = self._commit(outcomes, False, upsert=ext is not None)
        job.successful, job.failures = [], []
        for row, result in zip(processed, results):
            if result["success"]:
                job.successful.append([result["id"], "true" if result.get("created") else "false", *row])
            else:
                error = result["errors"][0]
                fields = ",".join(error.get("fields") or []) or "--"
                cell = error.get("sf__Error") or f"{error['statusCode']}:{error['message']}:{fields}"
                job.failures.append(["", cell, *row])
        job.processed, job.failed = len(processed), len(job.failures)
        job.state, job.error_message = final_state, message

    def _bulk_ordered(self, job: _BulkJob, rows: list[list[str]]) -> list[list[str]]:
        if self.bulk_result_order == "input":
            return list(rows)
        if self.bulk_result_order == "reversed":
            return list(reversed(rows))
        shuffled = list(rows)
        random.Random(job.id).shuffle(shuffled)
        return shuffled

    @staticmethod
    def _bulk_csv(rows: list[list[str]], job: _BulkJob) -> bytes:
        buffer = io.StringIO()
        writer = csv.writer(buffer, delimiter=_BULK_DELIMITERS[job.column_delimiter],
                            lineterminator="\r\n" if job.line_ending == "CRLF" else "\n", quoting=csv.QUOTE_ALL)
        writer.writerows(rows)
        return buffer.getvalue().encode("utf-8")
