"""The change set's records, made when they are read (bounded memory).

The diff's changed (record, field) rows stay in Arrow columns sorted by record id (stable: a record's fields in
the order of the parts). ``{field: value}`` dicts and their ledger texts are made ``BATCH`` records at a time
as the plan and the send walk the records in order, so a first sync of millions of records holds columns, not a
dict per record. A record given twice the same field keeps the last value (and its text) at the field's first
place, as ``dict(zip(...))`` over its rows gives; an upsert's record always carries its key (added last, without
a ledger text).
"""

from __future__ import annotations

from bisect import bisect_left
from collections import OrderedDict
from itertools import islice
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Mapping, MutableMapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

BATCH = 10_000  # records made at once when walking the change set
MISSING = object()  # not a changed record
RECENT_BATCHES = 4  # batches whose texts and owners stay at hand (the send confirms records soon after making them)


def batches(items: Iterable[Any], size: int = BATCH) -> Iterator[list[Any]]:
    """``items`` as lists of ``size`` (the last one shorter), taken as they are read."""
    rest = iter(items)
    while batch := list(islice(rest, size)):
        yield batch


class _Sorted:
    """An Arrow string array as a sorted sequence of ``str`` for ``bisect`` (one value made per probe)."""

    def __init__(self, values: pa.Array):
        self.values = values

    def __len__(self) -> int:
        return len(self.values)

    def __getitem__(self, i: int) -> str:
        return self.values[i].as_py()


@dataclass(frozen=True)
class Source:
    """One part of the written values, as the change set reads it: Arrow columns (``record_id``, ``field``,
    ``encoded``) and ``values(rows)``, the Python values of the rows at those positions."""

    record_id: pa.ChunkedArray
    owner: pa.ChunkedArray  # the row's profile key
    field: pa.ChunkedArray
    encoded: pa.ChunkedArray
    values: Callable[[np.ndarray], list]


class ChangedRows:
    """The changed rows in send order, each a (part, row) of ``sources``: records in record-id order (``starts``:
    where each record's rows begin), a record's rows in the order of the parts. ``key``: an upsert's ``(field,
    record -> key value)``, added to records that lack it."""

    def __init__(self, sources: list[Source], part: np.ndarray, row: np.ndarray, ids: pa.Array,
                 key: tuple[str, Mapping[str, Any]] | None = None):
        """``part``, ``row``, ``ids``: the changed rows' part, row in it and record id, already in send order."""
        self.sources, self.part, self.row, self._key = sources, part, row, key
        if len(ids):
            change = pc.not_equal(ids.slice(1), ids.slice(0, len(ids) - 1)).to_numpy(zero_copy_only=False)
            self.starts = np.append(np.flatnonzero(np.concatenate([[True], change.astype(bool)])), len(ids))
        else:
            self.starts = np.zeros(1, dtype=np.int64)
        self.record_ids = ids.take(pa.array(self.starts[:-1])) if len(ids) else pa.array([], pa.large_string())
        self.owners = self._last_owners()
        self._sorted = _Sorted(self.record_ids)
        self._recent: OrderedDict[int, tuple[dict[str, tuple], dict[str, str | None]]] = OrderedDict()

    def _last_owners(self) -> pa.Array:
        """Each record's profile key: that of its last row over all parts (changed or not)."""
        owners = pa.nulls(len(self.record_ids), pa.large_string())
        missing = pa.array(np.ones(len(self.record_ids), dtype=bool))
        for source in reversed(self.sources):  # the last part first; in a part, its last row
            if not len(source.record_id) or not pc.any(missing).as_py():
                continue
            backwards = pa.array(np.arange(len(source.record_id) - 1, -1, -1))
            at = pc.index_in(self.record_ids, value_set=source.record_id.take(backwards).combine_chunks())
            found = pc.and_(missing, pc.is_valid(at))
            owners = pc.if_else(found, source.owner.take(backwards).combine_chunks().take(at.fill_null(0)), owners)
            missing = pc.and_(missing, pc.invert(found))
        return owners

    def __len__(self) -> int:
        return len(self.record_ids)

    def position(self, rid: str) -> int | None:
        at = bisect_left(self._sorted, rid)
        return at if at < len(self._sorted) and self._sorted[at] == rid else None

    def _gather(self, a: int, b: int) -> tuple[list, list, list]:
        """The fields, values and texts of rows ``a`` to ``b`` (send order)."""
        parts, rows = self.part[a:b], self.row[a:b]
        fields, values, texts = (np.empty(b - a, dtype=object) for _ in range(3))
        for p in np.unique(parts).tolist():
            at = np.flatnonzero(parts == p)
            source, chosen = self.sources[p], pa.array(rows[at])
            for out, taken in ((fields, source.field.take(chosen).to_pylist()),
                               (values, source.values(rows[at])), (texts, source.encoded.take(chosen).to_pylist())):
                column = np.empty(len(at), dtype=object)
                column[:] = taken
                out[at] = column
        return fields.tolist(), values.tolist(), texts.tolist()

    def make(self, first: int, stop: int) -> list[tuple[str, dict, tuple]]:
        """``(record_id, fields, ledger texts)`` of records ``first`` to ``stop`` (positions)."""
        a, b = int(self.starts[first]), int(self.starts[stop])
        fields, values, texts = self._gather(a, b)
        out = []
        bounds = (self.starts[first:stop + 1] - a).tolist()
        for rid, s, e in zip(self.record_ids.slice(first, stop - first).to_pylist(), bounds, bounds[1:]):
            record = dict(zip(fields[s:e], values[s:e]))
            if len(record) == e - s:
                encoded = tuple(texts[s:e])
            else:  # a field given twice: the last value (and its text) wins, at the field's first place
                texts_of = dict(zip(fields[s:e], texts[s:e]))
                encoded = tuple(texts_of[name] for name in record)
            if self._key is not None:
                record.setdefault(self._key[0], self._key[1].get(rid, rid))
            out.append((rid, record, encoded))
        return out

    def walk(self, skip: Callable[[str], bool] = lambda rid: False) -> Iterator[tuple[str, dict]]:
        """Every record's ``(record_id, fields)`` in order, but those ``skip`` names; the texts and owners of the
        last batches stay at hand for ``texts`` and ``owner``."""
        for first in range(0, len(self), BATCH):
            stop = min(first + BATCH, len(self))
            made = self.make(first, stop)
            owners = self.owners.slice(first, stop - first).to_pylist()
            self._recent[first] = ({rid: encoded for rid, _, encoded in made},
                                   {rid: owner for (rid, _, _), owner in zip(made, owners)})
            while len(self._recent) > RECENT_BATCHES:
                self._recent.popitem(last=False)
            for rid, record, _ in made:
                if not skip(rid):
                    yield rid, record

    def texts(self, rid: str) -> tuple | None:
        for encoded, _ in reversed(self._recent.values()):
            if rid in encoded:
                return encoded[rid]
        at = self.position(rid)
        return None if at is None else self.make(at, at + 1)[0][2]

    def owner(self, rid: str) -> str | None:
        """``rid``'s profile key; ``MISSING`` when ``rid`` is not a changed record."""
        for _, owners in reversed(self._recent.values()):
            if rid in owners:
                return owners[rid]
        at = self.position(rid)
        return MISSING if at is None else self.owners[at].as_py()


class RecordFields(MutableMapping):
    """record -> ``{field: value}`` over ``ChangedRows``, records in record-id order; ``del`` takes a record out
    (held back). Iterating ``items()`` makes the dicts a batch at a time."""

    def __init__(self, rows: ChangedRows):
        self.rows, self.removed = rows, set()

    def __contains__(self, rid: object) -> bool:
        return isinstance(rid, str) and rid not in self.removed and self.rows.position(rid) is not None

    def __getitem__(self, rid: str) -> dict:
        at = self.rows.position(rid) if rid not in self.removed else None
        if at is None:
            raise KeyError(rid)
        return self.rows.make(at, at + 1)[0][1]

    def __setitem__(self, rid: str, fields: dict) -> None:
        raise TypeError("the change set's records are made from its columns; they cannot be replaced")

    def __delitem__(self, rid: str) -> None:
        if rid not in self:
            raise KeyError(rid)
        self.removed.add(rid)

    def __len__(self) -> int:
        return len(self.rows) - len(self.removed)

    def __iter__(self) -> Iterator[str]:
        ids = self.rows.record_ids
        for first in range(0, len(ids), BATCH):
            yield from (rid for rid in ids.slice(first, BATCH).to_pylist() if rid not in self.removed)

    def items(self) -> Iterator[tuple[str, dict]]:  # type: ignore[override]
        return self.rows.walk(self.removed.__contains__)


class _RecordView(Mapping):
    """record -> one value of it, read from ``ChangedRows`` (records removed from the change set have none)."""

    def __init__(self, records: RecordFields):
        self.records = records

    def _lookup(self, rid: str):
        """The record's value, or ``MISSING``."""
        raise NotImplementedError

    def __getitem__(self, rid: str):
        value = MISSING if rid in self.records.removed else self._lookup(rid)
        if value is MISSING:
            raise KeyError(rid)
        return value

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[str]:
        return iter(self.records)


class RecordTexts(_RecordView):
    """record -> the ledger texts of its fields (in field order)."""

    def _lookup(self, rid: str):
        texts = self.records.rows.texts(rid)
        return MISSING if texts is None else texts


class RecordOwners(_RecordView):
    """record -> profile key of its last row over all parts (what ``dict(zip(...))`` over every row gives)."""

    def _lookup(self, rid: str):
        return self.records.rows.owner(rid)


class ToSend:
    """The records to send, ``(record_id, fields)`` in record-id order: the change set's records but ``excluded``
    (rejected, or waiting for a Bulk job); made a batch at a time as they are read."""

    def __init__(self, records: RecordFields, excluded: Iterable[str] = ()):
        self.records, self.excluded = records, set(excluded)

    def __len__(self) -> int:
        return len(self.records) - sum(1 for rid in self.excluded if rid in self.records)

    def __iter__(self) -> Iterator[tuple[str, dict]]:
        skip = self.records.removed | self.excluded
        return self.records.rows.walk(skip.__contains__)

    def __getitem__(self, at):
        if isinstance(at, slice):
            return list(islice(iter(self), at.start, at.stop, at.step))
        return next(islice(iter(self), at, None))

    def __bool__(self) -> bool:
        return len(self) > 0

    def record_ids(self) -> list[str]:
        return [rid for rid in self.records if rid not in self.excluded]

    def without(self, rids: Iterable[str]) -> ToSend:
        return ToSend(self.records, self.excluded | set(rids))
