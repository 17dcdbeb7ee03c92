"""Type and validate a raw Data Extension extract; split it into valid rows and a quarantine.

Invariant: every input row ends up in exactly one of ``valid`` and ``quarantine``.
A quarantined row keeps its original (raw string) values plus the reasons in plain words.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import pandas as pd
import pandera.pandas as pa

from sfmc_pipeline.config.models import DataExtensionConfig
from sfmc_pipeline.datasets.conversion import ISSUE_COLUMNS, convert_frame, empty_issues
from sfmc_pipeline.datasets.schemas import build_schema, describe_failure, failure_kind



@dataclass(frozen=True)
class ValidationResult:
    valid: pd.DataFrame  # typed, valid rows in source order, fresh RangeIndex
    quarantine: pd.DataFrame  # raw values of the configured columns + _row_number, _reasons, _checks, _columns
    issues: pd.DataFrame  # ISSUE_COLUMNS, one row per failed check of a row
    rows_read: int

    @property
    def rows_valid(self) -> int:
        return len(self.valid)

    @property
    def rows_quarantined(self) -> int:
        return len(self.quarantine)

    @property
    def quarantined_share(self) -> float:
        return self.rows_quarantined / self.rows_read if self.rows_read else 0.0

    def top_reasons(self, limit: int = 5) -> list[tuple[str, int]]:
        """The most frequent problems, counted in rows: ``[("Email: not a valid email address", 3), ...]``."""
        per_row = self.issues.drop_duplicates(["row", "summary"])
        return Counter(per_row["summary"]).most_common(limit)


def validate_extract(raw: pd.DataFrame, extension: DataExtensionConfig) -> ValidationResult:
    """``raw`` holds string values under the configured column names, one row per source row."""
    raw = raw.reset_index(drop=True)
    converted = convert_frame(raw, extension)
    schema_issues = _schema_issues(converted.frame, raw, extension)
    if len(converted.issues):
        # A value that did not convert is already reported; skip the knock-on "required" failure.
        flagged = set(zip(converted.issues["row"], converted.issues["column"]))
        keep = [
            (row, col) not in flagged or check != "required"
            for row, col, check in zip(schema_issues["row"], schema_issues["column"], schema_issues["check"])
        ]
        schema_issues = schema_issues[keep]
    issues = pd.concat([converted.issues, schema_issues], ignore_index=True)
    bad_rows = pd.Index(sorted(set(issues["row"].astype("int64"))), dtype="int64")

    valid = converted.frame.drop(index=bad_rows).reset_index(drop=True)
    quarantine = _quarantine_frame(raw, extension, issues, bad_rows)
    return ValidationResult(valid=valid, quarantine=quarantine, issues=issues, rows_read=len(raw))


def _schema_issues(frame: pd.DataFrame, raw: pd.DataFrame, extension: DataExtensionConfig) -> pd.DataFrame:
    try:
        build_schema(extension).validate(frame, lazy=True)
    except pa.errors.SchemaErrors as exc:
        cases = exc.failure_cases
    else:
        return empty_issues()
    if cases["index"].isna().any():
        # A failure that is not about a row (a missing column or a wrong dtype) is a bug in the
        # conversion step, not bad data: do not quarantine rows for it.
        broken = cases[cases["index"].isna()][["column", "check"]].drop_duplicates()
        raise RuntimeError(f"{extension.key}: dataset-level schema failure {broken.to_dict('records')}")
    records = []
    for context, column, check, number, value, row in cases[
        ["schema_context", "column", "check", "check_number", "failure_case", "index"]
    ].itertuples(index=False):
        kind = failure_kind(extension, context, column, check, number)
        if context == "Column" and kind != "required" and column in raw:
            value = _as_served(raw.at[int(row), column], value)
        reason, summary = describe_failure(extension, kind, column, number, value)
        if kind == "primary_key":  # reported once per row, not once per key column
            column = ",".join(extension.primary_key)
        elif kind == "row_check":
            check_config = extension.row_checks[int(number)]
            column = f"{check_config.column},{check_config.other_column}"
        records.append((int(row), column, kind, reason, summary))
    issues = pd.DataFrame.from_records(records, columns=ISSUE_COLUMNS)
    return issues.drop_duplicates(["row", "check", "reason"], ignore_index=True)


def _as_served(raw_value, typed_value):
    """The value a reason quotes: the source's string (stripped, as converted), not its typed form
    (``'-03'``, not ``-3``; the 15-character Id, not its 18-character form)."""
    if isinstance(raw_value, str) and raw_value.strip():
        return raw_value.strip()
    return typed_value


def _quarantine_frame(
    raw: pd.DataFrame, extension: DataExtensionConfig, issues: pd.DataFrame, bad_rows: pd.Index
) -> pd.DataFrame:
    names = [c.name for c in extension.columns]
    out = pd.DataFrame(
        {name: (raw[name] if name in raw else pd.Series("", index=raw.index)) for name in names}
    ).loc[bad_rows]
    out = out.astype("string")
    grouped = issues.groupby("row")
    out["_row_number"] = (bad_rows + 1).astype("int64")
    out["_reasons"] = grouped["reason"].agg("; ".join).reindex(bad_rows).astype("string").to_numpy()
    out["_checks"] = grouped["check"].agg(lambda s: ",".join(dict.fromkeys(s))).reindex(bad_rows).astype("string").to_numpy()
    out["_columns"] = grouped["column"].agg(lambda s: ",".join(dict.fromkeys(",".join(s).split(",")))).reindex(bad_rows).astype("string").to_numpy()
    return out.reset_index(drop=True)
