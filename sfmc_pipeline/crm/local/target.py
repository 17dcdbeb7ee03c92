"""A local, embedded CRM target: Salesforce Contacts and Leads kept in a SQLite file (``store.py``).

Without Salesforce credentials the CRM sink writes here instead, so a newcomer can watch the whole flow
work end to end. ``LocalCrmTarget`` implements the same ``CrmTarget`` protocol as the Salesforce client
and mimics Salesforce's describe and sObject Collections contract, so the *same* sink code runs against
either target. See the result of a run::

    sqlite3 data/storage/crm/local_crm.sqlite 'select Id, new_customer__c from Contact limit 5'
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from sfmc_pipeline.crm.local.record_checks import (
    check_count,
    check_update,
    check_upsert,
    external_key,
    record_type,
    well_formed,
)
from sfmc_pipeline.crm.local.store import (
    DEFAULT_STATUS_FIELD_LENGTH,
    LocalStore,
    find_field,
)
from sfmc_pipeline.salesforce.ids import KEY_PREFIXES, to_18
from sfmc_pipeline.salesforce.records import (
    MAX_RETRIEVE_IDS_PER_REQUEST,
    ApiUsage,
    Describe,
    RecordResult,
)

MAX_CHUNKS_PER_REQUEST = 10
"""An update may mix types, but at most this many runs of consecutive same-type records (as in Salesforce)."""


class LocalCrmTarget:
    """``CrmTarget`` against a SQLite file: same per-record rules and results as Salesforce's sObject Collections.

    * ``describe`` answers like Salesforce's describe: ``Id`` (type ``id``, not updateable, ``idLookup``), the
      standard fields (``string``/``email`` with their lengths, required ones not nillable) and the segment
      status fields (custom Long Text Area: ``textarea``, ``extraTypeInfo`` ``plaintextarea``).
    * ``update`` and ``upsert`` take at most 200 records (more is a ``ValueError``, like the HTTP 400), never
      roll back valid records because of invalid ones (``allOrNone`` false), and return one ``RecordResult``
      per record, in request order; a failed record carries the Salesforce ``statusCode``/message/fields and
      no id (``local/record_checks.py``). Other request-level problems (more than 10 same-type chunks, a value
      that is not a JSON scalar, an unusable external-id field) raise ``ValueError``; an object that was never
      set up with ``ensure_object`` raises ``KeyError`` everywhere (``describe`` included). ``decimal.Decimal``
      values are stored as their exact text (``format(d, "f")``: all digits, no exponent).
    * ``retrieve`` answers like the sObject Collections retrieve: one item per id, in order, None for an id
      that is malformed, of another object or not there; an unknown field raises ``ValueError`` (the HTTP 400).
      It counts one API request per 2,000 ids, as Salesforce would.
    """

    mode = "local"

    def __init__(self, db_path: str | Path):
        self._attach(LocalStore.open(db_path))

    @classmethod
    def snapshot(cls, db_path: str | Path) -> LocalCrmTarget:
        """An in-memory copy of the target at ``db_path`` (empty when the file does not exist yet): the fields and
        records the sync would find there, to try its setup and preflight (``sfmc-pipeline check``) without
        creating or changing the file."""
        target = cls.__new__(cls)
        target._attach(LocalStore.snapshot(db_path))
        return target

    def _attach(self, store: LocalStore) -> None:
        self._store = store
        self.db_path = store.db_path
        self._requests = 0

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        self._store.close()

    def __enter__(self) -> LocalCrmTarget:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ setup and inspection

    def ensure_object(
        self,
        sobject: str,
        *,
        status_fields: Iterable[str] = (),
        status_field_length: int = DEFAULT_STATUS_FIELD_LENGTH,
        external_id_field: str | None = None,
        custom_fields: Mapping[str, tuple[str, int]] | None = None,
    ) -> None:
        """Create ``sobject`` with its standard fields if missing, and add any missing status, external-id and
        custom fields (``LocalStore.ensure_object``). Existing fields are left as they are."""
        self._store.ensure_object(sobject, status_fields=status_fields, status_field_length=status_field_length,
                                  external_id_field=external_id_field, custom_fields=custom_fields)

    def seed(self, sobject: str, rows: Iterable[Mapping[str, Any]]) -> int:
        """Insert the rows whose ``Id`` is not there yet and return how many were inserted
        (``LocalStore.seed``); existing rows are never overwritten."""
        return self._store.seed(sobject, rows)

    def read(self, sobject: str) -> list[dict[str, Any]]:
        """All rows of ``sobject`` in insertion order, as ``{field name: value}``."""
        return self._store.read(sobject)

    # ------------------------------------------------------------------ CrmTarget

    @property
    def target_id(self) -> str:
        """``local:<uuid4>``, persisted in the file's ``_meta`` table."""
        return self._store.target_id

    @property
    def target_label(self) -> str:
        return f"local target {self.db_path.resolve()} ({self._store.target_id})"

    @property
    def api_usage(self) -> ApiUsage | None:
        return None  # no daily API allocation locally

    @property
    def api_requests(self) -> int:
        """describe/update/upsert calls, plus one per 2,000 ids retrieved, so far (as API requests; calls refused
        for > 200 records not counted)."""
        return self._requests

    def describe(self, sobject: str) -> Describe:
        self._requests += 1
        name = self._store.object_name(sobject)
        return Describe(sobject=name, fields={f.name: f.info() for f in self._store.fields(name)})

    def update(self, records: Sequence[Mapping[str, Any]]) -> list[RecordResult]:
        """Update records by Id: ``{"attributes": {"type": "Contact"}, "Id": "003...", "<Field>": value}``."""
        records = list(records)
        check_count(records)
        self._requests += 1
        known = self._store.known_objects()
        types = [self._store.object_name(record_type(r, i), known) for i, r in enumerate(records)]
        chunks = sum(1 for i, t in enumerate(types) if i == 0 or types[i - 1] != t)
        if chunks > MAX_CHUNKS_PER_REQUEST:
            raise ValueError(
                f"{chunks} chunks of same-type records; at most {MAX_CHUNKS_PER_REQUEST} per request "
                "(group Contacts together and Leads together)"
            )
        fields = {t: self._store.fields(t) for t in set(types)}
        raw_ids = [next((v for k, v in r.items() if k.lower() == "id"), None) for r in records]

        results: list[RecordResult] = []
        with self._store.transaction() as cur:  # checks and writes see one consistent state
            for record, sobject, raw_id in zip(records, types, raw_ids):
                values = {k: v for k, v in record.items() if k != "attributes" and k.lower() != "id"}
                result = check_update(self._store, sobject, fields[sobject], raw_id, values)
                if isinstance(result, RecordResult):
                    results.append(result)
                else:
                    record_id, resolved = result
                    self._store.write(cur, sobject, record_id, resolved)
                    results.append(RecordResult(success=True, id=record_id))
        return results

    def upsert(
        self, sobject: str, external_id_field: str, records: Sequence[Mapping[str, Any]]
    ) -> list[RecordResult]:
        """Upsert ``sobject`` records keyed by ``external_id_field``; results carry ``created``."""
        records = list(records)
        check_count(records)
        self._requests += 1
        name = self._store.object_name(sobject)
        fields = self._store.fields(name)
        ext = find_field(fields, external_id_field)
        if ext is None:
            raise ValueError(f"Provided external ID field does not exist or is not accessible: {external_id_field}")
        if not ext.external_id:
            raise ValueError(f"Field {ext.name} is not an External ID or indexed field for {name}")
        for index, record in enumerate(records):
            if record_type(record, index).lower() != name.lower():
                raise ValueError(f"record {index}: every record of an upsert must be a {name}")

        keys = [external_key(record, ext) for record in records]
        key_counts: dict[str, int] = {}
        for key in keys:
            if key is not None:
                key_counts[key] = key_counts.get(key, 0) + 1
        results: list[RecordResult] = []
        with self._store.transaction() as cur:  # checks and writes see one consistent state
            existing = self._store.external_id_index(name, ext)  # keys are distinct, so writes can't change a match
            for record, key in zip(records, keys):
                values = {k: v for k, v in record.items() if k != "attributes"}
                result = check_upsert(name, fields, ext, values, key, key_counts, existing)
                if isinstance(result, RecordResult):
                    results.append(result)
                    continue
                record_id, resolved = result
                created = record_id is None
                if created:
                    record_id = self._store.new_id(cur, name)
                    self._store.insert(cur, name, record_id)
                self._store.write(cur, name, record_id, resolved)
                results.append(RecordResult(success=True, id=record_id, created=created))
        return results

    def retrieve(self, sobject: str, ids: Sequence[str], fields: Sequence[str]) -> list[dict[str, Any] | None]:
        """Current ``fields`` (stored text) of the ``ids`` records, in the order of ``ids``: ``{"Id": ..., <field as
        requested>: value}``, or None where the id is malformed, of another object or not there."""
        name = self._store.object_name(sobject)
        known = self._store.fields(name)
        resolved = []
        for requested in fields:
            fdef = find_field(known, requested) if isinstance(requested, str) else None
            if fdef is None:
                raise ValueError(f"INVALID_FIELD: No such column {requested!r} on entity {name!r}")
            resolved.append((requested, fdef.name))
        ids = list(ids)
        if not all(isinstance(i, str) for i in ids):
            raise ValueError("record ids must be strings")
        if not ids:
            return []
        self._requests += math.ceil(len(ids) / MAX_RETRIEVE_IDS_PER_REQUEST)
        prefix = KEY_PREFIXES[name]
        wanted = [to_18(i[:15]) if ok and i.startswith(prefix) else None for i, ok in zip(ids, well_formed(ids))]
        present = sorted({i for i in wanted if i is not None})
        rows = self._store.rows_by_id(name, present, (c for _, c in resolved))
        found = [rows.get(i) if i is not None else None for i in wanted]
        return [None if row is None else {"Id": row["Id"], **{r: row[c] for r, c in resolved}} for row in found]
