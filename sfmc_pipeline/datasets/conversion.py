"""Raw SFMC values (every value a string) -> typed pandas columns, and the issues of those that fail.

SFMC serves ``""`` for null, ``"True"``/``"False"``, ``"1"``, and dates in system time; values are
stripped of surrounding spaces first. A value that does not parse becomes null in the typed frame
and yields an issue naming the row, the column and the reason in plain words, so the row is
quarantined rather than silently nulled. The per-type rules are in ``number_conversion.py`` and
``date_conversion.py``; text (a ``salesforce_id`` becomes its 18-character form) and booleans here.
"""

from __future__ import annotations

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
from sfmc_pipeline.datasets.date_conversion import dates
from sfmc_pipeline.datasets.number_conversion import (
    decimal_dtype,
    decimals,
    whole_numbers,
)
from sfmc_pipeline.datasets.value_arrays import (
    PRINTABLE_ASCII,
    Problems,
    as_mask,
    match_mask,
    only_where,
    present_mask,
    string_array,
)
from sfmc_pipeline.salesforce.ids import to_18_series

_TRUE = {"true", "1", "yes", "y"}
_FALSE = {"false", "0", "no", "n"}


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
        return decimal_dtype(column)
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
        bad = as_mask(bad) & present
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
    trimmed = pc.utf8_trim_whitespace(string_array(values))
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


def _boolean(values: pd.Series, column: ColumnConfig):
    array = string_array(values)
    lowered = pc.utf8_lower(only_where(array, match_mask(array, PRINTABLE_ASCII)))
    true = as_mask(pc.is_in(lowered, value_set=pa.array(sorted(_TRUE), type=array.type)))
    false = as_mask(pc.is_in(lowered, value_set=pa.array(sorted(_FALSE), type=array.type)))
    unknown = ~(true | false)
    result = pd.Series(pd.arrays.BooleanArray(true, unknown), index=values.index)
    return result, [(present_mask(values) & unknown, "not a boolean (expected True or False)")]


_CONVERTERS: dict[SfmcType, Callable[[pd.Series, ColumnConfig], tuple[pd.Series, Problems]]] = {
    SfmcType.TEXT: _text,
    SfmcType.EMAIL_ADDRESS: _text,
    SfmcType.PHONE: _text,
    SfmcType.LOCALE: _text,
    SfmcType.NUMBER: whole_numbers,
    SfmcType.DECIMAL: decimals,
    SfmcType.DATE: dates,
    SfmcType.BOOLEAN: _boolean,
}
