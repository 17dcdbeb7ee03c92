"""Jobs: what a user launches from the UI, a schedule or a sensor.

The whole flow, and one job per stage (extract, segments, sync) for re-running a stage on its
own. Every job carries the storage tag: runs carrying it wait for each other in the daemon's run
queue (``.dagster_home/dagster.yaml``), so one run at a time writes to the storage directory.
Every job's console logger shows INFO and above by default (the step summaries, not Dagster's DEBUG
events); the event log in the UI keeps every event, and run config raises the console for one run.
"""

from __future__ import annotations

import dagster as dg

from sfmc_pipeline.defs.assets.crm import GROUP as SYNC_GROUP
from sfmc_pipeline.defs.assets.datasets import GROUP as DATASETS_GROUP
from sfmc_pipeline.defs.assets.segments import GROUP as SEGMENTS_GROUP

PIPELINE_JOB_NAME = "sfmc_pipeline_job"
STORAGE_TAG = {"sfmc_pipeline/storage": "default"}
# The jobs' default run config: partial run config keeps it, and
# ``loggers: {console: {config: {log_level: DEBUG}}}`` shows every event on the console.
CONSOLE_AT_INFO = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}

def _job(name: str, selection: dg.AssetSelection, description: str):
    return dg.define_asset_job(name, selection=selection, description=description, tags=STORAGE_TAG,
                               config=CONSOLE_AT_INFO)


sfmc_pipeline_job = _job(
    PIPELINE_JOB_NAME, dg.AssetSelection.all(),
    "The whole flow: SFMC Data Extensions -> validated datasets -> segments -> CRM sync.",
)
extract_job = _job(
    "extract_job", dg.AssetSelection.groups(DATASETS_GROUP),
    "Stage 1: read every configured Data Extension and land it as a validated dataset.",
)
segments_job = _job(
    "segments_job", dg.AssetSelection.groups(SEGMENTS_GROUP),
    "Stage 2: evaluate the segments on the landed datasets and compute statuses.",
)
sync_job = _job(
    "sync_job", dg.AssetSelection.groups(SYNC_GROUP),
    "Stage 3: write the latest segment statuses and attributes to the CRM, and reconcile.",
)

ALL_JOBS = [sfmc_pipeline_job, extract_job, segments_job, sync_job]
