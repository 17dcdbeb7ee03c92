"""A rowset page's bytes -> its JSON body, the usual page parsed into columns by pyarrow.

The usual page (an object whose ``items`` are objects of ``keys`` and ``values`` objects of strings)
is parsed in C++ without a Python object per row; anything else is parsed the ordinary way, and
the completeness rules (``rowset_pages.py``) judge it like any page. A read without rows answers
``count: 0`` with no ``items`` key at all (``without_rows``).
"""

from __future__ import annotations

from typing import Iterable

import pyarrow as pa
import pyarrow.json as pa_json
import requests


def json_body(response: requests.Response) -> object:
    try:
        return response.json()
    except ValueError:
        return None


def without_rows(body: object) -> object:
    """``body`` with ``items: []`` when it is SFMC's answer to a read without rows: an object with a
    ``count`` of 0 and no ``items`` key at all (recorded from real tenants, for an empty Data
    Extension and for a ``$filter`` that matches nothing). Anything else is returned as it is, for
    ``page_problem`` to judge (an error object has no ``count``)."""
    if (isinstance(body, dict) and "items" not in body and is_whole(body.get("count")) and body["count"] == 0
            and "errorcode" not in body and "message" not in body):
        return {**body, "items": []}
    return body


def is_whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def primary_key_values(rows: Iterable[dict | None]) -> tuple[list[str], tuple[str, ...]]:
    """The rows' primary-key values (each row's ``items[].keys``, lower-cased: SFMC compares them
    case-insensitively; several key fields joined in name order), and the key's field names;
    rows without keys (a Data Extension without a primary key) have none, nor have null keys."""
    values: list[str] = []
    names: tuple[str, ...] = ()
    for keys in rows:
        if not keys:
            continue
        if len(keys) == 1:
            (value,) = keys.values()
            if value is None:
                continue
            values.append(str(value).lower())
        else:
            present = sorted((name, value) for name, value in keys.items() if value is not None)
            if not present:
                continue
            values.append("\x1f".join(str(value).lower() for _, value in present))
        if not names:
            names = tuple(sorted(keys))
    return values, names


class RowsetItems:
    """A rowset page's ``items`` parsed into columns (pyarrow): per field of ``keys`` and of
    ``values``, one string array over the page's rows (null where a row lacks the field)."""

    def __init__(self, rows: int, keys: dict[str, pa.Array], values: dict[str, pa.Array]):
        self.rows, self.keys, self.values = rows, keys, values

    def __len__(self) -> int:
        return self.rows

    def key_values(self) -> tuple[list[str], tuple[str, ...]]:
        """``primary_key_values`` of the rows' ``keys``, without a dict per row."""
        if len(self.keys) == 1:
            ((name, array),) = self.keys.items()
            values = [value.lower() for value in array.to_pylist() if value is not None]
            return values, (name,) if values else ()
        names = sorted(self.keys)
        return primary_key_values(dict(zip(names, row)) for row in zip(*(self.keys[n].to_pylist() for n in names)))


def decode_page(content: bytes, encoding: str | None) -> dict | None:
    """A rowset page's JSON with ``items`` as ``RowsetItems``, or ``None`` when the page is anything
    but the usual shape (a top-level object whose ``items`` is a list of objects of ``keys`` and
    ``values`` objects of strings, whole numbers where numbers are): then the caller parses it
    the ordinary way, and every rule applies to it as to any page. The usual page is parsed in
    C++ without a Python object per row (no dicts to build and collect)."""
    if content[:1] != b"{" or (encoding or "utf-8").lower().replace("_", "-") not in ("utf-8", "utf8"):
        return None
    table = _read_json_object(content, None)
    if table is None:
        return None
    items = _items_of(table)
    if items is None and _item_fields(table) is not None:  # strings taken for dates, say: read as strings
        table = _read_json_object(content, _item_fields(table))
        items = _items_of(table) if table is not None else None
    if items is None:
        return None
    body = {name: table.column(name)[0].as_py() for name in table.column_names if name != "items"}
    if not all(is_whole(body[name]) for name in ("count", "page", "pageSize") if name in body):
        return None  # e.g. a count beyond 64 bits, which pyarrow reads as a float: the exact parser decides
    body["items"] = items
    return body


def _read_json_object(content: bytes, item_fields: dict[str, list[str]] | None) -> pa.Table | None:
    options = pa_json.ReadOptions(use_threads=False, block_size=len(content) + 1024)
    parse = pa_json.ParseOptions(newlines_in_values=True)
    if item_fields is not None:
        item = pa.struct([pa.field(part, pa.struct([pa.field(n, pa.string()) for n in names]))
                          for part, names in item_fields.items()])
        parse = pa_json.ParseOptions(explicit_schema=pa.schema([pa.field("items", pa.list_(item))]),
                                     unexpected_field_behavior="infer", newlines_in_values=True)
    try:
        table = pa_json.read_json(pa.BufferReader(content), read_options=options, parse_options=parse)
    except (pa.ArrowException, ValueError):
        return None
    return table if table.num_rows == 1 and "items" in table.column_names else None


def _item_fields(table: pa.Table) -> dict[str, list[str]] | None:
    """The field names of the items' ``keys`` and ``values`` (when both are objects)."""
    kind = table.schema.field("items").type
    if not pa.types.is_list(kind) or not pa.types.is_struct(kind.value_type):
        return None
    fields = {}
    for part in kind.value_type:
        if part.name in ("keys", "values"):
            if not pa.types.is_struct(part.type):
                return None
            fields[part.name] = [child.name for child in part.type]
    return fields


def _items_of(table: pa.Table) -> RowsetItems | None:
    """``RowsetItems`` of a page whose items are objects of ``keys`` and ``values`` objects of strings."""
    if _item_fields(table) is None:
        return None
    items = table.column("items").combine_chunks()
    if items.null_count:
        return None
    rows = items.flatten()
    if rows.null_count:
        return None  # a null where an item should be: the ordinary parser reports it
    parts = {}
    for field, array in zip(rows.type, rows.flatten()):
        if field.name not in ("keys", "values"):
            continue
        children = {}
        for child, values in zip(field.type, array.flatten()):  # flatten: a null keys/values is no fields
            if pa.types.is_null(child.type):
                values = pa.nulls(len(values), type=pa.string())
            elif not pa.types.is_string(child.type):
                return None
            children[child.name] = values
        parts[field.name] = children
    return RowsetItems(len(rows), parts.get("keys", {}), parts.get("values", {}))
