"""The ``destinations`` and ``sync`` sections: which Salesforce object receives which segment statuses
and attributes, and how the sync sends them."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from sfmc_pipeline.config.field_rules import StrictModel, snake_case_field
from sfmc_pipeline.config.governance import DEFAULT_ACTION, PolicyExceptionConfig

DEFAULT_ATTRIBUTES = {
    "Contact": {"LastName": "LastName", "FirstName": "FirstName", "Email": "Email"},
    "Lead": {"LastName": "LastName", "Company": "Company", "Email": "Email"},
}
MAX_STATUS_FIELDS_PER_OBJECT = 25
API_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def custom_field_name(mapping_id: str) -> str:
    """The custom field a Mapping ID names: ``crm_2_seg`` -> ``crm_2_seg__c`` (kept if it has ``__c``).

    Salesforce custom field API names end in ``__c``; a segment status field is always a custom
    Long Text Area, so both spellings name the same field."""
    return mapping_id if mapping_id.lower().endswith("__c") else f"{mapping_id}__c"


class ExternalIdConfig(StrictModel):
    field: str = Field(description="Salesforce external-id field, e.g. SFMC_Subscriber_Key__c.")
    column: str = Field(description="Profile dataset column holding its value.")


class DestinationConfig(StrictModel):
    """A Salesforce object that receives segment statuses and mapped attributes."""

    name: str = Field(description="snake_case; the sync asset is salesforce/<name>.")
    object: Literal["Contact", "Lead"]
    identity_column: str | None = Field(
        default=None, description="Profile column holding the Salesforce record Id; default: the profile key."
    )
    attributes: dict[str, str] | None = Field(
        default=None, description="Dataset column -> Salesforce field; default per object (Contact/Lead)."
    )
    segments: dict[str, str] = Field(
        default_factory=dict,
        description="Segment -> Mapping ID (the custom Long Text Area field). Resolved at load to the field's "
        "API name: 'seg' and 'seg__c' (in any case) are one field.",
    )
    operation: Literal["update", "upsert"] = Field(
        default="update", description="update existing records by Id (default; never creates) or upsert."
    )
    external_id: ExternalIdConfig | None = Field(default=None, description="Required for upsert.")
    truncate_long_values: bool = Field(default=False, description="Cut over-long strings instead of rejecting.")
    clear_null_attributes: bool = Field(
        default=False,
        description="A null attribute value clears the CRM field; by default it leaves the field as it is.",
    )
    marketing_actions: list[str] = Field(
        default_factory=lambda: [DEFAULT_ACTION],
        description="What this destination does with the data (governance > actions), default [crm_export]; "
        "policies forbid labels for actions.",
    )
    policy_exceptions: list[PolicyExceptionConfig] = Field(
        default_factory=list,
        description="Pairings a policy would refuse that an administrator allows on purpose, each with a reason.",
    )

    _name_is_snake_case = snake_case_field("name", "destination name", "contacts")

    @field_validator("segments")
    @classmethod
    def _mapping_ids(cls, value: dict[str, str]) -> dict[str, str]:
        spelling: dict[str, str] = {}  # lower-cased API name -> the first spelling seen
        resolved: dict[str, str] = {}
        for segment, field in value.items():
            if " " in field:
                raise ValueError(
                    f"Mapping ID {field!r} for segment {segment!r} contains spaces; Salesforce field names "
                    f"cannot: use {field.strip().replace(' ', '_')!r}"
                )
            if not API_NAME.match(field):
                raise ValueError(
                    f"Mapping ID {field!r} for segment {segment!r} is not a Salesforce field API name "
                    "(letters, digits and '_', starting with a letter)"
                )
            api_name = custom_field_name(field)
            resolved[segment] = spelling.setdefault(api_name.lower(), api_name)
        return resolved

    @model_validator(mode="after")
    def _operation(self) -> DestinationConfig:
        if self.operation == "upsert" and self.external_id is None:
            raise ValueError("operation 'upsert' needs external_id: {field: <External Id field>, column: <dataset column>}")
        if self.operation == "update" and self.external_id is not None:
            raise ValueError("external_id is only used with operation: upsert; remove it or set operation: upsert")
        return self

    @property
    def attribute_map(self) -> dict[str, str]:
        return dict(self.attributes) if self.attributes is not None else dict(DEFAULT_ATTRIBUTES[self.object])

    @property
    def key_column(self) -> str:
        """The profile column that keys this destination's records (and its ledger rows): the record Id
        column for updates, the external-id column for upserts."""
        if self.external_id is not None:
            return self.external_id.column
        assert self.identity_column is not None, "identity_column is resolved when the config loads"
        return self.identity_column

    @property
    def status_fields(self) -> dict[str, list[str]]:
        """Status field API name -> the segments it holds (sorted)."""
        fields: dict[str, list[str]] = {}
        for segment, field in self.segments.items():
            fields.setdefault(field, []).append(segment)
        return {field: sorted(segs) for field, segs in fields.items()}


class SyncSettings(StrictModel):
    api_version: str = Field(default="66.0", description="Salesforce REST API version (Spring '26).")
    batch_size: int = Field(default=200, ge=1, le=200, description="Records per sObject Collections request.")
    usage_threshold: float = Field(
        default=0.8, gt=0, le=1, description="Stop when daily API usage (Sforce-Limit-Info) reaches this share."
    )
    failure_threshold: float = Field(
        default=0.05, ge=0, le=1, description="Failed share of sent records above which the sync check errors."
    )
    lock_retries: int = Field(default=2, ge=0, le=10, description="Re-sends of UNABLE_TO_LOCK_ROW records per run.")
    max_exit_share: float = Field(
        default=0.5, ge=0, le=1,
        description="Exit guard: a sync that would exit more than this share of a segment's confirmed members "
        "sends nothing and fails (per segment: segments[].max_exit_share; per run: accept_exits).",
    )
    exit_guard_min_members: int = Field(
        default=10, ge=1,
        description="The exit guard watches segments with at least this many confirmed members (smaller ones may "
        "all leave on a normal day).",
    )
    reconciliation_sample_size: int = Field(
        default=10000, ge=1,
        description="Reconciliation reads back every managed record up to this many, else a random sample of this size.",
    )
    concurrent_requests: int = Field(
        default=4, ge=1, le=25,
        description="sObject Collections requests in flight at once per destination (UNABLE_TO_LOCK_ROW lowers it "
        "for the rest of the run).",
    )
    bulk_threshold: int = Field(
        default=2000, ge=1,
        description="A destination's change set of at least this many records is written with Bulk API 2.0 "
        "(Salesforce's guidance: Bulk for more than 2,000 records); smaller ones through sObject Collections.",
    )
    partition_records: int = Field(
        default=100_000, ge=1,
        description="Records a sync plans at once: a destination with more is planned in ranges of record Ids this "
        "size (the desired state, the ledger and the diff of one range in memory at a time), so its memory stays "
        "bounded whatever the org's size.",
    )
    bulk_poll_timeout_seconds: int = Field(
        default=1800, ge=10,
        description="How long a sync waits for a Bulk API 2.0 job to finish before it stops and leaves the job to "
        "the next run.",
    )
