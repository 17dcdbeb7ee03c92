"""A 64-bit hash per row of arrow columns: equal rows hash equally, different ones almost never.

The primary-key check and the changed-row count compare hashes, and only the rows whose hash
repeats by value, so a read never keeps its keys or rows twice.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import pandas as pd
import pyarrow as arrow

_MIX = np.uint64(0x9E3779B97F4A7C15)
_NULL_HASH = np.uint64(0x2545F4914F6CDD1D)

def row_hash(parts: Iterable[arrow.Array | arrow.ChunkedArray]) -> np.ndarray:
    """A 64-bit hash of each row of these columns: equal rows (null equal to null) hash equally,
    different ones almost never (the primary-key check compares the rows whose hash repeats).
    Columns are hashed one at a time, chunk by chunk (nothing is concatenated)."""
    combined = None
    with np.errstate(over="ignore"):
        for part in parts:
            chunks = part.chunks if isinstance(part, arrow.ChunkedArray) else [part]
            hashed = (np.concatenate([_column_hash(chunk) for chunk in chunks]) if chunks
                      else np.empty(0, dtype=np.uint64))
            combined = (np.zeros(len(hashed), dtype=np.uint64) if combined is None else combined)
            combined = (combined ^ hashed) * _MIX + np.uint64(1)
    return np.empty(0, dtype=np.uint64) if combined is None else combined


def _column_hash(array: arrow.Array) -> np.ndarray:
    """A 64-bit hash of each value: strings by their bytes and length, decimals by their 16 bytes,
    integers, timestamps, booleans and floats by their value; nulls share one hash."""
    n = len(array)
    valid = np.asarray(array.is_valid())
    with np.errstate(over="ignore"):
        if arrow.types.is_large_string(array.type) or arrow.types.is_string(array.type):
            hashed = _string_hash(array, valid)
        else:
            if arrow.types.is_decimal128(array.type):
                words = np.frombuffer(array.buffers()[1], dtype=np.uint64)[2 * array.offset : 2 * (array.offset + n)]
                words = words.reshape(n, 2).T
            elif arrow.types.is_floating(array.type):
                words = [np.asarray(array.fill_null(0).cast(arrow.float64())).view(np.uint64)]
            elif (arrow.types.is_integer(array.type) or arrow.types.is_temporal(array.type)
                  or arrow.types.is_boolean(array.type)):
                words = [np.asarray(array.fill_null(0).cast(arrow.int64())).view(np.uint64)]
            else:  # anything else: pandas' hash of the values
                words = [pd.util.hash_array(np.asarray(array.to_pandas(), dtype=object))]
            hashed = np.zeros(n, dtype=np.uint64)
            for word in words:
                hashed = _mix(hashed, word)
    return np.where(valid, hashed, _NULL_HASH)


def _string_hash(array: arrow.Array, valid: np.ndarray) -> np.ndarray:
    """A hash of each value's UTF-8 bytes and length: the values of one length at a time, as a
    byte matrix read from the arrow data buffer, 8 bytes (one word) at a time."""
    array = array.cast(arrow.large_string()) if arrow.types.is_string(array.type) else array
    lengths = np.diff(_offsets(array))
    hashed = np.zeros(len(array), dtype=np.uint64)
    for length in np.unique(lengths[valid]).tolist():
        rows = np.flatnonzero(valid & (lengths == length))
        group = array if len(rows) == len(array) else array.take(arrow.array(rows))
        start = int(_offsets(group)[0])
        data = group.buffers()[2]
        chars = (np.frombuffer(data, dtype=np.uint8)[start : start + len(rows) * length] if length
                 else np.empty(0, dtype=np.uint8)).reshape(len(rows), length)
        h = np.full(len(rows), np.uint64(length), dtype=np.uint64)
        whole = length // 8 * 8
        if whole:
            for word in chars[:, :whole].view(np.uint64).T:
                h = _mix(h, word)
        if length > whole:  # the last 1-7 bytes, as one word
            tail = np.zeros(len(rows), dtype=np.uint64)
            for shift, column in enumerate(chars[:, whole:].T):
                tail |= column.astype(np.uint64) << np.uint64(8 * shift)
            h = _mix(h, tail)
        hashed[rows] = h
    return hashed


def _offsets(array: arrow.Array) -> np.ndarray:
    """The value offsets of a ``large_string`` array (``len + 1`` of them)."""
    return np.frombuffer(array.buffers()[1], dtype=np.int64)[array.offset : array.offset + len(array) + 1]


def _mix(hashed: np.ndarray, word: np.ndarray) -> np.ndarray:
    hashed = (hashed ^ word) * _MIX
    return hashed ^ (hashed >> np.uint64(31))
