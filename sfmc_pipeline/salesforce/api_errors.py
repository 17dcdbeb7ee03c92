"""How a refused Salesforce REST API request becomes an error: Salesforce's errorCode and message, and
what to check. Request-level errors are JSON arrays ``[{"message", "errorCode", "fields"}]`` or one such
object. A 403 ``REQUEST_LIMIT_EXCEEDED`` for the daily allocation ("TotalRequests Limit exceeded.") is
``RequestLimitExceeded`` (stop, resume later); one for too many concurrent long-running requests
("ConcurrentPerOrgLongTxn Limit exceeded.") is a refusal before the request ran, so the client resends it.
"""

from __future__ import annotations

from typing import Callable, Mapping

import requests

from sfmc_pipeline.errors import ApiError
from sfmc_pipeline.http import body_excerpt
from sfmc_pipeline.salesforce.records import ApiUsage


class RequestLimitExceeded(ApiError):
    """403 REQUEST_LIMIT_EXCEEDED for the daily allocation: the org's API requests are used up; resume later."""


def api_error(response: requests.Response, what: str, *, usage: ApiUsage | None, redact: Callable[[str], str],
              waits: int = 0) -> ApiError:
    """The error for a non-2xx ``response`` to the call ``what``; ``usage``: the latest API usage reading,
    ``waits``: how often a concurrent-request refusal was already waited out."""
    status = response.status_code
    code, detail = error_detail(response, redact)
    shown = f"HTTP {status}" + (f" {detail}" if detail else "").rstrip(".")
    if concurrency_refusal(response):
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
        used = f" (API usage {usage.used}/{usage.limit})" if usage else ""
        return RequestLimitExceeded(
            f"Salesforce {what} was refused because the org's API request limit is used up{used} ({shown}). "
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


def concurrency_refusal(response: requests.Response) -> bool:
    """403 ``REQUEST_LIMIT_EXCEEDED`` for concurrent requests ("ConcurrentPerOrgLongTxn Limit exceeded.",
    "ConcurrentRequests (Concurrent API Requests) Limit exceeded."), not the daily allocation ("TotalRequests")."""
    if response.status_code != 403:
        return False
    code, detail = error_detail(response, lambda text: text)
    return code == "REQUEST_LIMIT_EXCEEDED" and "concurrent" in detail.lower()


def error_detail(response: requests.Response, redact: Callable[[str], str]) -> tuple[str | None, str]:
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
