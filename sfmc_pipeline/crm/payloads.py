"""What each CRM record of a destination should hold: segment status fields and mapped attributes.

A status field's value lists the profile's statuses for the segments mapped to it, in the status
format (``status_format.py``). Rules, in the order they apply:

- Records are keyed by the destination's key column (the Salesforce Id for updates, the external
  id for upserts), looked up from the profile; a profile no longer in the dataset is found through
  the ledger (so its exit still reaches its record). Updates take only their object's Ids; other
  profiles are counted as skipped.
- A profile with no status in a field's segments gets no value for that field (it is not
  touched): ``exited`` is written once, and a profile that never qualified is never written.
- A segment the ledger shows as confirmed in-segment, but that the statuses no longer mention,
  gets ``exited`` (the profile left and its exit was not confirmed written yet).
- Held profiles (their row is quarantined) are left exactly as they are in the CRM.
- A confirmed status entry of a segment that is no longer mapped to that field (removed from the
  mapping, or moved to another field) is cleared from it, once.
- Attributes are written for the records that get a status value. A null source value leaves the
  field as it is, unless the destination opts in to ``clear_null_attributes``; a null in a field
  Salesforce requires is always sent, so the record is rejected (``REQUIRED_FIELD_MISSING``).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field

import pandas as pd

from sfmc_pipeline.config.models import DestinationConfig
from sfmc_pipeline.crm.salesforce_rules import REQUIRED_FIELDS
from sfmc_pipeline.crm.status_format import IN_SEGMENT, format_entries, parse_entries
from sfmc_pipeline.datasets.salesforce_id import KEY_PREFIXES
from sfmc_pipeline.segments.evaluate import PROFILE_KEY

DESIRED_COLUMNS = ["record_id", PROFILE_KEY, "field", "kind", "column", "value"]
STATUS, ATTRIBUTE = "status", "attribute"


@dataclass(frozen=True)
class DesiredState:
    values: pd.DataFrame  # DESIRED_COLUMNS; field: status field API name or attribute field as configured;
    #                       column: the profile column of an attribute (None for status fields); value: typed
    considered: int  # records with a status value to hold
    skipped: int  # profiles with a status whose record is another object's, or who have no record key
    held: int  # records of held profiles (row quarantined), left as they are
    null_attributes: int  # attribute values left as they are because the source value is null
    cleared: Counter = field(default_factory=Counter)  # (field, segment) -> records cleared of an unmapped segment
    members: dict[str, set[str]] = field(default_factory=dict)  # segment -> records in it now (not held)
    held_records: set[str] = field(default_factory=set)
    confirmed_entries: pd.DataFrame | None = None  # ``confirmed_entries`` of the ledger rows it was built from


def record_keys(dest: DestinationConfig, profiles: pd.DataFrame, confirmed: pd.DataFrame, profile_key: str) -> pd.Series:
    """profile key -> record key: from the profiles, else from the ledger (profiles that left)."""
    current = profiles[list(dict.fromkeys([profile_key, dest.key_column]))].dropna()
    mapping = pd.Series(current[dest.key_column].astype(str).to_numpy(), index=current[profile_key].astype(str))
    known = confirmed[[PROFILE_KEY, "record_id"]].dropna().drop_duplicates(PROFILE_KEY)
    earlier = pd.Series(known["record_id"].to_numpy(), index=known[PROFILE_KEY].astype(str))
    return pd.concat([mapping, earlier[~earlier.index.isin(mapping.index)]])


def build_desired_state(
    dest: DestinationConfig, statuses: pd.DataFrame, profiles: pd.DataFrame, confirmed: pd.DataFrame, *, profile_key: str
) -> DesiredState:
    """``statuses``: ``profile_key, segment, status[, held]``; ``confirmed``: this destination's ledger rows."""
    field_of = {segment: fld.lower() for segment, fld in dest.segments.items()}
    mapped = statuses[statuses["segment"].isin(list(field_of))]
    held_profiles = set(mapped.loc[mapped["held"], PROFILE_KEY].astype(str)) if "held" in mapped else set()
    keys = record_keys(dest, profiles, confirmed, profile_key)
    prefix = KEY_PREFIXES[dest.object] if dest.operation == "update" else ""
    held_records = {rid for rid in keys.reindex(list(held_profiles)).dropna() if rid.startswith(prefix)}

    in_crm = confirmed_entries(confirmed)
    exits = _lost_exits(in_crm, mapped, field_of)
    wanted = mapped[~mapped[PROFILE_KEY].astype(str).isin(held_profiles)]
    wanted = wanted.assign(record_id=wanted[PROFILE_KEY].astype(str).map(keys))
    mine = wanted["record_id"].notna() & wanted["record_id"].fillna("").str.startswith(prefix)
    skipped = int(wanted.loc[~mine, PROFILE_KEY].nunique())
    rows = pd.concat([wanted[mine], exits], ignore_index=True)
    rows = rows.assign(field=rows["segment"].map(dest.segments))
    status_values = format_entries(rows[["record_id", PROFILE_KEY, "field", "segment", "status"]],
                                   ["record_id", PROFILE_KEY, "field"])

    clears, cleared = _clears(in_crm, field_of, status_values, held_records)
    status_values = pd.concat([status_values, clears], ignore_index=True).assign(kind=STATUS, column=None)
    record_ids = status_values[["record_id", PROFILE_KEY]].drop_duplicates("record_id")
    attributes, null_attributes = _attribute_values(dest, profiles, record_ids, profile_key)

    current = rows[rows["status"].isin(IN_SEGMENT)]
    members = {segment: set(current.loc[current["segment"] == segment, "record_id"]) for segment in dest.segments}
    values = pd.concat([status_values[DESIRED_COLUMNS], attributes], ignore_index=True)
    return DesiredState(
        values=values, considered=len(record_ids), skipped=skipped, held=len(held_records),
        null_attributes=null_attributes, cleared=cleared, members=members, held_records=held_records,
        confirmed_entries=in_crm,
    )


def confirmed_entries(confirmed: pd.DataFrame) -> pd.DataFrame:
    """``record_id, profile_key, field (API name), field_key (lower-cased), segment, status`` of every
    confirmed status entry."""
    rows = confirmed[(confirmed["kind"] == STATUS)].reset_index(drop=True)
    entries = parse_entries(rows["value"].map(lambda v: None if v is None else json.loads(v)))
    fields = rows["field"].reindex(entries.index).to_numpy()
    return pd.DataFrame({
        "record_id": rows["record_id"].reindex(entries.index).to_numpy(),
        PROFILE_KEY: rows[PROFILE_KEY].reindex(entries.index).to_numpy(),
        "field": fields,
        "field_key": pd.Series(fields, dtype=object).str.lower().to_numpy(),
        "segment": entries["segment"].to_numpy(),
        "status": entries["status"].to_numpy(),
    }, dtype=object)


def _lost_exits(in_crm: pd.DataFrame, mapped: pd.DataFrame, field_of: dict[str, str]) -> pd.DataFrame:
    """``exited`` rows for confirmed in-segment entries (in the segment's current field) of profiles
    the statuses no longer mention for that segment."""
    current = in_crm[in_crm["status"].isin(IN_SEGMENT) & (in_crm["field_key"] == in_crm["segment"].map(field_of))]
    known = mapped[[PROFILE_KEY, "segment"]].astype(str)
    lost = current.merge(known, on=[PROFILE_KEY, "segment"], how="left", indicator=True)
    lost = lost[lost["_merge"] == "left_only"]
    return lost[["record_id", PROFILE_KEY, "segment"]].assign(status="exited")


def _clears(in_crm: pd.DataFrame, field_of: dict[str, str], status_values: pd.DataFrame,
            held_records: set[str]) -> tuple[pd.DataFrame, Counter]:
    """Confirmed entries of segments no longer mapped to their field (removed from the mapping, or
    moved) come out of it: ``(values for the (record, field)s that get no new value anyway: the
    entries that stay, or None to clear the field; (field, segment) -> records cleared)``."""
    entries = in_crm[~in_crm["record_id"].isin(held_records)]
    stale = entries["field_key"] != entries["segment"].map(field_of).fillna("")
    cleared = Counter(zip(entries.loc[stale, "field"], entries.loc[stale, "segment"]))
    affected = entries.loc[stale, ["record_id", "field", "field_key"]].drop_duplicates(["record_id", "field_key"])
    written = set(zip(status_values["record_id"], status_values["field"].str.lower()))
    affected = affected[[pair not in written for pair in zip(affected["record_id"], affected["field_key"])]]
    columns = ["record_id", PROFILE_KEY, "field", "value"]
    if affected.empty:
        return pd.DataFrame(columns=columns), cleared
    kept = entries[~stale].merge(affected[["record_id", "field_key"]], on=["record_id", "field_key"])
    remaining = format_entries(kept[["record_id", "field_key", "segment", "status"]], ["record_id", "field_key"])
    out = affected.merge(remaining, on=["record_id", "field_key"], how="left")
    out["value"] = out["value"].astype(object).where(out["value"].notna(), None)
    owners = entries.drop_duplicates("record_id").set_index("record_id")[PROFILE_KEY]
    out[PROFILE_KEY] = out["record_id"].map(owners)
    return out[columns], cleared


def _attribute_values(dest: DestinationConfig, profiles: pd.DataFrame, records: pd.DataFrame,
                      profile_key: str) -> tuple[pd.DataFrame, int]:
    columns = dict(dest.attribute_map)  # profile column -> field
    if dest.external_id is not None:
        columns[dest.external_id.column] = dest.external_id.field
    rows = profiles[profiles[profile_key].astype(str).isin(set(records[PROFILE_KEY].astype(str)))]
    rows = rows.assign(record_id=rows[dest.key_column].astype(str))
    rows = rows[rows["record_id"].isin(set(records["record_id"]))]
    required = {name.lower() for name in REQUIRED_FIELDS[dest.object]}
    frames, nulls = [], 0
    for column, fld in columns.items():
        values = rows[column]
        keep = values.notna() | dest.clear_null_attributes | (fld.lower() in required)
        nulls += int((~keep).sum())
        frames.append(pd.DataFrame({
            "record_id": rows["record_id"].to_numpy()[keep.to_numpy()],
            PROFILE_KEY: rows[profile_key].astype(str).to_numpy()[keep.to_numpy()],
            "field": fld, "kind": ATTRIBUTE, "column": column,
            "value": pd.Series(values[keep].astype(object).where(values[keep].notna(), None).tolist(), dtype=object),
        }))
    if not frames:
        return pd.DataFrame(columns=DESIRED_COLUMNS), 0
    return pd.concat(frames, ignore_index=True)[DESIRED_COLUMNS], nulls
