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

CHECKSUM_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
_ID_CHARS = re.compile(r"^[A-Za-z0-9]{15}(?:[A-Z0-5]{3})?$")
_ID15_CHARS = re.compile(r"^[A-Za-z0-9]{15}$")
_ALPHABET_BYTES = np.frombuffer(CHECKSUM_ALPHABET.encode("ascii"), dtype=np.uint8)
_BIT_WEIGHTS = np.array([1, 2, 4, 8, 16], dtype=np.uint8)

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
    text = values.astype("string")
    result = pd.Series(True, index=values.index, dtype=bool)
    present = text.notna()
    if not present.any():
        return result
    shaped = text[present].str.fullmatch(_ID_CHARS).fillna(False).astype(bool)
    result.loc[shaped.index] = shaped
    long_ids = text[present][shaped & (text[present].str.len() == 18)]
    if len(long_ids):
        raw = _ascii_matrix(long_ids, 18)
        ok = (_suffix_matrix(raw[:, :15]) == raw[:, 15:]).all(axis=1)
        result.loc[long_ids.index] = ok
    return result


def to_18_series(values: pd.Series) -> pd.Series:
    """Vectorised ``to_18`` over a string Series: every well-formed 15-character id gets its
    case-safe suffix; anything else (18-character ids, malformed values, nulls) is returned as it
    is, so ``valid_id_mask`` still rejects it (an 18-character id with a wrong suffix stays invalid).
    Same index, ``string`` dtype."""
    text = values.astype("string")
    short = text.str.fullmatch(_ID15_CHARS).fillna(False).astype(bool)
    if not short.any():
        return text
    ids15 = text[short]
    raw = _ascii_matrix(ids15, 15)
    ids18 = np.ascontiguousarray(np.hstack([raw, _suffix_matrix(raw)])).view("S18").ravel()
    strings = pa.array(ids18, type=pa.binary(18)).cast(pa.string())
    converted = pd.Series(pd.arrays.ArrowStringArray(strings), index=ids15.index)
    return text.where(~short, converted).astype("string")


def _ascii_matrix(ids: pd.Series, width: int) -> np.ndarray:
    """The characters of ``width``-character ASCII ids as a ``(len(ids), width)`` byte matrix."""
    return np.frombuffer("".join(ids.tolist()).encode("ascii"), dtype=np.uint8).reshape(-1, width)


def _suffix_matrix(id15: np.ndarray) -> np.ndarray:
    """The case-safe suffix (as bytes, ``(n, 3)``) of each row of a ``(n, 15)`` id byte matrix."""
    upper = ((id15 >= ord("A")) & (id15 <= ord("Z"))).astype(np.uint8)
    bits = (upper.reshape(-1, 3, 5) * _BIT_WEIGHTS).sum(axis=2)
    return _ALPHABET_BYTES[bits]
