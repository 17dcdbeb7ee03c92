"""Salesforce Platform REST client: OAuth login, org identity, describe, and sObject Collections
update/upsert/retrieve.

Contract (Salesforce REST API and OAuth documentation):

* Login is lazy, on the first API call: ``POST {base}services/oauth2/token``, form-encoded, with the
  flow the settings choose (``salesforce_login.py``: client credentials, the JWT bearer flow, or the
  retiring username-password flow). The token call carries no Authorization header and the secrets
  travel only in the form body, never in a URL. Only ``access_token`` and ``instance_url`` are
  required of the response (``token_type``, ``issued_at``, ``signature``, ``expires_in`` may be
  missing); the ``instance_url`` is used only on ``*.salesforce.com``, ``*.force.com`` or the
  configured login host (``transport.instance_base_url``), so the token is never sent elsewhere. The
  session lives until Salesforce answers 401 ``INVALID_SESSION_ID``; then the client logs in again
  once and resends the request once.
* The org: the token response's ``id`` is the identity URL
  ``https://login.salesforce.com/id/{orgId 00D...}/{userId 005...}``; without a usable one,
  ``GET {instance_url}services/oauth2/userinfo`` (Bearer) answers ``organization_id``. ``target_id``
  is ``salesforce:<18-character org id>``; a re-login that lands in another org is an error.
* API calls go to the ``instance_url`` of the token response with ``Authorization: Bearer``.
  Request-level errors are JSON arrays ``[{"message", "errorCode", "fields"}]`` or one such object; a
  403 ``REQUEST_LIMIT_EXCEEDED`` for the daily allocation ("TotalRequests Limit exceeded.") becomes
  :class:`RequestLimitExceeded` (stop, resume later), one for too many concurrent long-running requests
  ("ConcurrentPerOrgLongTxn Limit exceeded.") is transient: the request, refused before it ran, is sent
  again with the transport's backoff, and after its retries a retryable ``ApiError``. 429, 5xx and
  connection errors are retried by ``HttpTransport`` (every call here is idempotent: PATCH by Id or
  external id, GET, and the retrieve POST, a read).
* ``PATCH composite/sobjects`` (update) and ``composite/sobjects/{SObject}/{ExternalIdField}``
  (upsert) take at most 200 records and answer 200 with one result per record, in request order;
  per-record failures are data (``RecordResult``), not exceptions. Bodies are serialised here (not by
  ``requests``) so that ``decimal.Decimal`` values go out as exact JSON numbers.
* ``POST composite/sobjects/{SObject}`` with ``{"ids": [...], "fields": [...]}`` (retrieve) takes at
  most 2,000 ids of one object and answers a JSON array in the order of ``ids``: ``null`` for an id
  that is invalid, deleted or not accessible, else ``{"attributes": {...}, "Id": ..., "<Field>": ...}``
  with the org's field names; an unknown field is HTTP 400 ``INVALID_FIELD``. Each request is one
  API call. Numbers are read as exact ``Decimal`` (integers as ``int``).
* Every API response's ``Sforce-Limit-Info: api-usage=USED/LIMIT`` is recorded in ``api_usage``.

Thread-safe: the sync sends several sObject Collections requests at once (``sync.concurrent_requests``),
so ``supports_concurrent_requests`` is declared. One login at a time: the token lives behind a lock,
and a thread whose request got a 401 drops only the token it sent; when several requests fail with
the same expired session, the first thread logs in and the others use its new token (or its error),
so one expiry costs one login, not one per thread. Usage readings are recorded under a lock, the
highest one winning (concurrent responses can arrive out of order). The transport's session keeps a
connection per concurrent request (``pool_size``) and counts requests and retries under a lock.
"""

from __future__ import annotations

import json
import re
import threading
import time
from decimal import Decimal
from typing import Any, Callable, Mapping, Sequence
from urllib.parse import quote, urlsplit

import requests

from sfmc_pipeline.errors import ApiError, ConfigurationError
from sfmc_pipeline.http import (
    SALESFORCE_DOMAINS,
    HttpTransport,
    Redactor,
    RetrySettings,
    body_excerpt,
    instance_base_url,
    normalize_base_url,
)
from sfmc_pipeline.salesforce.ids import is_valid_id, to_18
from sfmc_pipeline.salesforce.login import LoginFlow, login_error
from sfmc_pipeline.salesforce.records import (
    MAX_RECORDS_PER_REQUEST,
    MAX_RETRIEVE_IDS_PER_REQUEST,
    ApiUsage,
    Describe,
    FieldInfo,
    RecordResult,
)

DEFAULT_API_VERSION = "66.0"  # Spring '26
MY_DOMAIN_SUFFIX = ".my.salesforce.com"
ORG_ID_PREFIX = "00D"

_LABEL = r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?"
_PREFIX = re.compile(rf"^{_LABEL}$")
_MY_DOMAIN_HOST = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*{re.escape(MY_DOMAIN_SUFFIX)}$")
_API_VERSION = re.compile(r"^\d{2}\.\d$")
_API_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_API_USAGE = re.compile(r"(?:^|[\s,;])api-usage=(\d+)/(\d+)")
MAX_CONCURRENT_REQUESTS = 25  # the most sync.concurrent_requests allows (Salesforce's long-running request limit)
_UNSEEN = object()  # a thread that has not read the token yet


class RequestLimitExceeded(ApiError):
    """403 REQUEST_LIMIT_EXCEEDED for the daily allocation: the org's API requests are used up; resume later."""


def salesforce_base_url(*, domain: str | None, login_url: str | None) -> str:
    """The login base URL (``https://host/``) from exactly one of the two settings.

    ``domain`` (SALESFORCE_DOMAIN) is the My Domain prefix, e.g. ``d5i000000isb4eak-dev-ed`` for
    ``https://d5i000000isb4eak-dev-ed.my.salesforce.com/``; a pasted ``*.my.salesforce.com`` host
    or ``https://`` URL is accepted too. ``login_url`` (SALESFORCE_LOGIN_URL) is a full base URL,
    for sandboxes, other login hosts, or ``http://127.0.0.1:PORT`` in tests.
    """
    domain = (domain or "").strip() or None
    login_url = (login_url or "").strip() or None
    if (domain is None) == (login_url is None):
        given = "both are set" if domain else "neither is set"
        raise ConfigurationError(
            f"Set exactly one of SALESFORCE_DOMAIN (the My Domain prefix, e.g. 'd5i000000isb4eak-dev-ed' for "
            f"d5i000000isb4eak-dev-ed.my.salesforce.com) or SALESFORCE_LOGIN_URL (a full base URL such as "
            f"https://test.salesforce.com/); {given}."
        )
    if login_url is not None:
        return normalize_base_url(login_url, setting="SALESFORCE_LOGIN_URL")
    return f"https://{_my_domain_host(domain)}/"


def _my_domain_host(domain: str) -> str:
    shown = domain[:80]
    usage = (
        "SALESFORCE_DOMAIN must be the My Domain prefix (e.g. 'd5i000000isb4eak-dev-ed' for "
        "d5i000000isb4eak-dev-ed.my.salesforce.com) or that *.my.salesforce.com host"
    )
    text = domain
    if "://" in text:
        parts = urlsplit(text)
        if parts.scheme.lower() != "https":
            raise ConfigurationError(f"{usage}; a URL must use https://, got {parts.scheme}://")
        extra = parts.username or parts.password or parts.port or parts.query or parts.fragment
        if extra or parts.path not in ("", "/"):
            raise ConfigurationError(f"{usage}, without credentials, port, path or query; got {shown!r}.")
        text = parts.netloc
    elif text.endswith("/") and "/" not in text.rstrip("/"):
        text = text.rstrip("/")  # a pasted host with its trailing slash
    host = text.lower()
    if "." not in host:
        if not _PREFIX.match(host):
            raise ConfigurationError(
                f"{usage}: letters, digits and hyphens only, no spaces or slashes; got {shown!r}."
            )
        return host + MY_DOMAIN_SUFFIX
    if _MY_DOMAIN_HOST.match(host):
        return host
    if host.endswith(".force.com"):
        raise ConfigurationError(
            f"{usage}; {shown!r} looks like a Lightning or Visualforce host: use the part before the first dot "
            "(the same prefix as in <prefix>.my.salesforce.com)."
        )
    raise ConfigurationError(
        f"{usage}; got {shown!r}. For another login host (login.salesforce.com, test.salesforce.com, a sandbox "
        "URL) set SALESFORCE_LOGIN_URL instead."
    )


class SalesforceClient:
    """Implements ``sfmc_pipeline.salesforce.records.CrmTarget`` against a Salesforce org's REST API."""

    mode = "salesforce"
    supports_concurrent_requests = True  # several threads may call it at once (see the module docstring)

    def __init__(
        self,
        *,
        base_url: str,
        client_id: str,
        client_secret: str | None = None,
        username: str | None = None,
        password: str | None = None,
        security_token: str | None = None,
        private_key_file: str | None = None,
        private_key: str | None = None,
        jwt_audience: str | None = None,
        api_version: str = DEFAULT_API_VERSION,
        timeout_seconds: float = 30.0,
        retry: RetrySettings | None = None,
        sleep: Callable[[float], None] = time.sleep,
        pool_size: int = MAX_CONCURRENT_REQUESTS,
    ):
        """The login settings choose the OAuth flow (``LoginFlow.choose``). ``pool_size``: connections kept open to
        the org, one per request that may be in flight at once."""
        self.base_url = normalize_base_url(base_url, setting="SALESFORCE_LOGIN_URL")
        version = (api_version or "").strip()
        version = version[1:] if version[:1] in ("v", "V") else version
        if not _API_VERSION.match(version):
            raise ConfigurationError(f"Salesforce API version must look like '66.0', got {api_version!r}.")
        self._login_flow = LoginFlow.choose(
            base_url=self.base_url, client_id=client_id, client_secret=client_secret, username=username,
            password=password, security_token=security_token, private_key_file=private_key_file,
            private_key=private_key, jwt_audience=jwt_audience,
        )
        self.api_version = version
        self.flow = self._login_flow.name
        self.transport = HttpTransport(
            "Salesforce",
            timeout_seconds=timeout_seconds,
            retry=retry,
            redactor=Redactor(self._login_flow.secrets),
            sleep=sleep,
            pool_size=pool_size,
        )
        self.instance_url: str | None = None
        self.logins = 0  # token requests made (successful or not)
        self._login_lock = threading.Lock()  # one login at a time
        self._token_lock = threading.Lock()
        self._usage_lock = threading.Lock()
        self._seen = threading.local()  # per thread: the token it last read, and the login count then
        self._token: str | None = None
        self._login_failure: BaseException | None = None
        self._access_token = None
        self._api_usage: ApiUsage | None = None
        self._org_id: str | None = None

    def __repr__(self) -> str:  # never show a secret
        return f"SalesforceClient(base_url={self.base_url!r}, flow={self.flow!r}, api_version={self.api_version!r})"

    def __enter__(self) -> SalesforceClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self.transport.close()

    # ------------------------------------------------------------------ the session token, shared by threads

    @property
    def _access_token(self) -> str | None:
        """The current session token (None before the first login, or after a 401 dropped it). Each
        thread remembers the token it read last: that is the one its request carried."""
        token = self._token
        self._seen.token, self._seen.logins = token, self.logins
        return token

    @_access_token.setter
    def _access_token(self, value: str | None) -> None:
        """A new token (``_login``), or None after a 401: that drops the token only if it is still the
        one this thread sent (another thread may have logged in again already)."""
        with self._token_lock:
            if value is not None or getattr(self._seen, "token", _UNSEEN) in (_UNSEEN, self._token):
                self._token = value
        self._seen.token = value

    # ------------------------------------------------------------------ CrmTarget

    @property
    def target_id(self) -> str:
        """``salesforce:<18-character org id>``; logs in first if needed."""
        return f"salesforce:{self._organization_id()}"

    @property
    def target_label(self) -> str:
        """``Salesforce org 00D... at https://<instance>/``; logs in first if needed."""
        org_id = self._organization_id()
        return f"Salesforce org {org_id} at {self.instance_url}"

    @property
    def api_usage(self) -> ApiUsage | None:
        """The latest ``Sforce-Limit-Info`` reading (rolling 24 h usage of the whole org)."""
        return self._api_usage

    @property
    def api_requests(self) -> int:
        """HTTP requests sent so far, token requests and retries included."""
        return self.transport.stats.requests

    def describe(self, sobject: str) -> Describe:
        name = _api_name(sobject, "sobject")
        response = self._api("GET", f"sobjects/{name}/describe", what=f"describe of {name}")
        data = _json(response, dict, f"describe of {name}", self.transport.redact)
        fields = data.get("fields")
        if not isinstance(fields, list):
            raise ApiError(f"Salesforce describe of {name} has no 'fields' list; it is not a describe result.")
        infos = [FieldInfo.from_describe(f) for f in fields if isinstance(f, Mapping) and f.get("name")]
        return Describe(sobject=data.get("name") or name, fields={info.name: info for info in infos})

    def update(self, records: Sequence[Mapping[str, Any]]) -> list[RecordResult]:
        """Update records by Id (``allOrNone`` false); one result per record, in order."""
        return self._collection("composite/sobjects", records, what="update")

    def upsert(
        self, sobject: str, external_id_field: str, records: Sequence[Mapping[str, Any]]
    ) -> list[RecordResult]:
        """Upsert ``sobject`` records keyed by ``external_id_field``; results carry ``created``."""
        name = _api_name(sobject, "sobject")
        field = _api_name(external_id_field, "external_id_field")
        return self._collection(f"composite/sobjects/{name}/{field}", records, what=f"upsert of {name} by {field}")

    def retrieve(self, sobject: str, ids: Sequence[str], fields: Sequence[str]) -> list[dict[str, Any] | None]:
        """Current ``fields`` of the ``ids`` records, in the order of ``ids``; None where an id is invalid, deleted
        or not accessible. Each dict holds ``"Id"`` and each field under the name as requested. Sent in requests
        of at most 2,000 ids (``Id`` is always among the fields asked for); an empty ``ids`` sends nothing."""
        name = _api_name(sobject, "sobject")
        fields = [_api_name(f, "field") for f in fields]
        ids = list(ids)
        if not all(isinstance(i, str) for i in ids):
            raise ValueError("record ids must be strings")
        asked = list({f.lower(): f for f in ["Id", *fields]}.values())  # each name once, case-insensitively
        what = f"retrieve of {name}"
        rows: list[dict[str, Any] | None] = []
        for start in range(0, len(ids), MAX_RETRIEVE_IDS_PER_REQUEST):
            chunk = ids[start : start + MAX_RETRIEVE_IDS_PER_REQUEST]
            response = self._api("POST", f"composite/sobjects/{name}", what=what, body={"ids": chunk, "fields": asked})
            items = _json(response, list, what, self.transport.redact, parse_float=Decimal)
            if len(items) != len(chunk) or not all(item is None or isinstance(item, Mapping) for item in items):
                raise ApiError(
                    f"Salesforce {what} returned {len(items)} items for {len(chunk)} ids, or an item that is not an "
                    "object or null; items are matched by position, so none of them can be trusted."
                )
            for item in items:
                if item is None:
                    rows.append(None)
                    continue
                values = {key.lower(): value for key, value in item.items() if key != "attributes"}
                rows.append({"Id": values.get("id"), **{f: values.get(f.lower()) for f in fields}})
        return rows

    def limits(self) -> dict:
        """``GET limits/``: ``{"DailyApiRequests": {"Max": N, "Remaining": M}, ...}``."""
        response = self._api("GET", "limits/", what="limits request")
        return _json(response, dict, "limits request", self.transport.redact)

    def organization(self) -> dict:
        """The org's ``Organization`` record (SOQL, one API request): ``{"Id", "Name", "OrganizationType",
        "IsSandbox"}``, for naming the org a session is in (the connection check)."""
        what = "Organization query"
        soql = "SELECT Id, Name, OrganizationType, IsSandbox FROM Organization"
        response = self._api("GET", f"query/?q={quote(soql)}", what=what)
        records = _json(response, dict, what, self.transport.redact).get("records")
        if not isinstance(records, list) or len(records) != 1 or not isinstance(records[0], Mapping):
            raise ApiError(f"Salesforce {what} did not return the one Organization record.")
        return {key: value for key, value in records[0].items() if key != "attributes"}

    def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        content_type: str | None = None,
        accept: str | None = None,
        what: str | None = None,
        idempotent: bool = True,
    ) -> requests.Response:
        """One authorized REST API request to ``services/data/v{api_version}/{path}`` with a raw body (e.g. a
        Bulk API 2.0 CSV upload), through the same paths as every other call: lazy login, one re-login and
        resend on 401, ``HttpTransport`` retries (429/5xx/connection errors, when ``idempotent``),
        ``Sforce-Limit-Info`` recorded, secrets redacted. Returns the 2xx response; raises
        ``RequestLimitExceeded`` for 403 ``REQUEST_LIMIT_EXCEEDED`` and ``ApiError`` (Salesforce's errorCode
        and message, ``what`` naming the call) for any other non-2xx status. ``path`` is relative (it may
        carry a query string); a leading ``/services/data/vXX.X/`` (as in ``nextRecordsUrl``) is accepted."""
        prefix = f"services/data/v{self.api_version}/"
        relative = path.lstrip("/")
        if relative.startswith(prefix):
            relative = relative[len(prefix):]
        if "://" in relative or relative.startswith("services/") or ".." in relative.split("?")[0].split("/"):
            raise ValueError(f"path must be relative to /{prefix}, got {path!r}")
        what = what or f"{method} {relative.split('?')[0]}"
        headers = {}
        if content_type is not None:
            headers["Content-Type"] = content_type
        if accept is not None:
            headers["Accept"] = accept
        return self._send(method, f"services/data/v{self.api_version}/{relative}", what=what, headers=headers,
                          data=body, idempotent=idempotent)

    # ------------------------------------------------------------------ internals: API calls

    def _collection(self, path: str, records: Sequence[Mapping[str, Any]], *, what: str) -> list[RecordResult]:
        records = list(records)
        if len(records) > MAX_RECORDS_PER_REQUEST:
            raise ValueError(
                f"Salesforce sObject Collections take at most {MAX_RECORDS_PER_REQUEST} records per request, "
                f"got {len(records)}; split them into batches."
            )
        if not records:
            return []
        body = {"allOrNone": False, "records": [dict(r) for r in records]}
        response = self._api("PATCH", path, what=what, body=body)
        items = _json(response, list, what, self.transport.redact)
        if len(items) != len(records):
            raise ApiError(
                f"Salesforce {what} returned {len(items)} results for {len(records)} records; results are matched "
                "by position, so none of them can be trusted. The records may or may not have been written."
            )
        if not all(isinstance(item, Mapping) for item in items):
            raise ApiError(f"Salesforce {what} returned a result that is not an object; cannot read the results.")
        return [RecordResult.from_api(item) for item in items]

    def _api(self, method: str, path: str, *, what: str, body: Any = None) -> requests.Response:
        """An authenticated REST API request (``services/data/vXX.X/{path}``); see ``_authorized``."""
        return self._authorized(method, f"services/data/v{self.api_version}/{path}", what=what, body=body)

    def _authorized(self, method: str, path: str, *, what: str, body: Any = None) -> requests.Response:
        """Send a Bearer request to ``instance_url + path`` (``body``, if any, as JSON via ``json_body``);
        re-login once on 401; raise ``ApiError`` for non-2xx."""
        headers = {} if body is None else {"Content-Type": "application/json"}
        data = None if body is None else json_body(body)
        return self._send(method, path, what=what, headers=headers, data=data)

    def _send(self, method: str, path: str, *, what: str, headers: Mapping[str, str], data: bytes | None,
              idempotent: bool = True) -> requests.Response:
        """The one request loop: lazy login, ``instance_url + path`` with the Bearer token, ``Sforce-Limit-Info``
        recorded, one re-login and resend on 401; the 2xx response, else ``_api_error``."""
        relogged = False
        waits = 0  # resends after a concurrent-request refusal
        while True:
            if self._access_token is None:
                self._login()
            response = self.transport.request(
                method, f"{self.instance_url}{path}", idempotent=idempotent,
                headers={**headers, "Authorization": f"Bearer {self._access_token}"}, data=data,
            )
            self._record_limit_info(response)
            if response.status_code == 401 and not relogged:
                relogged = True
                self._access_token = None  # expired or revoked: one fresh login, one more try
                continue
            if waits < self.transport.retry.max_retries and _concurrency_refusal(response):
                # Refused before it ran (so safe to resend even when not idempotent); it clears as the org's
                # other long-running requests finish.
                waits += 1
                self.transport.stats.count_retry()
                self.transport.sleep(self.transport.retry.backoff(waits))
                continue
            break
        if 200 <= response.status_code < 300:
            return response
        raise self._api_error(response, what, waits=waits)

    def _record_limit_info(self, response: requests.Response) -> None:
        match = _API_USAGE.search(response.headers.get("Sforce-Limit-Info") or "")
        if match:
            usage = ApiUsage(used=int(match.group(1)), limit=int(match.group(2)))
            with self._usage_lock:  # responses of concurrent requests may arrive out of order: the highest wins
                current = self._api_usage
                if current is None or usage.limit != current.limit or usage.used >= current.used:
                    self._api_usage = usage

    def _api_error(self, response: requests.Response, what: str, *, waits: int = 0) -> ApiError:
        status = response.status_code
        code, detail = _error_detail(response, self.transport.redact)
        shown = f"HTTP {status}" + (f" {detail}" if detail else "").rstrip(".")
        if _concurrency_refusal(response):
            return ApiError(
                f"Salesforce {what} was refused {waits + 1} time(s) because too many long-running requests run in the "
                f"org at once ({shown}). This clears as they finish: the run can be retried later; if it keeps "
                "happening, lower sync.concurrent_requests or move other integrations' long-running jobs.",
                retryable=True,
                status=status,
                code=code,
            )
        if status == 401:
            return ApiError(
                f"Salesforce {what} was refused with {shown} even right after a fresh login. Check that the "
                "connected app's OAuth scopes include 'Manage user data via APIs (api)', that the user (for the "
                "client-credentials flow: the app's Run As user) has the 'API Enabled' permission, and that the org "
                "does not end sessions from this IP address.",
                status=status,
                code=code,
            )
        if status == 403 and code == "REQUEST_LIMIT_EXCEEDED":
            usage = f" (API usage {self._api_usage.used}/{self._api_usage.limit})" if self._api_usage else ""
            return RequestLimitExceeded(
                f"Salesforce {what} was refused because the org's API request limit is used up{usage} ({shown}). "
                "Stop and "
                "resume later: the daily allocation is counted over a rolling 24 hours for the whole org.",
                status=status,
                code=code,
            )
        if status == 403:
            hint = (
                " The user needs the 'API Enabled' permission and access to the object and fields "
                "(profile, permission sets, field-level security)."
            )
        elif status == 404 and what.startswith("describe of "):
            hint = (
                f" The object {what[len('describe of '):]!r} does not exist or is not accessible to this user; "
                "check the object name (e.g. Contact or Lead) and the user's object permissions."
            )
        elif status == 404:
            hint = " The resource does not exist; check the object and field names and the API version."
        else:
            hint = ""
        if what.startswith("userinfo"):
            hint += (
                " The token response had no identity URL ('id'), so the org id is read from the userinfo endpoint; "
                "the connected app may need the 'Access the identity URL service (id, profile, email, address, "
                "phone)' or openid OAuth scope."
            )
        return ApiError(f"Salesforce {what} failed with {shown}.{hint}", status=status, code=code)

    # ------------------------------------------------------------------ internals: login and identity

    def _organization_id(self) -> str:
        """The 18-character org id: from the token response's identity URL, else from userinfo."""
        if self._access_token is None:
            self._login()
        if self._org_id is None:
            what = "userinfo request"
            response = self._authorized("GET", "services/oauth2/userinfo", what=what)
            data = _json(response, dict, what, self.transport.redact)
            org_id = _org_id(data.get("organization_id"))
            if org_id is None:
                raise ApiError(f"Salesforce {what} has no usable organization_id (an 18-character 00D... id).")
            self._check_org(org_id)
            self._org_id = org_id
        assert self._org_id is not None
        return self._org_id

    def _check_org(self, org_id: str) -> None:
        if self._org_id is not None and org_id != self._org_id:
            raise ApiError(
                f"Salesforce session is now in org {org_id}, but this client started in org {self._org_id} (a "
                "sandbox refresh or changed login settings?); stopping so that writes and their ledger stay with "
                "one org."
            )

    def _login(self) -> None:
        """Log in (``_login_once``), one thread at a time. A thread that waited while another logged in
        takes that outcome instead of logging in again: the new token, or the same error (a burst of
        failed logins can lock the user out)."""
        seen_token = getattr(self._seen, "token", _UNSEEN)
        seen_logins = getattr(self._seen, "logins", None)
        with self._login_lock:
            if seen_token is not _UNSEEN:
                if self._token is not None and self._token != seen_token:
                    self._seen.token, self._seen.logins = self._token, self.logins
                    return  # renewed by another thread meanwhile
                if self.logins != seen_logins and self._login_failure is not None:
                    raise self._login_failure  # the login this thread waited for failed
            try:
                self._login_once()
            except BaseException as exc:
                self._login_failure = exc
                raise
            self._login_failure = None
            self._seen.logins = self.logins

    def _login_once(self) -> None:
        form = self._login_flow.form()
        if "assertion" in form:
            self.transport.redact.add(form["assertion"])  # a signed JWT is a credential until it expires
        self.logins += 1
        response = self.transport.request("POST", f"{self.base_url}services/oauth2/token", data=form)
        if response.status_code != 200:
            raise login_error(self._login_flow, response, self.transport.redact)
        try:
            data = response.json()
            access_token = data["access_token"]
            if not isinstance(access_token, str) or not access_token:
                raise ValueError("empty access_token")
            self.transport.redact.add(access_token)
            instance_url = data["instance_url"]
            if not isinstance(instance_url, str):
                raise TypeError("instance_url is not a string")
            org_id = _org_id_from_identity_url(data.get("id"))
        except (ValueError, KeyError, TypeError) as exc:
            raise ApiError(
                f"Salesforce token response is not what the API documents ({type(exc).__name__}: "
                f"{self.transport.redact(str(exc))})"
            ) from None
        instance_url = instance_base_url(
            instance_url, setting="instance_url (Salesforce token response)", configured=self.base_url,
            configured_setting="SALESFORCE_DOMAIN / SALESFORCE_LOGIN_URL", vendor_domains=SALESFORCE_DOMAINS)
        if org_id is not None:
            self._check_org(org_id)
            self._org_id = org_id
        self.instance_url = instance_url  # before the token: a thread that sees the token uses this URL
        self._access_token = access_token


def _api_name(value: str, what: str) -> str:
    if not isinstance(value, str) or not _API_NAME.match(value):
        raise ValueError(f"{what} must be a Salesforce API name such as 'Contact' or 'Ext_Id__c', got {value!r}")
    return quote(value, safe="")


def json_body(value: Any) -> bytes:
    """``value`` as JSON, the same text ``json.dumps`` writes (ASCII, NaN refused), except that a finite
    ``decimal.Decimal`` is written as an exact JSON number: its own digits, no exponent, no float rounding
    (``Decimal("12345678901234567.89")`` -> ``12345678901234567.89``)."""
    return _dumps(value).encode("ascii")


def _dumps(value: Any) -> str:
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"{value} cannot be sent as a JSON number")
        return format(value, "f")
    if isinstance(value, Mapping):
        if not all(isinstance(key, str) for key in value):
            raise TypeError("JSON object keys must be strings")
        return "{" + ", ".join(f"{json.dumps(key)}: {_dumps(item)}" for key, item in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_dumps(item) for item in value) + "]"
    return json.dumps(value, allow_nan=False)


def _org_id(value: Any) -> str | None:
    """The 18-character form of a well-formed org id (key prefix 00D), else None."""
    if isinstance(value, str) and value.startswith(ORG_ID_PREFIX) and is_valid_id(value):
        return to_18(value[:15])
    return None


def _org_id_from_identity_url(value: Any) -> str | None:
    """The org id in an identity URL ``https://host/id/{orgId}/{userId}``, else None."""
    if not isinstance(value, str):
        return None
    segments = urlsplit(value).path.rstrip("/").split("/")
    return _org_id(segments[-2]) if len(segments) >= 3 and segments[-3] == "id" else None


def _json(response: requests.Response, kind: type, what: str, redact: Callable[[str], str], **loads: Any) -> Any:
    try:
        data = response.json(**loads)
    except ValueError:
        data = None
    if not isinstance(data, kind):
        raise ApiError(
            f"Salesforce {what} answered HTTP {response.status_code} without the expected JSON "
            f"{'array' if kind is list else 'object'}{redact(body_excerpt(response))}."
        )
    return data


def _concurrency_refusal(response: requests.Response) -> bool:
    """403 ``REQUEST_LIMIT_EXCEEDED`` for concurrent requests ("ConcurrentPerOrgLongTxn Limit exceeded.",
    "ConcurrentRequests (Concurrent API Requests) Limit exceeded."), not the daily allocation ("TotalRequests")."""
    if response.status_code != 403:
        return False
    code, detail = _error_detail(response, lambda text: text)
    return code == "REQUEST_LIMIT_EXCEEDED" and "concurrent" in detail.lower()


def _error_detail(response: requests.Response, redact: Callable[[str], str]) -> tuple[str | None, str]:
    """``(first errorCode, "CODE: message; CODE2: message2")`` from a Salesforce error array."""
    try:
        data = response.json()
    except ValueError:
        data = None
    if isinstance(data, dict):
        data = [data]
    if isinstance(data, list):
        errors = [e for e in data if isinstance(e, Mapping) and (e.get("errorCode") or e.get("message"))]
        if errors:
            parts = []
            for e in errors[:5]:
                text = f"{e.get('errorCode') or 'UNKNOWN'}: {e.get('message') or ''}".strip()
                if e.get("fields"):
                    text += f" (fields: {', '.join(map(str, e['fields']))})"
                parts.append(text)
            return (errors[0].get("errorCode") or None), redact("; ".join(parts))[:500]
    return None, redact(body_excerpt(response)).strip()
