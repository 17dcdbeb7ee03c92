"""Vectorised helpers for the sink's string columns (pyarrow compute under pandas' ``str`` dtype).

The sink handles one row per (record, field) on each side of the diff. pandas' own ``isin``/``map``
on pyarrow strings build a Python object per value; these helpers stay in Arrow. Every function keeps
the meaning of the pandas expression it replaces, named in its docstring, nulls included (a null
matches a null, as ``isin`` and ``merge`` do).
"""

from __future__ import annotations

import json
from typing import Any, Mapping

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

TEXT = "str"  # pandas' string dtype: pyarrow storage, NaN for missing (what ``astype(str)`` gives)
SEP = "\x1f"  # joins composite keys; never part of a JSON text (json.dumps escapes control characters)
_JSON_SAFE = r"[^\x20\x21\x23-\x5b\x5d-\x7e]"  # a character json.dumps (ensure_ascii) would escape


def arrow(values: Any) -> pa.Array:
    """``values`` (a Series, Index, array or list of strings and nulls) as one pyarrow ``large_string``
    array; anything that is not a string column is converted as ``astype(str)`` would (nulls kept)."""
    if isinstance(values, pa.ChunkedArray):
        array = values.combine_chunks() if values.num_chunks != 1 else values.chunk(0)
    elif isinstance(values, pa.Array):
        array = values
    elif isinstance(values, (pd.Series, pd.Index)) and isinstance(values.dtype, pd.StringDtype):
        array = pa.array(values.array)
    elif isinstance(values, pd.api.extensions.ExtensionArray) and isinstance(values.dtype, pd.StringDtype):
        array = pa.array(values)
    elif isinstance(values, list):
        try:
            array = pa.array(values, type=pa.large_string())
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            array = pa.array(pd.Series(np.asarray(values, dtype=object)).astype(TEXT).array)
    else:
        array = pa.array(pd.Series(np.asarray(values, dtype=object)).astype(TEXT).array)
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    return array if array.type == pa.large_string() else array.cast(pa.large_string())


def chunks(values: pd.Series) -> pa.ChunkedArray:
    """A string column's Arrow chunks as they are (zero-copy for pandas' ``str`` dtype): no combined copy of a
    column read in parts; otherwise ``arrow(values)``."""
    array = values.array
    if isinstance(values.dtype, pd.StringDtype) and hasattr(array, "__arrow_array__"):
        chunked = array.__arrow_array__()
        if isinstance(chunked, pa.ChunkedArray) and chunked.type == pa.large_string():
            return chunked
    return pa.chunked_array([arrow(values)], pa.large_string())


def text(values: Any, index: pd.Index | None = None) -> pd.Series:
    """``values`` as a pandas ``str`` Series (zero-copy from Arrow)."""
    if isinstance(values, pd.Series) and values.dtype == TEXT:
        return values if index is None else values.set_axis(index)
    return pd.Series(arrow(values), dtype=TEXT, index=index)


def isin(values: Any, allowed: Any) -> np.ndarray:
    """``values.isin(allowed)`` as a bool array, with one hash table built in C."""
    array = arrow(values)
    if len(array) == 0:
        return np.zeros(0, dtype=bool)
    found = pc.is_in(array, value_set=arrow(allowed), skip_nulls=False)
    return found.to_numpy(zero_copy_only=False).astype(bool, copy=False)


def positions(values: Any, keys: Any) -> np.ndarray:
    """For each value, the position of its first equal in ``keys``, or -1."""
    array = arrow(values)
    if len(array) == 0:
        return np.zeros(0, dtype=np.int64)
    found = pc.index_in(array, value_set=arrow(keys), skip_nulls=False)
    return found.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64, copy=False)


def lookup(values: Any, keys: Any, targets: Any, index: pd.Index | None = None) -> pd.Series:
    """``values.map(pd.Series(targets, index=keys))`` for string keys and targets (the first of
    duplicate keys wins); NaN where a value has no key."""
    where = positions(values, keys)
    found = arrow(targets).take(pa.array(np.where(where < 0, 0, where)) if len(where) else pa.array([], pa.int64()))
    found = pc.if_else(pa.array(where < 0), pa.scalar(None, pa.large_string()), found) if len(where) else found
    return text(found, index=index)


def map_small(values: pd.Series, mapping: Mapping[str, str]) -> pd.Series:
    """``values.map(mapping)`` for a small dict of strings; NaN where a value is not a key."""
    return lookup(values, list(mapping), list(mapping.values()), index=values.index)


def joined(*columns: Any, sep: str = SEP) -> pa.Array:
    """Element-wise ``a + sep + b + ...`` (null where any part is null): a composite key."""
    return pc.binary_join_element_wise(*(arrow(c) for c in columns), pa.scalar(sep, pa.large_string()))


def sorted_rows(frame: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """``frame.sort_values(by, kind="stable")`` (missing values last), sorted in Arrow."""
    return frame.take(sort_order(frame, by))


def sort_order(frame: pd.DataFrame, by: list[str], rows: np.ndarray | None = None) -> np.ndarray:
    """The positions that sort ``frame`` (or its ``rows``, positions) by ``by`` (stable, missing values last), as
    ``sorted_rows`` would order them, without copying the frame's other columns."""
    def column(c: str) -> pa.Array:
        values = pa.array(frame[c].to_numpy()) if frame[c].dtype == bool else arrow(frame[c])
        return values if rows is None else values.take(pa.array(rows, pa.int64()))
    table = pa.table({f"k{i}": column(c) for i, c in enumerate(by)})
    order = pc.sort_indices(table, sort_keys=[(f"k{i}", "ascending", "at_end") for i in range(len(by))])
    return order.to_numpy()


def key_codes(frames: list[pd.DataFrame], on: list[str]) -> list[np.ndarray]:
    """One ``int64`` per row of each frame, equal (within and across the frames) exactly when every
    ``on`` column is equal, a null equal to a null (as ``merge`` matches keys): composite keys
    without joining strings, so no separator can make two different keys look alike."""
    sizes = [len(f) for f in frames]
    combined: np.ndarray | None = None
    for column in on:
        parts = [arrow(f[column]) for f in frames]
        encoded = pc.dictionary_encode(pa.concat_arrays(parts) if parts else pa.array([], pa.large_string()))
        cardinality = len(encoded.dictionary) + 1  # the last code stands for null
        codes = encoded.indices.fill_null(cardinality - 1).to_numpy(zero_copy_only=False).astype(np.int64)
        if combined is None:
            combined = codes
            continue
        if len(combined) and (int(combined.max()) + 1) * cardinality >= 2**62:
            combined = np.unique(combined, return_inverse=True)[1].astype(np.int64)
        combined = combined * cardinality + codes
    assert combined is not None, "key_codes needs at least one column"
    return np.split(combined, np.cumsum(sizes)[:-1]) if len(frames) > 1 else [combined]


def needs_escape(values: Any) -> np.ndarray:
    """True where ``json.dumps`` (ASCII) would not simply put the string between quotes."""
    array = arrow(values)
    if len(array) == 0:
        return np.zeros(0, dtype=bool)
    return pc.match_substring_regex(array, _JSON_SAFE).fill_null(False).to_numpy(zero_copy_only=False).astype(bool)


def json_texts(values: pd.Series) -> pd.Series:
    """``[json.dumps(v) for v in values]`` for a string Series, a missing value giving ``"null"``
    (``ledger.encode`` of a str or None); strings that need escaping go through ``json.dumps``."""
    array = arrow(values)
    quoted = pc.binary_join_element_wise(pa.scalar('"', pa.large_string()), array, pa.scalar('"', pa.large_string()),
                                         pa.scalar("", pa.large_string()))
    out = text(pc.fill_null(quoted, pa.scalar("null", pa.large_string())), index=values.index)
    odd = needs_escape(array)
    if odd.any():
        out = out.astype(object)
        out[odd] = [json.dumps(v) for v in pd.Series(array.filter(pa.array(odd)).to_pylist(), dtype=object)]
        out = out.astype(TEXT)
    return out


def json_strings(encoded: pd.Series) -> pd.Series:
    """The decoded value of each JSON text in ``encoded`` as a string Series: a JSON string gives its
    text, ``null`` (or a missing text) NaN, any other JSON value ``str()`` of it (what
    ``values.map(json.loads).astype(str)`` gives, with None kept missing)."""
    array = arrow(encoded)
    plain = pc.and_(pc.and_(pc.starts_with(array, '"'), pc.ends_with(array, '"')),
                    pc.and_(pc.greater_equal(pc.utf8_length(array), 2), pc.invert(pc.match_substring(array, "\\"))))
    plain = plain.fill_null(False)
    inner = pc.if_else(plain, pc.utf8_slice_codeunits(array, 1, -1), pa.scalar(None, pa.large_string()))
    out = text(inner, index=encoded.index)
    other = ~plain.to_numpy(zero_copy_only=False).astype(bool) & ~pc.is_null(array).to_numpy(zero_copy_only=False)
    other &= ~pc.equal(array, "null").fill_null(False).to_numpy(zero_copy_only=False).astype(bool)
    if other.any():
        decoded = [json.loads(v) for v in array.filter(pa.array(other)).to_pylist()]
        out = out.astype(object)
        out[other] = [None if v is None else str(v) for v in decoded]
        out = out.astype(TEXT)
    return out


def parse_entries(values: pd.Series) -> pd.DataFrame:
    """``status_format.parse_entries`` in Arrow: ``segment, status`` for every ``;``-separated entry
    of every non-empty value, indexed by the index of the value it came from (an entry without a
    ``:`` has a missing status)."""
    array = arrow(values)
    keep = pc.and_(pc.is_valid(array), pc.not_equal(array, "")).fill_null(False)
    index = values.index[keep.to_numpy(zero_copy_only=False).astype(bool)]
    kept = array.filter(keep)
    if pc.any(pc.match_substring(kept, ";")).as_py():
        lists = pc.split_pattern(kept, ";")
        parents = pc.list_parent_indices(lists).to_numpy(zero_copy_only=False)
        flat = pc.list_flatten(lists)
    else:  # one entry per value (each field holds one segment): nothing to split
        parents, flat = np.arange(len(kept)), kept
    if pc.all(pc.match_substring(flat, ":")).as_py() is not False:
        halves = pc.split_pattern(flat, ":", max_splits=1)
        segment, status = pc.list_element(halves, 0), pc.list_element(halves, 1) if len(flat) else flat
    else:
        colon = pc.match_substring(flat, ":")
        # "seg:status" + ":" splits once into ["seg", "status:"]; "seg" + ":" into ["seg", ""] (no status)
        halves = pc.split_pattern(pc.binary_join_element_wise(flat, pa.scalar(":", pa.large_string()),
                                                              pa.scalar("", pa.large_string())), ":", max_splits=1)
        segment = pc.list_element(halves, 0)
        status = pc.if_else(colon, pc.utf8_slice_codeunits(pc.list_element(halves, 1), 0, -1),
                            pa.scalar(None, pa.large_string()))
    result_index = index[parents] if len(parents) else index[:0]
    return pd.DataFrame({"segment": text(segment, index=result_index), "status": text(status, index=result_index)})


def format_groups(frame: pd.DataFrame, by: list[str], entry: str = "entry") -> pd.DataFrame:
    """``frame.sort_values([*by, "segment"]).groupby(by)[entry].agg(";".join)`` as ``[*by, "value"]``,
    without a Python call per group: groups of one row take their entry as it is; larger groups are
    joined in segment order, one vectorised pass per position in the group. Rows with a missing key
    are dropped (as groupby does); a missing entry is an error (as ``";".join`` makes it). The result
    is in no particular order."""
    frame = frame[frame[by].notna().all(axis=1)] if len(frame) else frame
    if frame[entry].isna().any():
        raise ValueError("a status entry to format is missing its segment or status")
    if frame.empty:
        return pd.DataFrame({**{k: pd.Series([], dtype=TEXT) for k in by}, "value": pd.Series([], dtype=TEXT)})
    shared = frame.duplicated(by, keep=False).to_numpy()
    single = frame.loc[~shared, by].assign(value=frame.loc[~shared, entry])
    if not shared.any():
        return single.reset_index(drop=True)
    multi = frame[shared].sort_values([*by, "segment"])
    keys = multi[by]
    starts = np.ones(len(multi), dtype=bool)
    starts[1:] = (keys.iloc[1:].to_numpy() != keys.iloc[:-1].to_numpy()).any(axis=1)
    group = np.cumsum(starts) - 1
    first = np.flatnonzero(starts)
    rank = np.arange(len(multi)) - first[group]
    entries = multi[entry].to_numpy(dtype=object)
    values = entries[first].copy()
    for r in range(1, int(rank.max()) + 1):
        at = rank == r
        values[group[at]] = values[group[at]] + ";" + entries[at]
    joined_groups = keys.iloc[first].assign(value=pd.Series(values, dtype=TEXT).to_numpy())
    return pd.concat([single, joined_groups], ignore_index=True)
