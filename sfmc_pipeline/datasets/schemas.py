"""One pandera schema per Data Extension, generated from its config (the single source of truth).

Every check carries a ``name`` ``<kind>`` and an ``error`` in plain words, which
``chunked_validation.py`` turns into quarantine reasons. The same config also yields the Dagster
``TableSchema`` shown in the UI.
"""

from __future__ import annotations

from typing import Mapping

import dagster as dg
import pandas as pd
import pandera.pandas as pa

from sfmc_pipeline.config.data_extensions import (
    ColumnConfig,
    DataExtensionConfig,
    RowCheck,
    SfmcType,
)
from sfmc_pipeline.config.governance import LabelConfig
from sfmc_pipeline.datasets.conversion import pandas_dtype
from sfmc_pipeline.salesforce.ids import valid_id_mask

# A pragmatic address check: one @, no spaces, a dot in the domain, no empty labels.
EMAIL_PATTERN = r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$"

_ROW_OPS = {
    "lt": lambda a, b: a < b,
    "lte": lambda a, b: a <= b,
    "gt": lambda a, b: a > b,
    "gte": lambda a, b: a >= b,
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
}


def build_schema(extension: DataExtensionConfig) -> pa.DataFrameSchema:
    """The whole contract of a dataset: column types, nullability, column checks, row checks and
    primary-key uniqueness. ``chunked_validation.py`` evaluates the same checks batch by batch
    (``column_checks``, ``row_checks``) and the key on the keys alone, and validates the valid rows
    against ``contract_schema``."""
    columns = {col.name: _column_schema(col) for col in extension.columns}
    return pa.DataFrameSchema(
        columns,
        checks=row_checks(extension),
        unique=list(extension.primary_key) or None,
        report_duplicates="all",
        strict=False,
        coerce=False,
        name=extension.asset,
    )


def contract_schema(extension: DataExtensionConfig) -> pa.DataFrameSchema:
    """The columns of the dataset, their dtypes and nullability, without the value checks: what the
    valid rows are validated against once every check has passed (cheap on a large frame)."""
    return pa.DataFrameSchema(
        {col.name: pa.Column(pandas_dtype(col), nullable=col.nullable, required=True) for col in extension.columns},
        strict=False,
        coerce=False,
        name=extension.asset,
    )


def row_checks(extension: DataExtensionConfig) -> list[pa.Check]:
    """The dataframe-level checks (``row_checks`` of the config), in config order."""
    return [_row_check(check) for check in extension.row_checks]


def column_checks(col: ColumnConfig) -> list[tuple[str, pa.Check]]:
    """``(kind, check)`` pairs for a column, in the order pandera numbers them (``check_number``)."""
    checks: list[tuple[str, pa.Check]] = []
    if col.length is not None:
        checks.append(("length", pa.Check.str_length(max_value=col.length)))
    if col.allowed_values is not None:
        checks.append(("allowed_values", pa.Check.isin(col.allowed_values)))
    if col.min is not None:
        checks.append(("min", pa.Check.ge(_bound(col, col.min))))
    if col.max is not None:
        checks.append(("max", pa.Check.le(_bound(col, col.max))))
    if col.type is SfmcType.EMAIL_ADDRESS:
        checks.append(("email_format", pa.Check.str_matches(EMAIL_PATTERN)))
    if col.format == "salesforce_id":
        checks.append(("salesforce_id", pa.Check(valid_id_mask, name="salesforce_id")))
    return checks


def _column_schema(col: ColumnConfig) -> pa.Column:
    return pa.Column(
        pandas_dtype(col),
        checks=[check for _, check in column_checks(col)],
        nullable=col.nullable,
        required=True,
        description=col.description or None,
        title=col.name,
    )


def _row_check(check: RowCheck) -> pa.Check:
    op = _ROW_OPS[check.op]

    def holds(frame: pd.DataFrame) -> pd.Series:
        left, right = frame[check.column], frame[check.other_column]
        # A comparison with a null on either side is not a failure (nullability is checked per column).
        return op(left, right).fillna(True).astype(bool) | left.isna() | right.isna()

    return pa.Check(holds, name=f"row_check_{check.column}_{check.op}_{check.other_column}")


def failure_kind(extension: DataExtensionConfig, context: str, column: str | None, check: str, number) -> str:
    """A short machine-readable name for a pandera failure case, e.g. ``min`` or ``primary_key``."""
    if check in ("field_uniqueness", "multiple_fields_uniqueness"):
        return "primary_key"
    if check == "not_nullable":
        return "required"
    if context == "DataFrameSchema" and number is not None:
        return "row_check"
    if context == "Column" and number is not None:
        return column_checks(extension.column(column))[int(number)][0]
    return check


def describe_failure(
    extension: DataExtensionConfig, kind: str, column: str | None, number, value
) -> tuple[str, str]:
    """A pandera failure case in plain words: ``(reason with the value, summary without it)``,
    e.g. ``("Email: 'x@' is not a valid email address", "Email: not a valid email address")``."""
    if kind == "primary_key":
        text = f"duplicate primary key ({', '.join(extension.primary_key)}): another row has the same key"
        return text, text
    if kind == "row_check":
        text = f"breaks the rule {extension.row_checks[int(number)].describe()}"
        return text, text
    col = extension.column(column)
    if kind == "required":
        text = f"{col.name}: required value is missing"
        return text, text
    words = {
        "length": lambda: f"longer than {col.length} characters",
        "allowed_values": lambda: "not one of: " + ", ".join(col.allowed_values or []),
        "min": lambda: f"less than {_fmt(col.min)}",
        "max": lambda: f"greater than {_fmt(col.max)}",
        "email_format": lambda: "not a valid email address",
        "salesforce_id": lambda: "not a Salesforce Id (15 characters, or 18 with a correct case-safe suffix)",
    }
    detail = words[kind]() if kind in words else f"failing the check {kind}"
    return f"{col.name}: {str(value)!r} is {detail}", f"{col.name}: {detail}"


def _bound(col: ColumnConfig, value: float):
    if col.type is SfmcType.NUMBER:
        return int(value) if float(value).is_integer() else value
    return value


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def table_schema(extension: DataExtensionConfig, labels: Mapping[str, LabelConfig] | None = None) -> dg.TableSchema:
    """The Dagster column schema of the dataset (shown in the UI's asset page): each column's
    data-usage labels as its tags, and their meaning in its description (``labels``: the declared
    vocabulary, ``governance > labels``)."""
    pk = set(extension.primary_key)
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                name=col.name,
                type=_type_label(col),
                description=_described(col, labels or {}),
                constraints=dg.TableColumnConstraints(
                    nullable=col.nullable,
                    unique=pk == {col.name},
                    other=_constraint_labels(col),
                ),
                tags={label: "" for label in col.labels} or None,
            )
            for col in extension.columns
        ]
    )


def _described(col: ColumnConfig, labels: Mapping[str, LabelConfig]) -> str | None:
    if not col.labels:
        return col.description or None
    meaning = "; ".join(f"{label}: {labels[label].description}" if label in labels else label for label in col.labels)
    return f"{col.description} (labels: {meaning})" if col.description else f"Labels: {meaning}"


def _type_label(col: ColumnConfig) -> str:
    if col.type is SfmcType.DECIMAL:
        return f"Decimal({col.precision},{col.scale})"
    if col.length is not None:
        return f"{col.type.value}({col.length})"
    return col.type.value


def _constraint_labels(col: ColumnConfig) -> list[str]:
    labels = []
    if col.allowed_values:
        labels.append("one of " + ", ".join(col.allowed_values))
    if col.min is not None:
        labels.append(f">= {_fmt(col.min)}")
    if col.max is not None:
        labels.append(f"<= {_fmt(col.max)}")
    if col.format:
        labels.append(col.format)
    return labels
