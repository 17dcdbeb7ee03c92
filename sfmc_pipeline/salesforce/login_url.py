"""The login base URL from SALESFORCE_DOMAIN (a My Domain prefix or host) or SALESFORCE_LOGIN_URL (a full URL).

Exactly one of the two is set; a My Domain is checked here so that a pasted Lightning host or a
sandbox login URL in the wrong variable fails with the variable to use instead.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from sfmc_pipeline.errors import ConfigurationError
from sfmc_pipeline.http import normalize_base_url

MY_DOMAIN_SUFFIX = ".my.salesforce.com"

_LABEL = r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?"
_PREFIX = re.compile(rf"^{_LABEL}$")
_MY_DOMAIN_HOST = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*{re.escape(MY_DOMAIN_SUFFIX)}$")


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

