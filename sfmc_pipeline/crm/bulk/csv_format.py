"""The CSV of Bulk API 2.0 ingest jobs: UTF-8, LF, a header of field API names after the key column (``Id`` for
update, the external id field for upsert). A field a record does not change is an empty cell (left as it is); a
null (or empty text) is ``#N/A``; decimals keep their exact digits (never through float); booleans are
``true``/``false``. A CSV larger than one upload is split over several jobs, the header repeated in each."""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Iterable, Mapping, Sequence

from sfmc_pipeline.crm.bulk.job_store import StoredRecord
from sfmc_pipeline.salesforce.bulk_api import NULL


def csv_cell(value: Any) -> str:
    """A value as a Bulk API 2.0 CSV cell: null (or empty text) is ``#N/A``; booleans ``true``/``false``;
    integers and decimals with their exact digits (a float through its shortest repr, never in exponent form);
    text as it is (the CSV writer quotes it when needed)."""
    if value is None or (isinstance(value, str) and value == ""):
        return NULL
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value} cannot be written to Salesforce")
        value = Decimal(repr(value))
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"{value} cannot be written to Salesforce")
        return format(value, "f")
    if isinstance(value, str):
        return value
    raise TypeError(f"a {type(value).__name__} value cannot be written as a Bulk API CSV cell")


def csv_line(cells: Sequence[str]) -> str:
    """One CSV line, comma-separated, LF-terminated. A cell is quoted (``"`` doubled inside) when it holds a comma,
    a quote, a CR or LF (a lone CR too, which Python's ``csv`` writer leaves bare), or leading/trailing
    whitespace (kept exactly, whatever the reader does with bare cells)."""
    return ",".join(_quoted(cell) for cell in cells) + "\n"


def _quoted(cell: str) -> str:
    if any(ch in cell for ch in _SPECIAL) or (cell and (cell[0].isspace() or cell[-1].isspace())):
        return '"' + cell.replace('"', '""') + '"'
    return cell


_SPECIAL = frozenset(',"\r\n')


@dataclass(frozen=True)
class Chunk:
    """The records of one job and their CSV (one upload)."""

    records: list[StoredRecord]
    data: bytes


class CsvLayout:
    """The CSV of one destination's jobs: ``operation`` (update | upsert) decides the key column."""

    def __init__(self, operation: str, external_id_field: str | None):
        self.operation = operation
        self.external_id_field = external_id_field if operation == "upsert" else None
        self.key_column = external_id_field if operation == "upsert" else "Id"

    def key(self, rid: str, fields: Mapping[str, Any]) -> str:
        """The key cell: the record id (update) or the external id value (upsert; empty when there is none)."""
        if self.operation == "update":
            return rid
        wanted = self.external_id_field.lower()
        value = next((v for k, v in fields.items() if k.lower() == wanted), None)
        return "" if value is None or value == "" else csv_cell(value)

    def columns(self, records: Iterable[tuple[str, Mapping[str, Any]]]) -> list[str]:
        """The key column, then every field (first spelling, case-insensitively unique) in first-seen order."""
        columns = {self.key_column.lower(): self.key_column}
        for _, fields in records:
            for name in fields:
                columns.setdefault(name.lower(), name)
        return list(columns.values())

    def line(self, rid: str, fields: Mapping[str, Any], columns: list[str]) -> bytes:
        by_name = {name.lower(): value for name, value in fields.items()}
        cells = [self.key(rid, fields)]
        for column in columns[1:]:
            key = column.lower()
            cells.append(csv_cell(by_name[key]) if key in by_name else "")  # empty: left as it is
        return csv_line(cells).encode("utf-8")

    def chunks(self, records: list[StoredRecord], max_upload_bytes: int) -> list[Chunk]:
        """The records' CSV in uploads of at most ``max_upload_bytes`` (header repeated in each)."""
        if not records:
            return []
        columns = self.columns((r.record_id, r.fields) for r in records)
        header = csv_line(columns).encode("utf-8")
        chunks: list[Chunk] = []
        part: list[StoredRecord] = []
        lines: list[bytes] = []
        size = len(header)
        for record in records:
            line = self.line(record.record_id, record.fields, columns)
            if len(header) + len(line) > max_upload_bytes:
                raise ValueError(f"record {record.record_id} alone is larger than one upload "
                                 f"({max_upload_bytes} bytes); partition() sends it to composite")
            if part and size + len(line) > max_upload_bytes:
                chunks.append(Chunk(part, header + b"".join(lines)))
                part, lines, size = [], [], len(header)
            part.append(record)
            lines.append(line)
            size += len(line)
        chunks.append(Chunk(part, header + b"".join(lines)))
        return chunks


def column(row: Mapping[str, str], name: str) -> str | None:
    """A result row's cell of column ``name`` (any case)."""
    if name in row:
        return row[name]
    lowered = name.lower()
    return next((value for key, value in row.items() if key.lower() == lowered), None)


def flag(value: str | None) -> bool | None:
    """A result CSV's ``true``/``false`` cell (None when it is neither)."""
    text = (value or "").strip().lower()
    return True if text == "true" else False if text == "false" else None
