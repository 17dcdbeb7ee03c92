"""Salesforce record Id format: 15-character case-sensitive ids and 18-character case-safe ids.

An 18-character id is the 15-character id plus a 3-character checksum: each of the three
5-character chunks gives 5 bits (1 where the character is an upper-case letter, first character
= lowest bit), and each 5-bit number indexes ``CHECKSUM_ALPHABET``.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

CHECKSUM_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
_ID_CHARS = re.compile(r"^[A-Za-z0-9]{15}(?:[A-Z0-5]{3})?$")
_ALPHABET_BYTES = np.frombuffer(CHECKSUM_ALPHABET.encode("ascii"), dtype=np.uint8)
_BIT_WEIGHTS = np.array([1, 2, 4, 8, 16], dtype=np.uint8)
_IS_UPPER = np.zeros(256, dtype=np.uint8)
_IS_UPPER[ord("A") : ord("Z") + 1] = 1

CONTACT_PREFIX = "003"
LEAD_PREFIX = "00Q"
KEY_PREFIXES = {"Contact": CONTACT_PREFIX, "Lead": LEAD_PREFIX}  # object -> record Id key prefix


def checksum(id15: str) -> str:
    """The 3-character case-safe suffix for a 15-character id."""
    if len(id15) != 15:
        raise ValueError(f"expected a 15-character id, got {len(id15)} characters")
    suffix = []
    for start in range(0, 15, 5):
        chunk = id15[start : start + 5]
        bits = sum(1 << i for i, ch in enumerate(chunk) if "A" <= ch <= "Z")
        suffix.append(CHECKSUM_ALPHABET[bits])
    return "".join(suffix)


def to_18(id15: str) -> str:
    """The 18-character case-safe form of a 15-character id."""
    return id15 + checksum(id15)


def is_valid_id(value: str) -> bool:
    """True for a well-formed 15-character id or an 18-character id with the right checksum
    (scalar twin of ``valid_id_mask``, for checking one record at a time)."""
    if not isinstance(value, str) or not _ID_CHARS.match(value):
        return False
    return len(value) == 15 or value[15:] == checksum(value[:15])


def valid_id_mask(values: pd.Series) -> pd.Series:
    """Vectorised ``is_valid_id`` over a string Series; nulls are reported as valid (nullability is
    checked separately)."""
    ids = _arrow_strings(values)
    length, alphanumeric = _shape(ids)
    result = (alphanumeric & (length == 15)) | ~_as_numpy(ids.is_valid())
    # 18 alphanumeric characters: valid when the last three are the suffix of the first 15 (the
    # suffix alphabet is A-Z0-5, so a matching suffix is also a well-formed one).
    long_rows = np.flatnonzero(alphanumeric & (length == 18))
    if len(long_rows):
        raw = _ascii_matrix(ids if len(long_rows) == len(ids) else ids.take(pa.array(long_rows)), 18)
        result[long_rows] = (_suffix_matrix(raw[:, :15]) == raw[:, 15:]).all(axis=1)
    return pd.Series(result, index=values.index, dtype=bool)


def to_18_series(values: pd.Series) -> pd.Series:
    """Vectorised ``to_18`` over a string Series: every well-formed 15-character id gets its
    case-safe suffix; anything else (18-character ids, malformed values, nulls) is returned as it
    is, so ``valid_id_mask`` still rejects it (an 18-character id with a wrong suffix stays invalid).
    Same index, ``string`` dtype."""
    text = values.astype("string")
    ids = _arrow_strings(text)
    length, alphanumeric = _shape(ids)
    short = alphanumeric & (length == 15)
    if not short.any():
        return text
    raw = _ascii_matrix(ids.filter(pa.array(short)), 15)
    ids18 = np.ascontiguousarray(np.hstack([raw, _suffix_matrix(raw)])).view("S18").ravel()
    converted = pa.array(ids18, type=pa.binary(18)).cast(ids.type)
    merged = pc.replace_with_mask(ids, pa.array(short), converted)
    return pd.Series(pd.arrays.ArrowStringArray(merged), index=values.index)


def _shape(ids: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Per value: its length in bytes (0 for nulls) and whether it is made of ASCII letters and
    digits only (``[A-Za-z0-9]+``; False for nulls and ``""``)."""
    length = _as_numpy(pc.fill_null(pc.binary_length(ids), 0))
    alphanumeric = _as_numpy(pc.fill_null(pc.and_(pc.string_is_ascii(ids), pc.utf8_is_alnum(ids)), False))
    return length, alphanumeric


def _arrow_strings(values: pd.Series) -> pa.Array:
    """The values as one arrow string array (no copy for one-chunk pyarrow-backed strings)."""
    array = pa.array(values.astype("string").array)
    return array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array


def _as_numpy(array: pa.Array) -> np.ndarray:
    return np.array(array.to_numpy(zero_copy_only=False))


def _ascii_matrix(ids: pa.Array, width: int) -> np.ndarray:
    """The characters of ``width``-character ASCII ids (no nulls) as a ``(len(ids), width)`` byte
    matrix, read straight from the arrow data buffer."""
    ids = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
    if len(ids) == 0:
        return np.empty((0, width), dtype=np.uint8)
    offset_type = np.int64 if pa.types.is_large_string(ids.type) else np.int32
    _, offsets, data = ids.buffers()
    bounds = np.frombuffer(offsets, dtype=offset_type)[ids.offset : ids.offset + len(ids) + 1]
    return np.frombuffer(data, dtype=np.uint8)[bounds[0] : bounds[-1]].reshape(-1, width)


def _suffix_matrix(id15: np.ndarray) -> np.ndarray:
    """The case-safe suffix (as bytes, ``(n, 3)``) of each row of a ``(n, 15)`` id byte matrix."""
    upper = _IS_UPPER[id15].reshape(-1, 3, 5)  # 1 for A-Z
    return _ALPHABET_BYTES[upper @ _BIT_WEIGHTS]  # 5 bits per 5-character chunk, first character lowest
