"""The change sensor: poll each Data Extension cheaply, run only the datasets that changed and
everything downstream of them.

Each tick probes every extension (``source.probe``: the rowset count, and the newest
``incremental_column`` value when configured); a token that differs from the cursor's is a change.
The cursor (JSON: tokens, a ``series`` id, a ``changes`` counter) makes each change's run key new
yet stable when a tick is evaluated twice. The first tick only records; an SFMC error is a skipped
tick with its reason, never a crashed daemon.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

import dagster as dg

from sfmc_pipeline.config.pipeline import PipelineConfig
from sfmc_pipeline.defs.jobs import STORAGE_TAG, sfmc_pipeline_job
from sfmc_pipeline.defs.resources.sfmc import SfmcResource
from sfmc_pipeline.errors import ApiError, ConfigurationError

CHANGE_SENSOR_NAME = "sfmc_change_sensor"
CURSOR_VERSION = 1
PROBE_RETRIES = 1  # per request: a tick stays well inside the daemon's sensor timeout when SFMC is down


def read_cursor(text: str | None) -> tuple[dict[str, Any], str | None]:
    """The cursor's state, and why it starts afresh when an unreadable or other-format cursor was stored."""
    if not text:
        return _fresh(), None
    try:
        state = json.loads(text)
    except ValueError:
        return _fresh(), "the stored cursor was not JSON"
    if not isinstance(state, dict) or state.get("version") != CURSOR_VERSION or not isinstance(state.get("tokens"), dict):
        return _fresh(), f"the stored cursor was not a version-{CURSOR_VERSION} cursor of this sensor"
    if not isinstance(state.get("series"), str):  # written before run keys counted changes: a series of its own
        state = {**state, "series": _digest({"tokens": state["tokens"], "last_change": state.get("last_change")})}
    if not isinstance(state.get("changes"), int) or state["changes"] < 0:
        state = {**state, "changes": 0}
    return state, None


def _fresh() -> dict[str, Any]:
    return {"version": CURSOR_VERSION, "tokens": {}, "series": uuid.uuid4().hex[:12], "changes": 0}


def change_run_key(state: dict[str, Any], changed: dict[str, str]) -> str:
    """The run key of the next change after ``state``: the same for the same cursor and change (a tick
    evaluated twice), different for every new change, even one back to earlier tokens."""
    number = state["changes"] + 1
    basis = {"series": state["series"], "number": number, "to": changed,
             "from": {asset: state["tokens"].get(asset) for asset in changed}}
    return f"sfmc-change-{number}-{_digest(basis)}"


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:12]


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
        state, restarted = read_cursor(context.cursor)
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
                    + (f" ({restarted}, so the sensor started afresh.)" if restarted else "")
                ),
                cursor=json.dumps(new_state, sort_keys=True),
            )
        changed = {asset: token for asset, token in tokens.items() if previous.get(asset) != token}
        if not changed:
            return dg.SensorResult(
                skip_reason=dg.SkipReason(f"No change in {len(tokens)} Data Extension(s)."),
                cursor=json.dumps(new_state, sort_keys=True),
            )
        run_key = change_run_key(state, changed)
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
            cursor=json.dumps({**new_state, "changes": state["changes"] + 1, "last_change": run_key}, sort_keys=True),
        )

    return sfmc_change_sensor
