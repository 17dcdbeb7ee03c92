"""Salesforce OAuth 2.0 login: which flow the settings choose, its token request, what to check when
Salesforce refuses it, and the session (token, instance URL, org) that one client's threads share.

Every token request is form-encoded to ``{login base}services/oauth2/token``, with no Authorization
header: secrets travel only in its body, never in a URL. The session lives until Salesforce answers
401; then one thread logs in again and the others use its outcome.
"""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import urlsplit

import requests

from sfmc_pipeline.errors import ApiError, ConfigurationError
from sfmc_pipeline.http import (
    SALESFORCE_DOMAINS,
    HttpTransport,
    body_excerpt,
    instance_base_url,
)
from sfmc_pipeline.salesforce import jwt_bearer
from sfmc_pipeline.salesforce.ids import is_valid_id, to_18

PASSWORD = "password"
CLIENT_CREDENTIALS = "client_credentials"
JWT_BEARER = "jwt_bearer"

PASSWORD_FLOW_ENDS = dt.date(2027, 2, 20)
PASSWORD_FLOW_WARNING = (
    f"the username-password flow is in use; Salesforce ends it for connected apps on {PASSWORD_FLOW_ENDS.isoformat()} "
    "(after that every login fails) and External Client Apps never support it"
)
MIGRATION_STEPS = (
    "migrate before then, either to client credentials (in the connected app turn on 'Enable Client Credentials Flow' "
    "and choose a Run As user; set SALESFORCE_DOMAIN to the org's My Domain; unset SALESFORCE_USERNAME, "
    "SALESFORCE_PASSWORD and SALESFORCE_SECURITY_TOKEN) or to the JWT bearer flow (create a key and certificate "
    "with `openssl req -x509 -newkey rsa:2048 -nodes -days 730 -subj /CN=sfmc-pipeline -keyout salesforce.key -out "
    "salesforce.crt`, upload salesforce.crt under 'Use digital signatures', pre-authorize the user through the app's "
    "profiles or permission sets, set SALESFORCE_PRIVATE_KEY_FILE=salesforce.key, keep SALESFORCE_USERNAME, unset "
    "SALESFORCE_PASSWORD and SALESFORCE_SECURITY_TOKEN); see docs/configuration.md, 'Salesforce login'"
)

ORG_ID_PREFIX = "00D"
_UNSEEN = object()  # a thread that has not read the token yet


@dataclass(frozen=True)
class LoginFlow:
    """The OAuth flow the settings choose, with what its token request needs. ``secrets``: every value to redact.

    * ``client_credentials`` (recommended): the connected app's (or External Client App's) consumer key and
      secret; the app has *Enable Client Credentials Flow* on and a Run As user. Send it to the org's My
      Domain host (SALESFORCE_DOMAIN).
    * ``jwt_bearer``: the consumer key, the username (``sub``) and the private key whose certificate is
      uploaded to the app (``jwt_bearer.py``); no secret leaves this machine.
    * ``password`` (retiring): username, password and security token. Salesforce ends this flow for
      connected apps on 2027-02-20 (External Client Apps never had it); ``sfmc-pipeline check`` warns.
    """

    name: str
    client_id: str
    client_secret: str | None = field(default=None, repr=False)
    username: str | None = None
    password_and_token: str | None = field(default=None, repr=False)
    private_key: Any = field(default=None, repr=False)
    audience: str | None = None
    secrets: tuple[str, ...] = field(default=(), repr=False)

    @classmethod
    def choose(cls, *, base_url: str, client_id: str | None, client_secret: str | None = None,
               username: str | None = None, password: str | None = None, security_token: str | None = None,
               private_key_file: str | None = None, private_key: str | None = None,
               jwt_audience: str | None = None) -> LoginFlow:
        """The flow for these settings (``ConfigurationError`` naming the variables when they do not make one):
        a private key chooses the JWT bearer flow, a username and password the password flow, else client
        credentials."""
        secrets = (client_secret, password, security_token, (password or "") + (security_token or ""), private_key)
        secrets = tuple(s for s in secrets if s)
        if not client_id:
            raise ConfigurationError("SALESFORCE_CLIENT_ID is not set: it is the connected app's consumer key.")
        if private_key_file or private_key:
            if password or security_token:
                raise ConfigurationError(
                    "Both the JWT bearer flow (SALESFORCE_PRIVATE_KEY_FILE / SALESFORCE_PRIVATE_KEY) and the "
                    "username-password flow (SALESFORCE_PASSWORD / SALESFORCE_SECURITY_TOKEN) are configured; unset "
                    "SALESFORCE_PASSWORD and SALESFORCE_SECURITY_TOKEN (the password flow is retiring)."
                )
            if not username:
                raise ConfigurationError(
                    "SALESFORCE_USERNAME is not set: the JWT bearer flow logs in as that user (the assertion's 'sub'); "
                    "set it to the integration user's username."
                )
            key = jwt_bearer.load_private_key(key_file=private_key_file, key_text=private_key)
            audience = (jwt_bearer.normalize_audience(jwt_audience) if jwt_audience
                        else jwt_bearer.default_audience(base_url))
            return cls(JWT_BEARER, client_id, client_secret, username, private_key=key, audience=audience,
                       secrets=secrets)
        if jwt_audience:
            raise ConfigurationError(
                "SALESFORCE_JWT_AUDIENCE is set but neither SALESFORCE_PRIVATE_KEY_FILE nor SALESFORCE_PRIVATE_KEY is: "
                "the audience is only used by the JWT bearer flow."
            )
        if not client_secret:
            raise ConfigurationError(
                "SALESFORCE_CLIENT_SECRET is not set: the client-credentials and username-password flows need the "
                "connected app's consumer secret (or set SALESFORCE_PRIVATE_KEY_FILE for the JWT bearer flow)."
            )
        if bool(username) != bool(password):
            missing = "SALESFORCE_PASSWORD" if username else "SALESFORCE_USERNAME"
            raise ConfigurationError(
                f"{missing} is not set: the username-password flow needs both SALESFORCE_USERNAME and "
                "SALESFORCE_PASSWORD; leave both unset to use the client-credentials flow."
            )
        if security_token and not username:
            raise ConfigurationError(
                "SALESFORCE_SECURITY_TOKEN is set but SALESFORCE_USERNAME and SALESFORCE_PASSWORD are not: the "
                "security token is only used by the username-password flow."
            )
        if username:
            return cls(PASSWORD, client_id, client_secret, username, (password or "") + (security_token or ""),
                       secrets=secrets)
        return cls(CLIENT_CREDENTIALS, client_id, client_secret, secrets=secrets)

    def form(self, clock: Callable[[], float] | None = None) -> dict[str, str]:
        """The token request's form body (a JWT bearer login signs a new assertion each time)."""
        if self.name == JWT_BEARER:
            signed = jwt_bearer.assertion(self.private_key, client_id=self.client_id, username=self.username or "",
                                          audience=self.audience or "", **({"clock": clock} if clock else {}))
            return {"grant_type": jwt_bearer.GRANT_TYPE, "assertion": signed}
        form = {"grant_type": self.name, "client_id": self.client_id, "client_secret": self.client_secret or ""}
        if self.name == PASSWORD:
            form["username"] = self.username or ""
            form["password"] = self.password_and_token or ""
        return form


def login_error(flow: LoginFlow, response: requests.Response, redact: Callable[[str], str]) -> ApiError:
    """A refused token request as an ``ApiError``: Salesforce's error code and description, and what to check."""
    status = response.status_code
    try:
        data = response.json()
    except ValueError:
        data = None
    if not isinstance(data, dict) or not data.get("error"):
        return ApiError(
            f"Salesforce login failed with HTTP {status}{redact(body_excerpt(response))}. Check "
            "SALESFORCE_DOMAIN / SALESFORCE_LOGIN_URL: it must be the org's My Domain or login host.",
            status=status,
        )
    code = str(data.get("error"))
    description = str(data.get("error_description") or "")
    said = redact(f"{code}: {description}" if description else code)
    prefix = f"Salesforce refused the login ({flow.name} flow, HTTP {status}, {said})."
    advice, retryable = _advice(flow.name, code)
    return ApiError(redact(prefix + advice), retryable=retryable, status=status, code=code)


_CC_USER = (
    " For the client-credentials flow the app must have 'Enable Client Credentials Flow' on and a Run As user set, and "
    "the login must go to the org's My Domain host (SALESFORCE_DOMAIN)."
)
_JWT = (
    " For the JWT bearer flow check that SALESFORCE_PRIVATE_KEY_FILE / SALESFORCE_PRIVATE_KEY is the key of the "
    "certificate uploaded to the connected app ('Use digital signatures'), that SALESFORCE_USERNAME is pre-authorized "
    "(Permitted Users 'Admin approved users are pre-authorized', with the user's profile or a permission set added to "
    "the app), that the audience fits the org (https://login.salesforce.com, https://test.salesforce.com for "
    "sandboxes, or SALESFORCE_JWT_AUDIENCE) and that this machine's clock is right (the assertion expires after 3 "
    "minutes)."
)


def _advice(flow: str, code: str) -> tuple[str, bool]:
    if code == "invalid_grant" and flow == PASSWORD:
        return (
            " Check SALESFORCE_USERNAME, SALESFORCE_PASSWORD and SALESFORCE_SECURITY_TOKEN (the token is appended "
            "to the password; a password change or reset issues a new token). The user may also be locked out, "
            "or the org or profile restricts trusted IP ranges (\"The client's IP address is unauthorized for "
            "this account\"): allow this machine's IP address or relax IP restrictions for the connected app.",
            False,
        )
    if code == "invalid_grant" and flow == JWT_BEARER:
        return _JWT, False
    if code == "invalid_grant":
        return _CC_USER + " Check that the Run As user is active and allowed to log in from this IP address.", False
    if code in ("invalid_client_id", "invalid_client", "invalid_client_credentials"):
        secret = "" if flow == JWT_BEARER else " and SALESFORCE_CLIENT_SECRET (its consumer secret)"
        return (
            f" Check SALESFORCE_CLIENT_ID (the connected app's consumer key){secret}, that the connected app belongs "
            "to this org and that changes to it have had time (up to 10 minutes) to take effect."
            + (_CC_USER if flow == CLIENT_CREDENTIALS else ""),
            False,
        )
    if code == "unsupported_grant_type":
        if flow == PASSWORD:
            return (
                " The org or connected app does not allow this OAuth flow. Username-password flows may be blocked "
                "(Setup > OAuth and OpenID Connect Settings); Salesforce ends it for connected apps on "
                f"{PASSWORD_FLOW_ENDS.isoformat()}: switch to client credentials or the JWT bearer flow "
                "(docs/configuration.md, 'Salesforce login').",
                False,
            )
        return " The org or connected app does not allow this OAuth flow." + (
            _JWT if flow == JWT_BEARER else _CC_USER), False
    if code in ("inactive_user", "inactive_org"):
        return " The user or org is inactive; an administrator must reactivate it.", False
    if code == "rate_limit_exceeded":
        return " Too many logins in a short time; run again later.", True
    settings = {
        PASSWORD: "SALESFORCE_CLIENT_ID, SALESFORCE_CLIENT_SECRET, SALESFORCE_DOMAIN / SALESFORCE_LOGIN_URL, "
                  "SALESFORCE_USERNAME, SALESFORCE_PASSWORD and SALESFORCE_SECURITY_TOKEN",
        JWT_BEARER: "SALESFORCE_CLIENT_ID, SALESFORCE_USERNAME, SALESFORCE_PRIVATE_KEY_FILE / SALESFORCE_PRIVATE_KEY "
                    "and SALESFORCE_DOMAIN / SALESFORCE_LOGIN_URL",
    }.get(flow, "SALESFORCE_CLIENT_ID, SALESFORCE_CLIENT_SECRET and SALESFORCE_DOMAIN / SALESFORCE_LOGIN_URL")
    return f" Check {settings}.", False


class SalesforceSession:
    """One client's OAuth session, shared by its threads: the access token, the ``instance_url`` API calls go
    to, and the org (18-character id) the session is in.

    The token response must hold ``access_token`` and ``instance_url`` (``token_type``, ``issued_at``,
    ``signature``, ``expires_in`` may be missing); the ``instance_url`` is used only on ``*.salesforce.com``,
    ``*.force.com`` or the configured login host, so the token is never sent elsewhere. Its ``id`` is the
    identity URL ``https://login.salesforce.com/id/{orgId 00D...}/{userId 005...}``; a re-login that lands in
    another org is an error. One login at a time: a thread whose request got a 401 drops only the token it
    sent (``drop``), and when several requests fail with the same expired session the first thread logs in
    and the others use its new token (or its error), so one expiry costs one login, not one per thread.
    """

    def __init__(self, flow: LoginFlow, *, base_url: str, transport: HttpTransport):
        self.flow = flow
        self.base_url = base_url
        self.transport = transport
        self.instance_url: str | None = None
        self.org_id: str | None = None
        self.logins = 0  # token requests made (successful or not)
        self._login_lock = threading.Lock()  # one login at a time
        self._token_lock = threading.Lock()
        self._seen = threading.local()  # per thread: the token it last read, and the login count then
        self._token: str | None = None
        self._login_failure: BaseException | None = None
        self._store(None)

    @property
    def token(self) -> str | None:
        """The current access token (None before the first login, or after a 401 dropped it). Each
        thread remembers the token it read last: that is the one its request carried."""
        token = self._token
        self._seen.token, self._seen.logins = token, self.logins
        return token

    def drop(self) -> None:
        """After a 401: forget the token, if it is still the one this thread sent (another thread may have
        logged in again already)."""
        self._store(None)

    def _store(self, value: str | None) -> None:
        with self._token_lock:
            if value is not None or getattr(self._seen, "token", _UNSEEN) in (_UNSEEN, self._token):
                self._token = value
        self._seen.token = value

    def adopt_org(self, org_id: str) -> None:
        """Record the session's org; an org other than the one it started in is an ``ApiError``."""
        if self.org_id is not None and org_id != self.org_id:
            raise ApiError(
                f"Salesforce session is now in org {org_id}, but this client started in org {self.org_id} (a "
                "sandbox refresh or changed login settings?); stopping so that writes and their ledger stay with "
                "one org."
            )
        self.org_id = org_id

    def login(self) -> None:
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
        form = self.flow.form()
        if "assertion" in form:
            self.transport.redact.add(form["assertion"])  # a signed JWT is a credential until it expires
        self.logins += 1
        response = self.transport.request("POST", f"{self.base_url}services/oauth2/token", data=form)
        if response.status_code != 200:
            raise login_error(self.flow, response, self.transport.redact)
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
            self.adopt_org(org_id)
        self.instance_url = instance_url  # before the token: a thread that sees the token uses this URL
        self._store(access_token)


def parse_org_id(value: Any) -> str | None:
    """The 18-character form of a well-formed org id (key prefix 00D), else None."""
    if isinstance(value, str) and value.startswith(ORG_ID_PREFIX) and is_valid_id(value):
        return to_18(value[:15])
    return None


def _org_id_from_identity_url(value: Any) -> str | None:
    """The org id in an identity URL ``https://host/id/{orgId}/{userId}``, else None."""
    if not isinstance(value, str):
        return None
    segments = urlsplit(value).path.rstrip("/").split("/")
    return parse_org_id(segments[-2]) if len(segments) >= 3 and segments[-3] == "id" else None
