"""A large sync is planned a range of record ids at a time, so its memory is bounded whatever the org's size.

Every row of the plan belongs to one CRM record: a status value, an attribute, a ledger row. The records are cut
into ranges of about ``sync.partition_records`` record ids (``first <= id < stop``), and a range's desired state,
ledger rows and diff are worked out alone, exactly as the whole would give them (the ledger is read by a range of its
key). Each status row goes to the range of its profile's record (``payloads.record_keys``: from the profiles, else
from the ledger); statuses without a record go to the first range, where they are counted as skipped. One thing
crosses ranges: a profile whose ledger rows are on a record of another range (its record changed) keeps that record
from being exited while the profile still has a status for the segment (``mentioned``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from sfmc_pipeline.config.destinations import DestinationConfig
from sfmc_pipeline.crm.ledger import RecordRange, SyncLedger
from sfmc_pipeline.crm.payloads import record_keys
from sfmc_pipeline.crm.vectors import arrow, isin, positions
from sfmc_pipeline.segments.columns import PROFILE_KEY, SEGMENT


@dataclass(frozen=True)
class RangeInputs:
    """The inputs of one range: ``statuses`` of the profiles whose record is in it, ``profiles`` whose record key is
    in it, and ``mentioned`` (``profile_key, segment``) statuses of other ranges' profiles its ledger rows name."""

    statuses: pd.DataFrame
    profiles: pd.DataFrame
    mentioned: pd.DataFrame | None = None


class RecordRanges:
    """The ranges of one destination's sync over ``statuses`` and ``profiles`` (held as they are; each range takes
    its rows)."""

    def __init__(self, dest: DestinationConfig, statuses: pd.DataFrame, profiles: pd.DataFrame, profile_key: str,
                 bounds: list[str], keys: pd.Series | None):
        """``bounds``: the first record id of every range but the first, sorted; ``keys``: profile key -> record key
        (``record_keys``; only read here), None for a single range."""
        self.dest, self.statuses, self.profiles, self.profile_key = dest, statuses, profiles, profile_key
        self.bounds = bounds
        if len(self) == 1:
            self._status_range = self._profile_range = None
            return
        key_range = self.range_of(keys)  # per profile, then per status row (no record id string per status row)
        at = positions(statuses[PROFILE_KEY].astype(str), keys.index)
        self._status_range = np.where(at >= 0, key_range[np.maximum(at, 0)], 0).astype(np.int32)
        del key_range, at
        key_column = profiles[dest.key_column]
        ranges = self.range_of(key_column.astype(str))
        ranges[key_column.isna().to_numpy()] = -1  # no record: never read (``record_keys`` drops them)
        self._profile_range = ranges

    @classmethod
    def split(cls, dest: DestinationConfig, statuses: pd.DataFrame, profiles: pd.DataFrame, ledger: SyncLedger, *,
              profile_key: str, size: int) -> RecordRanges:
        """Ranges of about ``size`` records each, over the records the profiles give and those the ledger holds
        (one pass over its keys, a page at a time); one range when there are no more records than that."""
        ledger_ids: list[pa.Array] = []

        def pages() -> Iterator[pd.DataFrame]:
            for page in ledger.confirmed_pages(dest.object, dest.name, columns=["record_id", PROFILE_KEY]):
                ledger_ids.append(pc.unique(arrow(page["record_id"])))
                yield page

        keys = record_keys(dest, profiles, pages(), profile_key)
        ids = pc.unique(pa.concat_arrays([arrow(keys).drop_null(), *ledger_ids]))
        ledger_ids.clear()
        if len(ids) <= size:
            return cls(dest, statuses, profiles, profile_key, [], None)
        ordered = ids.take(pc.sort_indices(ids))
        del ids
        bounds = ordered.take(pa.array(np.arange(size, len(ordered), size))).to_pylist()
        del ordered
        return cls(dest, statuses, profiles, profile_key, bounds, keys)

    def __len__(self) -> int:
        return len(self.bounds) + 1

    def records(self, index: int) -> RecordRange:
        """``(first, stop)`` of range ``index`` (None: unbounded)."""
        first = self.bounds[index - 1] if index > 0 else None
        stop = self.bounds[index] if index < len(self.bounds) else None
        return first, stop

    def range_of(self, record_ids: Iterable) -> np.ndarray:
        """The range of each record id (a missing one: the first range)."""
        ids = arrow(record_ids)
        found = np.zeros(len(ids), dtype=np.int32)
        for bound in self.bounds:  # a value's range is the number of bounds at or below it
            found += pc.greater_equal(ids, bound).fill_null(False).to_numpy(zero_copy_only=False).astype(np.int32)
        return found

    def inputs(self, index: int, confirmed: pd.DataFrame) -> RangeInputs:
        """Range ``index``'s inputs; ``confirmed``: the ledger's rows of the range (``profile_key`` read)."""
        if len(self) == 1:
            return RangeInputs(self.statuses, self.profiles)
        statuses = self.statuses.iloc[np.flatnonzero(self._status_range == index)]
        profiles = self.profiles.iloc[np.flatnonzero(self._profile_range == index)]
        return RangeInputs(statuses, profiles, self._mentioned(index, confirmed))

    def _mentioned(self, index: int, confirmed: pd.DataFrame) -> pd.DataFrame | None:
        """``profile_key, segment`` of the statuses, in other ranges, of profiles the range's ledger rows name."""
        named = pc.unique(arrow(confirmed[PROFILE_KEY]).drop_null()) if len(confirmed) else None
        if named is None or not len(named):
            return None
        rows = np.flatnonzero((self._status_range != index) & isin(self.statuses[PROFILE_KEY], named))
        if not len(rows):
            return None
        chosen = self.statuses.iloc[rows]
        return pd.DataFrame({PROFILE_KEY: chosen[PROFILE_KEY].astype(str), SEGMENT: chosen[SEGMENT].astype(str)})

    def __iter__(self) -> Iterator[int]:
        return iter(range(len(self)))

