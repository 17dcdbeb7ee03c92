"""A rowset page's items -> a frame of the configured columns (``string`` values, ``""`` for null).

Served field names are lower-cased and may be any case: they are matched to the configured
columns case-insensitively, a ``values`` field winning over a ``keys`` field of the same name,
and the frame is aligned as ``source.align_columns`` aligns one.
"""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.compute  # noqa: F401 - pa.compute.coalesce

from sfmc_pipeline.config.data_extensions import DataExtensionConfig
from sfmc_pipeline.sfmc.rowset_decoding import RowsetItems
from sfmc_pipeline.sfmc.source import ExtractError


def _flat(item: dict) -> dict[str, str]:
    return {**(item.get("keys") or {}), **(item.get("values") or {})}


def served_fields(item: object) -> tuple[str, ...] | None:
    """The field names of one served item (None: not an item of ``keys`` and ``values`` objects)."""
    try:
        return tuple(_flat(item))
    except (AttributeError, TypeError):
        return None


def served_value(items: list[dict], column: str, key: str) -> str | None:
    """``column``'s value in the first item as served (None: no item, or an empty value)."""
    if not items:
        return None
    row = {name.lower(): value for name, value in _flat(items[0]).items()}
    if column.lower() not in row:
        raise ExtractError(
            f"SFMC served Data Extension {key!r} without its incremental_column {column!r} (fields: "
            f"{', '.join(sorted(row)) or 'none'}). Fix incremental_column in the pipeline config, or add the "
            "field to the Data Extension."
        )
    value = row[column.lower()]
    return value if isinstance(value, str) and value.strip() else None


class ServedColumns:
    """How served field names (any case) map to the configured columns."""

    def __init__(self, extension: DataExtensionConfig):
        self.names = [c.name for c in extension.columns]
        self.by_lower = {name.lower(): name for name in self.names}

    def _spelling(self, served: set[str]) -> dict[str, str]:
        """Configured column -> the served field name that holds it (the first in sorted order when SFMC
        serves several spellings of one name)."""
        spelling: dict[str, str] = {}
        for name in sorted(served):
            spelling.setdefault(self.by_lower.get(name.lower(), ""), name)
        return spelling

    def frame(self, items: list[dict], offset: int) -> tuple[pd.DataFrame, set[str]]:
        """The items as a frame aligned like ``align_columns`` (index from ``offset``), and the
        field names they served."""
        rows = [(item.get("keys") or {}, item.get("values") or {}) for item in items]
        served: set[str] = set()
        for keys, values in rows:
            served.update(keys)
            served.update(values)
        spelling = self._spelling(served)
        data = {}
        for column in self.names:
            name = spelling.get(column)
            if name is None:
                data[column] = pd.array([""] * len(rows), dtype="string")
                continue
            data[column] = _strings([values[name] if name in values else keys.get(name, "")
                                     for keys, values in rows])
        return pd.DataFrame(data, index=pd.RangeIndex(offset, offset + len(rows))), served

    def frame_of_columns(self, items: "RowsetItems", offset: int) -> tuple[pd.DataFrame, set[str]]:
        """``frame`` for items parsed into columns: the same frame, without a Python object per row."""
        served = set(items.keys) | set(items.values)
        spelling = self._spelling(served)
        data = {}
        for column in self.names:
            name = spelling.get(column)
            parts = [part[name] for part in (items.values, items.keys) if name in part]  # values win, as in _flat
            if not parts:
                array = pa.array([""] * len(items), type=pa.string())
            else:
                array = parts[0] if len(parts) == 1 else pa.compute.coalesce(*parts)
                if array.null_count:
                    array = array.fill_null("")
            data[column] = _arrow_strings(array)
        return pd.DataFrame(data, index=pd.RangeIndex(offset, offset + len(items))), served


_STRING = pd.StringDtype()  # what astype("string") gives: pyarrow-backed when pyarrow is the storage


def _arrow_strings(array: pa.Array) -> pd.api.extensions.ExtensionArray:
    if _STRING.storage == "pyarrow":
        return pd.arrays.ArrowStringArray(array)
    return pd.array(array.to_pylist(), dtype=_STRING)


def _strings(values: list) -> pd.api.extensions.ExtensionArray:
    """``values`` as a ``string`` array, null (None, NaN) as ``""``, as ``align_columns`` makes them."""
    try:
        array = pd.array(values, dtype="string")
    except (TypeError, ValueError):  # e.g. a nested object: its text, as astype("string") gives it
        array = pd.Series(values, dtype=object).fillna("").astype("string").array
    return array.fillna("") if array.isna().any() else array
