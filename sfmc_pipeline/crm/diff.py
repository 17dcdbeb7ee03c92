"""The change set, column-wise: the values as they will be written (status fields first, then one part
per attribute; typed and cut to the field's length when the destination opts in), diffed against
the texts the ledger confirmed, then made into one ``{field: value}`` dict per changed record.
Everything stays in Arrow columns until a record is about to be sent (``vectors.py``)."""

from __future__ import annotations

import gc
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from sfmc_pipeline.config.data_extensions import ColumnConfig
from sfmc_pipeline.config.destinations import DestinationConfig
from sfmc_pipeline.crm.ledger import encode
from sfmc_pipeline.crm.ledger_hashing import KeyedHasher
from sfmc_pipeline.crm.payloads import ATTRIBUTE, STATUS, DesiredState
from sfmc_pipeline.crm.preflight import ResolvedFields
from sfmc_pipeline.crm.vectors import (
    TEXT,
    arrow,
    isin,
    json_texts,
    map_small,
    sorted_rows,
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
    """What differs from the ledger. ``records``: record -> its fields to send, by record id;
    ``encoded``: record -> the ledger texts of those values, in field order; ``owners``: record -> profile
    key; ``statuses``: the changed status values (``record_id, field, value``)."""

    records: dict[str, dict]
    encoded: dict[str, tuple]
    owners: dict[str, str]
    statuses: pd.DataFrame


def diff(dest: DestinationConfig, parts: list[WrittenPart], confirmed: pd.DataFrame, resolved: ResolvedFields
         ) -> Changes:
    """The values of ``parts`` the ledger has not confirmed as written. A record's fields come in the order
    of the parts: its status fields by (profile, field), its clears, then the attributes in mapping order
    (a later value for the same field wins); an upsert's records always carry their key."""
    ledger = LedgerValues(confirmed)
    changed_rows = [ledger.differs(part.frame) for part in parts]
    statuses = parts[0].frame[changed_rows[0]]
    if len(statuses) > 1:
        statuses = sorted_rows(statuses, ["record_id", "clearing", PROFILE_KEY, "field"])
    changed_statuses = statuses[["record_id", "field", "value"]].drop_duplicates(["record_id", "field"], keep="last")
    ids, names, texts = [arrow(statuses["record_id"])], [arrow(statuses["field"])], [arrow(statuses["encoded"])]
    values = arrow(statuses["value"]).to_pylist()
    for part, rows in zip(parts[1:], changed_rows[1:]):
        frame = part.frame[rows]
        ids.append(arrow(frame["record_id"]))
        names.append(arrow(frame["field"]))
        texts.append(arrow(frame["encoded"]))
        values.extend(part.python_values(rows))
    changes, encoded = by_record(pa.concat_arrays(ids), pa.concat_arrays(names), values, pa.concat_arrays(texts))
    if dest.external_id is not None:  # upsert needs the key in every record, changed or not
        key_field = resolved.api_names[dest.external_id.field]
        key_values: dict[str, Any] = {}
        for part in parts[1:]:
            if len(part.frame) and part.frame["field"].iloc[0] == key_field:
                key_values.update(zip(arrow(part.frame["record_id"]).to_pylist(),
                                      part.python_values(np.ones(len(part.frame), dtype=bool))))
        for rid, fields in changes.items():
            fields.setdefault(key_field, key_values.get(rid, rid))
    return Changes(changes, encoded, owners(parts, list(changes)) if changes else {}, changed_statuses)


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


def by_record(ids: pa.Array, names: pa.Array, values: list, texts: pa.Array
               ) -> tuple[dict[str, dict], dict[str, tuple]]:
    """``({record_id: {field: value}}, {record_id: ledger texts, in the order of the fields}})`` from
    rows in the order their fields should take, the records in record-id order: one stable sort,
    then one ``dict(zip(...))`` per record rather than a dict operation per row (when every record
    has the same fields in the same order, as in a first sync, straight from the columns)."""
    if not len(ids):
        return {}, {}
    order = pc.array_sort_indices(ids, order="ascending")  # stable
    ids = ids.take(order)
    starts = np.flatnonzero(np.concatenate([[True], pc.not_equal(ids.slice(1), ids.slice(0, len(ids) - 1))
                                            .to_numpy(zero_copy_only=False).astype(bool)]))
    record_ids = ids.take(pa.array(starts)).to_pylist()
    at = order.to_numpy(zero_copy_only=False)
    fields = names.take(order).to_pylist()
    typed = np.asarray(values, dtype=object)[at].tolist()
    encoded = texts.take(order).to_pylist()
    width = len(fields) // len(record_ids)
    if width * len(record_ids) == len(fields) and np.all(np.diff(starts) == width):
        grid = np.asarray(fields, dtype=object).reshape(-1, width)
        if (grid == grid[0]).all() and len(set(grid[0])) == width:  # the same fields, once each, everywhere
            header = list(grid[0])
            rows = zip(*(typed[i::width] for i in range(width)))
            changes = dict(zip(record_ids, (dict(zip(header, row)) for row in rows)))
            return changes, dict(zip(record_ids, zip(*(encoded[i::width] for i in range(width)))))
    ends = np.append(starts[1:], len(fields))
    changes, encodings = {}, {}
    for rid, a, b in zip(record_ids, starts.tolist(), ends.tolist()):
        record = changes[rid] = dict(zip(fields[a:b], typed[a:b]))
        if len(record) == b - a:
            encodings[rid] = tuple(encoded[a:b])
        else:  # a field given twice: the last value (and its text) wins, at the field's first place
            texts_of = dict(zip(fields[a:b], encoded[a:b]))
            encodings[rid] = tuple(texts_of[name] for name in record)
    return changes, encodings


def owners(parts: list[WrittenPart], record_ids: list[str]) -> dict[str, str]:
    """record -> the profile key of its last row over all parts (what ``dict(zip(...))`` over every
    row gives), for the given records."""
    wanted = pa.array(record_ids, pa.large_string())
    frames = [p.frame.loc[isin(p.frame["record_id"], wanted), ["record_id", PROFILE_KEY]] for p in parts]
    rows = pd.concat(frames, ignore_index=True).drop_duplicates("record_id", keep="last")
    return dict(zip(arrow(rows["record_id"]).to_pylist(), arrow(rows[PROFILE_KEY]).to_pylist()))


class LedgerValues:
    """The confirmed texts of one ledger read, by field: each field's (record ids, values) is picked
    out once (on the dictionary codes of the field column) and shared by every part's diff."""

    def __init__(self, confirmed: pd.DataFrame):
        self._fields = arrow(confirmed["field"]).dictionary_encode() if len(confirmed) else None
        self._ids = arrow(confirmed["record_id"]) if len(confirmed) else None
        self._values = arrow(confirmed["value"]) if len(confirmed) else None
        self._codes = {} if self._fields is None else {
            name: code for code, name in enumerate(self._fields.dictionary.to_pylist())}
        self._by_field: dict[str, tuple[pa.Array, pa.Array]] = {}

    def of(self, name: str) -> tuple[pa.Array, pa.Array] | None:
        """(record ids, confirmed texts) of ``name``, or None when the ledger has none."""
        code = self._codes.get(name)
        if code is None:
            return None
        if name not in self._by_field:
            rows = pc.equal(self._fields.indices, pa.scalar(code, self._fields.indices.type)).fill_null(False)
            self._by_field[name] = (self._ids.filter(rows), self._values.filter(rows))
        return self._by_field[name]

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
