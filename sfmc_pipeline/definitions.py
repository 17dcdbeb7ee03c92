"""The code location: the one place ``Definitions`` is built, from explicit lists.

Assets come from the pipeline config (``$SFMC_PIPELINE_CONFIG`` or ``pipeline.yaml``), which is
validated here, at load time. Credentials are wired with ``dg.EnvVar`` only when set (see
``settings.env_if_set``); with none set the pipeline runs on the embedded sample data.
"""

from __future__ import annotations

import dagster as dg

from sfmc_pipeline import settings
from sfmc_pipeline.config.loader import load_pipeline_config
from sfmc_pipeline.config.pipeline import PipelineConfig
from sfmc_pipeline.defs.assets.crm import build_crm_assets
from sfmc_pipeline.defs.assets.datasets import build_dataset_assets
from sfmc_pipeline.defs.assets.segments import build_segment_assets
from sfmc_pipeline.defs.automation.change_sensor import build_change_sensor
from sfmc_pipeline.defs.automation.downstream import (
    build_automation_sensor,
    follows_inputs,
)
from sfmc_pipeline.defs.automation.failure_alerts import build_failure_alerts
from sfmc_pipeline.defs.automation.schedule import build_schedule, dataset_freshness
from sfmc_pipeline.defs.jobs import ALL_JOBS
from sfmc_pipeline.defs.resources.salesforce import SalesforceResource
from sfmc_pipeline.defs.resources.sfmc import SfmcResource
from sfmc_pipeline.defs.resources.storage import StorageResource
from sfmc_pipeline.runs.executor import reporting_executor


def build_resources() -> dict:
    return {
        # the sample folder is resolved when a run starts (the sample day in .env), not when the code loads
        "sfmc": SfmcResource(**settings.env_settings(settings.SFMC_ENV, as_env_var=True)),
        "salesforce": SalesforceResource(**settings.env_settings(settings.SALESFORCE_ENV, as_env_var=True)),
        "storage": StorageResource(
            base_dir=settings.env_or_default(settings.STORAGE_ENV, str(settings.DEFAULT_STORAGE_DIR))
        ),
    }


def build_definitions(config: PipelineConfig, *, executor: dg.ExecutorDefinition = dg.in_process_executor
                      ) -> dg.Definitions:
    """The code location. Runs execute in one process (``executor``): the steps form a chain bounded by API
    latency, each step reads or writes concurrently inside itself and the API pools bound steps anyway, while a
    process per step re-imports the libraries (its cost: docs/performance.md, "Quickstart and executor"). A
    multi-node deployment passes ``dagster_k8s.k8s_job_executor`` or ``dagster_celery``'s here.
    Whichever it is, each run records its worker and posts its own failure alert (``runs/executor.py``)."""
    freshness = dataset_freshness(config.automation.schedule)
    datasets = dg.map_asset_specs(lambda spec: dg.apply_freshness_policy(spec, freshness), build_dataset_assets(config))
    downstream = dg.map_asset_specs(follows_inputs, [*build_segment_assets(config), *build_crm_assets(config)])
    return dg.Definitions(
        assets=[*datasets, *downstream],
        jobs=ALL_JOBS,
        schedules=[build_schedule(config.automation.schedule)],
        sensors=[build_change_sensor(config), build_automation_sensor(), build_failure_alerts(config)],
        resources=build_resources(),
        executor=reporting_executor(executor, config),
    )


defs = build_definitions(load_pipeline_config(settings.config_path()))
