"""Reconciliation reads the CRM, not the ledger.

After a sync, the status fields of every managed record (or a random sample above
``sync.reconciliation_sample_size``) are read back from the target itself (``CrmTarget.retrieve``). Per
mapped segment it counts members, confirmed, missing and stale records; over all status fields, the records
whose CRM value drifted from what was last confirmed written (the next run sends them again) and the
records the CRM no longer has. Docs: docs/crm-sync.md, "Reconciliation reads the CRM, not the ledger".
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field

from collections.abc import Callable, Iterable, Mapping, Sequence

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from sfmc_pipeline.crm.payloads import STATUS
from sfmc_pipeline.crm.status_format import IN_SEGMENT, parse_entries
from sfmc_pipeline.crm.vectors import arrow, isin
from sfmc_pipeline.salesforce.records import CrmTarget

# members: records in the segment now (failed, rejected, pending and held records aside); confirmed: members
# the CRM shows in the segment; missing: members it does not; stale: records it shows there that are not members
TABLE_COLUMNS = ["segment", "field", "members", "confirmed", "missing", "stale"]


@dataclass
class Reconciliation:
    table: pd.DataFrame  # TABLE_COLUMNS, one row per mapped segment
    managed_records: int
    checked_records: int
    sampled: bool
    drifted: list[tuple[str, str]] = field(default_factory=list)  # (record_id, field API name)
    # checked records the CRM does not have (deleted, or no longer visible to the integration user): left out of
    # the counts; the sync marks them gone and holds them back until their profile changes (standing_failures.py)
    not_found_records: set[str] = field(default_factory=set)
    api_requests: int = 0
    max_not_found_share: float = 1.0  # above this share of the records read back, not found fails the check

    @property
    def drifted_records(self) -> int:
        return len({rid for rid, _ in self.drifted})

    @property
    def not_found(self) -> int:
        return len(self.not_found_records)

    @property
    def too_many_not_found(self) -> bool:
        return bool(self.checked_records) and self.not_found / self.checked_records > self.max_not_found_share

    @property
    def passed(self) -> bool:
        """Nothing missing, stale or drifted, and no more than ``max_not_found_share`` of the records read back
        not found (more means something else: a permission or sharing change)."""
        return not (self.table["missing"].sum() or self.table["stale"].sum() or self.drifted
                    or self.too_many_not_found)


def reconcile(
    target: CrmTarget,
    sobject: str,
    segment_fields: dict[str, str],
    members: Mapping[str, Iterable[str] | pa.Array],
    confirmed: pd.DataFrame | Callable[[], Iterable[pd.DataFrame]],
    excluded: set[str],
    *,
    sample_size: int,
    seed: str,
    max_not_found_share: float = 1.0,
) -> Reconciliation:
    """``segment_fields``: segment -> status field API name; ``members``: segment -> record ids in it now (a set
    or an Arrow array); ``confirmed``: the destination's ledger rows, or a function that reads its status rows a
    page at a time (the ids of every managed record are gathered, then only the rows of the records read back);
    ``excluded``: failed, rejected, pending and held records;
    ``max_not_found_share``: the share of records read back that may be absent from the CRM."""
    pages: Callable[[], Iterable[pd.DataFrame]] = (lambda: [confirmed]) if isinstance(confirmed, pd.DataFrame) \
        else confirmed
    members = {segment: _ids(records) for segment, records in members.items()}
    managed = _managed(pages, members.values())
    managed = managed.filter(pc.invert(pc.is_in(managed, value_set=_ids(excluded))))
    managed = SortedIds(managed.take(pc.sort_indices(managed)))  # in key order, read one at a time (millions)
    sampled = len(managed) > sample_size
    checked = sorted(random.Random(seed).sample(managed, sample_size)) if sampled else list(managed)
    status_rows = _status_rows(pages, checked)
    crm_ids = _crm_ids(status_rows, checked)
    fields = sorted(set(segment_fields.values()))
    before = target.api_requests
    found = target.retrieve(sobject, [crm_ids[rid] for rid in checked], fields) if checked and fields else []
    requests = target.api_requests - before

    not_found = {rid for rid, item in zip(checked, found) if item is None}
    values = {rid: item for rid, item in zip(checked, found) if item is not None}
    drifted = _drift(status_rows, values, fields)
    crm_rows = [(rid, name, item.get(name)) for rid, item in values.items() if item is not None for name in fields]
    crm = pd.DataFrame(crm_rows, columns=["record_id", "field", "value"])
    entries = parse_entries(crm["value"])
    in_crm = pd.DataFrame({"record_id": crm["record_id"].reindex(entries.index).to_numpy(),
                           "field": crm["field"].reindex(entries.index).to_numpy(),
                           "segment": entries["segment"].to_numpy(), "status": entries["status"].to_numpy()})
    in_crm = in_crm[in_crm["status"].isin(IN_SEGMENT)]
    checked_set = set(checked) - not_found
    kept = pa.array(sorted(checked_set), pa.large_string())
    rows = []
    for segment, fld in sorted(segment_fields.items()):
        in_segment = members.get(segment, kept[:0])
        now = set(in_segment.filter(pc.is_in(in_segment, value_set=kept)).to_pylist())
        shown = set(in_crm.loc[(in_crm["segment"] == segment) & (in_crm["field"] == fld), "record_id"])
        rows.append((segment, fld, len(now), len(now & shown), len(now - shown), len(shown - now)))
    return Reconciliation(
        table=pd.DataFrame(rows, columns=TABLE_COLUMNS), managed_records=len(managed), checked_records=len(checked),
        sampled=sampled, drifted=drifted, not_found_records=not_found, api_requests=requests,
        max_not_found_share=max_not_found_share,
    )


class SortedIds(Sequence):
    """Record ids in an Arrow array as a sequence of ``str`` (``random.sample`` picks the same records from it as
    from the list)."""

    def __init__(self, ids: pa.Array):
        self.ids = ids

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, at):
        if isinstance(at, slice):
            return self.ids[at].to_pylist()
        return self.ids[at].as_py()

    def __iter__(self):
        return iter(self.ids.to_pylist())


def _ids(records: Iterable[str] | pa.Array | pd.Series) -> pa.Array:
    """Record ids (a set, a list, a column) as one Arrow array, without nulls."""
    if isinstance(records, (set, frozenset)):
        records = sorted(records)
    return arrow(records).drop_null() if len(records) else pa.array([], pa.large_string())


def _managed(pages: Callable[[], Iterable[pd.DataFrame]], members: Iterable[pa.Array]) -> pa.Array:
    """The distinct record ids of the ledger's status rows and of the segments' members, unsorted: the ledger's ids
    (one per record, its pages in key order), then each segment's members it does not already hold (a first sync's
    members are all in the ledger: no copy of millions of members is made to find that out)."""
    ids = [pc.unique(arrow(page.loc[(page["kind"] == STATUS).to_numpy(dtype=bool), "record_id"]).drop_null())
           for page in pages()]
    managed = pc.unique(pa.concat_arrays(ids)) if ids else pa.array([], pa.large_string())
    del ids
    for segment_members in members:
        new = segment_members.filter(pc.invert(pc.is_in(segment_members, value_set=managed)))
        if len(new):
            managed = pa.concat_arrays([managed, pc.unique(new)])
    return managed


def _status_rows(pages: Callable[[], Iterable[pd.DataFrame]], record_ids: list[str]) -> pd.DataFrame:
    """The ledger's status rows of ``record_ids`` (those read back), in key order."""
    wanted = pa.array(record_ids, pa.large_string())
    chosen = [page[(page["kind"] == STATUS).to_numpy(dtype=bool) & isin(page["record_id"], wanted)]
              for page in pages()]
    return pd.concat(chosen, ignore_index=True) if chosen else pd.DataFrame(
        {c: pd.Series([], dtype="str") for c in ("record_id", "field", "kind", "crm_id", "value")})


def _crm_ids(status_rows: pd.DataFrame, record_ids: list[str]) -> dict[str, str]:
    """The CRM record Id of each record key (the same for updates; the Id an upsert matched or created)."""
    known = status_rows.dropna(subset=["crm_id"]).drop_duplicates("record_id").set_index("record_id")["crm_id"]
    return {rid: known.get(rid, rid) for rid in record_ids}


def _drift(status_rows: pd.DataFrame, values: dict[str, dict], fields: list[str]) -> list[tuple[str, str]]:
    """``(record_id, field)`` confirmed in the ledger whose CRM value differs (records the CRM has)."""
    lowered = {f.lower(): f for f in fields}
    drifted = []
    status_rows = status_rows[isin(status_rows["record_id"], list(values))] if len(status_rows) else status_rows
    for rid, fld, value in status_rows[["record_id", "field", "value"]].itertuples(index=False):
        if rid not in values or fld.lower() not in lowered:
            continue
        if values[rid].get(lowered[fld.lower()]) != (json.loads(value) if value is not None else None):
            drifted.append((rid, fld))
    return drifted
