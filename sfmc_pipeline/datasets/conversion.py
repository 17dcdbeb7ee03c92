"""Raw SFMC values (every value a string) -> typed pandas columns, one function per SFMC type.

SFMC returns every value as a string: ``""`` for null, ``"True"``/``"False"``, ``"1"``, and dates
as ``M/D/YYYY h:mm:ss AM|PM`` in SFMC system time (US Central Standard Time, UTC-6, no daylight
saving). Values are stripped of surrounding spaces (the rowset keeps them, e.g. ``" True"``).
A value that does not parse becomes null in the typed frame and yields an issue naming the row,
the column and the reason in plain words, so the row is quarantined rather than silently nulled.
A date after 4000-12-31 in UTC, the latest Salesforce accepts (``crm/salesforce_dates.py``), is
such an issue too (SFMC's ``12/31/9999 11:00:00 PM`` would otherwise land as year 10000).
Numbers, dates and booleans are ASCII only (``"１２３"`` is not a number), and a number the column
cannot hold (beyond int64 for Number, more digits than precision/scale for Decimal) is an issue
too: it is never wrapped or rounded. A ``salesforce_id`` Text column holds the 18-character
case-safe form of each well-formed Id.

**Vectorised, with an exact fallback.** Each converter first takes the shapes SFMC actually
serves through a strict arrow fast path (an RE2 pattern that admits only values whose typed form
is unambiguous, then one arrow kernel: ``cast`` to int64 / decimal128, ``strptime`` for dates,
whose impossible days such as 2/30 are caught), and hands every other non-empty value (``+5``,
``12.0``, ``0001.50``, ``1/5/2024 1:5:9 PM``, bad values...) to the exact logic of each type
(``_number_exact``, ``_decimal_exact``, ``_date_exact``: the previous column-wise implementation;
for a handful of values, numbers and decimals go value by value with the same rules), which decides
the value and the problem. The fast path never produces a problem: a value it does not admit is
decided by the exact logic, so the typed values and issues are those of the previous implementation
(``test_chunked_validation.py`` checks this against a copy of it on generated edge cases).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from sfmc_pipeline.config.data_extensions import (
    ColumnConfig,
    DataExtensionConfig,
    SfmcType,
)
from sfmc_pipeline.salesforce.dates import SALESFORCE_LATEST_DATE
from sfmc_pipeline.salesforce.ids import to_18_series

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

# Fast paths: strict shapes whose typed value is certain (see the module docstring).
# At most 18 digits, no sign but "-", no leading zeros: always inside int64.
_FAST_WHOLE = r"^-?(?:0|[1-9][0-9]{0,17})$"
_MONTH, _DAY, _YEAR = r"(?:1[0-2]|0?[1-9])", r"(?:3[01]|[12][0-9]|0?[1-9])", r"[1-9][0-9]{3}"
_ISO_DATE = r"[1-9][0-9]{3}-(?:1[0-2]|0[1-9])-(?:3[01]|[12][0-9]|0[1-9])"
_ISO_TIME = r"(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
# (pattern, format): in DATE_FORMATS order; a value one pattern admits is parsed by that format
# and by no earlier one. strptime rolls an impossible day over (2/30 -> 3/2): see _LATE_DAY.
_FAST_DATES = (
    (rf"^{_MONTH}/{_DAY}/{_YEAR} (?:1[0-2]|0?[1-9]):[0-5][0-9]:[0-5][0-9] [AP]M$", DATE_FORMATS[0]),
    (rf"^{_MONTH}/{_DAY}/{_YEAR}$", DATE_FORMATS[1]),
    (rf"^{_ISO_DATE}T{_ISO_TIME}$", DATE_FORMATS[2]),
    (rf"^{_ISO_DATE} {_ISO_TIME}$", DATE_FORMATS[3]),
    (rf"^{_ISO_DATE}$", DATE_FORMATS[4]),
)
_LATE_DAY = r"^(?:[0-9]{1,2}/(?:29|3[01])/|[0-9]{4}-[0-9]{2}-(?:29|3[01]))"  # day 29-31: may not exist
_SYSTEM_OFFSET = np.timedelta64(6, "h")  # SFMC system time is UTC-6: add 6 hours for UTC
# A date at or after this UTC instant is later than Salesforce accepts (crm/salesforce_dates.py).
_AFTER_SALESFORCE = np.datetime64(SALESFORCE_LATEST_DATE + dt.timedelta(days=1), "us")
_TOO_LATE = f"after {SALESFORCE_LATEST_DATE.isoformat()} (UTC), the latest date Salesforce accepts"
# The exact logic on a handful of values (a batch's odd ones) goes value by value: the same
# patterns and digit-string rules, without the fixed cost of a dozen column operations.
_FEW = 512
_NUMERIC_RE, _WHOLE_RE, _PARTS_RE = re.compile(_NUMERIC), re.compile(_WHOLE_NUMBER), re.compile(_NUMBER_PARTS)

# row: index label in the raw frame; check: short kind (``type:Date``, ``min``, ...);
# reason: plain words with the value; summary: the same without the value (for counting).
ISSUE_COLUMNS = ["row", "column", "check", "reason", "summary"]


@dataclass(frozen=True)
class Converted:
    frame: pd.DataFrame  # typed columns, same index as the raw frame
    issues: pd.DataFrame  # ISSUE_COLUMNS: one row per (row, column) that could not be converted


# A converter returns the typed column and its problems: ``(mask of bad rows, what the value is in
# plain words without the value)``, e.g. ``(mask, "not a number (expected a whole number)")``; a mask
# is a boolean Series over the values or a numpy array of the same length.
Problems = list[tuple[pd.Series | np.ndarray, str]]


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
    typed, per_column = convert_columns(raw, extension)
    issues = [found for found in per_column if found is not None]
    all_issues = pd.concat(issues, ignore_index=True) if issues else empty_issues()
    return Converted(frame=pd.DataFrame(typed, index=raw.index), issues=all_issues)


def convert_columns(
    raw: pd.DataFrame, extension: DataExtensionConfig
) -> tuple[dict[str, pd.Series], list[pd.DataFrame | None]]:
    """``convert_frame`` as ``{name: typed Series}`` (no frame built) with the issues kept per
    configured column (None: none), in column order."""
    typed: dict[str, pd.Series] = {}
    issues: list[pd.DataFrame | None] = []
    for column in extension.columns:
        typed[column.name], found = convert_column(raw, column)
        issues.append(found)
    return typed, issues


def convert_column(raw: pd.DataFrame, column: ColumnConfig) -> tuple[pd.Series, pd.DataFrame | None]:
    """One configured column of ``raw``, typed, and its issues (None: none)."""
    values = clean_values(raw[column.name]) if column.name in raw else pd.Series(
        pd.NA, index=raw.index, dtype="string"
    )
    series, problems = _CONVERTERS[column.type](values, column)
    return series, column_issues(column, values, problems)


def column_issues(column: ColumnConfig, values: pd.Series, problems: Problems) -> pd.DataFrame | None:
    """One issue row per bad value of a column (``ISSUE_COLUMNS``, rows in order), or None."""
    present = values.notna().to_numpy(dtype=bool)
    rows, details = [], []
    for bad, detail in problems:
        bad = _as_mask(bad) & present
        if bad.any():
            rows.append(np.flatnonzero(bad))
            details.append(detail)
    if not rows:
        return None
    order = np.concatenate(rows)
    detail_of = np.concatenate([np.full(len(r), n) for n, r in enumerate(rows)])
    sort = np.argsort(np.asarray(values.index[order]), kind="stable")  # by row label, as the issues name rows
    order, detail_of = order[sort], detail_of[sort]
    shown = values.iloc[order].tolist()
    return pd.DataFrame(
        {
            "row": values.index[order],
            "column": column.name,
            "check": f"type:{column.type.value}",
            "reason": [f"{column.name}: {v!r} is {details[d]}" for v, d in zip(shown, detail_of)],
            "summary": [f"{column.name}: {details[d]}" for d in detail_of],
        }
    )


def empty_issues() -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series(dtype="int64" if name == "row" else "object") for name in ISSUE_COLUMNS})


def clean_values(values: pd.Series) -> pd.Series:
    """Raw SFMC strings as they are converted: surrounding spaces stripped, ``""`` as null (what
    ``.str.strip()`` then ``.mask(text == "")`` of a ``string`` Series give: one arrow kernel, and
    the empty strings nulled in the validity bitmap without copying the text)."""
    trimmed = pc.utf8_trim_whitespace(_arrow(values))
    keep = pc.fill_null(pc.greater(pc.binary_length(trimmed), 0), False)  # not null, not empty
    if trimmed.offset == 0 and keep.offset == 0 and keep.null_count == 0:
        _, offsets, data = trimmed.buffers()
        cleaned = pa.Array.from_buffers(trimmed.type, len(trimmed), [keep.buffers()[1], offsets, data])
    else:
        cleaned = pc.if_else(keep, trimmed, pa.scalar(None, type=trimmed.type))
    return pd.Series(pd.arrays.ArrowStringArray(cleaned), index=values.index)


def _text(values: pd.Series, column: ColumnConfig):
    text = values.astype(pd.StringDtype())
    if column.format == "salesforce_id":
        # One record, one key: 15-character ids become their 18-character case-safe form, so the
        # two forms of an id are the same key (joins, duplicates). Malformed ids stay as they are
        # and fail the salesforce_id check.
        text = to_18_series(text)
    return text, []


# -- whole numbers -----------------------------------------------------------------------------


def _number(values: pd.Series, column: ColumnConfig):
    array = _arrow(values)
    fast = _match(array, _FAST_WHOLE)
    numbers = pc.cast(_only(array, fast), pa.int64())
    rest = _present(values) & ~fast
    problems: Problems = []
    if rest.any():
        exact, subset_problems = _number_exact(values[rest], column)
        numbers = pc.replace_with_mask(numbers, pa.array(rest), pa.array(exact.array, type=pa.int64()))
        problems = _widen(subset_problems, rest)
    return pd.Series(pd.Int64Dtype().__from_arrow__(numbers), index=values.index), problems


def _number_exact(values: pd.Series, column: ColumnConfig):
    if len(values) <= _FEW:
        return _number_exact_few(values, column)
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


# -- decimals ----------------------------------------------------------------------------------


def _decimal(values: pd.Series, column: ColumnConfig):
    precision, scale = column.precision, column.scale
    array = _arrow(values)
    # At most precision - scale integer digits (leading zeros included) and 1..scale fraction
    # digits: such a value fits, and arrow's string -> decimal128 cast is exact.
    whole = "0" if precision == scale else f"[0-9]{{1,{precision - scale}}}"
    fraction = f"(?:\\.[0-9]{{1,{scale}}})?" if scale else ""
    fast = _match(array, f"^-?{whole}{fraction}$")
    decimals = pc.cast(_only(array, fast), pa.decimal128(precision, scale))
    rest = _present(values) & ~fast
    problems: Problems = []
    if rest.any():
        exact, subset_problems = _decimal_exact(values[rest], column)
        decimals = pc.replace_with_mask(decimals, pa.array(rest), pa.array(exact.array))
        problems = _widen(subset_problems, rest)
    return pd.Series(pd.arrays.ArrowExtensionArray(decimals), index=values.index), problems


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


def _decimal_exact(values: pd.Series, column: ColumnConfig):
    if len(values) <= _FEW:
        return _decimal_exact_few(values, column)
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


def _parts(value: str) -> tuple[str, str, str]:
    """``_number_parts`` of one plain decimal number: sign, integer digits without leading zeros,
    fraction digits without trailing zeros."""
    found = _PARTS_RE.match(value)
    return found["sign"], found["int"], found["frac"] or ""


def _number_exact_few(values: pd.Series, column: ColumnConfig):
    """``_number_exact`` value by value (for a few values)."""
    texts, kinds = [], []
    for value in values.tolist():
        text = kind = None
        if value is pd.NA or not _NUMERIC_RE.match(value):
            kind = None if value is pd.NA else 0
        elif not _WHOLE_RE.match(value):
            kind = 1
        else:
            sign, digits, _ = _parts(value)
            digits = digits or "0"
            negative = sign == "-" and digits != "0"
            limit = str(INT64_MIN)[1:] if negative else str(INT64_MAX)
            if len(digits) < 19 or (len(digits) == 19 and digits <= limit):
                text = "-" + digits if negative else digits
            else:
                kind = 2
        texts.append(text)
        kinds.append(kind)
    numbers = pd.Int64Dtype().__from_arrow__(pc.cast(pa.array(texts, type=pa.string()), pa.int64()))
    return pd.Series(numbers, index=values.index), _few_problems(kinds, values.index, [
        "not a number (expected a whole number)",
        "not a whole number",
        f"outside the range of a whole-number column ({INT64_MIN} to {INT64_MAX})",
    ])


def _decimal_exact_few(values: pd.Series, column: ColumnConfig):
    """``_decimal_exact`` value by value (for a few values)."""
    precision, scale = column.precision, column.scale
    texts, kinds = [], []
    for value in values.tolist():
        text = kind = None
        if value is pd.NA or not _NUMERIC_RE.match(value):
            kind = None if value is pd.NA else 0
        else:
            sign, digits, fraction = _parts(value)
            if len(digits) > precision - scale:
                kind = 1
            elif len(fraction) > scale:
                kind = 2
            else:
                digits = digits or "0"
                text = digits + ("." + fraction if fraction else "")
                text = "-" + text if sign == "-" else text
        texts.append(text)
        kinds.append(kind)
    decimals = pc.cast(pa.array(texts, type=pa.string()), pa.decimal128(precision, scale))
    limits = f"at most {precision - scale} digits before and {scale} after the point"
    return pd.Series(decimals, index=values.index, dtype=pandas_dtype(column)), _few_problems(kinds, values.index, [
        f"not a number (expected a decimal with {limits})",
        f"outside the range of a Decimal({precision},{scale}) column ({limits})",
        f"more precise than a Decimal({precision},{scale}) column holds ({limits}; values are never rounded)",
    ])


def _few_problems(kinds: list, index: pd.Index, details: list[str]) -> Problems:
    return [(pd.Series([kind == n for kind in kinds], index=index, dtype=bool), detail)
            for n, detail in enumerate(details)]


# -- dates -------------------------------------------------------------------------------------


def _date(values: pd.Series, column: ColumnConfig):
    utc, problems = _utc_times(values, column)
    too_late = utc >= _AFTER_SALESFORCE  # NaT compares False
    if too_late.any():  # quarantined, never landed as a date the CRM refuses (or as year 10000)
        utc[too_late] = np.datetime64("NaT")
        problems = [*problems, (too_late, _TOO_LATE)]
    return pd.Series(utc, index=values.index).dt.tz_localize("UTC").astype(DATE_DTYPE), problems


def sfmc_system_times(values: pd.Series) -> np.ndarray:
    """SFMC date strings as SFMC compares them: naive system times (``datetime64[us]``), NaT where a
    value is empty or not a date. No Salesforce range rule (``12/31/9999`` stays a date): for counting
    rows the way SFMC's ``$filter`` does."""
    utc, _ = _utc_times(values.astype("string"), None)
    return utc - _SYSTEM_OFFSET


def utc_to_system_times(values: pd.Series) -> np.ndarray:
    """Typed (UTC) dates as naive SFMC system times (``datetime64[us]``, NaT kept): the inverse of typing."""
    return values.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy(dtype="datetime64[us]") - _SYSTEM_OFFSET


def _utc_times(values: pd.Series, column: ColumnConfig | None) -> tuple[np.ndarray, Problems]:
    """The values as naive UTC ``datetime64[us]`` (NaT where not a date), and the rows that are not dates."""
    array = _arrow(values)
    parsed = np.full(len(values), np.datetime64("NaT"), dtype="datetime64[us]")  # SFMC system time
    remaining = _present(values)
    for pattern, fmt in _FAST_DATES:
        if not remaining.any():
            break
        rows = np.flatnonzero(remaining)
        if len(rows) > len(array) // 2:  # most values still to parse: match them all, no copy
            rows, subset = np.arange(len(array)), array
            hit = _match(subset, pattern) & remaining
        else:
            subset = array.take(pa.array(rows))
            hit = _match(subset, pattern)
        if not hit.any():
            continue
        rows, texts = rows[hit], subset.filter(pa.array(hit))
        found = pc.strptime(texts, format=fmt, unit="us", error_is_null=True)
        ok = _as_mask(found.is_valid())
        # strptime rolls an impossible day over (2/30 -> 3/2, 4/31 -> 5/1): a day 29-31 that came
        # out as 1-3 did not exist, and is left to the exact parser.
        early = np.flatnonzero(_as_mask(pc.less_equal(pc.day(found), 3)))
        if len(early):
            ok[early[_match(texts.take(pa.array(early)), _LATE_DAY)]] = False
        parsed[rows[ok]] = found.filter(pa.array(ok)).to_numpy(zero_copy_only=False)
        remaining[rows[ok]] = False
    utc = parsed + _SYSTEM_OFFSET
    problems: Problems = []
    if remaining.any():
        exact, subset_problems = _date_exact(values[remaining], column)
        utc[remaining] = exact.dt.tz_localize(None).to_numpy(dtype="datetime64[us]")
        problems = _widen(subset_problems, remaining)
    return utc, problems


def _date_exact(values: pd.Series, column: ColumnConfig | None):
    parsed = pd.Series(pd.NaT, index=values.index, dtype="datetime64[us]")
    # pandas' strptime takes other scripts' digits ("1/15/２０２４"); SFMC writes ASCII.
    remaining = values.notna()
    candidates = _matches(values, _PRINTABLE_ASCII)
    # A format's "/" or "-" must be in the value: the others are not tried (nothing would parse).
    separated = {sep: values.str.contains(sep, regex=False).fillna(False).astype(bool) for sep in "/-"}
    for fmt in DATE_FORMATS:
        if not candidates.any():
            break
        tried = candidates & separated[fmt[2]]  # "%m/..." or "%Y-..."
        if not tried.any():
            continue
        attempt = pd.to_datetime(values[tried], format=fmt, errors="coerce")
        hit = attempt.notna()
        parsed.loc[hit[hit].index] = attempt[hit].astype("datetime64[us]")
        remaining.loc[hit[hit].index] = False
        candidates.loc[hit[hit].index] = False
    localized = parsed.dt.tz_localize(SFMC_SYSTEM_TZ).dt.tz_convert("UTC").astype(DATE_DTYPE)
    return localized, [(remaining, _DATE_EXPECTED)]


# -- booleans ----------------------------------------------------------------------------------


def _boolean(values: pd.Series, column: ColumnConfig):
    array = _arrow(values)
    lowered = pc.utf8_lower(_only(array, _match(array, _PRINTABLE_ASCII)))
    true = _as_mask(pc.is_in(lowered, value_set=pa.array(sorted(_TRUE), type=array.type)))
    false = _as_mask(pc.is_in(lowered, value_set=pa.array(sorted(_FALSE), type=array.type)))
    unknown = ~(true | false)
    result = pd.Series(pd.arrays.BooleanArray(true, unknown), index=values.index)
    return result, [(_present(values) & unknown, "not a boolean (expected True or False)")]


# -- helpers -----------------------------------------------------------------------------------


def _matches(values: pd.Series, pattern: str) -> pd.Series:
    """Boolean mask (False for nulls) of the values matching ``pattern``."""
    return values.str.match(pattern).fillna(False).astype(bool)


def _arrow(values: pd.Series) -> pa.Array:
    """A string Series as one contiguous arrow array of its own string type (no copy when it is
    already one arrow chunk)."""
    array = pa.array(values.astype("string").array)
    return array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array


def _match(array: pa.Array, pattern: str) -> np.ndarray:
    """Numpy mask (False for nulls) of the arrow strings matching ``pattern`` (RE2, ASCII classes)."""
    return _as_mask(pc.match_substring_regex(array, pattern))


def _only(array: pa.Array, mask: np.ndarray) -> pa.Array:
    """``array`` with the values outside ``mask`` nulled."""
    return pc.if_else(pa.array(mask), array, pa.scalar(None, type=array.type))


def _present(values: pd.Series) -> np.ndarray:
    return np.array(values.notna(), dtype=bool)  # a writable copy


def _as_mask(mask) -> np.ndarray:
    """A writable boolean numpy array (nulls as False) from an arrow, pandas or numpy mask."""
    if isinstance(mask, (pa.Array, pa.ChunkedArray)):
        return np.array(pc.fill_null(mask, False), dtype=bool)
    if isinstance(mask, pd.Series):
        return np.array(mask.fillna(False), dtype=bool)
    return np.array(mask, dtype=bool)


def _widen(problems: Problems, rows: np.ndarray) -> Problems:
    """Problems found on ``values[rows]`` as masks over all the values."""
    positions = np.flatnonzero(rows)
    widened = []
    for bad, detail in problems:
        full = np.zeros(len(rows), dtype=bool)
        full[positions] = _as_mask(bad)
        widened.append((full, detail))
    return widened


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
