"""Pydantic models of ``pipeline.yaml``: which Data Extensions to ingest and how to type them.

Every rule a config can break is checked here, at load time, with a message that says what to
change. ``loader.py`` turns the errors into one report naming the file and the entry.
"""

from __future__ import annotations

import re
import unicodedata
import zoneinfo
from datetime import date, datetime
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SNAKE_CASE = re.compile(r"^[a-z][a-z0-9_]*$")
ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def snake_case_field(field: str, what: str, example: str):
    """A validator of ``field``: a snake_case name (``what`` and ``example`` go into the message)."""

    def check(cls, value: str) -> str:
        if not SNAKE_CASE.match(value):
            raise ValueError(f"{what} {value!r} must be snake_case, e.g. {example!r}")
        return value

    return field_validator(field)(classmethod(check))


class SfmcType(str, Enum):
    """Data Extension field types (SOAP ``DataExtensionFieldType``)."""

    TEXT = "Text"
    NUMBER = "Number"
    DECIMAL = "Decimal"
    DATE = "Date"
    BOOLEAN = "Boolean"
    EMAIL_ADDRESS = "EmailAddress"
    PHONE = "Phone"
    LOCALE = "Locale"

    @property
    def is_text(self) -> bool:
        return self in TEXT_TYPES

    @property
    def is_numeric(self) -> bool:
        return self in (SfmcType.NUMBER, SfmcType.DECIMAL)


TEXT_TYPES = frozenset({SfmcType.TEXT, SfmcType.EMAIL_ADDRESS, SfmcType.PHONE, SfmcType.LOCALE})
ORDERED_TYPES = frozenset({SfmcType.NUMBER, SfmcType.DECIMAL, SfmcType.DATE})
TYPE_NAMES = ", ".join(t.value for t in SfmcType)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ColumnConfig(_Strict):
    """One Data Extension field."""

    name: str = Field(description="Field name as in SFMC (matched case-insensitively).")
    type: SfmcType = Field(description=f"SFMC field type: one of {TYPE_NAMES}.")
    description: str = ""
    nullable: bool = False
    length: int | None = Field(default=None, description="Max length for text types (1-4000).")
    precision: int | None = Field(default=None, description="Decimal: total digits (1-29).")
    scale: int | None = Field(default=None, description="Decimal: digits after the point.")
    allowed_values: list[str] | None = Field(default=None, description="Text: the only values allowed.")
    min: float | None = Field(default=None, description="Number/Decimal: smallest allowed value.")
    max: float | None = Field(default=None, description="Number/Decimal: largest allowed value.")
    format: Literal["salesforce_id"] | None = Field(
        default=None, description="Text: 'salesforce_id' checks a 15/18-character Salesforce Id."
    )
    labels: list[str] = Field(
        default_factory=list,
        description="Data-usage labels of this column (declared in governance > labels), e.g. [I1] or [S1, C2]; "
        "they follow the column into segments and destination fields.",
    )

    @field_validator("name")
    @classmethod
    def _name_is_identifier(cls, value: str) -> str:
        if not IDENTIFIER.match(value):
            raise ValueError(
                f"column name {value!r} must start with a letter or '_' and hold only letters, "
                "digits and '_'"
            )
        return value

    @model_validator(mode="after")
    def _attributes_fit_type(self) -> ColumnConfig:
        t = self.type
        if self.length is not None:
            if not t.is_text:
                raise ValueError(f"'length' applies to text types only, not {t.value}; remove it")
            if not 1 <= self.length <= 4000:
                raise ValueError(f"'length' must be between 1 and 4000, got {self.length}")
        if (self.precision is not None or self.scale is not None) and t is not SfmcType.DECIMAL:
            raise ValueError(f"'precision'/'scale' apply to Decimal only, not {t.value}; remove them")
        if t is SfmcType.DECIMAL:
            if self.precision is None or self.scale is None:
                raise ValueError("Decimal needs 'precision' and 'scale', e.g. precision: 18, scale: 2")
            if not 1 <= self.precision <= 29 or not 0 <= self.scale <= self.precision:
                raise ValueError(
                    "Decimal needs 1 <= precision <= 29 and 0 <= scale <= precision, "
                    f"got precision={self.precision}, scale={self.scale}"
                )
        if self.allowed_values is not None and not t.is_text:
            raise ValueError(f"'allowed_values' applies to text types only, not {t.value}")
        if self.allowed_values is not None and not self.allowed_values:
            raise ValueError("'allowed_values' is empty: list at least one value or remove it")
        if (self.min is not None or self.max is not None) and not t.is_numeric:
            raise ValueError(f"'min'/'max' apply to Number and Decimal only, not {t.value}")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"'min' ({self.min}) is larger than 'max' ({self.max})")
        if self.format == "salesforce_id" and t is not SfmcType.TEXT:
            raise ValueError("format 'salesforce_id' applies to Text columns only")
        return self


class RowCheck(_Strict):
    """A comparison between two columns of the same row, e.g. ``OfferClicks lte Clicks``."""

    column: str
    op: Literal["lt", "lte", "gt", "gte", "eq", "ne"]
    other_column: str

    def describe(self) -> str:
        symbol = {"lt": "<", "lte": "<=", "gt": ">", "gte": ">=", "eq": "=", "ne": "!="}[self.op]
        return f"{self.column} {symbol} {self.other_column}"


class DataExtensionConfig(_Strict):
    """One Data Extension to ingest as a parquet dataset."""

    key: str = Field(description="External key (CustomerKey) of the Data Extension, not its name.")
    asset: str = Field(description="Dagster asset / dataset name (snake_case).")
    description: str = ""
    primary_key: list[str] = Field(default_factory=list)
    columns: list[ColumnConfig] = Field(min_length=1)
    row_checks: list[RowCheck] = Field(default_factory=list)
    incremental_column: str | None = Field(
        default=None,
        description="Date column that grows when a row is added or changed (e.g. ModifiedDate, or OccurredAt of an "
        "append-only log): the extension is then read incrementally and its newest value is watched for changes.",
    )
    quarantine_threshold: float | None = Field(
        default=None, ge=0, le=1, description="Overrides settings.quarantine_threshold."
    )
    max_row_drop: float | None = Field(
        default=None, ge=0, le=1,
        description="Overrides settings.max_row_drop for this extension (1 accepts any drop).",
    )
    allow_empty: bool = Field(
        default=False, description="Accept an extract with no valid rows (otherwise the volume guard fails it)."
    )

    _asset_is_snake_case = snake_case_field("asset", "asset name", "campaign_engagement")

    @field_validator("key")
    @classmethod
    def _key_not_blank(cls, value: str) -> str:
        if not value.strip() or "/" in value:
            raise ValueError("external key must be non-empty and must not contain '/'")
        return value

    @model_validator(mode="after")
    def _columns_consistent(self) -> DataExtensionConfig:
        by_lower: dict[str, str] = {}
        for col in self.columns:
            other = by_lower.setdefault(col.name.lower(), col.name)
            if other != col.name or sum(c.name == col.name for c in self.columns) > 1:
                raise ValueError(
                    f"column {col.name!r} is listed twice (SFMC field names are case-insensitive); "
                    "keep one"
                )
        names = {c.name: c for c in self.columns}
        known = ", ".join(names)
        for pk in self.primary_key:
            if pk not in names:
                raise ValueError(f"primary key {pk!r} is not among the columns ({known}); add it or fix the name")
            if names[pk].nullable:
                raise ValueError(f"primary key column {pk!r} cannot be nullable; set nullable: false")
        if self.incremental_column is not None:
            col = names.get(self.incremental_column)
            if col is None or col.type is not SfmcType.DATE:
                raise ValueError(
                    f"incremental_column {self.incremental_column!r} must name a Date column ({known})"
                )
        for check in self.row_checks:
            for name in (check.column, check.other_column):
                if name not in names:
                    raise ValueError(f"row check '{check.describe()}': {name!r} is not a column ({known})")
            left, right = names[check.column].type, names[check.other_column].type
            comparable = (left.is_numeric and right.is_numeric) or left == right
            if not comparable or (check.op not in ("eq", "ne") and left not in ORDERED_TYPES):
                raise ValueError(
                    f"row check '{check.describe()}' compares {left.value} with {right.value}; "
                    "use two Number/Decimal or two Date columns"
                )
        return self

    def column(self, name: str) -> ColumnConfig:
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(f"{self.key} has no column {name!r}")


class ProfilesConfig(_Strict):
    """Which dataset holds the profiles segments are made of, and the key related rows join on."""

    dataset: str = Field(default="contacts", description="Asset name of the profile dataset.")
    key: str | None = Field(
        default=None,
        description="Profile key column; related datasets join on it. Default: the profile dataset's primary key.",
    )


def _check_timezone(value: str) -> str:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a folder such as 'America'
        raise ValueError(
            f"unknown time zone {value!r}; use an IANA name such as 'UTC', 'Europe/Paris' or 'America/Chicago'"
        ) from None
    return value


class EvaluationConfig(_Strict):
    as_of: date | None = Field(
        default=None,
        description="Evaluation date (YYYY-MM-DD). Run config and SFMC_PIPELINE_AS_OF override it; "
        "default: the sample data's anchor date in embedded mode, else today in `timezone`.",
    )
    timezone: str = Field(
        default="UTC",
        description="IANA time zone in which calendar-day rules count days (within_last_days, older_than_days, "
        "latest_is_after) and in which 'today' and Date values sent to Salesforce date fields are taken.",
    )

    @field_validator("as_of", mode="before")
    @classmethod
    def _iso_date(cls, value: Any) -> Any:
        """Only ``YYYY-MM-DD`` (or a date object): pydantic alone would also take ``86400`` (a Unix
        timestamp) or ``2026-11-20T00:00`` for a date."""
        if value is None or (isinstance(value, date) and not isinstance(value, datetime)):
            return value
        example = "use YYYY-MM-DD, e.g. 2026-11-20"
        text = value.strip() if isinstance(value, str) else ""
        if not ISO_DATE.match(text):
            raise ValueError(f"{value!r} is not a date; {example}")
        try:
            return date.fromisoformat(text)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not a date ({exc}); {example}") from None

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        return _check_timezone(value)


class SegmentConfig(_Strict):
    """An audience: a name, a description and a declarative rule over the profile datasets."""

    name: str
    description: str = ""
    rule: Any
    max_exit_share: float | None = Field(
        default=None, ge=0, le=1,
        description="Exit guard for this segment: overrides sync.max_exit_share (fast-churning segments need more).",
    )

    _name_is_snake_case = snake_case_field("name", "segment name", "new_customer")

    @field_validator("rule", mode="before")
    @classmethod
    def _rule_shape(cls, value: Any):
        from sfmc_pipeline.segments.rules import RuleError, parse_rule

        try:
            return parse_rule(value)
        except RuleError as exc:
            raise ValueError(f"at {exc.path}: {exc.message}") from None


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


class ExternalIdConfig(_Strict):
    field: str = Field(description="Salesforce external-id field, e.g. SFMC_Subscriber_Key__c.")
    column: str = Field(description="Profile dataset column holding its value.")


def has_visible_text(text: str) -> bool:
    """Whether ``text`` holds a letter, digit, punctuation mark or symbol: not only spaces, zero-width or other
    format and control characters (Unicode categories Z and C)."""
    return any(unicodedata.category(char)[0] in "LNPS" for char in text)


class PolicyExceptionConfig(_Strict):
    """An administrator's decision to let one field or segment of a destination through one policy."""

    policy: str = Field(description="The policy (governance > policies > name) this exception sets aside.")
    field: str | None = Field(default=None, description="The Salesforce field it allows (as mapped in attributes).")
    segment: str | None = Field(default=None, description="The segment whose status field it allows.")
    reason: str = Field(description="Why this pairing is allowed: who decided, on what basis (shown in metadata).")

    @model_validator(mode="after")
    def _one_item(self) -> PolicyExceptionConfig:
        if (self.field is None) == (self.segment is None):
            raise ValueError(f"an exception to policy {self.policy!r} names exactly one of 'field' or 'segment'")
        if not has_visible_text(self.reason):
            raise ValueError(f"the exception to policy {self.policy!r} needs a 'reason' in words (who decided, on "
                             "what basis); spaces and invisible characters alone are not a reason")
        return self

    @property
    def item(self) -> str:
        return f"field {self.field}" if self.field is not None else f"segment {self.segment}"


class DestinationConfig(_Strict):
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


class SyncSettings(_Strict):
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
    bulk_poll_timeout_seconds: int = Field(
        default=1800, ge=10,
        description="How long a sync waits for a Bulk API 2.0 job to finish before it stops and leaves the job to "
        "the next run.",
    )


class ScheduleConfig(_Strict):
    """When the whole flow runs by itself (a Dagster schedule, shipped stopped)."""

    cron: str = Field(
        default="0 */4 * * *",
        description="Cron expression (minute hour day-of-month month day-of-week); default every 4 hours on the hour.",
    )
    timezone: str = Field(default="UTC", description="IANA time zone the cron expression is read in.")

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        from dagster._utils.schedules import is_valid_cron_string

        if not is_valid_cron_string(value):
            raise ValueError(
                f"{value!r} is not a cron expression; use five fields 'minute hour day month weekday', "
                "e.g. '0 */4 * * *' for every 4 hours on the hour"
            )
        return value

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        return _check_timezone(value)


class ChangeSensorConfig(_Strict):
    minimum_interval_seconds: int = Field(
        default=300, ge=30,
        description="Seconds between two polls of the Data Extensions (each poll costs one request per extension, "
        "two with an incremental_column).",
    )


class AutomationConfig(_Strict):
    """Unattended operation: the schedule and the change sensor."""

    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    change_sensor: ChangeSensorConfig = Field(default_factory=ChangeSensorConfig)


DEFAULT_ACTION = "crm_export"
DEFAULT_ACTIONS = {DEFAULT_ACTION: "Write the data to a CRM (Salesforce Contacts or Leads)."}


class LabelConfig(_Strict):
    """A data-usage label: what the data is, and whether it identifies a person."""

    description: str = Field(min_length=1, description="What the label means, e.g. 'no export to third parties'.")
    identifying: bool = Field(
        default=False,
        description="Values of columns with this label directly identify a person: they are masked in Dagster "
        "metadata and logs (unless governance > masking > show_personal_data).",
    )


class PolicyConfig(_Strict):
    """Labels that must not be used for some marketing actions."""

    name: str
    description: str = ""
    labels: list[str] = Field(min_length=1, description="Labels this policy restricts.")
    forbidden_actions: list[str] = Field(min_length=1, description="Marketing actions the labels may not be used for.")

    _name_is_snake_case = snake_case_field("name", "policy name", "no_sensitive_export")


class MaskingConfig(_Strict):
    show_personal_data: bool = Field(
        default=False,
        description="Show identifying values (email, names, phone, columns with an identifying label) in full in "
        "Dagster metadata and logs: for local debugging only. Datasets and quarantines always keep full values.",
    )


class GovernanceConfig(_Strict):
    """Data-usage labels, marketing actions and the policies between them; masking of personal data."""

    labels: dict[str, LabelConfig] = Field(default_factory=dict, description="Label id -> its meaning.")
    actions: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_ACTIONS), description="Marketing action id -> what it means."
    )
    policies: list[PolicyConfig] = Field(default_factory=list)
    masking: MaskingConfig = Field(default_factory=MaskingConfig)

    @field_validator("labels", "actions")
    @classmethod
    def _identifiers(cls, value: dict) -> dict:
        for name in value:
            if not IDENTIFIER.match(name):
                raise ValueError(f"{name!r} is not an identifier (letters, digits and '_', e.g. C2 or crm_export)")
        return value

    @property
    def known_labels(self) -> str:
        return (f"declared labels: {', '.join(self.labels)} (governance > labels)" if self.labels
                else "no labels are declared: add it under governance > labels")

    @property
    def known_actions(self) -> str:
        return f"declared actions: {', '.join(self.actions)} (governance > actions)"

    def policy(self, name: str) -> PolicyConfig:
        for policy in self.policies:
            if policy.name == name:
                return policy
        raise KeyError(f"no policy named {name!r}")


class PipelineSettings(_Strict):
    quarantine_threshold: float = Field(
        default=0.05, ge=0, le=1, description="Largest share of quarantined rows before a run fails."
    )
    page_size: int = Field(default=2500, ge=1, le=2500, description="SFMC rowset page size (max 2500).")
    concurrent_page_reads: int = Field(
        default=4, ge=1, le=16,
        description="Rowset pages of one Data Extension fetched at once, once the first page has given the count.",
    )
    max_row_drop: float = Field(
        default=0.2, ge=0, le=1,
        description="Volume guard: fail a dataset whose valid rows fall by more than this share since its last "
        "successful materialization (per extension: max_row_drop; per run: accept_volume_change).",
    )
    guard_window_days: int = Field(
        default=7, ge=1, le=90,
        description="The volume guard and the exit guard compare against this many days of successful runs, not only "
        "the last one: two 40% steps in a week are caught like one 80% step.",
    )
    incremental_overlap_minutes: int = Field(
        default=60, ge=0,
        description="Incremental reads fetch rows whose incremental_column is at or after the stored high-water mark "
        "minus this many minutes (SFMC dates have second precision, and clocks skew).",
    )
    full_refresh_every_days: int = Field(
        default=7, ge=0,
        description="An incremental extension is read in full when its last full read is this many days old, so rows "
        "deleted in SFMC leave the dataset (0: only when a run asks for full_refresh).",
    )


def _names_used_twice(items: list, section: str, what: str) -> list[str]:
    """A problem for each item whose ``name`` an earlier item of ``section`` already has."""
    problems, seen = [], set()
    for i, item in enumerate(items):
        if item.name in seen:
            problems.append(f"{section}[{i}] ({item.name}): {what} name {item.name!r} is used twice; names must be "
                            "unique")
        seen.add(item.name)
    return problems


class PipelineConfig(_Strict):
    settings: PipelineSettings = Field(default_factory=PipelineSettings)
    data_extensions: list[DataExtensionConfig] = Field(min_length=1)
    profiles: ProfilesConfig = Field(default_factory=ProfilesConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    segments: list[SegmentConfig] = Field(default_factory=list)
    destinations: list[DestinationConfig] = Field(default_factory=list)
    sync: SyncSettings = Field(default_factory=SyncSettings)
    automation: AutomationConfig = Field(default_factory=AutomationConfig)
    governance: GovernanceConfig = Field(default_factory=GovernanceConfig)

    @model_validator(mode="after")
    def _unique_names(self) -> PipelineConfig:
        for attr, what in (("asset", "asset name"), ("key", "external key")):
            seen: set[str] = set()
            for ext in self.data_extensions:
                value = getattr(ext, attr)
                if value in seen:
                    raise ValueError(
                        f"data_extensions: {what} {value!r} is used twice; each Data Extension "
                        f"needs its own {what}"
                    )
                seen.add(value)
        self._check_segments()
        return self

    def _check_segments(self) -> None:
        from sfmc_pipeline.segments.rules import RuleError, check_rule

        datasets = {ext.asset: ext for ext in self.data_extensions}
        profile = datasets.get(self.profiles.dataset)
        if profile is None:
            raise ValueError(
                f"profiles > dataset: unknown dataset {self.profiles.dataset!r}; use one of {', '.join(datasets)}"
            )
        if self.profiles.key is None and len(profile.primary_key) == 1:
            self._resolve("profiles", self.profiles.model_copy(update={"key": profile.primary_key[0]}))
        if self.profiles.key is None:
            raise ValueError(
                f"profiles > key: {profile.asset!r} needs a one-column primary_key (it has {profile.primary_key}); "
                "one row per profile, keyed by the column related datasets join on"
            )
        if profile.primary_key != [self.profiles.key]:
            raise ValueError(
                f"profiles > key: {self.profiles.key!r} must be the primary key of {profile.asset!r} "
                f"(its primary_key is {profile.primary_key}); one row per profile"
            )
        self._resolve("destinations", [
            d if d.identity_column else d.model_copy(update={"identity_column": self.profiles.key})
            for d in self.destinations
        ])
        problems = _names_used_twice(self.segments, "segments", "segment")
        for i, segment in enumerate(self.segments):
            where = f"segments[{i}] ({segment.name})"
            try:
                check_rule(segment.rule, profile, datasets, self.profiles.key)
            except RuleError as exc:
                problems.append(f"{where} > {exc}")
        problems += self._destination_problems(profile)
        problems += self._governance_problems()
        if problems:
            raise ValueError("\n  - ".join(problems))

    def _governance_problems(self) -> list[str]:
        """Unknown labels and actions, exceptions that name nothing, and every flow a policy forbids."""
        from sfmc_pipeline.governance.policies import check_pipeline

        governance = self.governance
        problems = _names_used_twice(governance.policies, "governance > policies", "policy")
        for i, policy in enumerate(governance.policies):
            where = f"governance > policies[{i}] ({policy.name})"
            for label in policy.labels:
                if label not in governance.labels:
                    problems.append(f"{where} > labels: unknown label {label!r}; {governance.known_labels}")
            for action in policy.forbidden_actions:
                if action not in governance.actions:
                    problems.append(f"{where} > forbidden_actions: unknown action {action!r}; {governance.known_actions}")
        for i, ext in enumerate(self.data_extensions):
            for col in ext.columns:
                for label in col.labels:
                    if label not in governance.labels:
                        problems.append(f"data_extensions[{i}] ({ext.key}) > columns > {col.name} > labels: unknown "
                                        f"label {label!r}; {governance.known_labels}")
        for i, dest in enumerate(self.destinations):
            for action in dest.marketing_actions:
                if action not in governance.actions:
                    problems.append(f"destinations[{i}] ({dest.name}) > marketing_actions: unknown action {action!r}; "
                                    f"{governance.known_actions}")
        if problems:
            return problems
        return check_pipeline(self)

    def _resolve(self, name: str, value: Any) -> None:
        """Fill in a default that depends on another section (the model is frozen once loaded)."""
        object.__setattr__(self, name, value)

    def _destination_problems(self, profile: DataExtensionConfig) -> list[str]:
        problems = _names_used_twice(self.destinations, "destinations", "destination")
        columns = {c.name for c in profile.columns}
        segments = {s.name for s in self.segments}
        fields_per_object: dict[str, set[str]] = {}
        writer: dict[tuple[str, str], str] = {}  # (object, field) -> the destination that writes it
        for i, dest in enumerate(self.destinations):
            where = f"destinations[{i}] ({dest.name})"
            needed = [("identity_column", dest.identity_column), *(("attributes", c) for c in dest.attribute_map)]
            if dest.external_id:
                needed.append(("external_id > column", dest.external_id.column))
            for setting, column in needed:
                if column not in columns:
                    problems.append(
                        f"{where} > {setting}: {profile.asset!r} has no column {column!r} "
                        f"(columns: {', '.join(sorted(columns))})"
                    )
            if dest.operation == "update" and dest.identity_column in columns:
                if profile.column(dest.identity_column).format != "salesforce_id":
                    problems.append(
                        f"{where} > identity_column: {dest.identity_column!r} must hold Salesforce record Ids: "
                        f"give that column `format: salesforce_id` in {profile.asset!r}, or name the column that does"
                    )
            for segment in dest.segments:
                if segment not in segments:
                    problems.append(
                        f"{where} > segments: unknown segment {segment!r}; defined segments: {', '.join(sorted(segments))}"
                    )
            fields_per_object.setdefault(dest.object, set()).update(f.lower() for f in dest.status_fields)
            written = [*dest.status_fields, *dest.attribute_map.values()]
            if dest.external_id is not None:
                written.append(dest.external_id.field)
            for fld in {f.lower(): f for f in reversed(written)}.values():
                other = writer.setdefault((dest.object, fld.lower()), dest.name)
                if other != dest.name:
                    problems.append(
                        f"{where}: {dest.object}.{fld} is also written by destination {other!r}; each field of an "
                        "object is written by one destination (they would overwrite each other): map it in one of them"
                    )
        for obj, fields in fields_per_object.items():
            if len(fields) > MAX_STATUS_FIELDS_PER_OBJECT:
                problems.append(
                    f"destinations: {len(fields)} distinct status fields map to {obj}, above Salesforce's limit of "
                    f"{MAX_STATUS_FIELDS_PER_OBJECT} active segment mappings per object ({', '.join(sorted(fields))}); "
                    "let segments share a field or map fewer segments"
                )
        return problems

    def extension(self, asset: str) -> DataExtensionConfig:
        for ext in self.data_extensions:
            if ext.asset == asset:
                return ext
        raise KeyError(f"no data extension with asset name {asset!r}")

    def segment(self, name: str) -> SegmentConfig:
        for segment in self.segments:
            if segment.name == name:
                return segment
        raise KeyError(f"no segment named {name!r}")

    def destination(self, name: str) -> DestinationConfig:
        for dest in self.destinations:
            if dest.name == name:
                return dest
        raise KeyError(f"no destination named {name!r}")

    @property
    def profile_key(self) -> str:
        """The profile key column (resolved at load: ``profiles.key`` or the profile dataset's primary key)."""
        assert self.profiles.key is not None
        return self.profiles.key

    def threshold_for(self, ext: DataExtensionConfig) -> float:
        if ext.quarantine_threshold is not None:
            return ext.quarantine_threshold
        return self.settings.quarantine_threshold

    def max_row_drop_for(self, ext: DataExtensionConfig) -> float:
        return ext.max_row_drop if ext.max_row_drop is not None else self.settings.max_row_drop

    def max_exit_share_for(self, segment: str) -> float:
        configured = self.segment(segment).max_exit_share
        return configured if configured is not None else self.sync.max_exit_share
