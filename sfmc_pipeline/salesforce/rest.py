"""The Salesforce Platform REST client: describe, sObject Collections update/upsert/retrieve, limits,
the org's name, and raw authorized requests (for the Bulk API), over one ``SalesforceSession``.

API calls go to the session's ``instance_url`` with ``Authorization: Bearer``; on a 401 the client logs
in again once and resends once. 429, 5xx and connection errors are retried by ``HttpTransport`` (every
call here is idempotent: PATCH by Id or external id, GET, and the retrieve POST, a read). Every
response's ``Sforce-Limit-Info: api-usage=USED/LIMIT`` is recorded in ``api_usage``.
"""

from __future__ import annotations

import json
import re
import threading
import time
from decimal import Decimal
from typing import Any, Callable, Mapping, Sequence
from urllib.parse import quote

import requests

from sfmc_pipeline.errors import ApiError, ConfigurationError
from sfmc_pipeline.http import (
    HttpTransport,
    Redactor,
    RetrySettings,
    body_excerpt,
    normalize_base_url,
)
from sfmc_pipeline.salesforce.api_errors import api_error, concurrency_refusal
from sfmc_pipeline.salesforce.auth import LoginFlow, SalesforceSession, parse_org_id
from sfmc_pipeline.salesforce.records import (
    MAX_RECORDS_PER_REQUEST,
    MAX_RETRIEVE_IDS_PER_REQUEST,
    ApiUsage,
    Describe,
    FieldInfo,
    RecordResult,
)

DEFAULT_API_VERSION = "66.0"  # Spring '26

_API_VERSION = re.compile(r"^\d{2}\.\d$")
_API_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_API_USAGE = re.compile(r"(?:^|[\s,;])api-usage=(\d+)/(\d+)")
MAX_CONCURRENT_REQUESTS = 25  # the most sync.concurrent_requests allows (Salesforce's long-running request limit)


class SalesforceClient:
    """Implements ``sfmc_pipeline.salesforce.records.CrmTarget`` against a Salesforce org's REST API.

    Thread-safe: the sync sends several sObject Collections requests at once (``sync.concurrent_requests``).
    The session logs in one thread at a time (``SalesforceSession``); usage readings are recorded under a
    lock, the highest one winning (concurrent responses can arrive out of order); the transport keeps a
    connection per concurrent request (``pool_size``) and counts requests and retries under a lock.
    """

    mode = "salesforce"
    supports_concurrent_requests = True  # several threads may call it at once (see the class docstring)

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
        flow = LoginFlow.choose(
            base_url=self.base_url, client_id=client_id, client_secret=client_secret, username=username,
            password=password, security_token=security_token, private_key_file=private_key_file,
            private_key=private_key, jwt_audience=jwt_audience,
        )
        self.api_version = version
        self.flow = flow.name
        self.transport = HttpTransport(
            "Salesforce",
            timeout_seconds=timeout_seconds,
            retry=retry,
            redactor=Redactor(flow.secrets),
            sleep=sleep,
            pool_size=pool_size,
        )
        self.session = SalesforceSession(flow, base_url=self.base_url, transport=self.transport)
        self._usage_lock = threading.Lock()
        self._api_usage: ApiUsage | None = None

    def __repr__(self) -> str:  # never show a secret
        return f"SalesforceClient(base_url={self.base_url!r}, flow={self.flow!r}, api_version={self.api_version!r})"

    def __enter__(self) -> SalesforceClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self.transport.close()

    @property
    def instance_url(self) -> str | None:
        """The org's API host (``https://<instance>/``) from the last login; None before the first."""
        return self.session.instance_url

    @property
    def logins(self) -> int:
        """Token requests made so far (successful or not)."""
        return self.session.logins

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
        of at most 2,000 ids (``Id`` is always among the fields asked for); an empty ``ids`` sends nothing. An
        unknown field is HTTP 400 ``INVALID_FIELD``; numbers are read as exact ``Decimal`` (integers as ``int``)."""
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
        """An sObject Collections PATCH of at most 200 records: answered 200 with one result per record, in
        request order; per-record failures are data (``RecordResult``), not exceptions. The body is serialised
        by ``json_body`` (not by ``requests``) so that ``Decimal`` values go out as exact JSON numbers."""
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
        recorded, one re-login and resend on 401; the 2xx response, else ``api_errors.api_error``."""
        relogged = False
        waits = 0  # resends after a concurrent-request refusal
        while True:
            if self.session.token is None:
                self.session.login()
            response = self.transport.request(
                method, f"{self.session.instance_url}{path}", idempotent=idempotent,
                headers={**headers, "Authorization": f"Bearer {self.session.token}"}, data=data,
            )
            self._record_limit_info(response)
            if response.status_code == 401 and not relogged:
                relogged = True
                self.session.drop()  # expired or revoked: one fresh login, one more try
                continue
            if waits < self.transport.retry.max_retries and concurrency_refusal(response):
                # Refused before it ran (so safe to resend even when not idempotent); it clears as the org's
                # other long-running requests finish.
                waits += 1
                self.transport.stats.count_retry()
                self.transport.sleep(self.transport.retry.backoff(waits))
                continue
            break
        if 200 <= response.status_code < 300:
            return response
        raise api_error(response, what, usage=self._api_usage, redact=self.transport.redact, waits=waits)

    def _record_limit_info(self, response: requests.Response) -> None:
        match = _API_USAGE.search(response.headers.get("Sforce-Limit-Info") or "")
        if match:
            usage = ApiUsage(used=int(match.group(1)), limit=int(match.group(2)))
            with self._usage_lock:  # responses of concurrent requests may arrive out of order: the highest wins
                current = self._api_usage
                if current is None or usage.limit != current.limit or usage.used >= current.used:
                    self._api_usage = usage

    # ------------------------------------------------------------------ internals: identity

    def _organization_id(self) -> str:
        """The 18-character org id: from the token response's identity URL, else from userinfo."""
        session = self.session
        if session.token is None:
            session.login()
        if session.org_id is None:
            what = "userinfo request"
            response = self._authorized("GET", "services/oauth2/userinfo", what=what)
            data = _json(response, dict, what, self.transport.redact)
            org_id = parse_org_id(data.get("organization_id"))
            if org_id is None:
                raise ApiError(f"Salesforce {what} has no usable organization_id (an 18-character 00D... id).")
            session.adopt_org(org_id)
        assert session.org_id is not None
        return session.org_id


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
