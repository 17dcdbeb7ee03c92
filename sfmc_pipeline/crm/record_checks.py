"""Client-side checks of a record before it is sent, with the error code Salesforce would return,
so known-bad records never cost an API call: MALFORMED_ID, REQUIRED_FIELD_MISSING,
STRING_TOO_LONG (or truncation when enabled), INVALID_EMAIL_ADDRESS."""

from __future__ import annotations

import re
from typing import Any

from sfmc_pipeline.crm.records import FieldInfo, RecordError
from sfmc_pipeline.datasets.salesforce_id import is_valid_id
from sfmc_pipeline.datasets.schemas import EMAIL_PATTERN

_EMAIL = re.compile(EMAIL_PATTERN)
REQUIRED_FIELDS = {"Contact": ("LastName",), "Lead": ("LastName", "Company")}


def check_record(
    sobject: str,
    record_id: str,
    fields: dict[str, Any],
    info: dict[str, FieldInfo],
    *,
    truncate: bool,
    prefix: str,
    check_id: bool = True,
) -> tuple[dict[str, Any], RecordError | None]:
    """``(fields to send, error)``: the fields may be truncated copies; an error means do not send.
    ``check_id`` is off for upserts, whose records are keyed by an external id, not the record Id."""
    bad_id = not isinstance(record_id, str) or not is_valid_id(record_id) or not record_id.startswith(prefix)
    if check_id and bad_id:
        return fields, RecordError("MALFORMED_ID", f"{sobject} ID: id value of incorrect type: {record_id}", ("Id",))
    required = {name.lower() for name in REQUIRED_FIELDS.get(sobject, ())}
    out = dict(fields)
    for name, value in fields.items():
        field = info.get(name)
        if name.lower() in required and (value is None or str(value).strip() == ""):
            return fields, RecordError("REQUIRED_FIELD_MISSING", f"Required fields are missing: [{name}]", (name,))
        if field is None or value is None:
            continue
        if isinstance(value, str) and field.length and len(value) > field.length:
            if not truncate:
                return fields, RecordError(
                    "STRING_TOO_LONG",
                    f"{field.label}: data value too large: {value[:40]}... (max length={field.length})",
                    (name,),
                )
            out[name] = value[: field.length]
        if field.type == "email" and not _EMAIL.match(str(value)):
            return fields, RecordError("INVALID_EMAIL_ADDRESS", f"{field.label}: invalid email address: {value}", (name,))
    return out, None
