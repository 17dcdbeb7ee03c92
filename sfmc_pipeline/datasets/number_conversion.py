"""Number and Decimal values (strings) -> Int64 and decimal128 columns, never wrapped or rounded.

ASCII digits only; a number beyond int64, or with more digits than the Decimal's precision/scale,
is a problem, not a rounded value. Strict shapes go through one arrow cast (the fast path); every
other value is decided by the exact logic (``*_exact``), value by value for a handful of values.
"""

from __future__ import annotations

import re

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from sfmc_pipeline.config.data_extensions import ColumnConfig
from sfmc_pipeline.datasets.value_arrays import (
    Problems,
    arrow_strings,
    match_mask,
    matches,
    only_where,
    present_mask,
    string_array,
    widen,
)

# ASCII only: Python's and RE2's ``\d`` also match other scripts' digits ("١٢٣", "１２３").
_NUMERIC = r"^[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)$"  # plain decimal notation
_WHOLE_NUMBER = r"^[+-]?(?:[0-9]+(?:\.0*)?|\.0+)$"  # including SFMC's "12.0" rendering
# sign, integer digits without leading zeros, fraction digits without trailing zeros
_NUMBER_PARTS = r"^(?P<sign>[+-]?)0*(?P<int>[0-9]*)(?:\.(?P<frac>[0-9]*?)0*)?$"
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1  # the range of a Number column (pandas Int64)

# At most 18 digits, no sign but "-", no leading zeros: always inside int64 (the fast path).
_FAST_WHOLE = r"^-?(?:0|[1-9][0-9]{0,17})$"
# The exact logic on a handful of values (a batch's odd ones) goes value by value: the same
# patterns and digit-string rules, without the fixed cost of a dozen column operations.
_FEW = 512
_NUMERIC_RE, _WHOLE_RE, _PARTS_RE = re.compile(_NUMERIC), re.compile(_WHOLE_NUMBER), re.compile(_NUMBER_PARTS)


def decimal_dtype(column: ColumnConfig) -> pd.ArrowDtype:
    """The pandas dtype of a Decimal column: arrow decimal128 of its precision and scale."""
    return pd.ArrowDtype(pa.decimal128(column.precision, column.scale))


def whole_numbers(values: pd.Series, column: ColumnConfig):
    array = string_array(values)
    fast = match_mask(array, _FAST_WHOLE)
    numbers = pc.cast(only_where(array, fast), pa.int64())
    rest = present_mask(values) & ~fast
    problems: Problems = []
    if rest.any():
        exact, subset_problems = _number_exact(values[rest], column)
        numbers = pc.replace_with_mask(numbers, pa.array(rest), pa.array(exact.array, type=pa.int64()))
        problems = widen(subset_problems, rest)
    return pd.Series(pd.Int64Dtype().__from_arrow__(numbers), index=values.index), problems


def _number_exact(values: pd.Series, column: ColumnConfig):
    if len(values) <= _FEW:
        return _number_exact_few(values, column)
    numeric = matches(values, _NUMERIC)
    whole = numeric & matches(values, _WHOLE_NUMBER)
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


def decimals(values: pd.Series, column: ColumnConfig):
    precision, scale = column.precision, column.scale
    array = string_array(values)
    # At most precision - scale integer digits (leading zeros included) and 1..scale fraction
    # digits: such a value fits, and arrow's string -> decimal128 cast is exact.
    whole = "0" if precision == scale else f"[0-9]{{1,{precision - scale}}}"
    fraction = f"(?:\\.[0-9]{{1,{scale}}})?" if scale else ""
    fast = match_mask(array, f"^-?{whole}{fraction}$")
    decimals = pc.cast(only_where(array, fast), pa.decimal128(precision, scale))
    rest = present_mask(values) & ~fast
    problems: Problems = []
    if rest.any():
        exact, subset_problems = _decimal_exact(values[rest], column)
        decimals = pc.replace_with_mask(decimals, pa.array(rest), pa.array(exact.array))
        problems = widen(subset_problems, rest)
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
    numeric = matches(values, _NUMERIC)
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
    return pd.Series(decimals, index=values.index, dtype=decimal_dtype(column)), [
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
    return pd.Series(decimals, index=values.index, dtype=decimal_dtype(column)), _few_problems(kinds, values.index, [
        f"not a number (expected a decimal with {limits})",
        f"outside the range of a Decimal({precision},{scale}) column ({limits})",
        f"more precise than a Decimal({precision},{scale}) column holds ({limits}; values are never rounded)",
    ])


def _few_problems(kinds: list, index: pd.Index, details: list[str]) -> Problems:
    return [(pd.Series([kind == n for kind in kinds], index=index, dtype=bool), detail)
            for n, detail in enumerate(details)]
