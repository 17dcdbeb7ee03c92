"""The local target set up as the org a destination expects, before the sync's preflight runs on it.

An admin creates a destination's custom fields in a real org; the local target creates them itself and,
for an update, seeds the sample's records. The sync asset and ``sfmc-pipeline check`` (on
``LocalCrmTarget.snapshot``) both call ``prepare_local_target``, then the same preflight
(``preflight.preflight_destination``).
"""

from __future__ import annotations

from typing import Iterator, Mapping

import pandas as pd

from sfmc_pipeline.config.data_extensions import ColumnConfig
from sfmc_pipeline.config.destinations import DestinationConfig
from sfmc_pipeline.crm.local.store import SEED_BATCH
from sfmc_pipeline.crm.local.target import LocalCrmTarget
from sfmc_pipeline.crm.preflight import PreflightError
from sfmc_pipeline.salesforce.ids import KEY_PREFIXES
from sfmc_pipeline.salesforce.rules import (
    REQUIRED_FIELDS,
    STANDARD_FIELDS,
    custom_field_for,
)

CUSTOM_SUFFIX = "__c"


def prepare_local_target(target: LocalCrmTarget, dest: DestinationConfig, columns: Mapping[str, ColumnConfig],
                         profiles: pd.DataFrame | None = None) -> None:
    """Create ``dest``'s fields on its object and, for an update with ``profiles``, seed the records of the
    destination's key prefix (a record must exist to be updated), with their required fields.

    The fields: the status fields (Long Text Area), every mapped custom attribute field (``__c``, typed for its
    column by ``salesforce.rules.custom_field_for``) and an upsert's external-id field. Standard fields cannot
    be created: a mapped standard field the local target lacks is a ``PreflightError`` naming those it has."""
    problems = missing_standard_fields(dest)
    if problems:
        raise PreflightError(problems)
    custom = {field: custom_field_for(columns[column]) if column in columns else ("string", 255)
              for column, field in dest.attribute_map.items() if field.lower().endswith(CUSTOM_SUFFIX)}
    external = dest.external_id.field if dest.external_id else None
    target.ensure_object(dest.object, status_fields=list(dest.status_fields), external_id_field=external,
                         custom_fields=custom)
    if profiles is not None and dest.operation == "update":
        _seed(target, dest, profiles)


def missing_standard_fields(dest: DestinationConfig) -> list[str]:
    """One problem per mapped attribute field that is neither custom (``__c``) nor a standard field of the local
    target's object, naming the fields it has."""
    standard = [f.name for f in STANDARD_FIELDS[dest.object]]
    known = {name.lower() for name in standard}
    custom = sorted({*dest.status_fields, *(f for f in dest.attribute_map.values()
                                           if f.lower().endswith(CUSTOM_SUFFIX))})
    problems = []
    for column, field in dest.attribute_map.items():
        if field.lower() in known or field.lower().endswith(CUSTOM_SUFFIX):
            continue
        problems.append(
            f"{dest.object}.{field}: the local target has no such standard field (mapped from {column!r}); it has "
            f"Id, {', '.join(standard)} and the custom fields it creates ({', '.join(custom) or 'none'}). Map "
            f"{column!r} to one of them, or to a custom field (an API name ending in {CUSTOM_SUFFIX}, which the local "
            f"target creates), or set the SALESFORCE_* variables to write to an org that has {field}"
        )
    return problems


def _seed(target: LocalCrmTarget, dest: DestinationConfig, profiles: pd.DataFrame) -> None:
    ids = profiles[dest.identity_column].astype("string")
    mine = profiles[ids.str.startswith(KEY_PREFIXES[dest.object]).fillna(False).astype(bool)]
    column_of = {field: column for column, field in dest.attribute_map.items()}
    records = pd.DataFrame({"Id": mine[dest.identity_column]})
    for field in REQUIRED_FIELDS[dest.object]:  # a record must have its required fields to exist
        records[field] = mine[column_of[field]] if field in column_of else "(unknown)"
    target.seed(dest.object, _seed_rows(records))


def _seed_rows(records: pd.DataFrame) -> Iterator[dict[str, str | None]]:
    """The seed rows as ``{field: text or None}``, made ``SEED_BATCH`` at a time (not one list of every row)."""
    for start in range(0, len(records), SEED_BATCH):
        for row in records.iloc[start:start + SEED_BATCH].to_dict("records"):
            yield {k: (None if pd.isna(v) else str(v)) for k, v in row.items()}
