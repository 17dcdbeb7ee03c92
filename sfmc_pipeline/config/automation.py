"""The ``automation`` section: the schedule of the whole flow and the change sensor."""

from __future__ import annotations

from pydantic import Field, field_validator

from sfmc_pipeline.config.field_rules import StrictModel, check_timezone


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
