"""The change sensor ("streaming"): poll each Data Extension cheaply, run only what changed.

Each tick probes every configured extension (``source.probe``: the rowset ``count`` read with
``$pageSize=1``, and the newest value of its ``incremental_column`` when one is configured; in
embedded mode, the sample file). An extension whose change token differs from the one in the
cursor has changed: the sensor requests one run of the changed datasets and everything
downstream of them (segments, syncs). The run key is built from the change tokens, so one change
leads to exactly one run even if a tick is evaluated twice.

The sensor's whole state is its cursor, a JSON object::

    {"version": 1, "tokens": {"<asset>": "<change token>", ...}, "last_change": "<run key>"}

The first tick has nothing to compare with: it records the tokens and requests nothing. An SFMC
error (or incomplete credentials) is a skipped tick with the reason and an unchanged cursor,
never a crashed daemon; the next tick tries again. A requested run that fails raises a failure alert;
the sensor does not request the same change again (the next change, or the schedule, reads it). A
change the probe cannot see (a row edited in
place without an ``incremental_column``, the count unchanged) is left to the schedule.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import dagster as dg

from sfmc_pipeline.config.models import PipelineConfig
from sfmc_pipeline.jobs import STORAGE_TAG, sfmc_pipeline_job
from sfmc_pipeline.resources.sfmc import SfmcResource
from sfmc_pipeline.transport import ApiError, ConfigurationError

CHANGE_SENSOR_NAME = "sfmc_change_sensor"
CURSOR_VERSION = 1
PROBE_RETRIES = 1  # per request: a tick stays well inside the daemon's sensor timeout when SFMC is down


def read_cursor(text: str | None) -> dict[str, Any]:
    """The cursor's state; an empty, unreadable or older-format cursor starts afresh."""
    try:
        state = json.loads(text) if text else {}
    except ValueError:
        state = {}
    if not isinstance(state, dict) or state.get("version") != CURSOR_VERSION or not isinstance(state.get("tokens"), dict):
        return {"version": CURSOR_VERSION, "tokens": {}}
    return state


def change_run_key(changed: dict[str, str]) -> str:
    """The same change (assets and their new tokens) always gives the same run key."""
    digest = hashlib.sha256(json.dumps(changed, sort_keys=True).encode()).hexdigest()[:16]
    return f"sfmc-change-{digest}"


def build_change_sensor(pipeline: PipelineConfig) -> dg.SensorDefinition:
    interval = pipeline.automation.change_sensor.minimum_interval_seconds

    @dg.sensor(
        name=CHANGE_SENSOR_NAME,
        job=sfmc_pipeline_job,
        minimum_interval_seconds=interval,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description=(
            f"Every {interval} s, reads each Data Extension's row count (and newest incremental_column value) with "
            "one or two small requests, and runs the changed datasets and everything downstream of them. "
            "Shipped stopped."
        ),
    )
    def sfmc_change_sensor(context: dg.SensorEvaluationContext, sfmc: SfmcResource):
        state = read_cursor(context.cursor)
        try:
            source = sfmc.get_source(page_size=pipeline.settings.page_size, max_retries=PROBE_RETRIES)
            tokens = {ext.asset: source.probe(ext).change_token for ext in pipeline.data_extensions}
        except (ApiError, ConfigurationError) as exc:
            return dg.SkipReason(f"Could not poll the Data Extensions, nothing requested; the next tick tries again: {exc}")
        previous: dict[str, str] = state["tokens"]
        new_state = {**state, "tokens": tokens}
        if not previous:
            return dg.SensorResult(
                skip_reason=dg.SkipReason(
                    f"First poll: recorded {len(tokens)} Data Extension(s) as the baseline; changes from now on start a run."
                ),
                cursor=json.dumps(new_state, sort_keys=True),
            )
        changed = {asset: token for asset, token in tokens.items() if previous.get(asset) != token}
        if not changed:
            return dg.SensorResult(
                skip_reason=dg.SkipReason(f"No change in {len(tokens)} Data Extension(s)."),
                cursor=json.dumps(new_state, sort_keys=True),
            )
        run_key = change_run_key(changed)
        selection = dg.AssetSelection.assets(*changed).downstream()
        keys = sorted(selection.resolve(context.repository_def.asset_graph), key=lambda k: k.to_user_string())
        context.log.info(
            "Changed: " + ", ".join(f"{asset} ({previous.get(asset) or 'new'} -> {token})" for asset, token in changed.items())
            + f"; requesting {len(keys)} asset(s), run key {run_key}"
        )
        return dg.SensorResult(
            run_requests=[dg.RunRequest(
                run_key=run_key,
                asset_selection=keys,
                tags={**STORAGE_TAG, "sfmc_pipeline/changed": ",".join(sorted(changed))},
            )],
            cursor=json.dumps({**new_state, "last_change": run_key}, sort_keys=True),
        )

    return sfmc_change_sensor
