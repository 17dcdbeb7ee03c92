"""Downstream assets follow their inputs: declarative automation (``eager``) on segments and syncs.

A condition on each asset rather than a custom sensor: the UI shows per asset why it was (or was
not) requested, and Dagster knows what "updated", "missing" and "in progress" mean. A new extract
leads to memberships, statuses and every sync without a second trigger. The sensor evaluating the
conditions is shipped stopped (it may write to the CRM); its runs queue behind other pipeline runs.
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
