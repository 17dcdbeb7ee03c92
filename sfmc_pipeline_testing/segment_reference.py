"""The frozen reference for the segment engine: the pandas evaluator the product used before the rules
were compiled to SQL (``sfmc_pipeline/segments/compile.py``). Tests compare the engine with it; it is not
changed with the product. Every rule becomes a boolean mask over the profiles (or, inside
``has_related``, over the related rows).

A comparison on a null is false (``is_null`` tests nulls). Dates compare on calendar days in
``evaluation.timezone``. ``has_related`` matches rows whose join key is the profile's key; rows whose
key is no valid profile are counted as orphans and never match, except rows of held profiles
(whose own row is quarantined for now).
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Iterable, Mapping

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from sfmc_pipeline.datasets.value_arrays import arrow_strings
from sfmc_pipeline.segments.rules import AllOf, AnyOf, Compare, HasRelated, Not, Rule

_OPS = {
    "eq": lambda s, v: s == v,
    "ne": lambda s, v: s != v,
    "gt": lambda s, v: s > v,
    "gte": lambda s, v: s >= v,
    "lt": lambda s, v: s < v,
    "lte": lambda s, v: s <= v,
}

PROFILE_KEY = "profile_key"
MEMBERSHIP_COLUMNS = [PROFILE_KEY, "segment"]


def calendar_days(series: pd.Series, timezone: str = "UTC") -> np.ndarray:
    """``datetime64[D]`` calendar days in ``timezone`` of a datetime column (NaT stays NaT); naive
    values are taken to be UTC."""
    values = pd.to_datetime(series)
    if not isinstance(values.dtype, pd.DatetimeTZDtype):
        values = values.dt.tz_localize("UTC")
    return values.dt.tz_convert(timezone).dt.tz_localize(None).to_numpy(dtype="datetime64[D]")


class SegmentEvaluator:
    def __init__(
        self,
        profiles: pd.DataFrame,
        related: Mapping[str, pd.DataFrame],
        *,
        key: str,
        as_of: dt.date,
        timezone: str = "UTC",
        held_keys: Iterable[str] = (),
    ):
        self.profiles = profiles.reset_index(drop=True)
        self.related = dict(related)
        self.key = key
        self.as_of = np.datetime64(as_of, "D")
        self.timezone = timezone
        self._keys = arrow_strings(self.profiles[key])
        if pc.count_distinct(self._keys).as_py() != len(self._keys):
            raise ValueError(f"profile key {key!r} is not unique in the profile dataset")
        self._held = pa.array(sorted(set(held_keys)), type=pa.string())
        self._codes: dict[str, np.ndarray] = {}

    @property
    def profile_count(self) -> int:
        return len(self.profiles)

    def codes(self, dataset: str) -> np.ndarray:
        """Position of each related row's profile (``-1`` for an orphan), computed once per dataset."""
        if dataset not in self._codes:
            keys = arrow_strings(self.related[dataset][self.key])
            codes = pc.index_in(keys, value_set=self._keys).fill_null(-1)
            self._codes[dataset] = codes.to_numpy(zero_copy_only=False).astype(np.int64)
        return self._codes[dataset]

    def orphans(self, dataset: str) -> int:
        """Related rows whose key is neither a valid profile nor a held one."""
        unmatched = self.codes(dataset) < 0
        if unmatched.any() and len(self._held):
            keys = arrow_strings(self.related[dataset][self.key]).filter(pa.array(unmatched))
            return int(len(keys) - pc.sum(pc.is_in(keys, value_set=self._held)).as_py())
        return int(unmatched.sum())

    def days(self, column: pd.Series) -> np.ndarray:
        return calendar_days(column, self.timezone)

    def evaluate(self, rule: Rule) -> np.ndarray:
        """Boolean mask over the profiles."""
        return self._mask(rule, self.profiles)

    def members(self, segments: Iterable[tuple[str, Rule]]) -> pd.DataFrame:
        """``profile_key, segment`` for every profile in every segment, sorted."""
        order = pc.sort_indices(self._keys).to_numpy()  # sort the keys once, not once per segment
        sorted_keys = self._keys.take(pa.array(order))
        keys, names = [], []
        for name, rule in segments:
            selected = sorted_keys.filter(pa.array(self.evaluate(rule)[order]))
            keys.append(selected)
            names.append(pa.array(np.full(len(selected), name, dtype=object), type=pa.string()))
        if not keys:
            return pd.DataFrame({c: pd.Series(dtype="string") for c in MEMBERSHIP_COLUMNS})
        return pd.DataFrame({
            PROFILE_KEY: pd.Series(pd.arrays.ArrowStringArray(pa.chunked_array(keys, pa.string()))),
            "segment": pd.Series(pd.arrays.ArrowStringArray(pa.chunked_array(names, pa.string()))),
        })

    def _mask(self, rule: Rule, frame: pd.DataFrame) -> np.ndarray:
        if isinstance(rule, AllOf):
            out = np.ones(len(frame), dtype=bool)
            for sub in rule.rules:
                out &= self._mask(sub, frame)
            return out
        if isinstance(rule, AnyOf):
            out = np.zeros(len(frame), dtype=bool)
            for sub in rule.rules:
                out |= self._mask(sub, frame)
            return out
        if isinstance(rule, Not):
            return ~self._mask(rule.rule, frame)
        if isinstance(rule, HasRelated):
            return self._has_related(rule)
        return self._compare(rule, frame[rule.column])

    def _compare(self, rule: Compare, column: pd.Series) -> np.ndarray:
        op, value = rule.op, rule.value
        if op == "is_null":
            return column.isna().to_numpy()
        if op == "not_null":
            return column.notna().to_numpy()
        if op in ("within_last_days", "older_than_days"):
            days = self.days(column)
            start = self.as_of - np.timedelta64(int(value), "D")
            if op == "within_last_days":
                return (days >= start) & (days <= self.as_of)
            return days < start
        if pd.api.types.is_datetime64_any_dtype(column.dtype):
            days = self.days(column)
            target = [np.datetime64(dt.date.fromisoformat(str(v)), "D") for v in (value if isinstance(value, list) else [value])]
            if op in ("in", "not_in"):
                hit = np.isin(days, target) & ~np.isnat(days)
                return hit if op == "in" else ~np.isnat(days) & ~hit
            return _OPS[op](days, target[0]) & ~np.isnat(days)
        if op in ("in", "not_in"):
            if isinstance(column.dtype, pd.ArrowDtype) and pa.types.is_decimal(column.dtype.pyarrow_dtype):
                value = [Decimal(str(v)) for v in value]  # exact decimals: 15 -> Decimal("15")
            hit = column.isin(value).fillna(False).to_numpy(dtype=bool)
            return hit if op == "in" else column.notna().to_numpy() & ~hit
        return _OPS[op](column, value).fillna(False).to_numpy(dtype=bool)

    def _has_related(self, rule: HasRelated) -> np.ndarray:
        frame = self.related[rule.dataset]
        codes = self.codes(rule.dataset)
        matching = codes >= 0
        if rule.where is not None:
            matching &= self._mask(rule.where, frame)
        hit = np.zeros(self.profile_count, dtype=bool)
        if rule.latest_is_after is None:
            hit[codes[matching]] = True
            return hit
        related_days = self.days(frame[rule.latest_is_after.column])[matching]
        owners = codes[matching]
        dated = ~np.isnat(related_days)
        latest = pd.Series(related_days[dated]).groupby(owners[dated]).max()
        profile_days = self.days(self.profiles[rule.latest_is_after.profile_column])[latest.index.to_numpy()]
        latest_days = latest.to_numpy(dtype="datetime64[D]")
        after = np.isnat(profile_days) | (profile_days < latest_days)
        hit[latest.index.to_numpy()[after]] = True
        return hit
