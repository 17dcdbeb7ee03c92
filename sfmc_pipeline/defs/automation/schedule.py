"""The schedule of the whole flow, and the freshness expectation it implies for the datasets.

Both come from ``automation.schedule`` in the pipeline config (cron and time zone). The schedule
is shipped stopped, as Dagster schedules are: nothing writes to the CRM until someone turns it on.
A dataset is *stale* when it missed a scheduled run: its freshness window is the longest gap
between two ticks of the cron expression plus an hour for the run itself (a run that is late by
more than that shows the asset as failing freshness in the UI); it warns after the gap alone.
"""

from __future__ import annotations

import datetime as dt

import dagster as dg

# Private on purpose: Dagster 1.13 has no public iterator over a cron expression's ticks (its croniter is vendored).
from dagster._utils.schedules import cron_string_iterator

from sfmc_pipeline.config.automation import ScheduleConfig
from sfmc_pipeline.defs.jobs import sfmc_pipeline_job

SCHEDULE_NAME = "sfmc_pipeline_schedule"
RUN_GRACE = dt.timedelta(hours=1)  # how long a scheduled run may take before its assets count as stale


def build_schedule(schedule: ScheduleConfig) -> dg.ScheduleDefinition:
    return dg.ScheduleDefinition(
        name=SCHEDULE_NAME,
        job=sfmc_pipeline_job,
        cron_schedule=schedule.cron,
        execution_timezone=schedule.timezone,
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description=(
            f"The whole flow on the cron expression {schedule.cron!r} ({schedule.timezone}), from automation.schedule "
            "in the pipeline config. Shipped stopped: turn it on here (or `dg` / the daemon) to run unattended."
        ),
    )


def longest_gap(schedule: ScheduleConfig, *, ticks: int = 12_000) -> dt.timedelta:
    """The longest time between two consecutive ticks over nine weeks (weekends, month ends) or ``ticks`` ticks."""
    start = dt.datetime(2026, 1, 5, tzinfo=dt.timezone.utc)  # a Monday; any fixed date will do
    horizon = start + dt.timedelta(weeks=9)
    iterator = cron_string_iterator(start.timestamp(), schedule.cron, schedule.timezone)
    previous = next(iterator)
    gap = dt.timedelta(0)
    for _ in range(ticks):
        tick = next(iterator)
        gap = max(gap, tick - previous)
        previous = tick
        if tick > horizon:
            break
    return gap


def dataset_freshness(schedule: ScheduleConfig) -> dg.FreshnessPolicy:
    gap = longest_gap(schedule)
    return dg.FreshnessPolicy.time_window(fail_window=gap + RUN_GRACE, warn_window=gap)
