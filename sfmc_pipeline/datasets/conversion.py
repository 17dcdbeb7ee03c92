"""Raw SFMC values (every value a string) -> typed pandas columns, one function per SFMC type.

SFMC returns every value as a string: ``""`` for null, ``"True"``/``"False"``, ``"1"``, and dates
as ``M/D/YYYY h:mm:ss AM|PM`` in SFMC system time (US Central Standard Time, UTC-6, no daylight
saving). Values are stripped of surrounding spaces (the rowset keeps them, e.g. ``" True"``).
A value that does not parse becomes null in the typed frame and yields an issue naming the row,
the column and the reason in plain words, so the row is quarantined rather than silently nulled.
Numbers, dates and booleans are ASCII only (``"１２３"`` is not a number), and a number the column
cannot hold (beyond int64 for Number, more digits than precision/scale for Decimal) is an issue
too: it is never wrapped or rounded. A ``salesforce_id`` Text column holds the 18-character
case-safe form of each well-formed Id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from sfmc_pipeline.config.models import ColumnConfig, DataExtensionConfig, SfmcType
from sfmc_pipeline.datasets.salesforce_id import to_18_series

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
# ASCII only: Python's and RE2's ``\d`` also match other scripts' digits ("١٢٣", "１２３").
_NUMERIC = r"^[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)$"  # plain decimal notation
_WHOLE_NUMBER = r"^[+-]?(?:[0-9]+(?:\.0*)?|\.0+)$"  # including SFMC's "12.0" rendering
# sign, integer digits without leading zeros, fraction digits without trailing zeros
_NUMBER_PARTS = r"^(?P<sign>[+-]?)0*(?P<int>[0-9]*)(?:\.(?P<frac>[0-9]*?)0*)?$"
_PRINTABLE_ASCII = r"^[ -~]+$"
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1  # the range of a Number column (pandas Int64)
_DATE_EXPECTED = "not a date (expected M/D/YYYY h:mm:ss AM/PM or YYYY-MM-DD)"

# row: index label in the raw frame; check: short kind (``type:Date``, ``min``, ...);
# reason: plain words with the value; summary: the same without the value (for counting).
ISSUE_COLUMNS = ["row", "column", "check", "reason", "summary"]


@dataclass(frozen=True)
class Converted:
    frame: pd.DataFrame  # typed columns, same index as the raw frame
    issues: pd.DataFrame  # ISSUE_COLUMNS: one row per (row, column) that could not be converted


# A converter returns the typed column and its problems: ``(mask of bad rows, what the value is in
# plain words without the value)``, e.g. ``(mask, "not a number (expected a whole number)")``.
Problems = list[tuple[pd.Series, str]]


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
        values = clean_values(raw[column.name]) if column.name in raw else pd.Series(
            pd.NA, index=raw.index, dtype="string"
        )
        series, problems = _CONVERTERS[column.type](values, column)
        typed[column.name] = series
        found = []
        for bad, detail in problems:
            bad = bad.fillna(False).astype(bool) & values.notna()
            if bad.any():
                shown = values[bad]
                found.append(
                    pd.DataFrame(
                        {
                            "row": shown.index,
                            "column": column.name,
                            "check": f"type:{column.type.value}",
                            "reason": [f"{column.name}: {v!r} is {detail}" for v in shown],
                            "summary": f"{column.name}: {detail}",
                        }
                    )
                )
        if found:
            issues.append(pd.concat(found).sort_values("row", kind="stable"))
    frame = pd.DataFrame(typed, index=raw.index)
    all_issues = pd.concat(issues, ignore_index=True) if issues else empty_issues()
    return Converted(frame=frame, issues=all_issues)


def empty_issues() -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series(dtype="int64" if name == "row" else "object") for name in ISSUE_COLUMNS})


def clean_values(values: pd.Series) -> pd.Series:
    """Raw SFMC strings as they are converted: surrounding spaces stripped, ``""`` as null."""
    text = values.astype("string").str.strip()
    return text.mask(text == "")


def _text(values: pd.Series, column: ColumnConfig):
    text = values.astype(pd.StringDtype())
    if column.format == "salesforce_id":
        # One record, one key: 15-character ids become their 18-character case-safe form, so the
        # two forms of an id are the same key (joins, duplicates). Malformed ids stay as they are
        # and fail the salesforce_id check.
        text = to_18_series(text)
    return text, []


def _matches(values: pd.Series, pattern: str) -> pd.Series:
    """Boolean mask (False for nulls) of the values matching ``pattern``."""
    return values.str.match(pattern).fillna(False).astype(bool)


def _number_parts(values: pd.Series) -> pd.DataFrame:
    """``sign``, ``int`` and ``frac`` of plain decimal numbers (``""`` for nulls), with the leading
    zeros of the integer part and the trailing zeros of the fraction removed."""
    parts = pc.extract_regex(arrow_strings(values), _NUMBER_PARTS)
    return pd.DataFrame(
        {
            name: pd.Series(pd.arrays.ArrowStringArray(pc.fill_null(pc.struct_field(parts, name), "")), index=values.index)
            for name in ("sign", "int", "frac")
        }
    )


def _number(values: pd.Series, column: ColumnConfig):
    numeric = _matches(values, _NUMERIC)
    whole = numeric & _matches(values, _WHOLE_NUMBER)
    parts = _number_parts(values.where(whole))
    digits = parts["int"].mask(parts["int"] == "", "0")
    negative = (parts["sign"] == "-") & (digits != "0")
    # Compare digit strings rather than numbers: nothing is parsed before it is known to fit.
    # Same-length ASCII digit strings order like the numbers they spell.
    length = digits.str.len()
    limit = pd.Series(str(INT64_MAX), index=values.index, dtype="string").mask(negative, str(INT64_MIN)[1:])
    fits = whole & ((length < 19) | ((length == 19) & (digits <= limit).fillna(False).astype(bool)))
    text = ("-" + digits).where(negative, digits).where(fits)
    numbers = pd.Int64Dtype().__from_arrow__(pc.cast(arrow_strings(text), pa.int64()))
    return pd.Series(numbers, index=values.index), [
        (~numeric, "not a number (expected a whole number)"),
        (numeric & ~whole, "not a whole number"),
        (whole & ~fits, f"outside the range of a whole-number column ({INT64_MIN} to {INT64_MAX})"),
    ]


def _decimal(values: pd.Series, column: ColumnConfig):
    precision, scale = column.precision, column.scale
    numeric = _matches(values, _NUMERIC)
    parts = _number_parts(values.where(numeric))
    int_fits = parts["int"].str.len() <= precision - scale
    # Trailing zeros beyond the scale are harmless ("12.500" -> 12.50); other digits are never rounded.
    frac_fits = parts["frac"].str.len() <= scale
    fits = numeric & int_fits & frac_fits
    digits = parts["int"].mask(parts["int"] == "", "0")
    text = digits.where(parts["frac"] == "", digits + "." + parts["frac"])
    text = ("-" + text).where(parts["sign"] == "-", text).where(fits)
    decimals = pc.cast(arrow_strings(text), pa.decimal128(precision, scale))
    limits = f"at most {precision - scale} digits before and {scale} after the point"
    return pd.Series(decimals, index=values.index, dtype=pandas_dtype(column)), [
        (~numeric, f"not a number (expected a decimal with {limits})"),
        (numeric & ~int_fits, f"outside the range of a Decimal({precision},{scale}) column ({limits})"),
        (
            numeric & int_fits & ~frac_fits,
            f"more precise than a Decimal({precision},{scale}) column holds ({limits}; values are never rounded)",
        ),
    ]


def _date(values: pd.Series, column: ColumnConfig):
    parsed = pd.Series(pd.NaT, index=values.index, dtype="datetime64[us]")
    # pandas' strptime takes other scripts' digits ("1/15/２０２４"); SFMC writes ASCII.
    remaining = values.notna()
    candidates = _matches(values, _PRINTABLE_ASCII)
    for fmt in DATE_FORMATS:
        if not candidates.any():
            break
        attempt = pd.to_datetime(values[candidates], format=fmt, errors="coerce")
        hit = attempt.notna()
        parsed.loc[hit[hit].index] = attempt[hit].astype("datetime64[us]")
        remaining.loc[hit[hit].index] = False
        candidates.loc[hit[hit].index] = False
    localized = parsed.dt.tz_localize(SFMC_SYSTEM_TZ).dt.tz_convert("UTC").astype(DATE_DTYPE)
    return localized, [(remaining, _DATE_EXPECTED)]


def _boolean(values: pd.Series, column: ColumnConfig):
    lowered = values.where(_matches(values, _PRINTABLE_ASCII)).str.lower()
    result = pd.Series(pd.NA, index=values.index, dtype=pd.BooleanDtype())
    result[lowered.isin(_TRUE).fillna(False).astype(bool)] = True
    result[lowered.isin(_FALSE).fillna(False).astype(bool)] = False
    bad = values.notna() & result.isna()
    return result, [(bad, "not a boolean (expected True or False)")]


def arrow_strings(values: pd.Series) -> pa.Array:
    """A string Series as one contiguous arrow string array (nulls kept)."""
    array = pa.array(values.astype("string").array, type=pa.string())
    return array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array


_CONVERTERS: dict[SfmcType, Callable[[pd.Series, ColumnConfig], tuple[pd.Series, Problems]]] = {
    SfmcType.TEXT: _text,
    SfmcType.EMAIL_ADDRESS: _text,
    SfmcType.PHONE: _text,
    SfmcType.LOCALE: _text,
    SfmcType.NUMBER: _number,
    SfmcType.DECIMAL: _decimal,
    SfmcType.DATE: _date,
    SfmcType.BOOLEAN: _boolean,
}
