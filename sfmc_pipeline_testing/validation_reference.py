"""The previous validation implementation, kept as the reference the vectorised, page-by-page one is
checked against (test_chunked_validation.py) and measured against (scripts/benchmark_validate.py):
conversion.py / validation.py / schemas.py as they were before they were vectorised and chunked.
``reference_validate(raw, extension)`` gives the valid rows, the quarantine and the issues of a whole
extract. Its Salesforce Id rules are a parameter (``IdRules``): the tests apply them one value at a
time (``PER_VALUE_IDS``, independent of the code under test); the benchmark passes the vectorised
ones the previous implementation had, so its baseline is that implementation's speed."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
import pandera.pandas as pa
import pyarrow as arrow
import pyarrow.compute as pc

from sfmc_pipeline.config.data_extensions import (
    ColumnConfig,
    DataExtensionConfig,
    SfmcType,
)
from sfmc_pipeline.datasets.conversion import pandas_dtype
from sfmc_pipeline.datasets.schemas import EMAIL_PATTERN, describe_failure
from sfmc_pipeline.salesforce.ids import is_valid_id, to_18

# ==============================================================================================
# The reference: the previous implementation (conversion.py / validation.py / schemas.py before
# they were vectorised and chunked), Salesforce Ids checked and converted one value at a time.
# ==============================================================================================

REF_SYSTEM_TZ = "Etc/GMT+6"
REF_DATE_FORMATS = ("%m/%d/%Y %I:%M:%S %p", "%m/%d/%Y", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d")
REF_TRUE, REF_FALSE = {"true", "1", "yes", "y"}, {"false", "0", "no", "n"}
REF_NUMERIC = r"^[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)$"
REF_WHOLE = r"^[+-]?(?:[0-9]+(?:\.0*)?|\.0+)$"
REF_PARTS = r"^(?P<sign>[+-]?)0*(?P<int>[0-9]*)(?:\.(?P<frac>[0-9]*?)0*)?$"
REF_ASCII = r"^[ -~]+$"
REF_ID15 = re.compile(r"^[A-Za-z0-9]{15}$")
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
ISSUE_COLUMNS = ["row", "column", "check", "reason", "summary"]


def ref_empty_issues() -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series(dtype="int64" if name == "row" else "object") for name in ISSUE_COLUMNS})


def ref_clean(values: pd.Series) -> pd.Series:
    text = values.astype("string").str.strip()
    return text.mask(text == "")


def ref_arrow(values: pd.Series) -> arrow.Array:
    array = arrow.array(values.astype("string").array, type=arrow.string())
    return array.combine_chunks() if isinstance(array, arrow.ChunkedArray) else array


def ref_matches(values: pd.Series, pattern: str) -> pd.Series:
    return values.str.match(pattern).fillna(False).astype(bool)


def ref_parts(values: pd.Series) -> pd.DataFrame:
    parts = pc.extract_regex(ref_arrow(values), REF_PARTS)
    return pd.DataFrame({
        name: pd.Series(pd.arrays.ArrowStringArray(pc.fill_null(pc.struct_field(parts, name), "")), index=values.index)
        for name in ("sign", "int", "frac")
    })


@dataclass(frozen=True)
class IdRules:
    """How the reference treats a ``salesforce_id`` column: ``to_18`` gives the text with each
    15-character Id in its 18-character form, ``valid`` the mask of values that are valid Ids."""

    to_18: Callable[[pd.Series], pd.Series]
    valid: Callable[[pd.Series], pd.Series]


def _to_18_per_value(text: pd.Series) -> pd.Series:
    return pd.Series([to_18(v) if isinstance(v, str) and REF_ID15.fullmatch(v) else v for v in text],
                     index=text.index, dtype="string")


PER_VALUE_IDS = IdRules(to_18=_to_18_per_value, valid=lambda s: s.map(is_valid_id).astype(bool))


def ref_text(values, column, ids: IdRules = PER_VALUE_IDS):
    text = values.astype(pd.StringDtype())
    if column.format == "salesforce_id":
        text = ids.to_18(text)
    return text, []


def ref_number(values, column):
    numeric = ref_matches(values, REF_NUMERIC)
    whole = numeric & ref_matches(values, REF_WHOLE)
    parts = ref_parts(values.where(whole))
    digits = parts["int"].mask(parts["int"] == "", "0")
    negative = (parts["sign"] == "-") & (digits != "0")
    length = digits.str.len()
    limit = pd.Series(str(INT64_MAX), index=values.index, dtype="string").mask(negative, str(INT64_MIN)[1:])
    fits = whole & ((length < 19) | ((length == 19) & (digits <= limit).fillna(False).astype(bool)))
    text = ("-" + digits).where(negative, digits).where(fits)
    numbers = pd.Int64Dtype().__from_arrow__(pc.cast(ref_arrow(text), arrow.int64()))
    return pd.Series(numbers, index=values.index), [
        (~numeric, "not a number (expected a whole number)"),
        (numeric & ~whole, "not a whole number"),
        (whole & ~fits, f"outside the range of a whole-number column ({INT64_MIN} to {INT64_MAX})"),
    ]


def ref_decimal(values, column):
    precision, scale = column.precision, column.scale
    numeric = ref_matches(values, REF_NUMERIC)
    parts = ref_parts(values.where(numeric))
    int_fits = parts["int"].str.len() <= precision - scale
    frac_fits = parts["frac"].str.len() <= scale
    fits = numeric & int_fits & frac_fits
    digits = parts["int"].mask(parts["int"] == "", "0")
    text = digits.where(parts["frac"] == "", digits + "." + parts["frac"])
    text = ("-" + text).where(parts["sign"] == "-", text).where(fits)
    decimals = pc.cast(ref_arrow(text), arrow.decimal128(precision, scale))
    limits = f"at most {precision - scale} digits before and {scale} after the point"
    return pd.Series(decimals, index=values.index, dtype=pandas_dtype(column)), [
        (~numeric, f"not a number (expected a decimal with {limits})"),
        (numeric & ~int_fits, f"outside the range of a Decimal({precision},{scale}) column ({limits})"),
        (numeric & int_fits & ~frac_fits,
         f"more precise than a Decimal({precision},{scale}) column holds ({limits}; values are never rounded)"),
    ]


def ref_date(values, column):
    parsed = pd.Series(pd.NaT, index=values.index, dtype="datetime64[us]")
    remaining = values.notna()
    candidates = ref_matches(values, REF_ASCII)
    for fmt in REF_DATE_FORMATS:
        if not candidates.any():
            break
        attempt = pd.to_datetime(values[candidates], format=fmt, errors="coerce")
        hit = attempt.notna()
        parsed.loc[hit[hit].index] = attempt[hit].astype("datetime64[us]")
        remaining.loc[hit[hit].index] = False
        candidates.loc[hit[hit].index] = False
    localized = parsed.dt.tz_localize(REF_SYSTEM_TZ).dt.tz_convert("UTC").astype("datetime64[us, UTC]")
    # Added with Salesforce's date rule (salesforce/dates.py): a UTC day after 4000-12-31 is refused.
    naive = localized.dt.tz_localize(None).to_numpy(dtype="datetime64[us]")
    too_late = pd.Series(naive >= np.datetime64("4001-01-01T00:00:00"), index=values.index, dtype=bool)
    localized = localized.mask(too_late)
    return localized, [(remaining, "not a date (expected M/D/YYYY h:mm:ss AM/PM or YYYY-MM-DD)"),
                       (too_late, "after 4000-12-31 (UTC), the latest date Salesforce accepts")]


def ref_boolean(values, column):
    lowered = values.where(ref_matches(values, REF_ASCII)).str.lower()
    result = pd.Series(pd.NA, index=values.index, dtype=pd.BooleanDtype())
    result[lowered.isin(REF_TRUE).fillna(False).astype(bool)] = True
    result[lowered.isin(REF_FALSE).fillna(False).astype(bool)] = False
    return result, [(values.notna() & result.isna(), "not a boolean (expected True or False)")]


REF_CONVERTERS = {
    SfmcType.TEXT: ref_text, SfmcType.EMAIL_ADDRESS: ref_text, SfmcType.PHONE: ref_text, SfmcType.LOCALE: ref_text,
    SfmcType.NUMBER: ref_number, SfmcType.DECIMAL: ref_decimal, SfmcType.DATE: ref_date, SfmcType.BOOLEAN: ref_boolean,
}


@dataclass(frozen=True)
class ReferenceConverted:
    frame: pd.DataFrame
    issues: pd.DataFrame


def reference_convert_frame(raw: pd.DataFrame, extension: DataExtensionConfig,
                            ids: IdRules = PER_VALUE_IDS) -> ReferenceConverted:
    typed, issues = {}, []
    for column in extension.columns:
        values = (ref_clean(raw[column.name]) if column.name in raw
                  else pd.Series(pd.NA, index=raw.index, dtype="string"))
        convert = REF_CONVERTERS[column.type]
        series, problems = convert(values, column, ids) if convert is ref_text else convert(values, column)
        typed[column.name] = series
        found = []
        for bad, detail in problems:
            bad = bad.fillna(False).astype(bool) & values.notna()
            if bad.any():
                shown = values[bad]
                found.append(pd.DataFrame({
                    "row": shown.index, "column": column.name, "check": f"type:{column.type.value}",
                    "reason": [f"{column.name}: {v!r} is {detail}" for v in shown],
                    "summary": f"{column.name}: {detail}",
                }))
        if found:
            issues.append(pd.concat(found).sort_values("row", kind="stable"))
    return ReferenceConverted(pd.DataFrame(typed, index=raw.index),
                              pd.concat(issues, ignore_index=True) if issues else ref_empty_issues())


def ref_column_checks(col: ColumnConfig, ids: IdRules = PER_VALUE_IDS) -> list[tuple[str, pa.Check]]:
    checks = []
    if col.length is not None:
        checks.append(("length", pa.Check.str_length(max_value=col.length)))
    if col.allowed_values is not None:
        checks.append(("allowed_values", pa.Check.isin(col.allowed_values)))
    if col.min is not None:
        checks.append(("min", pa.Check.ge(int(col.min) if col.type is SfmcType.NUMBER and float(col.min).is_integer()
                                          else col.min)))
    if col.max is not None:
        checks.append(("max", pa.Check.le(int(col.max) if col.type is SfmcType.NUMBER and float(col.max).is_integer()
                                          else col.max)))
    if col.type is SfmcType.EMAIL_ADDRESS:
        checks.append(("email_format", pa.Check.str_matches(EMAIL_PATTERN)))
    if col.format == "salesforce_id":
        checks.append(("salesforce_id", pa.Check(ids.valid, name="salesforce_id")))
    return checks


def ref_schema(extension: DataExtensionConfig, ids: IdRules = PER_VALUE_IDS) -> pa.DataFrameSchema:
    ops = {"lt": "__lt__", "lte": "__le__", "gt": "__gt__", "gte": "__ge__", "eq": "__eq__", "ne": "__ne__"}

    def row_check(check):
        def holds(frame):
            left, right = frame[check.column], frame[check.other_column]
            return getattr(left, ops[check.op])(right).fillna(True).astype(bool) | left.isna() | right.isna()
        return pa.Check(holds, name=f"row_check_{check.column}_{check.op}_{check.other_column}")

    return pa.DataFrameSchema(
        {col.name: pa.Column(pandas_dtype(col), checks=[c for _, c in ref_column_checks(col, ids)], nullable=col.nullable,
                             required=True) for col in extension.columns},
        checks=[row_check(c) for c in extension.row_checks],
        unique=list(extension.primary_key) or None, report_duplicates="all", strict=False, coerce=False,
    )


def ref_kind(extension, context, column, check, number) -> str:
    if check in ("field_uniqueness", "multiple_fields_uniqueness"):
        return "primary_key"
    if check == "not_nullable":
        return "required"
    if context == "DataFrameSchema" and number is not None:
        return "row_check"
    if context == "Column" and number is not None:
        return ref_column_checks(extension.column(column))[int(number)][0]
    return check


def ref_as_served(raw_value, typed_value):
    if isinstance(raw_value, str) and raw_value.strip():
        return raw_value.strip()
    return typed_value


def ref_schema_issues(frame, raw, extension, ids: IdRules = PER_VALUE_IDS) -> pd.DataFrame:
    try:
        ref_schema(extension, ids).validate(frame, lazy=True)
    except pa.errors.SchemaErrors as exc:
        cases = exc.failure_cases
    else:
        return ref_empty_issues()
    assert not cases["index"].isna().any(), cases[cases["index"].isna()]
    records = []
    for context, column, check, number, value, row in cases[
        ["schema_context", "column", "check", "check_number", "failure_case", "index"]
    ].itertuples(index=False):
        kind = ref_kind(extension, context, column, check, number)
        if context == "Column" and kind != "required" and column in raw:
            value = ref_as_served(raw.at[int(row), column], value)
        reason, summary = describe_failure(extension, kind, column, number, value)
        if kind == "primary_key":
            column = ",".join(extension.primary_key)
        elif kind == "row_check":
            config = extension.row_checks[int(number)]
            column = f"{config.column},{config.other_column}"
        records.append((int(row), column, kind, reason, summary))
    issues = pd.DataFrame.from_records(records, columns=ISSUE_COLUMNS)
    return issues.drop_duplicates(["row", "check", "reason"], ignore_index=True)


@dataclass(frozen=True)
class ReferenceResult:
    valid: pd.DataFrame
    quarantine: pd.DataFrame
    issues: pd.DataFrame
    rows_read: int

    def top_reasons(self, limit=5):
        return Counter(self.issues.drop_duplicates(["row", "summary"])["summary"]).most_common(limit)


def reference_validate(raw: pd.DataFrame, extension: DataExtensionConfig,
                       ids: IdRules = PER_VALUE_IDS) -> ReferenceResult:
    raw = raw.reset_index(drop=True)
    converted = reference_convert_frame(raw, extension, ids)
    schema_issues = ref_schema_issues(converted.frame, raw, extension, ids)
    if len(converted.issues):
        flagged = set(zip(converted.issues["row"], converted.issues["column"]))
        keep = [(row, col) not in flagged or check != "required"
                for row, col, check in zip(schema_issues["row"], schema_issues["column"], schema_issues["check"])]
        schema_issues = schema_issues[keep]
    issues = pd.concat([converted.issues, schema_issues], ignore_index=True)
    bad_rows = pd.Index(sorted(set(issues["row"].astype("int64"))), dtype="int64")
    valid = converted.frame.drop(index=bad_rows).reset_index(drop=True)
    names = [c.name for c in extension.columns]
    out = pd.DataFrame({name: (raw[name] if name in raw else pd.Series("", index=raw.index)) for name in names}
                       ).loc[bad_rows].astype("string")
    grouped = issues.groupby("row")
    out["_row_number"] = (bad_rows + 1).astype("int64")
    out["_reasons"] = grouped["reason"].agg("; ".join).reindex(bad_rows).astype("string").to_numpy()
    out["_checks"] = grouped["check"].agg(lambda s: ",".join(dict.fromkeys(s))).reindex(bad_rows).astype("string").to_numpy()
    out["_columns"] = grouped["column"].agg(
        lambda s: ",".join(dict.fromkeys(",".join(s).split(",")))).reindex(bad_rows).astype("string").to_numpy()
    return ReferenceResult(valid, out.reset_index(drop=True), issues, len(raw))
