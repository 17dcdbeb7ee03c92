"""What several sections of ``pipeline.yaml`` share: the strict base model and the field rules
(identifiers, snake_case names, IANA time zones, text a reader can see)."""

from __future__ import annotations

import re
import unicodedata
import zoneinfo

from pydantic import BaseModel, ConfigDict, field_validator

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SNAKE_CASE = re.compile(r"^[a-z][a-z0-9_]*$")


class StrictModel(BaseModel):
    """A config section: unknown settings are errors, and a loaded config does not change."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def snake_case_field(field: str, what: str, example: str):
    """A validator of ``field``: a snake_case name (``what`` and ``example`` go into the message)."""

    def check(cls, value: str) -> str:
        if not SNAKE_CASE.match(value):
            raise ValueError(f"{what} {value!r} must be snake_case, e.g. {example!r}")
        return value

    return field_validator(field)(classmethod(check))


def check_timezone(value: str) -> str:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a folder such as 'America'
        raise ValueError(
            f"unknown time zone {value!r}; use an IANA name such as 'UTC', 'Europe/Paris' or 'America/Chicago'"
        ) from None
    return value


def has_visible_text(text: str) -> bool:
    """Whether ``text`` holds a letter, digit, punctuation mark or symbol: not only spaces, zero-width or other
    format and control characters (Unicode categories Z and C)."""
    return any(unicodedata.category(char)[0] in "LNPS" for char in text)
