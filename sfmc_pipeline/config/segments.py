"""The ``profiles``, ``evaluation`` and ``segments`` sections: which dataset holds the profiles, the
day and time zone rules are evaluated in, and each segment's rule (its shape is checked here, its
columns against the datasets in ``checks.py``)."""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from sfmc_pipeline.config.field_rules import (
    StrictModel,
    check_timezone,
    snake_case_field,
)
from sfmc_pipeline.segments.rules import RuleError, parse_rule

ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
MEMORY_SIZE = re.compile(r"^\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)$", re.IGNORECASE)


class ProfilesConfig(StrictModel):
    """Which dataset holds the profiles segments are made of, and the key related rows join on."""

    dataset: str = Field(default="contacts", description="Asset name of the profile dataset.")
    key: str | None = Field(
        default=None,
        description="Profile key column; related datasets join on it. Default: the profile dataset's primary key.",
    )


class EvaluationConfig(StrictModel):
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

    engine: Literal["duckdb", "spark"] = Field(
        default="duckdb",
        description="What runs the segment rules: duckdb (embedded, default: one machine, larger orgs spill to "
        "disk) or spark (a Spark cluster, or local mode; needs the spark extra and Java). See docs/segment-engines.md.",
    )
    memory_limit: str = Field(
        default="1GB",
        description="DuckDB: the memory the segment step may use before it spills to state/engine-spill in the "
        "storage (e.g. 1GB, 4GB, 512MB). The step's process peaks somewhat above it.",
    )
    spark_master: str | None = Field(
        default=None,
        description="Spark: the master URL (local[*], spark://host:7077, yarn); only with engine: spark. "
        "Default local[*].",
    )

    @field_validator("memory_limit")
    @classmethod
    def _memory_size(cls, value: str) -> str:
        if not MEMORY_SIZE.match(value.strip()):
            raise ValueError(f"{value!r} is not a memory size; use a number and a unit, e.g. 2GB or 512MB")
        return value.strip()

    @model_validator(mode="after")
    def _spark_master_with_spark(self) -> "EvaluationConfig":
        if self.spark_master is not None and self.engine != "spark":
            raise ValueError(
                f"spark_master is set ({self.spark_master!r}) but engine is {self.engine!r}; set engine: spark "
                "to run segments on Spark, or remove spark_master"
            )
        return self

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
        return check_timezone(value)


class SegmentConfig(StrictModel):
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
        try:
            return parse_rule(value)
        except RuleError as exc:
            raise ValueError(f"at {exc.path}: {exc.message}") from None
