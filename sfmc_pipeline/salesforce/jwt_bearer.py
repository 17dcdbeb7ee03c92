"""The OAuth 2.0 JWT bearer flow's assertion: a short-lived JWT, signed with the private key whose
certificate is uploaded to the connected app (or External Client App), that Salesforce exchanges for a
session without any secret leaving this machine.

Claims (Salesforce help, "OAuth 2.0 JWT Bearer Flow for Server-to-Server Integration"): ``iss`` the
consumer key, ``sub`` the username, ``aud`` the login server (``https://login.salesforce.com``,
``https://test.salesforce.com`` for sandboxes, or an Experience Cloud site URL), ``exp`` a few minutes
ahead; signed RS256. There is no refresh token: each login signs a new assertion.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from sfmc_pipeline.errors import ConfigurationError
from sfmc_pipeline.settings import (
    SALESFORCE_JWT_AUDIENCE_ENV,
    SALESFORCE_PRIVATE_KEY_ENV,
    SALESFORCE_PRIVATE_KEY_FILE_ENV,
)

GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
PRODUCTION_AUDIENCE = "https://login.salesforce.com"
SANDBOX_AUDIENCE = "https://test.salesforce.com"
LIFETIME_SECONDS = 180  # Salesforce asks for a short expiry (about 3 minutes)

MAKE_A_KEY = (
    "create one with `openssl req -x509 -newkey rsa:2048 -nodes -days 730 -subj /CN=sfmc-pipeline -keyout "
    "salesforce.key -out salesforce.crt`, upload salesforce.crt to the connected app ('Use digital signatures') "
    f"and set {SALESFORCE_PRIVATE_KEY_FILE_ENV}=salesforce.key"
)


def load_private_key(*, key_file: str | None, key_text: str | None) -> RSAPrivateKey:
    """The RSA private key from ``SALESFORCE_PRIVATE_KEY_FILE`` (a PEM file) or ``SALESFORCE_PRIVATE_KEY`` (the PEM
    text itself, e.g. from a secret store; ``\\n`` escapes are accepted for one-line values). Exactly one must be
    set. Errors name the setting and the fix, never the key."""
    if key_file and key_text:
        raise ConfigurationError(f"Set one of {SALESFORCE_PRIVATE_KEY_FILE_ENV} or {SALESFORCE_PRIVATE_KEY_ENV}, not "
                                 "both: both hold the JWT signing key.")
    if key_file:
        setting = f"{SALESFORCE_PRIVATE_KEY_FILE_ENV} {key_file}"
        try:
            data = Path(key_file).expanduser().read_bytes()
        except OSError as exc:
            raise ConfigurationError(
                f"{setting} cannot be read ({exc.strerror or type(exc).__name__}); point it at the PEM private key "
                f"whose certificate is uploaded to the connected app, or {MAKE_A_KEY}."
            ) from None
    elif key_text:
        setting = SALESFORCE_PRIVATE_KEY_ENV
        text = key_text.strip()
        if "\n" not in text and "\\n" in text:
            text = text.replace("\\n", "\n")  # a PEM kept on one line of an env file
        data = text.encode("utf-8")
    else:
        raise ConfigurationError(f"The JWT bearer flow needs {SALESFORCE_PRIVATE_KEY_FILE_ENV} or "
                                 f"{SALESFORCE_PRIVATE_KEY_ENV}; {MAKE_A_KEY}.")
    try:
        key = load_pem_private_key(data, password=None)
    except TypeError:
        raise ConfigurationError(
            f"{setting} is an encrypted private key; store it without a passphrase in a secret store (`openssl pkey "
            "-in encrypted.key -out salesforce.key`), since the pipeline signs unattended."
        ) from None
    except ValueError:
        raise ConfigurationError(
            f"{setting} is not a PEM private key (it must start with '-----BEGIN PRIVATE KEY-----' or "
            f"'-----BEGIN RSA PRIVATE KEY-----'); {MAKE_A_KEY}."
        ) from None
    if not isinstance(key, RSAPrivateKey):
        raise ConfigurationError(f"{setting} is not an RSA key: Salesforce verifies RS256 signatures; {MAKE_A_KEY}.")
    return key


def default_audience(base_url: str) -> str:
    """``aud`` for a login base URL: the sandbox login server for a sandbox host (``*.sandbox.my.salesforce.com``,
    a ``name--sandbox`` My Domain, ``test.salesforce.com``), else the production one."""
    host = (urlsplit(base_url).hostname or "").lower()
    sandbox = host == "test.salesforce.com" or host.endswith(".sandbox.my.salesforce.com") or "--" in host.split(".")[0]
    return SANDBOX_AUDIENCE if sandbox else PRODUCTION_AUDIENCE


def normalize_audience(value: str) -> str:
    """``SALESFORCE_JWT_AUDIENCE`` as given, without a trailing slash; an https URL."""
    text = (value or "").strip().rstrip("/")
    parts = urlsplit(text)
    if parts.scheme != "https" or not parts.hostname:
        raise ConfigurationError(
            f"{SALESFORCE_JWT_AUDIENCE_ENV} must be an https URL such as {PRODUCTION_AUDIENCE}, {SANDBOX_AUDIENCE} or "
            f"an Experience Cloud site URL; got {value!r}."
        )
    return text


def assertion(key: RSAPrivateKey, *, client_id: str, username: str, audience: str,
              clock: Callable[[], float] = time.time) -> str:
    """A signed JWT (RS256) valid for ``LIFETIME_SECONDS``."""
    claims = {"iss": client_id, "sub": username, "aud": audience, "exp": int(clock()) + LIFETIME_SECONDS}
    return jwt.encode(claims, key, algorithm="RS256")
