"""The local target's storage: a SQLite file shaped like a small Salesforce org's Contacts and Leads.

One table per object (``Contact``, ``Lead``) whose columns are the field API names, all values TEXT, keyed
by the 18-character Id; field metadata lives in the ``_fields`` table, the counters behind ids created by
upserts in ``_id_counters``, and the target id (``local:<uuid4>``, kept for the file's life) in ``_meta``.
Salesforce stores an empty string as null, so does this store. Every access holds one lock.
"""

from __future__ import annotations

import itertools
import math
import re
import sqlite3
import threading
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

from sfmc_pipeline.crm.change_rows import batches
from sfmc_pipeline.salesforce.ids import KEY_PREFIXES, is_valid_id, to_18
from sfmc_pipeline.salesforce.records import FieldInfo
from sfmc_pipeline.salesforce.rules import STANDARD_FIELDS

DEFAULT_STATUS_FIELD_LENGTH = 32768  # Long Text Area default
MAX_LONG_TEXT_LENGTH = 131072  # Long Text Area maximum
EXTERNAL_ID_LENGTH = 255

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_CREATED_ID_INFIX = "Lc"  # ids created by upserts: prefix + "Lc" + 10 base-62 digits (15 chars) + checksum
_ID_CHUNK = 500  # ids per SELECT ... IN (...)
SEED_BATCH = 10_000  # seed rows checked and inserted at a time


@dataclass(frozen=True)
class LocalField:
    """One row of the ``_fields`` table."""

    name: str
    label: str
    type: str  # "id", "string", "email", "textarea"
    length: int
    required: bool = False
    custom: bool = False
    updateable: bool = True
    external_id: bool = False
    id_lookup: bool = False
    extra_type_info: str | None = None

    def info(self) -> FieldInfo:
        return FieldInfo(
            name=self.name,
            type=self.type,
            length=self.length,
            label=self.label,
            updateable=self.updateable,
            createable=self.updateable,
            nillable=not self.required,
            custom=self.custom,
            external_id=self.external_id,
            id_lookup=self.id_lookup,
            extra_type_info=self.extra_type_info,
        )


def standard_fields(sobject: str) -> list[LocalField]:
    """``Id`` and the object's standard fields as Salesforce describes them (``salesforce/rules.py``)."""
    return [
        LocalField("Id", f"{sobject} ID", "id", 18, required=True, updateable=False, id_lookup=True),
        *(LocalField(f.name, f.label, f.type, f.length, required=f.required, extra_type_info=f.extra_type_info,
                 id_lookup=f.type == "email") for f in STANDARD_FIELDS[sobject]),
    ]


def as_text(value: Any) -> str | None:
    """A JSON scalar as it would be stored in a text field (``""`` becomes null, as in Salesforce)."""
    if value is None or isinstance(value, str):
        return value or None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal) and value.is_finite():
        return format(value, "f")
    if isinstance(value, int) or (isinstance(value, float) and math.isfinite(value)):
        return str(value)
    raise ValueError(
        f"field values must be strings, finite numbers (int, float, Decimal), booleans or null, got {value!r}"
    )


def find_field(fields: Sequence[LocalField], name: str) -> LocalField | None:
    lowered = name.lower()
    return next((f for f in fields if f.name.lower() == lowered), None)


class LocalStore:
    """The SQLite file (or an in-memory copy of it) behind a ``LocalCrmTarget``: its objects, fields and rows."""

    def __init__(self, conn: sqlite3.Connection, db_path: Path):
        """``conn`` opened with ``isolation_level=None`` (transactions are opened here, so DDL is transactional
        too); the tables are created if missing and the target id is read."""
        self.db_path = db_path
        self.lock = threading.RLock()
        self._conn = conn
        with self.transaction() as cur:
            cur.execute(
                """CREATE TABLE IF NOT EXISTS _fields (
                       sobject TEXT NOT NULL, name TEXT NOT NULL, position INTEGER NOT NULL,
                       label TEXT NOT NULL, type TEXT NOT NULL, length INTEGER NOT NULL,
                       required INTEGER NOT NULL, custom INTEGER NOT NULL, updateable INTEGER NOT NULL,
                       external_id INTEGER NOT NULL, id_lookup INTEGER NOT NULL, extra_type_info TEXT,
                       PRIMARY KEY (sobject, name))"""
            )
            cur.execute(
                "CREATE TABLE IF NOT EXISTS _id_counters (sobject TEXT PRIMARY KEY, last INTEGER NOT NULL)"
            )
            cur.execute("CREATE TABLE IF NOT EXISTS _meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            cur.execute("INSERT OR IGNORE INTO _meta VALUES ('target_id', ?)", (f"local:{uuid.uuid4()}",))
            (self.target_id,) = cur.execute("SELECT value FROM _meta WHERE key = 'target_id'").fetchone()

    @classmethod
    def open(cls, db_path: str | Path) -> LocalStore:
        """The store in the file ``db_path`` (created, with its folder, when missing)."""
        path = Path(db_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        return cls(sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30), path)

    @classmethod
    def snapshot(cls, db_path: str | Path) -> LocalStore:
        """An in-memory copy of the store at ``db_path`` (empty when the file does not exist yet); the file is
        only read."""
        path = Path(db_path)
        conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        if path.exists():
            source = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
            try:
                source.backup(conn)
            finally:
                source.close()
        return cls(conn, path)

    def close(self) -> None:
        with self.lock:
            self._conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Cursor]:
        """One write transaction (``BEGIN IMMEDIATE``): committed on success, rolled back on any exception."""
        with self.lock:
            cur = self._conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield cur
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")

    # ------------------------------------------------------------------ schema

    def ensure_object(
        self,
        sobject: str,
        *,
        status_fields: Iterable[str] = (),
        status_field_length: int = DEFAULT_STATUS_FIELD_LENGTH,
        external_id_field: str | None = None,
        custom_fields: Mapping[str, tuple[str, int]] | None = None,
    ) -> None:
        """Create the ``sobject`` table ("Contact" or "Lead") with its standard fields if missing, and add any
        missing status fields (custom Long Text Area, ``status_field_length`` characters), the optional
        external-id field (custom text(255), ``externalId``) and ``custom_fields`` (name ending in ``__c`` ->
        (describe type, length), e.g. mapped attributes). Existing fields are left as they are."""
        if sobject not in KEY_PREFIXES:
            raise ValueError(f"unsupported sobject {sobject!r}: the local CRM knows {sorted(KEY_PREFIXES)}")
        if not 1 <= status_field_length <= MAX_LONG_TEXT_LENGTH:
            raise ValueError(f"status_field_length must be 1..{MAX_LONG_TEXT_LENGTH}, got {status_field_length}")
        wanted = list(standard_fields(sobject))
        for name in status_fields:
            wanted.append(
                LocalField(_custom_name(name), _label(name), "textarea", status_field_length,
                       custom=True, extra_type_info="plaintextarea")
            )
        if external_id_field is not None:
            wanted.append(
                LocalField(_custom_name(external_id_field), _label(external_id_field), "string", EXTERNAL_ID_LENGTH,
                       custom=True, external_id=True, id_lookup=True)
            )
        for name, (type_, length) in (custom_fields or {}).items():
            wanted.append(LocalField(_custom_name(name), _label(name), type_, length, custom=True,
                                 extra_type_info="plaintextarea" if type_ == "textarea" else None))
        with self.transaction() as cur:
            cur.execute(f"CREATE TABLE IF NOT EXISTS {_q(sobject)} (\"Id\" TEXT PRIMARY KEY NOT NULL)")
            known = {f.name.lower() for f in self.fields(sobject)}
            columns = {row[1].lower() for row in cur.execute(f"PRAGMA table_info({_q(sobject)})")}
            position = len(known)
            for fdef in wanted:
                if fdef.name.lower() in known:
                    continue  # already there (names are case-insensitive, as in Salesforce)
                if fdef.name.lower() not in columns:
                    cur.execute(f"ALTER TABLE {_q(sobject)} ADD COLUMN {_q(fdef.name)} TEXT")
                cur.execute(
                    "INSERT INTO _fields VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (sobject, fdef.name, position, fdef.label, fdef.type, fdef.length, fdef.required, fdef.custom,
                     fdef.updateable, fdef.external_id, fdef.id_lookup, fdef.extra_type_info),
                )
                known.add(fdef.name.lower())
                position += 1

    def seed(self, sobject: str, rows: Iterable[Mapping[str, Any]]) -> int:
        """Insert the rows whose ``Id`` is not there yet and return how many were inserted. Keys are ``Id`` plus
        field names of ``sobject`` (case-insensitive); existing rows are never overwritten. All or nothing: the
        rows are checked and inserted ``SEED_BATCH`` at a time in one transaction, rolled back if any row fails."""
        name = self.object_name(sobject)
        fields = self.fields(name)
        prefix = KEY_PREFIXES[name]
        inserted = 0
        with self.transaction() as cur:
            for batch in batches(rows, SEED_BATCH):
                prepared = [_seed_values(name, fields, prefix, row) for row in batch]
                for columns, run in itertools.groupby(prepared, key=tuple):
                    names = ", ".join(_q(c) for c in columns)
                    marks = ", ".join("?" for _ in columns)
                    cur.executemany(f"INSERT OR IGNORE INTO {_q(name)} ({names}) VALUES ({marks})",
                                    [list(values.values()) for values in run])
                    inserted += cur.rowcount
        return inserted

    # ------------------------------------------------------------------ reads and writes

    def read(self, sobject: str) -> list[dict[str, Any]]:
        """All rows of ``sobject`` in insertion order, as ``{field name: value}``."""
        name = self.object_name(sobject)
        with self.lock:
            cur = self._conn.execute(f"SELECT * FROM {_q(name)} ORDER BY rowid")
            columns = [d[0] for d in cur.description]
            return [dict(zip(columns, row)) for row in cur.fetchall()]

    def object_name(self, sobject: Any, known: Sequence[str] | None = None) -> str:
        """The canonical name of an object set up with ``ensure_object`` (case-insensitive), else ``KeyError``."""
        known = self.known_objects() if known is None else known
        for name in known:
            if isinstance(sobject, str) and name.lower() == sobject.lower():
                return name
        raise KeyError(
            f"unknown sobject {sobject!r}: the local CRM has {known or 'no objects'}; "
            "call ensure_object(...) first"
        )

    def known_objects(self) -> list[str]:
        with self.lock:
            return [r[0] for r in self._conn.execute("SELECT DISTINCT sobject FROM _fields ORDER BY sobject")]

    def fields(self, sobject: str) -> list[LocalField]:
        with self.lock:
            rows = self._conn.execute(
                "SELECT name, label, type, length, required, custom, updateable, external_id, id_lookup, "
                "extra_type_info FROM _fields WHERE sobject = ? ORDER BY position",
                (sobject,),
            ).fetchall()
        return [
            LocalField(name, label, type_, length, bool(req), bool(custom), bool(upd), bool(ext), bool(lookup), extra)
            for name, label, type_, length, req, custom, upd, ext, lookup, extra in rows
        ]

    def external_id_index(self, sobject: str, ext: LocalField) -> dict[str, list[str]]:
        """Existing records by lower-cased external id value (text external ids match case-insensitively)."""
        index: dict[str, list[str]] = {}
        with self.lock:
            rows = self._conn.execute(
                f"SELECT \"Id\", {_q(ext.name)} FROM {_q(sobject)} WHERE {_q(ext.name)} IS NOT NULL ORDER BY rowid"
            ).fetchall()
        for record_id, value in rows:
            index.setdefault(value.lower(), []).append(record_id)
        return index

    def new_id(self, cur: sqlite3.Cursor, sobject: str) -> str:
        """The next unused id for a created record: prefix + "Lc" + a persisted base-62 counter, as 18 chars."""
        row = cur.execute("SELECT last FROM _id_counters WHERE sobject = ?", (sobject,)).fetchone()
        counter = row[0] if row else 0
        while True:
            counter += 1
            record_id = to_18(KEY_PREFIXES[sobject] + _CREATED_ID_INFIX + _base62(counter, 10))
            if cur.execute(f"SELECT 1 FROM {_q(sobject)} WHERE \"Id\" = ?", (record_id,)).fetchone() is None:
                break
        cur.execute(
            "INSERT INTO _id_counters VALUES (?, ?) ON CONFLICT(sobject) DO UPDATE SET last = excluded.last",
            (sobject, counter),
        )
        return record_id

    def exists(self, sobject: str, record_id: str) -> bool:
        with self.lock:
            found = self._conn.execute(f"SELECT 1 FROM {_q(sobject)} WHERE \"Id\" = ?", (record_id,)).fetchone()
        return found is not None

    def rows_by_id(self, sobject: str, ids: Sequence[str], columns: Iterable[str]) -> dict[str, dict[str, Any]]:
        """``{Id: {column: stored text}}`` of the ``ids`` rows that exist (``Id`` among the columns)."""
        selected = ", ".join(_q(c) for c in dict.fromkeys(["Id", *columns]))
        rows: dict[str, dict[str, Any]] = {}
        with self.lock:
            for start in range(0, len(ids), _ID_CHUNK):
                chunk = ids[start : start + _ID_CHUNK]
                marks = ", ".join("?" for _ in chunk)
                cur = self._conn.execute(f"SELECT {selected} FROM {_q(sobject)} WHERE \"Id\" IN ({marks})", chunk)
                names = [d[0] for d in cur.description]
                for row in cur.fetchall():
                    rows[row[0]] = dict(zip(names, row))
        return rows

    @staticmethod
    def insert(cur: sqlite3.Cursor, sobject: str, record_id: str) -> None:
        """A new, empty row (``write`` fills it), inside a ``transaction``."""
        cur.execute(f"INSERT INTO {_q(sobject)} (\"Id\") VALUES (?)", (record_id,))

    @staticmethod
    def write(cur: sqlite3.Cursor, sobject: str, record_id: str, values: Mapping[str, str | None]) -> None:
        """Set ``values`` (by field name) on the row ``record_id``, inside a ``transaction``."""
        if not values:
            return
        assignments = ", ".join(f"{_q(name)} = ?" for name in values)
        cur.execute(f"UPDATE {_q(sobject)} SET {assignments} WHERE \"Id\" = ?", [*values.values(), record_id])


# ---------------------------------------------------------------------- module helpers


def _identifier(name: str, what: str = "name") -> str:
    """``name`` if it is a plain SQL identifier, else ``ValueError``; the result is safe to double-quote."""
    if not isinstance(name, str) or not _IDENTIFIER.match(name):
        raise ValueError(f"invalid {what} {name!r}: must match {_IDENTIFIER.pattern}")
    return name


def _seed_values(name: str, fields: Sequence[LocalField], prefix: str, row: Mapping[str, Any]) -> dict[str, str | None]:
    """One seed row as ``{field name: text}`` with its Id normalised to 18 characters, else ``ValueError``."""
    values: dict[str, str | None] = {}
    for key, value in row.items():
        fdef = find_field(fields, key)
        if fdef is None:
            raise ValueError(f"{name} has no field {key!r} (known: {[f.name for f in fields]})")
        values[fdef.name] = as_text(value)
    record_id = _normalise_id(values.get("Id"), prefix)
    if record_id is None:
        raise ValueError(f"seed row {dict(row)!r} needs a well-formed {name} Id (prefix {prefix})")
    values["Id"] = record_id
    return values


def _q(name: str) -> str:
    """A validated identifier, double-quoted for SQL."""
    return f'"{_identifier(name)}"'


def _base62(n: int, width: int) -> str:
    digits = ""
    while n:
        n, rem = divmod(n, 62)
        digits = _BASE62[rem] + digits
    if len(digits) > width:
        raise ValueError(f"id counter overflow ({width} base-62 digits)")
    return digits.rjust(width, "0")


def _custom_name(name: str) -> str:
    _identifier(name, "custom field name")
    if not name.lower().endswith("__c"):
        raise ValueError(f"custom field {name!r} must end in '__c', as Salesforce custom field API names do")
    return name


def _label(name: str) -> str:
    return name[:-3] if name.lower().endswith("__c") else name


def _normalise_id(value: Any, prefix: str) -> str | None:
    """The 18-character form of a well-formed id with ``prefix``, else None."""
    if not isinstance(value, str) or not value.startswith(prefix) or not is_valid_id(value):
        return None
    return to_18(value[:15])
