"""Raw SFMC values (every value a string) -> typed pandas columns, one function per SFMC type.

SFMC returns every value as a string: ``""`` for null, ``"True"``/``"False"``, ``"1"``, and dates
as ``M/D/YYYY h:mm:ss AM|PM`` in SFMC system time (US Central Standard Time, UTC-6, no daylight
saving). Values are stripped of surrounding spaces (the rowset keeps them, e.g. ``" True"``).
A value that does not parse becomes null in the typed frame and yields an issue naming the row,
the column and the reason in plain words, so the row is quarantined rather than silently nulled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pandas as pd
import pyarrow as pa

from sfmc_pipeline.config.models import ColumnConfig, DataExtensionConfig, SfmcType

SFMC_SYSTEM_TZ = "Etc/GMT+6"  # POSIX sign convention: UTC-6 all year
DATE_DTYPE = "datetime64[us, UTC]"
# Formats a Date value may come in: the rowset/Data Extract format first, then ISO 8601.
DATE_FORMATS = (
    "%m/%d/%Y %I:%M:%S %p",
    "%m/%d/%Y",
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%d",
)
_TRUE = {"true", "1", "yes", "y"}
_FALSE = {"false", "0", "no", "n"}
_WHOLE_NUMBER = r"^[+-]?\d+(?:\.0*)?$"
_DECIMAL = r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)$"

# row: index label in the raw frame; check: short kind (``type:Date``, ``min``, ...);
# reason: plain words with the value; summary: the same without the value (for counting).
ISSUE_COLUMNS = ["row", "column", "check", "reason", "summary"]


@dataclass(frozen=True)
class Converted:
    frame: pd.DataFrame  # typed columns, same index as the raw frame
    issues: pd.DataFrame  # ISSUE_COLUMNS: one row per (row, column) that could not be converted


def pandas_dtype(column: ColumnConfig):
    """The pandas dtype a column of this SFMC type lands as (also the parquet type)."""
    if column.type.is_text:
        return pd.StringDtype()
    if column.type is SfmcType.NUMBER:
        return pd.Int64Dtype()
    if column.type is SfmcType.DECIMAL:
        return pd.ArrowDtype(pa.decimal128(column.precision, column.scale))
    if column.type is SfmcType.DATE:
        return pd.DatetimeTZDtype(unit="us", tz="UTC")
    if column.type is SfmcType.BOOLEAN:
        return pd.BooleanDtype()
    raise AssertionError(f"unhandled type {column.type}")


def convert_frame(raw: pd.DataFrame, extension: DataExtensionConfig) -> Converted:
    """Type every configured column of ``raw`` (string values, configured column names)."""
    typed: dict[str, pd.Series] = {}
    issues: list[pd.DataFrame] = []
    for column in extension.columns:
        values = _clean(raw[column.name]) if column.name in raw else pd.Series(
            pd.NA, index=raw.index, dtype="string"
        )
        series, bad = _CONVERTERS[column.type](values, column)
        typed[column.name] = series
        if bad.any():
            shown = values[bad]
            expected = _EXPECTED[column.type](column)
            issues.append(
                pd.DataFrame(
                    {
                        "row": shown.index,
                        "column": column.name,
                        "check": f"type:{column.type.value}",
                        "reason": [f"{column.name}: {v!r} is {expected}" for v in shown],
                        "summary": f"{column.name}: {expected}",
                    }
                )
            )
    frame = pd.DataFrame(typed, index=raw.index)
    all_issues = pd.concat(issues, ignore_index=True) if issues else empty_issues()
    return Converted(frame=frame, issues=all_issues)


def empty_issues() -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series(dtype="int64" if name == "row" else "object") for name in ISSUE_COLUMNS})


def _clean(values: pd.Series) -> pd.Series:
    text = values.astype("string").str.strip()
    return text.mask(text == "")


def _text(values: pd.Series, column: ColumnConfig):
    return values.astype(pd.StringDtype()), pd.Series(False, index=values.index)


def _number(values: pd.Series, column: ColumnConfig):
    ok = values.str.match(_WHOLE_NUMBER).fillna(True).astype(bool)
    numbers = pd.to_numeric(values.where(ok).str.replace(r"\.0*$", "", regex=True), errors="coerce")
    return numbers.astype(pd.Int64Dtype()), ~ok


def _decimal(values: pd.Series, column: ColumnConfig):
    present = values.dropna()
    parts = present.str.extract(r"^[+-]?0*(?P<int>\d*)(?:\.(?P<frac>\d*?)0*)?$")
    ok = pd.Series(True, index=values.index)
    ok[present.index] = (
        present.str.match(_DECIMAL).fillna(False).astype(bool)
        & (parts["int"].str.len().fillna(0) <= column.precision - column.scale).astype(bool)
        & (parts["frac"].fillna("").str.len() <= column.scale).astype(bool)
    )
    # Trailing zeros beyond the scale are harmless: "12.500" -> 12.50.
    trimmed = values.where(ok).str.replace(r"(\.\d*?)0+$", r"\1", regex=True).str.rstrip(".")
    arrow = pa.array(trimmed.astype(object).where(trimmed.notna(), None), type=pa.string())
    decimals = arrow.cast(pa.decimal128(column.precision, column.scale))
    return pd.Series(decimals, index=values.index, dtype=pandas_dtype(column)), ~ok


def _date(values: pd.Series, column: ColumnConfig):
    parsed = pd.Series(pd.NaT, index=values.index, dtype="datetime64[us]")
    remaining = values.notna()
    for fmt in DATE_FORMATS:
        if not remaining.any():
            break
        attempt = pd.to_datetime(values[remaining], format=fmt, errors="coerce")
        hit = attempt.notna()
        parsed.loc[hit[hit].index] = attempt[hit].astype("datetime64[us]")
        remaining.loc[hit[hit].index] = False
    localized = parsed.dt.tz_localize(SFMC_SYSTEM_TZ).dt.tz_convert("UTC").astype(DATE_DTYPE)
    return localized, remaining


def _boolean(values: pd.Series, column: ColumnConfig):
    lowered = values.str.lower()
    result = pd.Series(pd.NA, index=values.index, dtype=pd.BooleanDtype())
    result[lowered.isin(_TRUE).fillna(False).astype(bool)] = True
    result[lowered.isin(_FALSE).fillna(False).astype(bool)] = False
    bad = values.notna() & result.isna()
    return result, bad


_CONVERTERS: dict[SfmcType, Callable] = {
    SfmcType.TEXT: _text,
    SfmcType.EMAIL_ADDRESS: _text,
    SfmcType.PHONE: _text,
    SfmcType.LOCALE: _text,
    SfmcType.NUMBER: _number,
    SfmcType.DECIMAL: _decimal,
    SfmcType.DATE: _date,
    SfmcType.BOOLEAN: _boolean,
}

_EXPECTED: dict[SfmcType, Callable[[ColumnConfig], str]] = {
    SfmcType.NUMBER: lambda c: "not a whole number",
    SfmcType.DECIMAL: lambda c: (
        f"not a decimal with at most {c.precision - c.scale} digits before and "
        f"{c.scale} after the point"
    ),
    SfmcType.DATE: lambda c: "not a date (expected M/D/YYYY h:mm:ss AM/PM or YYYY-MM-DD)",
    SfmcType.BOOLEAN: lambda c: "not a boolean (expected True or False)",
}
