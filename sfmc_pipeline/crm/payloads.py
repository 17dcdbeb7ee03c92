"""What each CRM record of a destination should hold: segment status fields and mapped attributes.

A status field's value lists the profile's statuses for the segments mapped to it (``status_format.py``).
A profile with no status in a field's segments leaves that field untouched, so ``exited`` is written once
and a profile that never qualified is never written; held profiles (row quarantined) are left as they
are. The rules as users see them: docs/crm-sync.md, "What is written". Everything is computed column-wise
(``vectors.py``), without a Python call per (record, field) row or per group.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Iterable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from sfmc_pipeline.config.destinations import DestinationConfig
from sfmc_pipeline.crm.status_format import IN_SEGMENT
from sfmc_pipeline.crm.vectors import (
    TEXT,
    arrow,
    format_groups,
    isin,
    joined,
    json_strings,
    key_codes,
    lookup,
    map_small,
    parse_entries,
    text,
)
from sfmc_pipeline.salesforce.ids import KEY_PREFIXES
from sfmc_pipeline.salesforce.rules import REQUIRED_FIELDS
from sfmc_pipeline.segments.columns import PROFILE_KEY

DESIRED_COLUMNS = ["record_id", PROFILE_KEY, "field", "kind", "column", "value"]
STATUS, ATTRIBUTE = "status", "attribute"
STATUS_COLUMNS = ["record_id", PROFILE_KEY, "field", "value", "clearing"]


@dataclass(frozen=True)
class Attribute:
    """The values of one mapped profile column for the records that get a status value."""

    column: str  # the profile column
    field: str  # the field as configured (an API name, matched case-insensitively)
    values: pd.DataFrame  # record_id, profile_key (str), value (the column's own dtype; null: clear the field)


@dataclass(frozen=True)
class DesiredState:
    statuses: pd.DataFrame  # STATUS_COLUMNS: field as configured (a clear: the ledger's API name); value str,
    #                         missing to set the field to null; clearing: the row takes unmapped segments out
    attributes: list[Attribute]
    considered: int  # records with a status value to hold
    skipped: int  # profiles with a status whose record is another object's, or who have no record key
    held: int  # records of held profiles (row quarantined), left as they are
    null_attributes: int  # attribute values left as they are because the source value is null
    cleared: Counter = field(default_factory=Counter)  # (field, segment) -> records cleared of an unmapped segment
    members: dict[str, pa.Array] = field(default_factory=dict)  # segment -> records in it now (not held), unique
    held_records: set[str] = field(default_factory=set)
    confirmed_entries: pd.DataFrame | None = None  # ``confirmed_entries`` of the ledger rows it was built from

    def summary(self) -> DesiredState:
        """The same state without its frames (statuses, attributes, ledger entries): the counts, members and held
        records what comes after the send reads, not the per-(record, field) values it no longer needs."""
        return replace(self, statuses=self.statuses.iloc[0:0], attributes=[], confirmed_entries=None)

    @property
    def values(self) -> pd.DataFrame:
        """Everything as one ``DESIRED_COLUMNS`` frame (object values; for inspection, not the hot path)."""
        statuses = self.statuses.drop(columns="clearing").assign(kind=STATUS, column=None)
        statuses["value"] = statuses["value"].astype(object).where(statuses["value"].notna(), None)
        parts = [statuses[DESIRED_COLUMNS]]
        for attribute in self.attributes:
            values = attribute.values.assign(field=attribute.field, kind=ATTRIBUTE, column=attribute.column)
            values["value"] = values["value"].astype(object).where(values["value"].notna(), None)
            parts.append(values[DESIRED_COLUMNS])
        return pd.concat(parts, ignore_index=True)


def record_keys(dest: DestinationConfig, profiles: pd.DataFrame, confirmed: pd.DataFrame | Iterable[pd.DataFrame],
                profile_key: str) -> pd.Series:
    """profile key -> record key (``str``): from the profiles, else from the ledger (profiles that left: the first
    record in key order). ``confirmed``: the ledger's ``profile_key, record_id`` rows in key order, or its pages."""
    current = profiles[list(dict.fromkeys([profile_key, dest.key_column]))].dropna()
    mapping = text(current[dest.key_column].astype(str), index=pd.Index(current[profile_key].astype(str)))
    pages = [confirmed] if isinstance(confirmed, pd.DataFrame) else confirmed
    present = mapping.index.unique()  # its hash table is built once, for every page
    earlier = [_earlier_keys(page, present) for page in pages]
    if len(earlier) > 1:  # a profile's first record is in the first page that has it
        together = pd.concat(earlier)
        earlier = [together[~together.index.duplicated()]]
    return pd.concat([mapping, *earlier])


def _earlier_keys(confirmed: pd.DataFrame, current: pd.Index) -> pd.Series:
    """profile key -> its first record in ``confirmed`` (key order), for profiles not in ``current`` (unique)."""
    known = confirmed[[PROFILE_KEY, "record_id"]]
    if len(known) > 1:  # a row with the same record and profile as the row before is never a profile's first
        ids, owners = arrow(known["record_id"]), arrow(known[PROFILE_KEY])
        repeat = pc.and_(pc.equal(ids.slice(1), ids.slice(0, len(ids) - 1)),
                         pc.equal(owners.slice(1), owners.slice(0, len(owners) - 1))).fill_null(False)
        known = known[np.concatenate([[True], ~repeat.to_numpy(zero_copy_only=False).astype(bool)])]
    known = known.dropna()
    known = known[current.get_indexer(known[PROFILE_KEY].astype(str)) < 0].drop_duplicates(PROFILE_KEY)
    return text(known["record_id"], index=pd.Index(known[PROFILE_KEY].astype(str)))


def build_desired_state(
    dest: DestinationConfig, statuses: pd.DataFrame, profiles: pd.DataFrame, confirmed: pd.DataFrame, *, profile_key: str,
    mentioned: pd.DataFrame | None = None,
) -> DesiredState:
    """``statuses``: ``profile_key, segment, status[, held]``; ``confirmed``: this destination's ledger rows;
    ``mentioned``: ``profile_key, segment`` of other statuses of profiles ``confirmed`` names (a sync planned a range
    of records at a time: statuses of those profiles' records in other ranges), which only stop an exit.

    Records are keyed by the destination's key column (the Salesforce Id for updates, the external id for
    upserts), looked up from the profiles, else from the ledger, so the exit of a profile no longer in the
    dataset still reaches its record. Updates take only their object's Ids; other profiles are counted as
    skipped. A segment the ledger shows confirmed in-segment but the statuses no longer mention gets
    ``exited``; a segment no longer mapped to a field is cleared from it once."""
    field_of = {segment: fld.lower() for segment, fld in dest.segments.items()}
    mapped = statuses[statuses["segment"].isin(list(field_of))]
    held_profiles = set(mapped.loc[mapped["held"], PROFILE_KEY].astype(str)) if "held" in mapped else set()
    keys = record_keys(dest, profiles, confirmed, profile_key)
    prefix = KEY_PREFIXES[dest.object] if dest.operation == "update" else ""
    held_records = set()
    if held_profiles:
        held_records = {rid for rid in keys.reindex(list(held_profiles)).dropna() if rid.startswith(prefix)}

    in_crm = confirmed_entries(confirmed)
    exits = _lost_exits(in_crm, mapped if mentioned is None else pd.concat([mapped, mentioned]), field_of)
    wanted = mapped[~mapped[PROFILE_KEY].astype(str).isin(list(held_profiles))] if held_profiles else mapped
    wanted = pd.DataFrame({
        PROFILE_KEY: wanted[PROFILE_KEY].astype(str), "segment": wanted["segment"].astype(str),
        "status": wanted["status"].astype(str),
    })
    wanted["record_id"] = lookup(wanted[PROFILE_KEY], keys.index, keys, index=wanted.index)
    mine = (wanted["record_id"].notna() & wanted["record_id"].fillna("").str.startswith(prefix)).to_numpy()
    skipped = int(wanted.loc[~mine, PROFILE_KEY].nunique())
    rows = pd.concat([wanted.loc[mine, ["record_id", PROFILE_KEY, "segment", "status"]], exits], ignore_index=True)
    rows["field"] = map_small(rows["segment"], dest.segments)
    rows["entry"] = text(joined(rows["segment"], rows["status"], sep=":"), index=rows.index)
    status_values = format_groups(rows, ["record_id", PROFILE_KEY, "field"]).assign(clearing=False)

    clears, cleared = _clears(in_crm, field_of, status_values, held_records)
    record_ids = _records(status_values, clears)
    attributes, null_attributes = _attribute_values(dest, profiles, record_ids, profile_key)

    current = rows[rows["status"].isin(list(IN_SEGMENT)).to_numpy()]
    members = {segment: pc.unique(arrow(current.loc[(current["segment"] == segment).to_numpy(), "record_id"]))
               for segment in dest.segments}
    return DesiredState(
        statuses=pd.concat([status_values[STATUS_COLUMNS], clears[STATUS_COLUMNS]], ignore_index=True),
        attributes=attributes, considered=len(record_ids), skipped=skipped, held=len(held_records),
        null_attributes=null_attributes, cleared=cleared, members=members, held_records=held_records,
        confirmed_entries=in_crm,
    )


def confirmed_entries(confirmed: pd.DataFrame) -> pd.DataFrame:
    """``record_id, profile_key, field (API name), field_key (lower-cased), segment, status`` of every
    confirmed status entry (``str`` columns)."""
    rows = confirmed[(confirmed["kind"] == STATUS).to_numpy()].reset_index(drop=True)
    entries = parse_entries(json_strings(rows["value"]))
    at = entries.index.to_numpy()
    fields = text(rows["field"]).take(at).reset_index(drop=True)
    return pd.DataFrame({
        "record_id": text(rows["record_id"]).take(at).reset_index(drop=True),
        PROFILE_KEY: text(rows[PROFILE_KEY]).take(at).reset_index(drop=True),
        "field": fields,
        "field_key": fields.str.lower(),
        "segment": entries["segment"].reset_index(drop=True),
        "status": entries["status"].reset_index(drop=True),
    })


def _anti_join(left: pd.DataFrame, right: pd.DataFrame, on: list[str]) -> np.ndarray:
    """True for each row of ``left`` whose ``on`` values appear in no row of ``right`` (nulls match nulls)."""
    if left.empty:
        return np.zeros(0, dtype=bool)
    if right.empty:
        return np.ones(len(left), dtype=bool)
    left_keys, right_keys = key_codes([left, right], on)
    return ~pd.Index(left_keys).isin(right_keys)


def _lost_exits(in_crm: pd.DataFrame, mapped: pd.DataFrame, field_of: dict[str, str]) -> pd.DataFrame:
    """``exited`` rows for confirmed in-segment entries (in the segment's current field) of profiles
    the statuses no longer mention for that segment."""
    columns = ["record_id", PROFILE_KEY, "segment", "status"]
    in_field = (in_crm["field_key"] == map_small(in_crm["segment"], field_of)).to_numpy(dtype=bool, na_value=False)
    current = in_crm[in_crm["status"].isin(list(IN_SEGMENT)).to_numpy() & in_field]
    if current.empty:
        return pd.DataFrame({c: pd.Series([], dtype=TEXT) for c in columns})
    known = pd.DataFrame({PROFILE_KEY: mapped[PROFILE_KEY].astype(str), "segment": mapped["segment"].astype(str)})
    lost = current[_anti_join(current, known, [PROFILE_KEY, "segment"])]
    return lost[["record_id", PROFILE_KEY, "segment"]].assign(status=text(["exited"] * len(lost), index=lost.index))


def _records(status_values: pd.DataFrame, clears: pd.DataFrame) -> pd.DataFrame:
    """``record_id, profile_key`` of every record that gets a status value: the first profile key in
    (record, profile key) order (status values), then in order (records with only clears)."""
    pairs = status_values[["record_id", PROFILE_KEY]].drop_duplicates()
    if pairs["record_id"].duplicated().any():  # one record, several profiles: the lowest key, as sorted groups give
        pairs = pairs.sort_values(["record_id", PROFILE_KEY])
    pairs = pairs.drop_duplicates("record_id")
    only_clears = clears.loc[~isin(clears["record_id"], pairs["record_id"]), ["record_id", PROFILE_KEY]]
    return pd.concat([pairs, only_clears.drop_duplicates("record_id")], ignore_index=True)


def _clears(in_crm: pd.DataFrame, field_of: dict[str, str], status_values: pd.DataFrame,
            held_records: set[str]) -> tuple[pd.DataFrame, Counter]:
    """Confirmed entries of segments no longer mapped to their field (removed from the mapping, or
    moved) come out of it: ``(values for the (record, field)s that get no new value anyway: the
    entries that stay, or None to clear the field; (field, segment) -> records cleared)``."""
    empty = pd.DataFrame({c: pd.Series([], dtype=TEXT) for c in STATUS_COLUMNS}).assign(clearing=False)
    entries = in_crm[~isin(in_crm["record_id"], list(held_records))] if held_records else in_crm
    stale = (entries["field_key"] != map_small(entries["segment"], field_of).fillna("")).to_numpy(dtype=bool)
    if not stale.any():
        return empty, Counter()
    cleared = Counter(zip(entries.loc[stale, "field"], entries.loc[stale, "segment"]))
    affected = entries.loc[stale, ["record_id", "field", "field_key"]].drop_duplicates(["record_id", "field_key"])
    written = pd.DataFrame({"record_id": status_values["record_id"], "field_key": status_values["field"].str.lower()})
    affected = affected[_anti_join(affected, written, ["record_id", "field_key"])]
    if affected.empty:
        return empty, cleared
    kept = entries[~stale].merge(affected[["record_id", "field_key"]], on=["record_id", "field_key"])
    kept = kept.assign(entry=text(joined(kept["segment"], kept["status"], sep=":"), index=kept.index))
    remaining = format_groups(kept, ["record_id", "field_key"])
    out = affected.merge(remaining, on=["record_id", "field_key"], how="left")
    owners = entries.drop_duplicates("record_id")
    out[PROFILE_KEY] = lookup(out["record_id"], owners["record_id"], owners[PROFILE_KEY], index=out.index)
    out["value"] = text(out["value"].astype(object).where(out["value"].notna(), None), index=out.index)
    return out.assign(clearing=True)[STATUS_COLUMNS].reset_index(drop=True), cleared


def _attribute_values(dest: DestinationConfig, profiles: pd.DataFrame, records: pd.DataFrame,
                      profile_key: str) -> tuple[list[Attribute], int]:
    """The mapped attributes of the records that get a status value, and how many null values are left out: a
    null leaves the field as it is unless the destination opts in to ``clear_null_attributes``; a null in a
    field Salesforce requires is always sent, so the record is rejected (``REQUIRED_FIELD_MISSING``)."""
    columns = dict(dest.attribute_map)  # profile column -> field
    if dest.external_id is not None:
        columns[dest.external_id.column] = dest.external_id.field
    rows = profiles[isin(profiles[profile_key].astype(str), records[PROFILE_KEY])]
    record_id = rows[dest.key_column].astype(str)
    mine = isin(record_id, records["record_id"]) & record_id.notna().to_numpy()
    rows, record_id = rows[mine], record_id[mine]
    owners = rows[profile_key].astype(str)
    required = {name.lower() for name in REQUIRED_FIELDS[dest.object]}
    attributes, nulls = [], 0
    for column, fld in columns.items():
        values = rows[column]
        keep = (values.notna() | dest.clear_null_attributes | (fld.lower() in required)).to_numpy(dtype=bool)
        nulls += int((~keep).sum())
        attributes.append(Attribute(column=column, field=fld, values=pd.DataFrame({
            "record_id": text(record_id[keep]).reset_index(drop=True),
            PROFILE_KEY: text(owners[keep]).reset_index(drop=True),
            "value": values[keep].reset_index(drop=True),
        })))
    return attributes, nulls
