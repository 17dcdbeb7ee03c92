"""Which records of a change set Bulk API 2.0 can carry; the others go through sObject Collections. Bulk cannot
carry a value it would read differently from what was meant (``#N/A`` is null, a whitespace-only cell may be
empty), a value or record over its size limits, or an upsert record whose results could not be matched back to
it (no external id value, or one shared by another record)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from sfmc_pipeline.crm.bulk.csv_format import CsvLayout, csv_cell, csv_line
from sfmc_pipeline.salesforce.bulk_api import MAX_FIELDS_PER_RECORD, NULL


class BulkRouting:
    """The routing rules for one destination's CSV layout and Bulk's limits (characters per field and record, bytes
    per upload)."""

    def __init__(self, csv: CsvLayout, max_upload_bytes: int, max_field_characters: int,
                 max_record_characters: int):
        self.csv = csv
        self.max_upload_bytes = max_upload_bytes
        self.max_field_characters = max_field_characters
        self.max_record_characters = max_record_characters

    def partition(self, records: Sequence[tuple[str, Mapping[str, Any]]]
                  ) -> tuple[list[tuple[str, Mapping[str, Any]]], list[tuple[str, Mapping[str, Any]]]]:
        """``(records Bulk can carry, records for composite)``, each in the given order."""
        columns = self.csv.columns(records)
        keys: dict[str, int] = {}
        if self.csv.operation == "upsert":
            for rid, fields in records:
                key = self.csv.key(rid, fields)
                if key:
                    keys[key] = keys.get(key, 0) + 1
        bulk, composite = [], []
        for rid, fields in records:
            reason = self._reason(rid, fields, columns, keys)
            (composite if reason else bulk).append((rid, fields))
        return bulk, composite

    def composite_reason(self, record_id: str, fields: Mapping[str, Any]) -> str | None:
        """Why this record (on its own) must go through sObject Collections, or None when Bulk can carry it."""
        return self._reason(record_id, fields, self.csv.columns([(record_id, fields)]), {})

    def _reason(self, rid: str, fields: Mapping[str, Any], columns: list[str],
                keys: Mapping[str, int]) -> str | None:
        reason = self.value_reason(rid, fields, keys)
        if reason:
            return reason
        size = len(csv_line(columns).encode("utf-8")) + len(self.csv.line(rid, fields, columns))
        if size > self.max_upload_bytes:
            return f"the record alone is larger than one upload ({size} > {self.max_upload_bytes} bytes)"
        return None

    def value_reason(self, rid: str, fields: Mapping[str, Any], keys: Mapping[str, int]) -> str | None:
        """The rules of ``composite_reason`` but the upload size (checked where the CSV is built)."""
        if self.csv.operation == "upsert":
            key = self.csv.key(rid, fields)
            if not key:
                return f"no {self.csv.external_id_field} value to match Bulk results on"
            if keys.get(key, 0) > 1:
                return f"{self.csv.external_id_field} value {key!r} is shared by several records"
        if len(fields) + 1 > MAX_FIELDS_PER_RECORD:
            return f"{len(fields)} fields, over Bulk's {MAX_FIELDS_PER_RECORD} per record"
        total = 0
        for name, value in fields.items():
            if isinstance(value, str) and value == NULL:
                return f"{name} holds the text {NULL!r}, which Bulk reads as null"
            if isinstance(value, str) and value != "" and value.strip() == "":
                return f"{name} holds only whitespace, which a Bulk CSV cell may read as empty (left as it is)"
            length = len(csv_cell(value))
            if length > self.max_field_characters:
                return f"{name} has {length} characters, over Bulk's {self.max_field_characters} per field"
            total += length
        if total > self.max_record_characters:
            return f"{total} characters in the record, over Bulk's {self.max_record_characters} per record"
        return None
