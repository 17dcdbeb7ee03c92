"""A stateful fake Salesforce Marketing Cloud (SFMC) server for real-HTTP tests.

It imitates the SFMC contract the pipeline relies on:

* ``POST {auth}/v2/token`` -- the OAuth2 client-credentials token: a JSON body with
  ``grant_type``, ``client_id``, ``client_secret`` (optional ``account_id``, ``scope``), answered
  with ``access_token``, ``token_type`` ``Bearer``, ``expires_in`` (1080 s for a token that lives
  20 minutes) and ``rest_instance_url`` ending in ``/``; OAuth errors such as ``invalid_client``;
* ``GET {rest}data/v1/customobjectdata/key/{key}/rowset`` and the continuation
  ``GET {rest}data/v1/customobjectdata/token/{requestToken}/rowset?$page=N`` -- the Data
  Extension "rowset" read (observed behaviour, not in SFMC's API reference): 1-based ``$page``,
  ``$pageSize`` up to 2,500, ``count`` = total rows of the read, ``items`` of
  ``{"keys": {...}, "values": {...}}`` with lower-cased field names and every value a string
  (dates as ``M/D/YYYY h:mm:ss AM|PM``), and relative ``links`` without the ``/data`` prefix,
  ``links.next`` only while more pages exist; a read without rows (an empty Data Extension, a
  ``$filter`` matching nothing) is served as recorded from real tenants: ``count: 0`` and **no
  ``items`` key at all**;
* on the first rowset page, the two OData-like parameters seen working on the real endpoint:
  ``$filter`` as ``Field eq 'value'`` or ``Field between 'A' and 'B'`` (Date fields compared as
  dates, Text case-insensitively; field names in the schema casing; ``''`` quotes a quote) and
  ``$orderBy`` as ``Field [asc|desc]`` (nulls lowest). ``count`` is then the rows matching the
  filter, and the snapshot (continuation pages) keeps the filtered, ordered rows. Every other
  operator, ``$fields``, ``$top``, ``$offset``, and these two on a continuation page are a 400
  SFMC error, so a client cannot come to rely on grammar nobody has confirmed;
* the SFMC REST error envelope ``{"message", "errorcode", "documentation"}`` (401 Not
  Authorized, 403 insufficient privileges, 404, 429 rate limit with ``retryAfter``).

Only the standard library is used (the HTTP scaffolding is shared with the fake Salesforce org in
``http_scaffold``).  The server runs on ``127.0.0.1`` with an ephemeral port in a
background thread and serves each connection in a thread of its own, so concurrent requests are
served concurrently; all state is guarded by one lock, held only while a request is routed (not
while it waits out ``latency`` or its response is written).  Time (token expiry) follows a fake
clock that only moves through :meth:`FakeSfmcServer.advance_clock`; nothing sleeps unless
``latency`` (seconds added to every request, default 0) is set.  :attr:`FakeSfmcServer.max_in_flight`
is the most requests it was serving at once.  A rowset page's ``items`` are serialised once per
snapshot content and page (cached), so a large Data Extension costs the fake little per request.

Typical use::

    with FakeSfmcServer() as sfmc:
        sfmc.add_data_extension("Contacts_DE", [{"Id": "a1", "Email": "x@y.z"}], primary_key=["Id"])
        token = requests.post(sfmc.auth_base_uri + "v2/token", json={...}).json()
        ...
"""

from __future__ import annotations

import datetime as _dt
import decimal
import json
import math
import numbers
import re
import secrets
import uuid
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Iterable, Mapping
from urllib.parse import parse_qsl, unquote, urlsplit

from sfmc_pipeline_testing.http_scaffold import (
    FakeRequestHandler,
    FakeServerBase,
    Fault,
    FaultQueue,
)

__all__ = [
    "FakeSfmcServer",
    "RecordedRequest",
    "CaseInsensitiveDict",
    "format_sfmc_value",
    "format_sfmc_datetime",
    "DOCS_ERROR_HANDLING",
    "DOCS_RATE_LIMITING",
]

#: ``documentation`` URL used in SFMC REST error bodies.
DOCS_ERROR_HANDLING = "https://developer.salesforce.com/docs/marketing/marketing-cloud/guide/error-handling.html"
#: ``documentation`` URL used in SFMC 429 bodies.
DOCS_RATE_LIMITING = "https://developer.salesforce.com/docs/marketing/marketing-cloud/guide/rate-limiting-errors.html"
#: ``error_uri`` used in OAuth error bodies of the token endpoint.
OAUTH_ERROR_URI = "https://developer.salesforce.com/docs"

_JSON_CONTENT_TYPE = "application/json; charset=utf-8"
_DEFAULT_PAGE_SIZE = 2500
# OData-like rowset parameters of the real endpoint. Only $filter and $orderBy (exactly so spelled)
# are implemented, on the first page; the others are rejected (400) so a client relying on them
# fails loudly instead of getting unfiltered data.
_ODATA_ROWSET_PARAMS = ("$filter", "$fields", "$orderby", "$top", "$offset")
_FIRST_PAGE_PARAMS = ("$filter", "$orderBy")
_FIELD = r"([A-Za-z_][A-Za-z0-9_]*)"
_QUOTED = r"'((?:[^']|'')*)'"
_FILTER_EQ = re.compile(rf"^\s*{_FIELD}\s+eq\s+{_QUOTED}\s*$")
_FILTER_BETWEEN = re.compile(rf"^\s*{_FIELD}\s+between\s+{_QUOTED}\s+and\s+{_QUOTED}\s*$")
_ORDER_BY = re.compile(rf"^\s*{_FIELD}(?:\s+(asc|desc))?\s*$")
# How the fake reads a Date value (a stored one, or a bound in $filter).
_DATE_FORMATS = ("%m/%d/%Y %I:%M:%S %p", "%m/%d/%Y", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d")
_FIELD_TYPES = ("Text", "Number", "Decimal", "Date", "Boolean", "EmailAddress", "Phone", "Locale")


# ----------------------------------------------------------------------------------------------
# Value formatting (how the rowset serves stored values)
# ----------------------------------------------------------------------------------------------


def format_sfmc_datetime(value: _dt.date) -> str:
    """Format a ``date``/``datetime`` the way the rowset does: ``M/D/YYYY h:mm:ss AM|PM``.

    No zero padding on month, day or hour (``"6/23/2024 12:00:00 AM"``, ``"11/3/2024 1:05:09 PM"``).
    A plain ``date`` is midnight.  Sub-second parts are dropped (truncated).  Time zones are NOT
    converted: the wall-clock fields are taken to be SFMC system time already.
    """
    if isinstance(value, _dt.datetime):
        hour, minute, second = value.hour, value.minute, value.second
    else:
        hour = minute = second = 0
    hour12 = hour % 12 or 12
    ampm = "AM" if hour < 12 else "PM"
    return f"{value.month}/{value.day}/{value.year} {hour12}:{minute:02d}:{second:02d} {ampm}"


def format_sfmc_value(value: Any) -> str:
    """Render one stored Python value as the JSON string the rowset serves.

    ``None`` -> ``""``; ``bool`` -> ``"True"``/``"False"``; integers -> ``"1"``; ``Decimal``/``float``
    -> plain (non-scientific) decimal string (a ``Decimal`` keeps its scale, ``Decimal("1.50")`` ->
    ``"1.50"``; a float uses its shortest repr, ``1.0`` -> ``"1.0"``); ``datetime``/``date`` ->
    :func:`format_sfmc_datetime`; ``str`` -> unchanged (surrounding spaces preserved).

    Raises ``TypeError`` for other types and ``ValueError`` for NaN/infinite numbers.
    """
    if value is None:
        return ""
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, str):
        return value
    if isinstance(value, _dt.date):  # includes datetime (and pandas.Timestamp, a datetime subclass)
        return format_sfmc_datetime(value)
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            raise ValueError(f"non-finite Decimal cannot be stored in a Data Extension: {value!r}")
        return format(value, "f")
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        as_float = float(value)
        if not math.isfinite(as_float):
            raise ValueError(f"non-finite number cannot be stored in a Data Extension: {value!r}")
        return format(decimal.Decimal(repr(as_float)), "f")
    raise TypeError(f"unsupported value type for a Data Extension field: {type(value).__name__} ({value!r})")


# ----------------------------------------------------------------------------------------------
# Recorded requests
# ----------------------------------------------------------------------------------------------


class CaseInsensitiveDict(dict):
    """A read-mostly ``dict`` of header name -> value whose lookups ignore case.

    Keys keep the casing the client sent (so ``dict(h)`` and equality behave like a normal dict),
    but ``h["authorization"]``, ``h.get("AUTHORIZATION")`` and ``"Authorization" in h`` all work.
    """

    def __init__(self, items: Iterable[tuple[str, str]] | Mapping[str, str] = ()):
        super().__init__()
        self._lower: dict[str, str] = {}
        pairs = items.items() if isinstance(items, Mapping) else items
        for key, value in pairs:
            self[key] = value

    def __setitem__(self, key: str, value: str) -> None:
        existing = self._lower.get(key.lower())
        if existing is not None and existing != key:
            super().__delitem__(existing)
        self._lower[key.lower()] = key
        super().__setitem__(key, value)

    def __delitem__(self, key: str) -> None:
        original = self._lower.pop(key.lower())
        super().__delitem__(original)

    def __getitem__(self, key: str) -> str:
        if isinstance(key, str) and key.lower() in self._lower:
            return super().__getitem__(self._lower[key.lower()])
        raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._lower

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        """Case-insensitive ``dict.get``."""
        return self[key] if key in self else default


@dataclass(frozen=True)
class RecordedRequest:
    """One HTTP request received by the fake, in arrival order.

    Attributes:
        method: HTTP method (``"GET"``, ``"POST"``...).
        path: request path without the query string, percent-decoded (``/rest/data/v1/...``).
        query: query parameters, URL-decoded, ``str -> str`` (first value wins if repeated).
        headers: request headers; lookups are case-insensitive (:class:`CaseInsensitiveDict`).
        json: the parsed JSON body, or ``None`` if there was no body or it was not valid JSON.
        body: the raw request body bytes.
        raw_target: the request target exactly as sent (path + query, still percent-encoded).
        status: the HTTP status the fake answered with, or ``None`` if the connection was dropped.
        clock: the fake-clock time (seconds) at which the request arrived.
    """

    method: str
    path: str
    query: dict[str, str]
    headers: CaseInsensitiveDict
    json: Any
    body: bytes = b""
    raw_target: str = ""
    status: int | None = None
    clock: float = 0.0


# ----------------------------------------------------------------------------------------------
# Internal state records
# ----------------------------------------------------------------------------------------------


@dataclass
class _Token:
    value: str
    issued_at: float
    scopes: tuple[str, ...]
    account_id: str | None
    revoked: bool = False


@dataclass
class _DataExtension:
    key: str
    object_id: str
    items: list[dict[str, dict[str, str]]]  # replaced wholesale, never mutated in place
    fields: dict[str, str] = field(default_factory=dict)  # lower-cased name -> schema casing
    date_fields: frozenset[str] = frozenset()  # lower-cased names of the Date fields
    page_cache: dict[tuple[int, int], str] = field(default_factory=dict)  # see _Snapshot.page_cache


@dataclass
class _Snapshot:
    request_token: str
    de_key: str
    object_id: str
    items: list[dict[str, dict[str, str]]]
    page_size: int
    page_size_explicit: bool
    expires_utc: _dt.datetime
    # Serialised ``items`` of a page by (start, stop); shared with the Data Extension (and every
    # snapshot of it) when the snapshot holds its rows unfiltered and unordered.
    page_cache: dict[tuple[int, int], str] = field(default_factory=dict)


@dataclass
class _Fault(Fault):
    # kind: "status", "drop" or "revoke"; body: dict | str | None
    page: int | None = None  # only requests for this $page (no $page: page 1)

    def matches(self, path: str, query: dict[str, str]) -> bool:
        if self.path_contains not in path:
            return False
        if self.page is None:
            return True
        return (query.get("$page") or "1").strip() == str(self.page)


@dataclass
class _PageBody:
    """A rowset page's JSON: the envelope, and its ``items`` from the snapshot's page cache."""

    envelope: dict[str, Any]
    snapshot: _Snapshot
    start: int
    stop: int

    def render(self) -> bytes:
        items = self.snapshot.page_cache.get((self.start, self.stop))
        if items is None:  # two threads may both render it once; either result is the same
            items = json.dumps(self.snapshot.items[self.start:self.stop], ensure_ascii=False)
            self.snapshot.page_cache[(self.start, self.stop)] = items
        head = json.dumps(self.envelope, ensure_ascii=False)
        return (head[:-1] + (", " if self.envelope else "") + '"items": ' + items + "}").encode("utf-8")


@dataclass
class _Response:
    status: int
    body: Any  # dict/list -> JSON, str -> sent as-is
    headers: dict[str, str] = field(default_factory=dict)


class _FakeError(Exception):
    """Raised inside request handling to produce an error response."""

    def __init__(self, status: int, body: dict[str, Any]):
        super().__init__(status, body)
        self.response = _Response(status, body)


def _sfmc_error(status: int, message: str, errorcode: int, documentation: str = DOCS_ERROR_HANDLING) -> _FakeError:
    return _FakeError(status, {"message": message, "errorcode": errorcode, "documentation": documentation})


def _oauth_error(status: int, error: str, description: str) -> _FakeError:
    return _FakeError(status, {"error": error, "error_description": description, "error_uri": OAUTH_ERROR_URI})


def _parse_date(text: str) -> _dt.datetime | None:
    for fmt in _DATE_FORMATS:
        try:
            return _dt.datetime.strptime(text.strip(), fmt)
        except ValueError:
            continue
    return None


def _item_value(item: dict[str, dict[str, str]], lname: str) -> str:
    keys, values = item.get("keys") or {}, item.get("values") or {}
    return keys[lname] if lname in keys else values.get(lname, "")


# ----------------------------------------------------------------------------------------------
# HTTP plumbing
# ----------------------------------------------------------------------------------------------


class _Handler(FakeRequestHandler):
    """The shared handler (:mod:`~sfmc_pipeline_testing.http_scaffold`); no ``HEAD`` (501, as SFMC JSON)."""

    server_version = "FakeSFMC/1.0"


# ----------------------------------------------------------------------------------------------
# The fake
# ----------------------------------------------------------------------------------------------


class FakeSfmcServer(FakeServerBase):
    """Stateful fake SFMC auth + REST server on ``127.0.0.1`` (ephemeral port).

    Args:
        client_id / client_secret: the installed-package credentials the token endpoint accepts.
        account_id: if set, a token request carrying a *different* ``account_id`` (MID) gets 401
            ``invalid_client``; a request without ``account_id`` is accepted (default BU).
        scopes: the scopes granted to the package.  A token request without ``scope`` gets all of
            them; with ``scope`` it gets the requested ones that the package has (``""`` -> none).
        token_ttl: the ``expires_in`` value returned (default 1080 s = 18 min).
        max_page_size: silent cap for ``$pageSize`` (the default page size is ``min(2500, max_page_size)``).
        token_grace: extra seconds a token stays valid after ``expires_in`` (real tokens live 20 min
            while ``expires_in`` says 18, hence 120).
        latency: seconds every request waits before it is answered (default 0: none), as network
            and server time would; concurrent requests wait concurrently.  May be changed later.

    ``rest_instance_url`` (attribute, default None: ``rest_base_uri``) is what token responses name as the
    REST instance; set it to test a client against a token response pointing elsewhere.
    """

    def __init__(
        self,
        *,
        client_id: str = "fake-client-id",
        client_secret: str = "fake-client-secret",
        account_id: str | None = None,
        scopes: Iterable[str] = ("data_extensions_read",),
        token_ttl: int = 1080,
        max_page_size: int = 2500,
        token_grace: float = 120,
        latency: float = 0.0,
    ) -> None:
        if max_page_size < 1:
            raise ValueError("max_page_size must be >= 1")
        super().__init__(latency=latency)  # ValueError if < 0
        self.client_id = client_id
        self.client_secret = client_secret
        self.account_id = None if account_id is None else str(account_id)
        self.scopes: tuple[str, ...] = tuple(scopes)
        self.token_ttl = token_ttl
        self.max_page_size = max_page_size
        self.token_grace = token_grace
        self.rest_instance_url: str | None = None

        self._clock = 0.0
        self._utc_base = _dt.datetime.now(_dt.timezone.utc).replace(tzinfo=None)
        self._tokens: dict[str, _Token] = {}
        self._des: dict[str, _DataExtension] = {}
        self._snapshots: dict[str, _Snapshot] = {}
        self._faults = FaultQueue()
        self._changes: list[tuple[str, dict[str, str], Any]] = []  # see change_after_next
        self._requests: list[RecordedRequest] = []

    # -- lifecycle: start(), stop(), the context manager, port and base_url (FakeServerBase) --------

    _handler_class = _Handler
    _thread_name = "fake-sfmc"  # threads fake-sfmc-PORT (serving) and fake-sfmc-conn-PORT (one a connection)
    _quiet_handler_errors = (OSError,)  # a client gone mid-request is no bug of the fake

    @property
    def auth_base_uri(self) -> str:
        """Auth base URI ending with ``/``; the token endpoint is ``auth_base_uri + "v2/token"``."""
        return f"{self.base_url}/auth/"

    @property
    def rest_base_uri(self) -> str:
        """REST base URI ending with ``/``; returned as ``rest_instance_url`` by the token endpoint."""
        return f"{self.base_url}/rest/"

    @property
    def soap_base_uri(self) -> str:
        """Returned as ``soap_instance_url`` (no SOAP endpoint is implemented)."""
        return f"{self.base_url}/soap/"

    @property
    def token_url(self) -> str:
        """Full token endpoint URL: ``auth_base_uri + "v2/token"``."""
        return self.auth_base_uri + "v2/token"

    def rowset_url(self, key: str) -> str:
        """Full URL of the first rowset page for DE ``key`` (key percent-encoded)."""
        from urllib.parse import quote

        return f"{self.rest_base_uri}data/v1/customobjectdata/key/{quote(key, safe='')}/rowset"

    # -- data ------------------------------------------------------------------------------------

    def add_data_extension(self, key: str, rows: list[dict], primary_key: Iterable[str] = (),
                           field_types: Mapping[str, str] | None = None) -> None:
        """Create (or replace) the Data Extension with external key ``key``.

        ``field_types`` gives fields their SFMC type (``{"OccurredAt": "Date"}``); a field given only
        ``date``/``datetime`` values is a Date field anyway, any other is Text. Only Date matters: it
        is compared as a date in ``$filter`` and ``$orderBy``.

        ``rows`` use the schema casing and plain Python values (see :func:`format_sfmc_value`); they
        are converted and copied immediately, so later changes to ``rows`` have no effect.  The
        ``primary_key`` fields go to ``items[].keys``, the rest to ``items[].values``; all names are
        served lower-cased.  Replacing a DE keeps its ``customObjectId`` and does not affect rowset
        snapshots already handed out (their continuation pages keep serving the old rows).

        Raises ``ValueError`` if a row lacks a primary-key field or has it ``None``, if two rows share
        a primary key (compared case-insensitively, like SFMC), or if a row has two field names that
        differ only by case; ``TypeError`` for unsupported value types.
        """
        pk_lower = [name.lower() for name in primary_key]
        if len(set(pk_lower)) != len(pk_lower):
            raise ValueError(f"duplicate primary key field in {list(primary_key)!r}")
        fields, date_fields = self._schema(rows, primary_key, field_types or {})
        items: list[dict[str, dict[str, str]]] = []
        seen_pks: set[tuple[str, ...]] = set()
        for index, row in enumerate(rows):
            keys: dict[str, str] = {}
            values: dict[str, str] = {}
            seen_names: set[str] = set()
            for name, raw in row.items():
                if not isinstance(name, str):
                    raise TypeError(f"row {index}: field names must be str, got {name!r}")
                lname = name.lower()
                if lname in seen_names:
                    raise ValueError(f"row {index}: field {name!r} appears twice (names are case-insensitive)")
                seen_names.add(lname)
                if lname in pk_lower and raw is None:
                    raise ValueError(f"row {index}: primary key field {name!r} is None")
                try:
                    text = format_sfmc_value(raw)
                except (TypeError, ValueError) as exc:
                    raise type(exc)(f"row {index}, field {name!r}: {exc}") from None
                (keys if lname in pk_lower else values)[lname] = text
            missing = [name for name in pk_lower if name not in keys]
            if missing:
                raise ValueError(f"row {index}: missing primary key field(s) {missing!r}")
            if pk_lower:
                pk_value = tuple(keys[name].lower() for name in pk_lower)
                if pk_value in seen_pks:
                    raise ValueError(f"row {index}: duplicate primary key {pk_value!r}")
                seen_pks.add(pk_value)
            items.append({"keys": keys, "values": values})
        with self._lock:
            existing = self._des.get(key)
            object_id = existing.object_id if existing else str(uuid.uuid4())
            self._des[key] = _DataExtension(key=key, object_id=object_id, items=items, fields=fields,
                                            date_fields=date_fields)

    @staticmethod
    def _schema(rows: list[dict], primary_key: Iterable[str], field_types: Mapping[str, str]
                ) -> tuple[dict[str, str], frozenset[str]]:
        """The fields in schema casing (first spelling seen) and the Date ones, by lower-cased name."""
        fields: dict[str, str] = {}
        for name in [*primary_key, *field_types, *(n for row in rows for n in row if isinstance(n, str))]:
            fields.setdefault(name.lower(), name)
        for name, kind in field_types.items():
            if kind not in _FIELD_TYPES:
                raise ValueError(f"field {name!r}: unknown SFMC field type {kind!r}; use one of {_FIELD_TYPES}")
        typed = {name.lower(): kind for name, kind in field_types.items()}
        seen_date, seen_other = set(), set()  # lower-cased names given a date / anything else (not None)
        for row in rows:
            for name, value in row.items():
                if isinstance(name, str) and value is not None:
                    (seen_date if isinstance(value, _dt.date) else seen_other).add(name.lower())
        inferred = seen_date - seen_other
        dates = {lname for lname in fields if typed.get(lname, "Date" if lname in inferred else "Text") == "Date"}
        return fields, frozenset(dates)

    def remove_data_extension(self, key: str) -> None:
        """Delete the DE ``key`` (later first-page reads get 404; open snapshots keep working)."""
        with self._lock:
            self._des.pop(key, None)

    def data_extension_id(self, key: str) -> str:
        """The ``customObjectId`` (GUID) of DE ``key``."""
        with self._lock:
            return self._des[key].object_id

    # -- clock and tokens ------------------------------------------------------------------------

    @property
    def clock(self) -> float:
        """Current fake-clock time in seconds (starts at 0)."""
        with self._lock:
            return self._clock

    def advance_clock(self, seconds: float) -> None:
        """Move the fake clock forward (never sleeps).  Tokens expire at issue time + ttl + grace."""
        if seconds < 0:
            raise ValueError("the fake clock cannot go backwards")
        with self._lock:
            self._clock += seconds

    def revoke_tokens(self) -> None:
        """Invalidate every token issued so far; REST calls using them get 401 (new tokens work)."""
        with self._lock:
            for token in self._tokens.values():
                token.revoked = True

    @property
    def issued_tokens(self) -> list[str]:
        """Every access token issued so far, oldest first."""
        with self._lock:
            return list(self._tokens)

    # -- fault injection -------------------------------------------------------------------------

    def fail_next(
        self,
        status: int,
        *,
        path_contains: str = "",
        times: int = 1,
        headers: dict | None = None,
        body: dict | str | None = None,
        page: int | None = None,
    ) -> None:
        """Answer the next ``times`` requests whose path contains ``path_contains`` with ``status``.

        Faults are queued FIFO (together with :meth:`drop_connection_next` and
        :meth:`revoke_tokens_next`); a request consumes the first queued fault that matches it.
        Matching is a substring test on the percent-decoded path (e.g. ``"/v2/token"``,
        ``"/rowset"``, ``"/token/"``); ``""`` matches everything.  With ``page``, only requests for
        that rowset page match (``$page``; a request without ``$page`` is page 1), so a fault hits
        one page whatever order concurrent pages arrive in.  A ``dict``
        body is sent as JSON, a ``str`` body verbatim (still ``Content-Type: application/json`` unless
        ``headers`` override it), so ``fail_next(200, body={...})`` serves a custom (e.g. short or
        malformed) rowset page.  Default bodies: 429 -> ``{"message":"Rate limit exceeded",
        "errorcode":50100,"retryAfter":N,...}`` with N from a ``Retry-After`` header if given, else 1
        (no ``Retry-After`` header is sent unless given); 500/503 -> ``{"message":"Internal Server
        Error","errorcode":0,...}``; 401/403 -> the SFMC Not Authorized / insufficient-privileges
        bodies; anything else -> ``{"message": <reason phrase>, "errorcode": 0, ...}``.
        """
        if not 100 <= int(status) <= 599:
            raise ValueError(f"invalid HTTP status {status!r}")
        fault_headers = {str(k): str(v) for k, v in (headers or {}).items()}
        with self._lock:  # ValueError unless times >= 1
            self._faults.add(
                _Fault("status", path_contains, times, status=int(status), headers=fault_headers, body=body,
                       page=page)
            )

    def drop_connection_next(self, *, path_contains: str = "", times: int = 1, page: int | None = None) -> None:
        """Close the connection without any response for the next ``times`` matching requests.

        The request is still read and recorded (with ``status=None``); the client sees a
        ``ConnectionError`` (``RemoteDisconnected``).  Shares the FIFO queue with :meth:`fail_next`
        (``path_contains`` and ``page`` match the same way).
        """
        with self._lock:
            self._faults.add(_Fault("drop", path_contains, times, page=page))

    def revoke_tokens_next(self, *, path_contains: str = "", page: int | None = None) -> None:
        """When the next matching request arrives, revoke every token issued so far (as
        :meth:`revoke_tokens`), then answer it normally: it, and every other request still carrying
        an old token, gets the real 401; tokens issued afterwards work.  A token revoked mid-read,
        exactly when the first continuation page (say) is requested.  Shares the FIFO queue with
        :meth:`fail_next`.
        """
        with self._lock:
            self._faults.add(_Fault("revoke", path_contains, 1, page=page))

    def change_after_next(self, action, *, path_contains: str = "", query: Mapping[str, str] | None = None) -> None:
        """Call ``action(self)`` right after the next request whose path contains ``path_contains`` and whose
        query holds every item of ``query`` has been answered: the Data Extension changes between two
        requests of a client's run (an import writing to it while the pipeline reads). ``action`` may call
        :meth:`add_data_extension`; snapshots already handed out keep their rows."""
        with self._lock:
            self._changes.append((path_contains, dict(query or {}), action))

    def clear_faults(self) -> None:
        """Forget every queued fault that has not fired yet."""
        with self._lock:
            self._faults.clear()

    @property
    def pending_faults(self) -> int:
        """How many injected responses are still queued (sum of remaining ``times``)."""
        with self._lock:
            return self._faults.pending

    # -- inspection ------------------------------------------------------------------------------

    # in_flight, max_in_flight, reset_max_in_flight() and errors: FakeServerBase

    def warm_page_cache(self, key: str, page_size: int = _DEFAULT_PAGE_SIZE) -> int:
        """Serialise every page of DE ``key`` (unfiltered reads of ``page_size`` rows) ahead of the
        first read, so that a benchmark measures the client, not the fake's JSON encoding.
        Returns the number of pages."""
        with self._lock:
            de = self._de_by_key(key)
            items, cache = de.items, de.page_cache
        size = min(page_size, self.max_page_size)
        for start in range(0, len(items), size):
            stop = min(start + size, len(items))
            if (start, start + size) not in cache:
                cache[(start, start + size)] = json.dumps(items[start:stop], ensure_ascii=False)
        return math.ceil(len(items) / size)

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, in arrival order (a copy)."""
        with self._lock:
            return list(self._requests)

    def token_requests(self) -> list[RecordedRequest]:
        """The recorded requests to the token endpoint (``/auth/v2/token``), any method."""
        return [r for r in self.requests if r.path == "/auth/v2/token"]

    def rowset_requests(self) -> list[RecordedRequest]:
        """The recorded rowset requests (by key, by id and token continuations), any method."""
        return [
            r for r in self.requests if r.path.startswith("/rest/data/v1/customobjectdata/") and r.path.endswith("/rowset")
        ]

    def clear_requests(self) -> None:
        """Forget the recorded requests."""
        with self._lock:
            self._requests.clear()

    # -- request handling (called from handler threads) ------------------------------------------

    def _protocol_error_response(self, code: int, message: str | None) -> _Response:
        """Protocol-level errors (malformed request line, unsupported method) as SFMC-style JSON."""
        try:
            phrase = HTTPStatus(code).phrase
        except ValueError:
            phrase = "Error"
        return _Response(code, {"message": message or phrase, "errorcode": 0, "documentation": DOCS_ERROR_HANDLING})

    def _encode_response(self, response: _Response) -> tuple[int, list[tuple[str, str]], bytes]:
        """Render the body (a rowset page's cached ``items``, bytes, text or JSON) outside the lock."""
        if isinstance(response.body, _PageBody):
            payload = response.body.render()
        elif isinstance(response.body, (bytes, bytearray)):
            payload = bytes(response.body)
        elif isinstance(response.body, str):
            payload = response.body.encode("utf-8")
        else:
            payload = json.dumps(response.body, ensure_ascii=False).encode("utf-8")
        headers = CaseInsensitiveDict({"Content-Type": _JSON_CONTENT_TYPE})
        for name, value in response.headers.items():
            headers[name] = str(value)
        headers["Content-Length"] = str(len(payload))
        return response.status, list(headers.items()), payload

    def _handle(self, method: str, target: str, raw_headers: Any, body: bytes) -> _Response | None:
        split = urlsplit(target)
        raw_path = split.path
        path = unquote(raw_path)
        query: dict[str, str] = {}
        for k, v in parse_qsl(split.query, keep_blank_values=True):
            query.setdefault(k, v)
        headers = CaseInsensitiveDict()
        for name, value in raw_headers.items():
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        try:
            parsed_json = json.loads(body.decode("utf-8")) if body else None
        except (UnicodeDecodeError, ValueError):
            parsed_json = None

        with self._lock:
            clock = self._clock
            response: _Response | None
            fault = self._faults.take(path, query)
            if fault is not None and fault.kind == "revoke":
                self.revoke_tokens()
                fault = None
            if fault is not None:
                response = None if fault.kind == "drop" else self._fault_response(fault)
            else:
                try:
                    response = self._route(method, raw_path, query, headers, body)
                except _FakeError as err:
                    response = err.response
                except Exception as exc:  # a bug in the fake: report it loudly
                    self._record_internal_error(exc)
                    response = _Response(500, {"message": f"fake SFMC server bug: {exc!r}", "errorcode": 0,
                                               "documentation": DOCS_ERROR_HANDLING})
            self._requests.append(
                RecordedRequest(
                    method=method,
                    path=path,
                    query=query,
                    headers=headers,
                    json=parsed_json,
                    body=body,
                    raw_target=target,
                    status=None if response is None else response.status,
                    clock=clock,
                )
            )
            for number, (contains, wanted, action) in enumerate(self._changes):
                if contains in path and all(query.get(k) == v for k, v in wanted.items()):
                    del self._changes[number]
                    action(self)  # the lock is re-entrant
                    break
            return response

    @staticmethod
    def _fault_response(fault: _Fault) -> _Response:
        body = fault.body
        if body is None:
            status = fault.status
            if status == 429:
                retry_after = CaseInsensitiveDict(fault.headers).get("Retry-After")
                try:
                    n = int(retry_after) if retry_after is not None else 1
                except ValueError:
                    n = 1
                body = {"message": "Rate limit exceeded", "errorcode": 50100, "retryAfter": n,
                        "documentation": DOCS_RATE_LIMITING}
            elif status in (500, 503):
                body = {"message": "Internal Server Error", "errorcode": 0, "documentation": DOCS_ERROR_HANDLING}
            elif status == 401:
                body = {"message": "Not Authorized", "errorcode": 0, "documentation": DOCS_ERROR_HANDLING}
            elif status == 403:
                body = {"message": "Insufficient privileges to complete this action.", "errorcode": 20002,
                        "documentation": DOCS_ERROR_HANDLING}
            else:
                try:
                    phrase = HTTPStatus(status).phrase
                except ValueError:
                    phrase = "Error"
                body = {"message": phrase, "errorcode": 0, "documentation": DOCS_ERROR_HANDLING}
        return _Response(fault.status, body, dict(fault.headers))

    def _route(self, method: str, raw_path: str, query: dict[str, str], headers: CaseInsensitiveDict,
               body: bytes) -> _Response:
        segments = [unquote(s) for s in raw_path.split("/")]
        # "/auth/v2/token" -> ["", "auth", "v2", "token"]
        if segments == ["", "auth", "v2", "token"] and method == "POST":
            return self._token_endpoint(body)
        if len(segments) >= 6 and segments[:5] == ["", "rest", "data", "v1", "customobjectdata"] and segments[-1] == "rowset":
            rest = segments[5:-1]
            if method == "GET" and len(rest) == 2 and rest[0] == "key" and rest[1]:
                self._authorize(headers)
                return self._rowset_first(self._de_by_key(rest[1]), query)
            if method == "GET" and len(rest) == 2 and rest[0] == "token" and rest[1]:
                self._authorize(headers)
                return self._rowset_continue(rest[1], query)
            if method == "GET" and len(rest) == 1 and rest[0]:
                self._authorize(headers)
                return self._rowset_first(self._de_by_id(rest[0]), query)
        raise _sfmc_error(404, f"Resource not found: {method} {unquote(raw_path)}", 0)

    # -- auth --

    def _token_endpoint(self, body: bytes) -> _Response:
        try:
            payload = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise _oauth_error(400, "invalid_request", "The request body must be a JSON object.") from None
        if not isinstance(payload, dict):
            raise _oauth_error(400, "invalid_request", "The request body must be a JSON object.")
        if payload.get("grant_type") != "client_credentials":
            raise _oauth_error(400, "unsupported_grant_type", "Use \"client_credentials\" as the value for "
                                                             "\"grant_type\".")
        if payload.get("client_id") != self.client_id or payload.get("client_secret") != self.client_secret:
            raise _oauth_error(401, "invalid_client",
                               "Invalid client ID. Use the client ID in Marketing Cloud Installed Packages.")
        requested_account = payload.get("account_id")
        if self.account_id is not None and requested_account not in (None, "") and str(requested_account) != self.account_id:
            raise _oauth_error(401, "invalid_client",
                               "Invalid account_id. The client is not authorized for the requested account.")
        if "scope" in payload:
            scope = payload["scope"]
            if not isinstance(scope, str):
                raise _oauth_error(400, "invalid_request", "\"scope\" must be a space-separated string.")
            granted = tuple(s for s in scope.split() if s in self.scopes)
        else:
            granted = self.scopes
        value = secrets.token_urlsafe(75)  # 100 opaque characters
        self._tokens[value] = _Token(
            value=value,
            issued_at=self._clock,
            scopes=granted,
            account_id=self.account_id if requested_account in (None, "") else str(requested_account),
        )
        return _Response(
            200,
            {
                "access_token": value,
                "token_type": "Bearer",
                "expires_in": self.token_ttl,
                "scope": " ".join(granted),
                "rest_instance_url": self.rest_instance_url or self.rest_base_uri,
                "soap_instance_url": self.soap_base_uri,
            },
            {"Cache-Control": "no-store"},
        )

    def _authorize(self, headers: CaseInsensitiveDict) -> _Token:
        auth = headers.get("Authorization") or ""
        scheme, _, credential = auth.strip().partition(" ")
        token = self._tokens.get(credential.strip()) if scheme.lower() == "bearer" else None
        if token is None or token.revoked or self._clock >= token.issued_at + self.token_ttl + self.token_grace:
            raise _sfmc_error(401, "Not Authorized", 0)
        if "data_extensions_read" not in token.scopes:
            raise _sfmc_error(403, "Insufficient privileges to complete this action.", 20002)
        return token

    # -- rowset --

    def _de_by_key(self, key: str) -> _DataExtension:
        de = self._des.get(key)
        if de is None:
            raise _sfmc_error(404, f"Data extension with key {key} not found.", 10000)
        return de

    def _de_by_id(self, object_id: str) -> _DataExtension:
        for de in self._des.values():
            if de.object_id.lower() == object_id.lower():
                return de
        raise _sfmc_error(404, f"Data extension with id {object_id} not found.", 10000)

    @staticmethod
    def _positive_int(query: dict[str, str], name: str) -> int | None:
        if name not in query:
            return None
        text = query[name].strip()
        number = int(text) if text.isascii() and text.isdigit() else 0
        if number < 1:
            raise _sfmc_error(400, f"Invalid value for {name}: '{query[name]}'. It must be an integer greater than 0.",
                              10001)
        return number

    def _check_unsupported(self, query: dict[str, str], allowed: Iterable[str] = ()) -> None:
        for name in query:
            if name.lower() in _ODATA_ROWSET_PARAMS and name not in allowed:
                where = (" on a continuation page (the first page's $filter and $orderBy carry over)"
                         if name in _FIRST_PAGE_PARAMS else "")
                raise _sfmc_error(400, f"The fake SFMC server does not implement the {name} parameter{where}.", 10000)

    def _rowset_first(self, de: _DataExtension, query: dict[str, str]) -> _Response:
        self._check_unsupported(query, allowed=_FIRST_PAGE_PARAMS)
        page = self._positive_int(query, "$page") or 1
        requested_size = self._positive_int(query, "$pageSize")
        default_size = min(_DEFAULT_PAGE_SIZE, self.max_page_size)
        page_size = min(requested_size, self.max_page_size) if requested_size else default_size
        items = de.items
        if "$filter" in query:
            items = self._filtered(de, items, query["$filter"])
        if "$orderBy" in query:
            items = self._ordered(de, items, query["$orderBy"])
        snapshot = _Snapshot(
            page_cache=de.page_cache if items is de.items else {},
            request_token=str(uuid.uuid4()),
            de_key=de.key,
            object_id=de.object_id,
            items=items,
            page_size=page_size,
            page_size_explicit=requested_size is not None,
            expires_utc=self._utc_now() + _dt.timedelta(minutes=20),
        )
        self._snapshots[snapshot.request_token] = snapshot
        return self._rowset_page(snapshot, page, page_size, requested_size is not None)

    @staticmethod
    def _field(de: _DataExtension, name: str, parameter: str) -> str:
        """The lower-cased name of field ``name``, which must be written in the schema casing."""
        schema_name = de.fields.get(name.lower())
        if schema_name is None:
            raise _sfmc_error(400, f"{parameter}: {name!r} is not a field of data extension {de.key}.", 10000)
        if schema_name != name:
            raise _sfmc_error(400, f"{parameter}: write the field {name!r} as {schema_name!r} (the schema casing; "
                                   "case-insensitive field names are not confirmed).", 10000)
        return name.lower()

    def _comparable(self, de: _DataExtension, lname: str, text: str):
        """A value as the fake compares it: a datetime for a Date field (None: empty or not a date),
        else the case-folded text (None: empty)."""
        if lname in de.date_fields:
            return _parse_date(text) if text.strip() else None
        return text.casefold() if text != "" else None

    def _bound(self, de: _DataExtension, lname: str, quoted: str, expression: str):
        value = self._comparable(de, lname, quoted.replace("''", "'"))
        if value is None:
            kind = "date" if lname in de.date_fields else "value"
            raise _sfmc_error(400, f"$filter: {quoted!r} is not a {kind} in {expression!r}.", 10001)
        return value

    def _filtered(self, de: _DataExtension, items: list, expression: str) -> list:
        eq, between = _FILTER_EQ.match(expression), _FILTER_BETWEEN.match(expression)
        if eq is None and between is None:
            raise _sfmc_error(
                400, f"$filter {expression!r} is not supported by the fake SFMC server: only \"Field eq 'value'\" "
                     "and \"Field between 'A' and 'B'\" are (other operators are unconfirmed on the real API).",
                10000)
        match = eq or between
        lname = self._field(de, match.group(1), "$filter")
        low = self._bound(de, lname, match.group(2), expression)
        high = self._bound(de, lname, match.group(3), expression) if between else low
        kept = []
        for item in items:
            value = self._comparable(de, lname, _item_value(item, lname))
            if value is not None and low <= value <= high:
                kept.append(item)
        return kept

    def _ordered(self, de: _DataExtension, items: list, expression: str) -> list:
        match = _ORDER_BY.match(expression)
        if match is None:
            raise _sfmc_error(400, f"$orderBy {expression!r} is not supported by the fake SFMC server: use "
                                   "\"Field asc\" or \"Field desc\" (one field).", 10000)
        lname = self._field(de, match.group(1), "$orderBy")

        def sort_key(item):
            value = self._comparable(de, lname, _item_value(item, lname))
            return (0, _dt.datetime.min if lname in de.date_fields else "") if value is None else (1, value)

        return sorted(items, key=sort_key, reverse=match.group(2) == "desc")

    def _rowset_continue(self, request_token: str, query: dict[str, str]) -> _Response:
        snapshot = self._snapshots.get(request_token)
        if snapshot is None:
            raise _sfmc_error(404, f"Request token {request_token} not found or expired.", 10000)
        self._check_unsupported(query)
        page = self._positive_int(query, "$page") or 1
        requested_size = self._positive_int(query, "$pageSize")
        page_size = min(requested_size, self.max_page_size) if requested_size else snapshot.page_size
        explicit = requested_size is not None or snapshot.page_size_explicit
        return self._rowset_page(snapshot, page, page_size, explicit)

    def _rowset_page(self, snapshot: _Snapshot, page: int, page_size: int, explicit_size: bool) -> _Response:
        total = len(snapshot.items)
        start = (page - 1) * page_size
        base = f"/v1/customobjectdata/token/{snapshot.request_token}/rowset"
        suffix = f"&$pageSize={page_size}" if explicit_size else ""
        links = {"self": f"{base}?$page={page}{suffix}"}
        if total == 0:
            # As recorded from real tenants: a read without rows (an empty Data Extension, or a
            # $filter that matches nothing) has no "items" key at all, nor the object's id and key.
            return _Response(200, {"links": links, "requestToken": snapshot.request_token, "pageSize": page_size,
                                   "page": page, "count": 0, "top": 0})
        if page > 1:
            links["previous"] = f"{base}?$page={page - 1}{suffix}"
        if start + page_size < total:
            links["next"] = f"{base}?$page={page + 1}{suffix}"
        envelope = {
            "links": links,
            "requestToken": snapshot.request_token,
            "tokenExpireDateUtc": snapshot.expires_utc.isoformat(timespec="milliseconds"),
            "customObjectId": snapshot.object_id,
            "customObjectKey": snapshot.de_key,
            "pageSize": page_size,
            "page": page,
            "count": total,
            "top": 0,
        }
        # "items" last, serialised (once per snapshot content and page) outside the fake's lock
        return _Response(200, _PageBody(envelope, snapshot, start, start + page_size))

    def _utc_now(self) -> _dt.datetime:
        return self._utc_base + _dt.timedelta(seconds=self._clock)

