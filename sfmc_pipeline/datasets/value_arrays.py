"""The arrow and numpy pieces the per-type converters share: string arrays, regex masks, problems.

A converter returns its typed column and its problems (``Problems``); masks are numpy booleans
(nulls as False), regexes are RE2 patterns over arrow strings with ASCII classes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

PRINTABLE_ASCII = r"^[ -~]+$"

# A converter returns the typed column and its problems: ``(mask of bad rows, what the value is in
# plain words without the value)``, e.g. ``(mask, "not a number (expected a whole number)")``; a mask
# is a boolean Series over the values or a numpy array of the same length.
Problems = list[tuple[pd.Series | np.ndarray, str]]


def matches(values: pd.Series, pattern: str) -> pd.Series:
    """Boolean mask (False for nulls) of the values matching ``pattern``."""
    return values.str.match(pattern).fillna(False).astype(bool)


def string_array(values: pd.Series) -> pa.Array:
    """A string Series as one contiguous arrow array of its own string type (no copy when it is
    already one arrow chunk)."""
    array = pa.array(values.astype("string").array)
    return array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array


def match_mask(array: pa.Array, pattern: str) -> np.ndarray:
    """Numpy mask (False for nulls) of the arrow strings matching ``pattern`` (RE2, ASCII classes)."""
    return as_mask(pc.match_substring_regex(array, pattern))


def only_where(array: pa.Array, mask: np.ndarray) -> pa.Array:
    """``array`` with the values outside ``mask`` nulled."""
    return pc.if_else(pa.array(mask), array, pa.scalar(None, type=array.type))


def present_mask(values: pd.Series) -> np.ndarray:
    return np.array(values.notna(), dtype=bool)  # a writable copy


def as_mask(mask) -> np.ndarray:
    """A writable boolean numpy array (nulls as False) from an arrow, pandas or numpy mask."""
    if isinstance(mask, (pa.Array, pa.ChunkedArray)):
        return np.array(pc.fill_null(mask, False), dtype=bool)
    if isinstance(mask, pd.Series):
        return np.array(mask.fillna(False), dtype=bool)
    return np.array(mask, dtype=bool)


def widen(problems: Problems, rows: np.ndarray) -> Problems:
    """Problems found on ``values[rows]`` as masks over all the values."""
    positions = np.flatnonzero(rows)
    widened = []
    for bad, detail in problems:
        full = np.zeros(len(rows), dtype=bool)
        full[positions] = as_mask(bad)
        widened.append((full, detail))
    return widened


def arrow_strings(values: pd.Series) -> pa.Array:
    """A string Series as one contiguous arrow string array (nulls kept)."""
    array = pa.array(values.astype("string").array, type=pa.string())
    return array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array
