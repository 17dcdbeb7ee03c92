"""The rules Salesforce applies to Contact and Lead records, in one place: used by the sink (preflight,
client-side checks, value formatting) and by the local target, which behaves like a small org.

Standard fields and required ones; the record rules (``VALUE_RULES``: required, length, email; and the
Id's format), each with a scalar and a column form; which SFMC column types a field type accepts and
how a value is written for it; what a per-record failure means for the next run (``failure_kind``).
Dates after 4000-12-31 are refused upstream (``salesforce/dates.py``), so they never reach the sink.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from sfmc_pipeline.config.data_extensions import ColumnConfig, SfmcType
from sfmc_pipeline.datasets.schemas import EMAIL_PATTERN
from sfmc_pipeline.salesforce.ids import KEY_PREFIXES, is_valid_id, valid_id_mask
from sfmc_pipeline.salesforce.records import FieldInfo, RecordError

EMAIL = re.compile(EMAIL_PATTERN)
REQUIRED_FIELDS = {"Contact": ("LastName",), "Lead": ("LastName", "Company")}


@dataclass(frozen=True)
class StandardField:
    name: str
    label: str
    type: str
    length: int
    required: bool = False
    extra_type_info: str | None = None


STANDARD_FIELDS = {
    "Contact": (
        StandardField("FirstName", "First Name", "string", 40, extra_type_info="personname"),
        StandardField("LastName", "Last Name", "string", 80, required=True, extra_type_info="personname"),
        StandardField("Email", "Email", "email", 80),
    ),
    "Lead": (
        StandardField("FirstName", "First Name", "string", 40, extra_type_info="personname"),
        StandardField("LastName", "Last Name", "string", 80, required=True, extra_type_info="personname"),
        StandardField("Company", "Company", "string", 255, required=True),
        StandardField("Email", "Email", "email", 80),
    ),
}

TEXT_FIELD_TYPES = frozenset(
    {"string", "textarea", "email", "phone", "url", "picklist", "multipicklist", "combobox", "encryptedstring",
     "reference"}
)
NUMBER_FIELD_TYPES = frozenset({"int", "double", "currency", "percent"})


# ---------------------------------------------------------------------------- record rules
#
# The rules a record's Id and values must meet, in ONE table (``VALUE_RULES``, applied per field in this order),
# each with a scalar form that judges one value and words Salesforce's error, and a column form over a pyarrow
# string column that screens: it flags every value the scalar form rejects and may flag more (RE2's ``$`` does
# not match before a final newline as Python's does), so a screened value is then judged by the scalar form.

WHITESPACE = "".join(chr(c) for c in range(0x110000) if chr(c).isspace())  # what ``str.strip()`` removes
_ONLY_WHITESPACE = "^[" + "".join(f"\\x{{{ord(c):x}}}" for c in WHITESPACE) + "]*$"  # RE2


def malformed_id(sobject: str, record_id: Any) -> RecordError | None:
    """``MALFORMED_ID`` unless ``record_id`` is a well-formed Id of ``sobject``."""
    if isinstance(record_id, str) and is_valid_id(record_id) and record_id.startswith(KEY_PREFIXES[sobject]):
        return None
    return RecordError("MALFORMED_ID", f"{sobject} ID: id value of incorrect type: {record_id}", ("Id",))


def malformed_id_column(sobject: str, ids: list[str]) -> np.ndarray:
    """The column form of ``malformed_id``: True where an Id may be malformed."""
    frame = pd.Series(ids, dtype="str")
    good = valid_id_mask(frame).to_numpy(dtype=bool) & frame.str.startswith(KEY_PREFIXES[sobject]).to_numpy(
        dtype=bool, na_value=False)
    return ~good


def too_long(field: FieldInfo, value: Any) -> bool:
    """Text longer than a text field holds (``STRING_TOO_LONG``)."""
    return isinstance(value, str) and _has_length(field) and len(value) > field.length


def truncated(value: Any, field: FieldInfo) -> Any:
    """``value`` cut to the field's length when it is too long, for destinations that opt in."""
    return value[: field.length] if too_long(field, value) else value


def blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip() == "")


def missing_required(names: list[str]) -> RecordError:
    return RecordError("REQUIRED_FIELD_MISSING", f"Required fields are missing: [{', '.join(names)}]", tuple(names))


def _has_length(field: FieldInfo | None) -> bool:
    return field is not None and field.type in TEXT_FIELD_TYPES and bool(field.length)


def _is_email(field: FieldInfo | None) -> bool:
    return field is not None and field.type == "email"


def _bools(array: pa.Array) -> np.ndarray:
    return array.to_numpy(zero_copy_only=False).astype(bool)


def _too_long_error(name: str, field: FieldInfo, value: str) -> RecordError:
    shown = value if len(value) <= 255 else value[:252] + "..."
    return RecordError("STRING_TOO_LONG", f"{field.label}: data value too large: {shown} (max length={field.length})",
                       (field.name,))


@dataclass(frozen=True)
class ValueRule:
    """One rule for a value written to a field (``name``; ``field`` its describe, None when unknown).
    ``applies``: whether it judges this field at all (``required``: the object's required fields, lower
    case); ``breaks``: the scalar form; ``may_break``: the column form; ``error``: Salesforce's error."""

    code: str
    applies: Callable[[str, FieldInfo | None, frozenset[str]], bool]
    breaks: Callable[[FieldInfo | None, Any], bool]
    may_break: Callable[[FieldInfo | None, pa.Array], np.ndarray]
    error: Callable[[str, FieldInfo | None, Any], RecordError]


VALUE_RULES = (
    ValueRule(
        "REQUIRED_FIELD_MISSING",
        applies=lambda name, field, required: name.lower() in required,
        breaks=lambda field, value: blank(value),
        may_break=lambda field, values: _bools(pc.match_substring_regex(values, _ONLY_WHITESPACE).fill_null(True)),
        error=lambda name, field, value: missing_required([name]),
    ),
    ValueRule(
        "STRING_TOO_LONG",
        applies=lambda name, field, required: _has_length(field),
        breaks=lambda field, value: too_long(field, value),
        may_break=lambda field, values: _bools(pc.greater(pc.utf8_length(values), field.length).fill_null(False)),
        error=_too_long_error,
    ),
    ValueRule(
        "INVALID_EMAIL_ADDRESS",
        applies=lambda name, field, required: _is_email(field),
        breaks=lambda field, value: isinstance(value, str) and value != "" and not EMAIL.match(value),
        may_break=lambda field, values: ~_bools(pc.or_(pc.match_substring_regex(values, EMAIL.pattern),
                                                       pc.equal(values, "")).fill_null(True)),
        error=lambda name, field, value: RecordError(
            "INVALID_EMAIL_ADDRESS", f"{field.label}: invalid email address: {value}", (field.name,)),
    ),
)


def required_names(sobject: str) -> frozenset[str]:
    """The object's required fields, lower case, as ``ValueRule.applies`` takes them."""
    return frozenset(name.lower() for name in REQUIRED_FIELDS.get(sobject, ()))


def field_error(name: str, field: FieldInfo | None, value: Any, required: frozenset[str] = frozenset()
                ) -> RecordError | None:
    """The scalar evaluator: the first rule of ``VALUE_RULES`` one value breaks, as Salesforce words it,
    else None (a null value can only break the required rule)."""
    for rule in VALUE_RULES:
        if rule.applies(name, field, required) and rule.breaks(field, value):
            return rule.error(name, field, value)
    return None


def value_error(field: FieldInfo, value: Any) -> RecordError | None:
    """``STRING_TOO_LONG`` or ``INVALID_EMAIL_ADDRESS`` for one value of a field, else None."""
    return field_error(field.name, field, value) if value is not None else None


def field_suspects(name: str, field: FieldInfo | None, values: pa.Array, required: frozenset[str] = frozenset()
                   ) -> np.ndarray:
    """The column evaluator: True for each value of ``values`` (strings and nulls) that may break a rule
    of ``VALUE_RULES``; every value ``field_error`` rejects is among them."""
    flagged = np.zeros(len(values), dtype=bool)
    for rule in VALUE_RULES:
        if len(values) and rule.applies(name, field, required):
            flagged |= rule.may_break(field, values)
    return flagged


# ---------------------------------------------------------------------------- per-record failures

# What a failed record needs before it can succeed: nothing (``TRANSIENT``: sending it again may work),
# other values (``VALUE_REJECTED``: the same values fail the same way), or a record (``RECORD_GONE``: the
# CRM no longer has it; in the recycle bin, or deleted for good).
TRANSIENT, VALUE_REJECTED, RECORD_GONE = "transient", "value_rejected", "record_gone"
RECORD_GONE_CODES = frozenset({"ENTITY_IS_DELETED", "INVALID_CROSS_REFERENCE_KEY"})
VALUE_REJECTED_CODES = frozenset({
    "STRING_TOO_LONG", "INVALID_EMAIL_ADDRESS", "REQUIRED_FIELD_MISSING", "MALFORMED_ID",
    "FIELD_CUSTOM_VALIDATION_EXCEPTION", "FIELD_FILTER_VALIDATION_EXCEPTION", "FIELD_INTEGRITY_EXCEPTION",
    "INVALID_TYPE_ON_FIELD_IN_RECORD", "NUMBER_OUTSIDE_VALID_RANGE", "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
    "DUPLICATE_VALUE", "DUPLICATES_DETECTED", "DUPLICATE_EXTERNAL_ID",
})


def failure_kind(error: RecordError) -> str:
    """``RECORD_GONE``, ``VALUE_REJECTED`` or ``TRANSIENT`` for one record's error. A code this module does
    not know is transient: sent again by the next run (and counted again), never silently parked.
    ``INVALID_CROSS_REFERENCE_KEY`` means the record itself is gone unless the error names a field other
    than the Id (then a lookup value points nowhere: a value rejection)."""
    code = error.status_code
    if code in RECORD_GONE_CODES:
        if code == "INVALID_CROSS_REFERENCE_KEY" and any(f.lower() != "id" for f in error.fields):
            return VALUE_REJECTED
        return RECORD_GONE
    if code in VALUE_REJECTED_CODES:
        return VALUE_REJECTED
    return TRANSIENT


# ---------------------------------------------------------------------------- column types -> field types


def accepts(column: ColumnConfig, field: FieldInfo) -> bool:
    """Whether values of this SFMC column can be written to this Salesforce field without loss."""
    t = column.type
    if t.is_text:
        return field.type in TEXT_FIELD_TYPES
    if t is SfmcType.NUMBER:
        return field.type in NUMBER_FIELD_TYPES | TEXT_FIELD_TYPES
    if t is SfmcType.DECIMAL:
        whole = field.type == "int" and column.scale == 0
        return whole or field.type in (NUMBER_FIELD_TYPES - {"int"}) | TEXT_FIELD_TYPES
    if t is SfmcType.DATE:
        return field.type in ("date", "datetime")
    if t is SfmcType.BOOLEAN:
        return field.type == "boolean"
    return False


def expected_field_types(column: ColumnConfig) -> str:
    """In words, for preflight messages."""
    t = column.type
    if t.is_text:
        return "a text field (string, textarea, email, phone, url, picklist)"
    if t in (SfmcType.NUMBER, SfmcType.DECIMAL):
        return "a number field (double, currency, percent" + (", int" if column.scale in (None, 0) else "") + ") or a text field"
    if t is SfmcType.DATE:
        return "a date or datetime field"
    return "a checkbox (boolean) field"


def custom_field_for(column: ColumnConfig) -> tuple[str, int]:
    """``(describe type, length)`` of the custom field an admin would create for this column, one that ``accepts``
    it without loss (the local target creates mapped ``__c`` fields this way): Email (80) and Phone (40) fields for
    those columns, Text up to 255 characters and Long Text Area above, Number for numbers, Date/Time for dates,
    Checkbox for booleans."""
    t = column.type
    if t is SfmcType.EMAIL_ADDRESS:
        return "email", 80
    if t is SfmcType.PHONE:
        return "phone", 40
    if t.is_text:
        length = column.length or 255
        return ("string", length) if length <= 255 else ("textarea", min(length, 131072))
    if t.is_numeric:
        return "double", 0
    if t is SfmcType.DATE:
        return "datetime", 0
    return "boolean", 0


def field_values(values: pd.Series, column: ColumnConfig, field: FieldInfo, timezone: str) -> list[Any]:
    """The JSON values to write for a column's typed ``values`` to ``field`` (None for null).

    Decimals stay ``Decimal`` (serialised as exact JSON numbers); whole numbers are ``int``; a Date
    column goes to a ``date`` field as its calendar day in ``timezone`` (``YYYY-MM-DD``) and to a
    ``datetime`` field as ISO 8601 UTC; numbers sent to a text field are their exact text."""
    present = values.notna().to_numpy(dtype=bool)
    out: list[Any] = [None] * len(values)
    for position, value in zip(present.nonzero()[0], _formatted(values[present], column, field, timezone)):
        out[position] = value
    return out


def _formatted(values: pd.Series, column: ColumnConfig, field: FieldInfo, timezone: str) -> list[Any]:
    """``field_values`` for non-null values."""
    as_text = field.type in TEXT_FIELD_TYPES
    if column.type is SfmcType.DATE:
        stamps = pd.to_datetime(values)
        stamps = stamps.dt.tz_localize("UTC") if stamps.dt.tz is None else stamps
        if field.type == "date":
            return stamps.dt.tz_convert(timezone).dt.strftime("%Y-%m-%d").tolist()
        return stamps.dt.tz_convert("UTC").dt.strftime("%Y-%m-%dT%H:%M:%SZ").tolist()
    if column.type is SfmcType.NUMBER:
        return [str(int(v)) if as_text else int(v) for v in values.tolist()]
    if column.type is SfmcType.DECIMAL:
        decimals = [v if isinstance(v, Decimal) else Decimal(str(v)) for v in values.tolist()]
        if as_text:
            return [format(v, "f") for v in decimals]
        return [int(v) for v in decimals] if field.type == "int" else decimals
    if column.type is SfmcType.BOOLEAN:
        return [bool(v) for v in values.tolist()]
    return [str(v) for v in values.tolist()]
