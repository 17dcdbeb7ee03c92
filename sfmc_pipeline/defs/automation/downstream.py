"""Downstream assets follow their inputs: declarative automation on segments and syncs.

Why declarative automation rather than a custom sensor: the condition lives on each asset, the UI
shows per asset why it was (or was not) requested, and Dagster already knows what "updated",
"missing" and "in progress" mean. ``eager`` requests an asset when any input was updated since
it last ran, never while it or an input is in progress and never with an input missing. So a new
extract (from the schedule's extract, the change sensor, or a click in the UI) leads to
memberships, statuses and every sync in one run, without a second trigger; the whole-flow job
itself never triggers a second run, since its assets are updated in order.

The sensor evaluating the conditions is shipped stopped (it may write to the CRM); its runs
carry the storage tag, so they queue behind any other pipeline run.
"""

from __future__ import annotations

import dagster as dg

from sfmc_pipeline.defs.jobs import SEGMENTS_GROUP, STORAGE_TAG, SYNC_GROUP

AUTOMATION_SENSOR_NAME = "sfmc_pipeline_downstream"
FOLLOWS_INPUTS = dg.AutomationCondition.eager()
DOWNSTREAM = dg.AssetSelection.groups(SEGMENTS_GROUP, SYNC_GROUP)


def follows_inputs(spec: dg.AssetSpec) -> dg.AssetSpec:
    return spec.replace_attributes(automation_condition=FOLLOWS_INPUTS)


def build_automation_sensor() -> dg.AutomationConditionSensorDefinition:
    return dg.AutomationConditionSensorDefinition(
        AUTOMATION_SENSOR_NAME,
        target=DOWNSTREAM,
        run_tags=STORAGE_TAG,
        default_status=dg.DefaultSensorStatus.STOPPED,
        minimum_interval_seconds=30,
        description=(
            "Runs segments and syncs when their input datasets were updated (AutomationCondition.eager). "
            "Shipped stopped: turn it on to let a new extract reach the CRM without another trigger."
        ),
    )
