"""What each CRM record should hold: segment status fields and mapped attributes.

A status field's value lists the profile's statuses for the segments mapped to it, as
``segment:status`` entries sorted by segment name and joined with ``;`` (for example
``new_customer:realized;offer_clickers:existing``). A profile with no status in a field's
segments gets no value for that field (it is not touched): ``exited`` is written once, and a
profile that never qualified is never written.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

import numpy as np
import pandas as pd

from sfmc_pipeline.config.models import DestinationConfig
from sfmc_pipeline.datasets.salesforce_id import KEY_PREFIXES

DESIRED_COLUMNS = ["record_id", "field", "value"]


@dataclass(frozen=True)
class DesiredState:
    values: pd.DataFrame  # DESIRED_COLUMNS; field = configured name (Mapping ID or attribute field)
    considered: int  # records with a status in a mapped segment (and, for updates, this object's key prefix)
    skipped: int  # records with a status whose Id belongs to another object


def build_desired_state(dest: DestinationConfig, statuses: pd.DataFrame, profiles: pd.DataFrame) -> DesiredState:
    field_of = dest.segments
    mapped = statuses[statuses["segment"].isin(list(field_of))]
    # Updates go by record Id, so a destination takes only its object's Ids; upserts are keyed
    # by an external id and take every profile.
    prefix = KEY_PREFIXES[dest.object] if dest.operation == "update" else ""
    ids = mapped["SubscriberKey"].astype("string")
    mine = ids.str.startswith(prefix).fillna(False).astype(bool)
    skipped = int(ids[~mine].nunique())
    mapped = mapped[mine]

    entries = mapped.assign(field=mapped["segment"].map(field_of), entry=mapped["segment"] + ":" + mapped["status"])
    entries = entries.sort_values(["SubscriberKey", "field", "segment"])
    status_values = (
        entries.groupby(["SubscriberKey", "field"], sort=True)["entry"].agg(";".join).reset_index()
        .rename(columns={"SubscriberKey": "record_id", "entry": "value"})
    )
    record_ids = status_values["record_id"].drop_duplicates()
    attribute_values = _attribute_values(dest, profiles, record_ids)
    status_values["value"] = status_values["value"].astype(object)
    values = pd.concat([status_values[DESIRED_COLUMNS], attribute_values], ignore_index=True)
    values["record_id"] = values["record_id"].astype("string")
    values["field"] = values["field"].astype("string")
    return DesiredState(values=values, considered=len(record_ids), skipped=skipped)


def _attribute_values(dest: DestinationConfig, profiles: pd.DataFrame, record_ids: pd.Series) -> pd.DataFrame:
    columns = list(dest.attribute_map)
    if dest.external_id is not None:
        columns.append(dest.external_id.column)
    rows = profiles[profiles[dest.identity_column].isin(record_ids)]
    frames = []
    for column in dict.fromkeys(columns):
        field = dest.external_id.field if dest.external_id and column == dest.external_id.column else dest.attribute_map[column]
        frames.append(
            pd.DataFrame(
                {"record_id": rows[dest.identity_column].to_numpy(), "field": field,
                 "value": pd.Series([json_value(v) for v in rows[column].tolist()], dtype=object)}
            )
        )
    if not frames:
        return pd.DataFrame(columns=DESIRED_COLUMNS)
    return pd.concat(frames, ignore_index=True)


def json_value(value):
    """A dataset value as Salesforce's JSON expects it (None for null)."""
    if value is None or (not isinstance(value, (str, bytes)) and pd.isna(value)):
        return None
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, Decimal)):
        return float(value)
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (pd.Timestamp, dt.datetime, dt.date)):
        return value.isoformat()
    return str(value)
