"""The alert webhook: where failure alerts are POSTed (``$SFMC_PIPELINE_ALERT_WEBHOOK``, Slack-compatible
``{"text": ...}``) and the one rule for it: https, or plain http only on 127.0.0.1/localhost.

Redirects are never followed: a webhook answering 3xx would otherwise send the whole alert to
whatever host its ``Location`` names, one the rule may refuse (``requests`` follows 307/308 with the
body). The answer is logged with the redirect's host and the fix (set the final URL). The webhook
URL holds a token: it is never logged, nor is the path of a redirect.
"""

from __future__ import annotations

import os
from urllib.parse import urljoin, urlsplit

import requests

from sfmc_pipeline.http import LOOPBACK_HOSTS
from sfmc_pipeline.settings import ALERT_WEBHOOK_ENV

WEBHOOK_TIMEOUT_SECONDS = 10.0


def webhook_url() -> str:
    """The configured webhook, or ``""`` when alerts are only logged."""
    return os.environ.get(ALERT_WEBHOOK_ENV, "").strip()


def is_allowed(url: str) -> bool:
    parts = urlsplit(url)
    return bool(parts.hostname) and (
        parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS)
    )


def post_alert(url: str, text: str, log) -> bool:
    """POST ``{"text": text}`` to ``url``; True when the webhook accepted it. Never raises; errors go to ``log``."""
    if not is_allowed(url):
        log.error(
            f"Alert not sent: {ALERT_WEBHOOK_ENV} must be an https:// URL (http:// only for 127.0.0.1/localhost), "
            "e.g. a Slack incoming webhook."
        )
        return False
    try:
        response = requests.post(url, json={"text": text}, timeout=WEBHOOK_TIMEOUT_SECONDS, allow_redirects=False)
    except requests.RequestException as exc:
        log.error(f"Alert not sent: the webhook in {ALERT_WEBHOOK_ENV} could not be reached ({type(exc).__name__}).")
        return False
    if response.is_redirect or 300 <= response.status_code < 400:
        target = urlsplit(urljoin(url, response.headers.get("Location", "")))
        log.error(
            f"Alert not sent: the webhook in {ALERT_WEBHOOK_ENV} answered HTTP {response.status_code}, a redirect to "
            f"{target.scheme}://{target.hostname or '?'}; alerts never follow redirects. Set {ALERT_WEBHOOK_ENV} to "
            "the final URL of the webhook."
        )
        return False
    if not 200 <= response.status_code < 300:
        log.error(f"Alert not sent: the webhook in {ALERT_WEBHOOK_ENV} answered HTTP {response.status_code}.")
        return False
    return True
