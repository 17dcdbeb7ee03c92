"""The change set, column-wise: the values as they will be written (status fields first, then one part
per attribute; typed and cut to the field's length when the destination opts in), diffed against
the texts the ledger confirmed. The changed rows stay (part, row) references sorted by record; the
``{field: value}`` dict of a changed record is made a batch at a time when it is read (``change_rows.py``).
Everything stays in Arrow columns until a record is about to be sent (``vectors.py``)."""

from __future__ import annotations

import gc
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from sfmc_pipeline.config.data_extensions import ColumnConfig
from sfmc_pipeline.config.destinations import DestinationConfig
from sfmc_pipeline.crm.change_rows import (
    ChangedRows,
    RecordFields,
    RecordOwners,
    RecordTexts,
    Source,
)
from sfmc_pipeline.crm.ledger import encode
from sfmc_pipeline.crm.ledger_hashing import KeyedHasher
from sfmc_pipeline.crm.payloads import ATTRIBUTE, STATUS, DesiredState
from sfmc_pipeline.crm.preflight import ResolvedFields
from sfmc_pipeline.crm.vectors import (
    TEXT,
    arrow,
    chunks,
    json_texts,
    key_codes,
    map_small,
    sort_order,
    text,
)
from sfmc_pipeline.salesforce.rules import TEXT_FIELD_TYPES, field_values, truncated
from sfmc_pipeline.segments.columns import PROFILE_KEY


@dataclass
class WrittenPart:
    """One part of the values as they will be written (the status fields, or one attribute), one row
    per (record, field): ``record_id, profile_key, field`` (API name), ``encoded`` (the ledger's JSON
    text) and ``value``: ``str`` (missing: None) or, for typed attributes, Python objects."""

    kind: str
    frame: pd.DataFrame
    typed: bool = False  # ``value`` holds Python objects (not only strings and nulls)

    def python_values(self, rows: np.ndarray) -> list[Any]:
        """The values of the rows selected by the bool mask ``rows``, as Python objects (None for null)."""
        if self.typed:
            return list(self.frame["value"].to_numpy()[rows])
        return arrow(self.frame["value"]).filter(pa.array(rows)).to_pylist()


@dataclass(frozen=True)
class ValueFormat:
    """How one destination writes values: ``columns`` the profile dataset's columns by name, ``identifying``
    the fields (lower case) the ledger keeps as keyed hashes, ``hasher`` the ledger's keyed hash (read
    only when such a field is written)."""

    dest: DestinationConfig
    columns: Mapping[str, ColumnConfig]
    timezone: str
    identifying: frozenset[str]
    hasher: Callable[[], KeyedHasher]

    def ledger_texts(self, encoded: pd.Series, *names: str) -> pd.Series:
        """The texts the ledger holds for these values of a field (its API name, and its name as configured):
        keyed hashes for an identifying field."""
        if not any(name.lower() in self.identifying for name in names):
            return encoded
        return text(self.hasher().texts(arrow(encoded)), index=encoded.index)


def written_values(fmt: ValueFormat, statuses: pd.DataFrame, desired: DesiredState,
                   resolved: ResolvedFields) -> list[WrittenPart]:
    """The values with API field names, each exactly as it will be written, in parts: the status
    fields first, then one part per attribute (column, field) in mapping order."""
    api_names = resolved.api_names
    names = map_small(statuses["field"], api_names)
    status_frame = pd.DataFrame({
        "record_id": text(statuses["record_id"]), PROFILE_KEY: text(statuses[PROFILE_KEY]),
        "field": text(names.where(names.notna(), statuses["field"]).astype(TEXT)),
        "value": text(statuses["value"]), "clearing": statuses["clearing"].to_numpy(dtype=bool),
    })
    status_frame["encoded"] = json_texts(status_frame["value"])
    parts = [WrittenPart(STATUS, status_frame)]
    truncate = fmt.dest.truncate_long_values
    for attribute in desired.attributes:
        name = api_names.get(attribute.field, attribute.field)
        info = resolved.info[name]
        values = attribute.values["value"]
        column = fmt.columns.get(attribute.column)
        frame = pd.DataFrame({"record_id": attribute.values["record_id"],
                              PROFILE_KEY: attribute.values[PROFILE_KEY],
                              "field": text([name] * len(values))})
        if column is not None and column.type.is_text and isinstance(values.dtype, pd.StringDtype):
            # text to a text field: the value is the string itself (``field_values`` gives str(v))
            typed = text(values)
            if truncate and info.type in TEXT_FIELD_TYPES and info.length:
                typed = text(pc.utf8_slice_codeunits(arrow(typed), 0, info.length), index=typed.index)
            frame["value"] = typed.array
            frame["encoded"] = fmt.ledger_texts(json_texts(frame["value"]), name, attribute.field)
            parts.append(WrittenPart(ATTRIBUTE, frame))
            continue
        objects = pd.Series(values.astype(object).where(values.notna(), None).tolist(), dtype=object)
        if column is not None:
            objects = pd.Series(field_values(objects, column, info, fmt.timezone), dtype=object)
        if truncate:
            objects = pd.Series([truncated(v, info) for v in objects.tolist()], dtype=object)
        frame["value"] = objects.to_numpy()
        frame["encoded"] = fmt.ledger_texts(text([encode(v) for v in objects.tolist()]), name, attribute.field)
        parts.append(WrittenPart(ATTRIBUTE, frame, typed=True))
    return parts


@dataclass
class Changes:
    """What differs from the ledger. ``records``: record -> its fields to send, in record-id order (made a batch at
    a time as they are read, ``change_rows.py``); ``encoded``: record -> the ledger texts of those values, in field
    order; ``owners``: record -> profile key; ``statuses``: the changed status values (``record_id, field,
    value``)."""

    records: RecordFields
    encoded: Mapping[str, tuple]
    owners: Mapping[str, str | None]
    statuses: pd.DataFrame


Confirmed = pd.DataFrame | Callable[[], Iterable[pd.DataFrame]]  # the ledger's rows, or its pages (read anew)


def diff(dest: DestinationConfig, parts: list[WrittenPart], confirmed: Confirmed, resolved: ResolvedFields
         ) -> Changes:
    """The values of ``parts`` the ledger has not confirmed as written. A record's fields come in the order
    of the parts: its status fields by (profile, field), its clears, then the attributes in mapping order
    (a later value for the same field wins); an upsert's records always carry their key. ``confirmed``:
    ``record_id, field, value`` of the ledger's rows, or a function that reads them a page at a time."""
    changed_rows = _changed_rows(parts, confirmed)
    status_frame = parts[0].frame
    rows = np.flatnonzero(changed_rows[0])
    if len(rows) > 1:  # the changed status rows by (record, clearing, profile, field); only the keys are read
        rows = rows[sort_order(status_frame, ["record_id", "clearing", PROFILE_KEY, "field"],
                               None if len(rows) == len(status_frame) else rows)]
    changed_statuses = _last_per_field(status_frame, rows)
    sources = [_source(part) for part in parts]
    chosen = [rows] + [np.flatnonzero(changed) for changed in changed_rows[1:]]
    ids = pa.chunked_array([source.record_id.take(pa.array(at, pa.int64())) for source, at in zip(sources, chosen)],
                           pa.large_string()).combine_chunks()
    order = pc.array_sort_indices(ids, order="ascending").to_numpy(zero_copy_only=False)  # stable
    part = np.concatenate([np.full(len(at), i, dtype=np.int16) for i, at in enumerate(chosen)])[order]
    row = np.concatenate(chosen).astype(np.int64)[order]
    key = None
    if dest.external_id is not None:  # upsert needs the key in every record, changed or not
        key_field = resolved.api_names[dest.external_id.field]
        key_values: dict[str, Any] = {}
        for p in parts[1:]:
            if len(p.frame) and p.frame["field"].iloc[0] == key_field:
                key_values.update(zip(arrow(p.frame["record_id"]).to_pylist(),
                                      p.python_values(np.ones(len(p.frame), dtype=bool))))
        key = (key_field, key_values)
    records = RecordFields(ChangedRows(sources, part, row, ids.take(pa.array(order)), key))
    return Changes(records, RecordTexts(records), RecordOwners(records), changed_statuses)


def _changed_rows(parts: list[WrittenPart], confirmed: Confirmed) -> list[np.ndarray]:
    """Per part, True for each row the ledger has not confirmed with that text. Read in pages, a row is unchanged
    when its page confirms it (a ``(record, field)`` is in one page): one page of the ledger held at a time."""
    if isinstance(confirmed, pd.DataFrame):
        ledger = LedgerValues(confirmed)
        return [ledger.differs(part.frame) for part in parts]
    changed = [np.ones(len(part.frame), dtype=bool) for part in parts]
    for page in confirmed():
        ledger = LedgerValues(page)
        for rows, part in zip(changed, parts):
            rows &= ledger.differs(part.frame)
        del ledger, page
    return changed


def _last_per_field(status_frame: pd.DataFrame, rows: np.ndarray) -> pd.DataFrame:
    """``record_id, field, value`` of ``rows`` (positions, in that order) but a (record, field) given again later
    (``drop_duplicates(keep="last")`` on the rows), taken once from the frame (no copy of the rows first)."""
    codes = key_codes([status_frame], ["record_id", "field"])[0][rows]
    keep = ~pd.Series(codes).duplicated(keep="last").to_numpy()
    return status_frame[["record_id", "field", "value"]].take(rows[keep])


def _source(part: WrittenPart) -> Source:
    """``part`` as the change set reads it (zero-copy Arrow views of its columns)."""
    frame = part.frame
    if part.typed:
        objects = frame["value"].to_numpy()
        values = lambda rows: objects[rows].tolist()  # noqa: E731
    else:
        strings = chunks(frame["value"])
        values = lambda rows: strings.take(pa.array(rows, pa.int64())).to_pylist()  # noqa: E731
    return Source(chunks(frame["record_id"]), chunks(frame[PROFILE_KEY]), chunks(frame["field"]),
                  chunks(frame["encoded"]), values)


@contextmanager
def collector_paused():
    """Pause the cyclic garbage collector while small containers are made per (record, field) row (it would
    otherwise walk them again and again); objects are still freed by reference counting."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class LedgerValues:
    """The confirmed texts of one ledger read, by field: a field's (record ids, values) is picked out (on the
    dictionary codes of the field column) when a part's diff needs it, and not kept (one field's copy at a time)."""

    def __init__(self, confirmed: pd.DataFrame):
        self._fields = arrow(confirmed["field"]).dictionary_encode() if len(confirmed) else None
        self._ids = arrow(confirmed["record_id"]) if len(confirmed) else None
        self._values = arrow(confirmed["value"]) if len(confirmed) else None
        self._codes = {} if self._fields is None else {
            name: code for code, name in enumerate(self._fields.dictionary.to_pylist())}

    def of(self, name: str) -> tuple[pa.Array, pa.Array] | None:
        """(record ids, confirmed texts) of ``name``, or None when the ledger has none."""
        code = self._codes.get(name)
        if code is None:
            return None
        rows = pc.equal(self._fields.indices, pa.scalar(code, self._fields.indices.type)).fill_null(False)
        return self._ids.filter(rows), self._values.filter(rows)

    def differs(self, frame: pd.DataFrame) -> np.ndarray:
        """True for each row of ``frame`` (``record_id, field, encoded``) whose (record, field) the
        ledger has not confirmed, or confirmed with another text: one hash lookup of record ids per field."""
        changed = np.ones(len(frame), dtype=bool)
        if frame.empty or not self._codes:
            return changed
        fields, ids, encoded = arrow(frame["field"]), arrow(frame["record_id"]), arrow(frame["encoded"])
        names = pc.unique(fields).to_pylist()
        for name in names:
            known = self.of(name)
            if known is None:
                continue
            ledger_ids, ledger_values = known
            if len(names) == 1:
                rows, part_ids, part_texts = None, ids, encoded
            else:
                rows = pc.equal(fields, pa.scalar(name, pa.large_string())).fill_null(False)
                part_ids, part_texts = ids.filter(rows), encoded.filter(rows)
            at = pc.index_in(part_ids, value_set=ledger_ids)
            same = pc.and_(pc.is_valid(at), pc.equal(part_texts, ledger_values.take(at.fill_null(0))).fill_null(False))
            same = same.to_numpy(zero_copy_only=False)
            if rows is None:
                changed[same] = False
            else:
                changed[np.flatnonzero(rows.to_numpy(zero_copy_only=False))] = ~same
        return changed


def longest(statuses: pd.DataFrame) -> dict[str, int]:
    """Status field (as in the desired state) -> the longest value to write to it (0: only clears)."""
    if statuses.empty:
        return {}
    table = pa.table({"field": arrow(statuses["field"]), "length": pc.utf8_length(arrow(statuses["value"]))})
    longest = table.group_by("field").aggregate([("length", "max")]).to_pydict()
    return {name: int(n or 0) for name, n in sorted(zip(longest["field"], longest["length_max"]))
            if name is not None}
