"""SFMC OAuth2 client-credentials token: requested once, cached with its expiry, renewed a margin
before it expires or when a call answers 401.

The token request carries no Authorization header and the secret travels only in the JSON body,
never in a URL. The ``rest_instance_url`` of the response is used only on
``*.marketingcloudapis.com`` or the host of SFMC_AUTH_BASE_URI: the token is never sent anywhere
else. Thread-safe: the pages of one read share one ``SfmcAuth`` (see ``SfmcAuth``).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable

from sfmc_pipeline.errors import ApiError
from sfmc_pipeline.http import (
    SFMC_DOMAINS,
    HttpTransport,
    body_excerpt,
    instance_base_url,
    normalize_base_url,
)


@dataclass(frozen=True)
class SfmcToken:
    access_token: str
    rest_instance_url: str
    expires_at: float  # on the provider's clock

    def __repr__(self) -> str:  # never show the token itself
        return f"SfmcToken(rest_instance_url={self.rest_instance_url!r}, expires_at={self.expires_at})"


class SfmcAuth:
    """The token of one installed package. ``expires_in`` is about 1080 s for a token that lives 20
    minutes; the default margin of 60 s renews it at about 17 minutes. One renewal at a time (a
    lock): a thread that waited while another renewed gets that token, or that renewal's error. A 401
    invalidates only the token that got it (``invalidate(token)``), so when requests in flight all get
    a 401 for the same revoked token, exactly one new token is requested and every thread uses it."""

    def __init__(
        self,
        transport: HttpTransport,
        *,
        client_id: str,
        client_secret: str,
        auth_base_uri: str,
        account_id: str | None = None,
        refresh_margin_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._transport = transport
        self._client_id = client_id
        self._client_secret = client_secret
        self._account_id = account_id or None
        self._auth_base_uri = normalize_base_url(auth_base_uri, setting="SFMC_AUTH_BASE_URI")
        self._token_url = self._auth_base_uri + "v2/token"
        self._margin = refresh_margin_seconds
        self._clock = clock
        self._token: SfmcToken | None = None
        self._lock = threading.Lock()
        self._renewals = 0  # renewals finished (with a token or an error)
        self._renewal_error: ApiError | None = None  # of the last renewal, if it failed
        transport.redact.add(client_secret)

    def token(self) -> SfmcToken:
        """A token fresh for at least the renewal margin, requested if there is none."""
        renewals_seen = self._renewals
        with self._lock:
            token = self._token
            if token is not None and self._clock() < token.expires_at - self._margin:
                return token
            if self._renewals != renewals_seen and self._renewal_error is not None:
                # Another thread renewed while this one waited, and it failed: the same answer
                # for every waiting thread, not one more token request each.
                error = self._renewal_error
                raise ApiError(str(error), retryable=error.retryable, status=error.status, code=error.code)
            try:
                token = self._request_token()
            except ApiError as exc:
                self._renewal_error = exc
                raise
            else:
                self._renewal_error = None
                self._token = token
            finally:
                self._renewals += 1
            return token

    def invalidate(self, token: SfmcToken | None = None) -> None:
        """Forget the cached token (a call answered 401). With ``token``, only if it is still the
        cached one: when several calls with the same token got 401, one renewal serves them all."""
        with self._lock:
            if token is None or self._token is token:
                self._token = None

    def _request_token(self) -> SfmcToken:
        body = {"grant_type": "client_credentials", "client_id": self._client_id, "client_secret": self._client_secret}
        if self._account_id:
            body["account_id"] = self._account_id
        started = self._clock()
        response = self._transport.request("POST", self._token_url, json=body)
        if response.status_code != 200:
            raise self._token_error(response)
        try:
            data = response.json()
            access_token = data["access_token"]
            expires_in = float(data.get("expires_in") or 1080)
            rest_instance_url = data["rest_instance_url"]
            if not isinstance(rest_instance_url, str):
                raise TypeError("rest_instance_url is not a string")
        except (ValueError, KeyError, TypeError) as exc:
            raise ApiError(f"SFMC token response is not what the API documents ({type(exc).__name__}: {exc})") from None
        self._transport.redact.add(access_token)
        rest = instance_base_url(rest_instance_url, setting="rest_instance_url (SFMC token response)",
                                 configured=self._auth_base_uri, configured_setting="SFMC_AUTH_BASE_URI",
                                 vendor_domains=SFMC_DOMAINS)
        return SfmcToken(access_token=access_token, rest_instance_url=rest, expires_at=started + expires_in)

    def _token_error(self, response) -> ApiError:
        try:
            data = response.json()
        except ValueError:
            data = {}
        code = data.get("error") if isinstance(data, dict) else None
        detail = self._transport.redact(body_excerpt(response))
        if code == "invalid_client" or response.status_code == 401:
            bu = " and that SFMC_ACCOUNT_ID is a business unit (MID) the package can access" if self._account_id else ""
            message = (
                f"SFMC refused the client credentials (HTTP {response.status_code}{', ' + code if code else ''}){detail}. "
                "Check SFMC_CLIENT_ID and SFMC_CLIENT_SECRET against Setup > Installed Packages > API Integration "
                f"(a Server-to-Server integration), that SFMC_AUTH_BASE_URI is this tenant's auth base URI{bu}."
            )
        else:
            message = (
                f"SFMC token request failed (HTTP {response.status_code}){detail}. "
                "Check SFMC_AUTH_BASE_URI and the installed package."
            )
        return ApiError(message, status=response.status_code, code=code)
