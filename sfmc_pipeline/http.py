"""HTTP plumbing shared by the SFMC and Salesforce clients: one ``requests.Session``, a timeout
on every request, one bounded retry loop, base-URL rules and secret redaction.

Connection errors, timeouts, 429 and 5xx are retried for idempotent calls only, with exponential
backoff honouring ``Retry-After`` (or SFMC's ``retryAfter``); any other answer goes back to the
caller. Thread-safe: the SFMC source fetches pages from several threads.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

from sfmc_pipeline.errors import ApiError, ConfigurationError

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})

# The domains each vendor serves its APIs from (subdomains only). An instance URL from a token response must be on
# one of them, or on the host the user configured: a token response cannot send the bearer token anywhere else.
SFMC_DOMAINS = ("marketingcloudapis.com",)
SALESFORCE_DOMAINS = ("salesforce.com", "force.com")  # My Domain, sandboxes (*.sandbox.my.salesforce.com), instances


def normalize_base_url(value: str, *, setting: str) -> str:
    """``https://host/path/`` with exactly one trailing slash. Plain ``http://`` is accepted only
    for loopback hosts (local testing); anything else is refused with an error naming ``setting``."""
    text = (value or "").strip()
    if "://" not in text:
        text = "https://" + text  # SFMC's own examples sometimes show a bare host
    parts = urlsplit(text)
    if not parts.hostname:
        raise ConfigurationError(f"{setting} {value!r} is not a URL; expected e.g. https://example.my.salesforce.com/")
    if parts.scheme != "https" and not (parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS):
        raise ConfigurationError(
            f"{setting} must use https:// (plain http:// is allowed only for 127.0.0.1/localhost), "
            f"got {parts.scheme}://{parts.hostname}"
        )
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ConfigurationError(f"{setting} must be a plain base URL without credentials, query or fragment")
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}/"


def instance_base_url(value: str, *, setting: str, configured: str, configured_setting: str,
                      vendor_domains: tuple[str, ...]) -> str:
    """An API instance URL named by a token response (``setting``), as ``normalize_base_url`` gives it, accepted
    only over https on a subdomain of ``vendor_domains``, or on the origin (scheme, host, port) of ``configured``,
    the base URL the user set in ``configured_setting`` (a loopback server in local tests). Anything else is an
    ``ApiError``, raised before the bearer token is ever sent there."""
    try:
        url = normalize_base_url(value, setting=setting)
    except ConfigurationError as exc:
        raise ApiError(f"{exc}; the token response is not usable, so the token was not sent anywhere.") from None
    host = urlsplit(url).hostname or ""
    vendor = urlsplit(url).scheme == "https" and any(host.endswith("." + domain) for domain in vendor_domains)
    if vendor or _origin(url) == _origin(configured):
        return url
    allowed = ", ".join(f"https://*.{domain}" for domain in vendor_domains)
    name, _, source = setting.partition(" (")
    configured_origin = "{0}://{1}".format(*urlsplit(configured)[:2])
    raise ApiError(
        f"The {source.rstrip(')') or 'token response'} names {name} {url}, which is neither on {allowed} nor on "
        f"{configured_origin} ({configured_setting}); the access token was not sent there. Check that "
        f"{configured_setting} is the vendor's own login host and that no proxy rewrites its answers."
    )


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme, parts.hostname or "", parts.port or {"https": 443, "http": 80}.get(parts.scheme)


@dataclass(frozen=True)
class RetrySettings:
    max_retries: int = 5  # retries after the first attempt
    backoff_seconds: float = 1.0  # first wait; doubles each retry
    max_backoff_seconds: float = 60.0
    max_retry_after_seconds: float = 300.0  # a longer Retry-After is not waited out: the call fails

    def backoff(self, retry_number: int) -> float:
        return min(self.backoff_seconds * (2 ** (retry_number - 1)), self.max_backoff_seconds)


@dataclass
class CallStats:
    requests: int = 0  # HTTP requests sent, retries included
    retries: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def count_request(self) -> None:
        with self._lock:
            self.requests += 1

    def count_retry(self) -> None:
        with self._lock:
            self.retries += 1


class Redactor:
    """Replaces known secret values (client secret, password, tokens) in any text with ``***``."""

    def __init__(self, secrets: Iterable[str | None] = ()):
        self._lock = threading.Lock()
        self._secrets: tuple[str, ...] = ()  # longest first; replaced, never changed in place
        for s in secrets:
            self.add(s)

    def add(self, secret: str | None) -> None:
        if secret and len(secret) >= 4:
            with self._lock:
                if secret not in self._secrets:
                    self._secrets = tuple(sorted((*self._secrets, secret), key=len, reverse=True))

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


class HttpTransport:
    """Sends requests with a timeout and the shared retry loop; counts what it sent."""

    def __init__(
        self,
        service: str,
        *,
        timeout_seconds: float = 30.0,
        retry: RetrySettings | None = None,
        redactor: Redactor | None = None,
        sleep: Callable[[float], None] = time.sleep,
        session: requests.Session | None = None,
        pool_size: int = 10,
    ):
        self.service = service
        self.timeout_seconds = timeout_seconds
        self.retry = retry or RetrySettings()
        self.redact = redactor or Redactor()
        self.sleep = sleep
        if session is None:
            # Connections kept per host: one per thread that may send at once (requests' default 10
            # would make more threads open and discard connections).
            session = requests.Session()
            size = max(10, pool_size)
            for prefix in ("https://", "http://"):
                session.mount(prefix, HTTPAdapter(pool_connections=10, pool_maxsize=size))
        self.session = session
        self.stats = CallStats()

    def close(self) -> None:
        self.session.close()

    def request(self, method: str, url: str, *, idempotent: bool = True, **kwargs) -> requests.Response:
        """Send, retrying transient failures when ``idempotent``; return the final response
        (any status) or raise ``ApiError`` once retries are used up."""
        what = f"{self.service} {method} {urlsplit(url).path}"
        attempt = 0
        while True:
            attempt += 1
            self.stats.count_request()
            try:
                response = self.session.request(method, url, timeout=self.timeout_seconds, **kwargs)
            except (requests.ConnectionError, requests.Timeout) as exc:
                failure, response, wait = f"{type(exc).__name__}", None, None
            else:
                if response.status_code not in RETRYABLE_STATUSES:
                    return response
                failure, wait = f"HTTP {response.status_code}", _retry_after(response)
            if not idempotent or attempt > self.retry.max_retries:
                detail = self.redact(body_excerpt(response)) if response is not None else ""
                raise ApiError(
                    f"{what} failed after {attempt} attempt(s): {failure}{detail}. "
                    "The service may be down or throttling; the run can be retried later.",
                    retryable=True,
                    status=response.status_code if response is not None else None,
                )
            delay = self.retry.backoff(attempt) if wait is None else wait
            if delay > self.retry.max_retry_after_seconds:
                raise ApiError(
                    f"{what}: the service asked to wait {delay:.0f}s (Retry-After), longer than the "
                    f"{self.retry.max_retry_after_seconds:.0f}s allowed; run again later.",
                    retryable=True,
                    status=response.status_code if response is not None else None,
                )
            self.stats.count_retry()
            self.sleep(delay)


def _retry_after(response: requests.Response) -> float | None:
    header = response.headers.get("Retry-After")
    if header is not None:
        try:
            return max(0.0, float(header))
        except ValueError:
            return None  # an HTTP-date: fall back to backoff
    try:
        body = response.json()
    except ValueError:
        return None
    if isinstance(body, dict) and isinstance(body.get("retryAfter"), (int, float)):
        return max(0.0, float(body["retryAfter"]))
    return None


def body_excerpt(response: requests.Response | None, limit: int = 300) -> str:
    """A short one-line excerpt of a response body for error messages (callers redact it)."""
    if response is None or not response.text:
        return ""
    text = " ".join(response.text.split())
    return f" ({text[:limit]}{'...' if len(text) > limit else ''})"

