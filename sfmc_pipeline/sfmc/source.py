"""The source interface both implementations share, and the raw extract they return."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Protocol

import pandas as pd

from sfmc_pipeline.config.models import DataExtensionConfig
from sfmc_pipeline.transport import ApiError


class ExtractError(ApiError):
    """A Data Extension extract is incomplete, malformed or unreadable, so none of its rows may be
    used: a read is complete or it fails.

    ``retryable=True`` when reading again later may heal it (SFMC served pages that do not add up,
    e.g. while the Data Extension was being rewritten); ``retryable=False`` when someone must fix
    something first (a broken sample file, a next-page link leaving the REST instance).
    """


@dataclass(frozen=True)
class RawExtract:
    """Rows as the source served them: every value a string (``""`` for null), columns renamed to
    the configured names (SFMC lower-cases field names)."""

    frame: pd.DataFrame
    source: str  # human-readable: where the rows came from
    api_calls: int = 0
    unmapped_columns: list[str] = field(default_factory=list)  # served but not configured
    missing_columns: list[str] = field(default_factory=list)  # configured but never served


@dataclass(frozen=True)
class SourceProbe:
    """What a cheap look at a Data Extension tells, without reading its rows: how many rows it
    has and, when an ``incremental_column`` is configured, the newest value of that column (as
    served). The change sensor compares probes; the connection check shows one."""

    rows: int
    newest: str | None = None  # newest incremental_column value as served; None without one (or no rows)
    api_calls: int = 0

    @property
    def change_token(self) -> str:
        """Equal for two probes that saw the same rows count and newest value."""
        return f"{self.rows}|{self.newest or ''}"


class DataExtensionSource(Protocol):
    mode: str  # "sfmc" (REST API) or "embedded" (sample data shipped in data/)

    def read(self, extension: DataExtensionConfig, since: dt.datetime | None = None) -> RawExtract:
        """Every row, or with ``since`` (a UTC datetime) only the rows whose ``incremental_column`` is at
        or after it (an incremental read, see ``datasets/incremental.py``)."""
        ...

    def probe(self, extension: DataExtensionConfig) -> SourceProbe: ...


def align_columns(
    frame: pd.DataFrame, extension: DataExtensionConfig
) -> tuple[pd.DataFrame, list[str], list[str]]:
    """Rename served columns (any case) to the configured names, as strings.

    Returns ``(frame, unmapped, missing)``: fields served but not configured are left out and
    listed; configured fields never served are added as empty strings and listed.
    """
    by_lower = {c.name.lower(): c.name for c in extension.columns}
    rename = {name: by_lower[name.lower()] for name in frame.columns if name.lower() in by_lower}
    unmapped = sorted(name for name in frame.columns if name.lower() not in by_lower)
    frame = frame.rename(columns=rename)
    missing = [c.name for c in extension.columns if c.name not in frame.columns] if len(frame) else []
    for name in by_lower.values():
        if name not in frame.columns:
            frame[name] = ""
    frame = frame[[c.name for c in extension.columns]].fillna("").astype("string")
    return frame, unmapped, missing
