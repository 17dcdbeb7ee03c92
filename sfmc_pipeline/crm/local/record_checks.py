"""The local target's answer to one record, checked in Salesforce's order with Salesforce's rules
(``salesforce/rules.py``): a failed ``RecordResult`` with the org's statusCode and message, or the
values to write. Request-level problems (no ``attributes.type``, more than 200 records) raise
``ValueError``, as the HTTP 400 would.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import pandas as pd

from sfmc_pipeline.crm.local.store import LocalField, LocalStore, as_text, find_field
from sfmc_pipeline.salesforce.ids import to_18, valid_id_mask
from sfmc_pipeline.salesforce.records import (
    MAX_RECORDS_PER_REQUEST,
    RecordError,
    RecordResult,
)
from sfmc_pipeline.salesforce.rules import malformed_id, missing_required, value_error


def check_update(
    store: LocalStore, sobject: str, fields: list[LocalField], raw_id: Any, values: Mapping[str, Any]
) -> RecordResult | tuple[str, dict[str, str | None]]:
    """A failed result, or (18-char id, values by field name) to write. Checks in Salesforce's order."""
    if raw_id in (None, ""):
        return failed("MISSING_ARGUMENT", "Id not specified in an update call")
    error = malformed_id(sobject, raw_id)
    if error is not None:
        return RecordResult(success=False, errors=(error,))
    record_id = to_18(raw_id[:15])
    resolved = resolve_fields(sobject, fields, values)
    if isinstance(resolved, RecordResult):
        return resolved
    if not store.exists(sobject, record_id):
        return failed("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id")
    problem = value_problem(fields, resolved, creating=False)
    return problem or (record_id, resolved)


def check_upsert(
    sobject: str,
    fields: list[LocalField],
    ext: LocalField,
    values: Mapping[str, Any],
    key: str | None,
    key_counts: Mapping[str, int],
    existing: Mapping[str, list[str]],
) -> RecordResult | tuple[str | None, dict[str, str | None]]:
    """A failed result, or (matched id or None to create, values by field name) to write."""
    if any(k.lower() == "id" for k in values):
        return failed("INVALID_FIELD", "Record Id is not supported as the key of an upsert by external id", ["Id"])
    if key is None:
        return failed("MISSING_ARGUMENT", f"{ext.name} not specified")
    if key_counts[key] > 1:
        shown = next(v for k, v in values.items() if k.lower() == ext.name.lower())
        return failed("DUPLICATE_VALUE", f"Duplicate external id specified: {shown}", [ext.name])
    matches = existing.get(key, [])
    if len(matches) > 1:
        return failed(
            "DUPLICATE_EXTERNAL_ID",
            f"{ext.label}: more than one record found for external id field: [{', '.join(matches)}]",
            [ext.name],
        )
    resolved = resolve_fields(sobject, fields, values)
    if isinstance(resolved, RecordResult):
        return resolved
    match = matches[0] if matches else None
    problem = value_problem(fields, resolved, creating=match is None)
    return problem or (match, resolved)


def resolve_fields(
    sobject: str, fields: Sequence[LocalField], values: Mapping[str, Any]
) -> RecordResult | dict[str, str | None]:
    """Field names -> describe names (INVALID_FIELD first, then INVALID_FIELD_FOR_INSERT_UPDATE), values as text."""
    resolved: dict[str, tuple[LocalField, Any]] = {}
    for key, value in values.items():
        fdef = find_field(fields, key)
        if fdef is None:
            return failed("INVALID_FIELD", f"No such column '{key}' on sobject of type {sobject}")
        resolved[fdef.name] = (fdef, value)
    for fdef, _ in resolved.values():
        if not fdef.updateable:
            return failed(
                "INVALID_FIELD_FOR_INSERT_UPDATE",
                f"Unable to create/update fields: {fdef.name}. Please check the security settings of this field "
                "and verify that it is read/write for your profile or permission set.",
                [fdef.name],
            )
    return {name: as_text(value) for name, (_, value) in resolved.items()}


def value_problem(
    fields: Sequence[LocalField], values: Mapping[str, str | None], *, creating: bool
) -> RecordResult | None:
    """STRING_TOO_LONG, then INVALID_EMAIL_ADDRESS, then REQUIRED_FIELD_MISSING (all fields on create, else only
    the required fields this record sets to null), by Salesforce's rules (``salesforce/rules.py``)."""
    by_name = {f.name: f for f in fields}
    for check in ("STRING_TOO_LONG", "INVALID_EMAIL_ADDRESS"):
        for name, value in values.items():
            error = value_error(by_name[name].info(), value) if value is not None else None
            if error is not None and error.status_code == check:
                return RecordResult(success=False, errors=(error,))
    if creating:
        missing = [f.name for f in fields if f.required and f.updateable and values.get(f.name) is None]
    else:
        missing = [name for name, value in values.items() if value is None and by_name[name].required]
    if missing:
        return RecordResult(success=False, errors=(missing_required(missing),))
    return None


def external_key(record: Mapping[str, Any], ext: LocalField) -> str | None:
    value = next((v for k, v in record.items() if k.lower() == ext.name.lower()), None)
    text = as_text(value)
    return None if text is None else text.lower()


def record_type(record: Mapping[str, Any], index: int) -> str:
    attributes = record.get("attributes")
    sobject = attributes.get("type") if isinstance(attributes, Mapping) else None
    if not isinstance(sobject, str) or not sobject:
        raise ValueError(f"No SObject type found in the attributes of the record at index {index}")
    return sobject


def check_count(records: Sequence[Any]) -> None:
    if len(records) > MAX_RECORDS_PER_REQUEST:
        raise ValueError(
            f"{len(records)} records: cannot submit more than {MAX_RECORDS_PER_REQUEST} records into this call"
        )


def well_formed(raw_ids: Sequence[Any]) -> list[bool]:
    """``is_valid_id`` for each value (vectorised, one call per request); non-strings are not well formed."""
    texts = pd.Series([v if isinstance(v, str) and v else None for v in raw_ids], dtype="string")
    mask = valid_id_mask(texts) & texts.notna()
    return mask.tolist()


def failed(code: str, message: str, fields: Sequence[str] = ()) -> RecordResult:
    return RecordResult(success=False, errors=(RecordError(code, message, tuple(fields)),))
