"""Client-side checks of the records to send, with the error code Salesforce would return (the rules
of ``salesforce/rules.py``), so known-bad records never cost an API call: MALFORMED_ID,
REQUIRED_FIELD_MISSING, STRING_TOO_LONG, INVALID_EMAIL_ADDRESS. The column form screens a change set;
only the records it flags are judged, one by one, by the scalar form (which decides)."""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np
import pandas as pd
import pyarrow as pa

from sfmc_pipeline.crm.vectors import arrow, isin
from sfmc_pipeline.salesforce.records import FieldInfo, RecordError
from sfmc_pipeline.salesforce.rules import (
    field_error,
    field_suspects,
    malformed_id,
    malformed_id_column,
    required_names,
)


def check_record(
    sobject: str, record_id: str, fields: dict[str, Any], info: dict[str, FieldInfo], *, check_id: bool = True
) -> RecordError | None:
    """The error Salesforce would give this record, or None. ``check_id`` is off for upserts, whose
    records are keyed by an external id, not the record Id."""
    if check_id and (error := malformed_id(sobject, record_id)) is not None:
        return error
    required = required_names(sobject)
    for name, value in fields.items():
        if (error := field_error(name, info.get(name), value, required)) is not None:
            return error
    return None


def suspect_records(sobject: str, record_ids: list[str], parts: Iterable[tuple[pd.DataFrame, bool]],
                    info: dict[str, FieldInfo], *, check_id: bool = True) -> set[str]:
    """The records of ``record_ids`` that ``check_record`` might reject, found column-wise. ``parts``:
    ``(frame, typed)`` with one row per (record, field): ``record_id, field, value``; ``typed`` frames hold
    Python objects, of which only strings and nulls can break a rule."""
    if not record_ids:
        return set()
    suspects: set[str] = set()
    if check_id:
        suspects.update(np.asarray(record_ids, dtype=object)[malformed_id_column(sobject, record_ids)])
    required = required_names(sobject)
    for frame, typed in parts:
        if frame.empty:
            continue
        rows = isin(frame["record_id"], record_ids)
        if not rows.any():
            continue
        frame = frame[rows]
        if typed:
            values = frame["value"].tolist()
            textual = np.fromiter((v is None or isinstance(v, str) for v in values), dtype=bool, count=len(values))
            frame = frame[textual]
            values = pa.array([v for v, t in zip(values, textual) if t], pa.large_string())
        else:
            values = arrow(frame["value"])
        flagged = np.zeros(len(frame), dtype=bool)
        for name in frame["field"].unique():
            at = (frame["field"] == name).to_numpy(dtype=bool)
            flagged[np.flatnonzero(at)] = field_suspects(name, info.get(name), values.filter(pa.array(at)), required)
        if flagged.any():
            suspects.update(arrow(frame["record_id"]).filter(pa.array(flagged)).to_pylist())
    return suspects
