"""The ``automation`` section: the schedule of the whole flow and the change sensor."""

from __future__ import annotations

import warnings

import dagster as dg
from pydantic import Field, field_validator

from sfmc_pipeline.config.field_rules import StrictModel, check_timezone


def dagster_accepts_cron(cron: str) -> bool:
    """Whether Dagster's schedule takes ``cron``: its public ``ScheduleDefinition`` checks the expression
    when built (Dagster has no public check of a cron string alone)."""
    try:
        with warnings.catch_warnings():  # an out-of-range interval warns again when the real schedule is built
            warnings.simplefilter("ignore")
            dg.ScheduleDefinition(name="cron_check", cron_schedule=cron, job_name="cron_check")
    except dg.DagsterInvalidDefinitionError:
        return False
    return True


class ScheduleConfig(StrictModel):
    """When the whole flow runs by itself (a Dagster schedule, shipped stopped)."""

    cron: str = Field(
        default="0 */4 * * *",
        description="Cron expression (minute hour day-of-month month day-of-week); default every 4 hours on the hour.",
    )
    timezone: str = Field(default="UTC", description="IANA time zone the cron expression is read in.")

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        if not dagster_accepts_cron(value):
            raise ValueError(
                f"{value!r} is not a cron expression; use five fields 'minute hour day month weekday', "
                "e.g. '0 */4 * * *' for every 4 hours on the hour"
            )
        return value

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        return check_timezone(value)


class ChangeSensorConfig(StrictModel):
    minimum_interval_seconds: int = Field(
        default=300, ge=30,
        description="Seconds between two polls of the Data Extensions (each poll costs one request per extension, "
        "two with an incremental_column).",
    )


class AutomationConfig(StrictModel):
    """Unattended operation: the schedule and the change sensor."""

    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    change_sensor: ChangeSensorConfig = Field(default_factory=ChangeSensorConfig)
