"""Client-side checks of a record before it is sent, with the error code Salesforce would return
(rules in ``salesforce_rules.py``), so known-bad records never cost an API call: MALFORMED_ID,
REQUIRED_FIELD_MISSING, STRING_TOO_LONG, INVALID_EMAIL_ADDRESS."""

from __future__ import annotations

from typing import Any

from sfmc_pipeline.salesforce.records import FieldInfo, RecordError
from sfmc_pipeline.salesforce.rules import (
    REQUIRED_FIELDS,
    blank,
    malformed_id,
    missing_required,
    value_error,
)


def check_record(
    sobject: str, record_id: str, fields: dict[str, Any], info: dict[str, FieldInfo], *, check_id: bool = True
) -> RecordError | None:
    """The error Salesforce would give this record, or None. ``check_id`` is off for upserts, whose
    records are keyed by an external id, not the record Id."""
    if check_id and (error := malformed_id(sobject, record_id)) is not None:
        return error
    required = {name.lower() for name in REQUIRED_FIELDS.get(sobject, ())}
    for name, value in fields.items():
        if name.lower() in required and blank(value):
            return missing_required([name])
        field = info.get(name)
        if field is not None and value is not None and (error := value_error(field, value)) is not None:
            return error
    return None

