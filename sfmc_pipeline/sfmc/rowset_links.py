"""The rowset's URLs: the ``$filter`` of a window, the query string, and the continuation links.

Only rowset parameters seen working are used: ``$filter`` as ``Field between 'A' and 'B'`` (bounds in
SFMC system time, UTC-6 all year, as SFMC compares dates) and ``$orderBy=Field desc``. ``links.next``
is relative and lacks the ``/data`` prefix; it is followed only within the origin of
``rest_instance_url``, so the bearer token is never sent anywhere else.
"""

from __future__ import annotations

import datetime as dt
from urllib.parse import quote, unquote, urlencode, urlsplit, urlunsplit

from sfmc_pipeline.datasets.incremental import to_system_time
from sfmc_pipeline.datasets.recount import LATEST  # an incremental window's open end
from sfmc_pipeline.sfmc.source import ExtractError


def window_filter(column: str, since: dt.datetime) -> str:
    """The rowset ``$filter`` of the rows whose ``column`` is at or after ``since`` (UTC), its
    bounds in SFMC system time."""
    return between_filter(column, to_system_time(since).replace(microsecond=0), LATEST)


def between_filter(column: str, start: dt.datetime, end: dt.datetime) -> str:
    """The rowset ``$filter`` of the rows whose ``column`` lies from ``start`` to ``end`` (naive SFMC system
    times, both inclusive, to the second)."""
    return f"{column} between '{start:%Y-%m-%dT%H:%M:%S}' and '{end:%Y-%m-%dT%H:%M:%S}'"


def query_string(params: dict) -> str:
    """A query string with spaces as ``%20`` (not ``+``), as SFMC's examples write ``$filter``."""
    return urlencode(params, quote_via=quote)


def page_url(template: str, number: int, page_size: int) -> str:
    """``template`` (a page's resolved ``links.next``) asking for page ``number`` of ``page_size`` rows."""
    parts = urlsplit(template)
    kept = [part for part in parts.query.split("&")
            if part and unquote(part.split("=", 1)[0]).lower() not in ("$page", "$pagesize")]
    query = "&".join([*kept, f"$page={number}", f"$pageSize={page_size}"])
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


def next_link(body: dict) -> str | None:
    links = body.get("links")
    link = links.get("next") if isinstance(links, dict) else None
    return link if isinstance(link, str) and link else None


def next_url(rest_instance_url: str, link: str, key: str, number: int) -> str:
    """The next page's URL, refused (``ExtractError``) unless it is on ``rest_instance_url``'s origin."""
    url = _resolve_link(rest_instance_url, link)
    if _origin(url) != _origin(rest_instance_url):
        raise ExtractError(
            f"SFMC rowset page {number} of Data Extension {key!r} links its next page to {_origin_text(url)}, "
            f"not to the REST instance {_origin_text(rest_instance_url)} (rest_instance_url of the token "
            "response). The link was refused and the access token was not sent there. SFMC serves relative "
            "links; check for a proxy or gateway between the pipeline and SFMC that rewrites responses."
        )
    return url


def _resolve_link(rest_instance_url: str, link: str) -> str:
    if link.startswith(("http://", "https://")):
        return link
    if link.startswith("/data/"):
        return rest_instance_url + link.lstrip("/")
    return rest_instance_url + "data" + (link if link.startswith("/") else "/" + link)


def _origin(url: str) -> tuple[str, str, int | None] | None:
    """``(scheme, host, port)`` with the scheme's default port filled in; ``None`` if unparsable."""
    parts = urlsplit(url)
    try:
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme.lower())
    except ValueError:  # a port that is not a number
        return None
    return parts.scheme.lower(), (parts.hostname or "").lower(), port


def _origin_text(url: str) -> str:
    origin = _origin(url)
    return f"{origin[0]}://{origin[1]}:{origin[2]}" if origin else repr(url[:80])
