"""The ``data_extensions`` and ``settings`` sections: which Data Extensions to ingest, how to type
and check their columns, and how to read them."""

from __future__ import annotations

from enum import Enum
from typing import Literal

from pydantic import Field, field_validator, model_validator

from sfmc_pipeline.config.field_rules import IDENTIFIER, StrictModel, snake_case_field


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


class ColumnConfig(StrictModel):
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


class RowCheck(StrictModel):
    """A comparison between two columns of the same row, e.g. ``OfferClicks lte Clicks``."""

    column: str
    op: Literal["lt", "lte", "gt", "gte", "eq", "ne"]
    other_column: str

    def describe(self) -> str:
        symbol = {"lt": "<", "lte": "<=", "gt": ">", "gte": ">=", "eq": "=", "ne": "!="}[self.op]
        return f"{self.column} {symbol} {self.other_column}"


class DataExtensionConfig(StrictModel):
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


class PipelineSettings(StrictModel):
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
        "the last one: two 40% drops in a week are caught as the 64% drop they add up to.",
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
