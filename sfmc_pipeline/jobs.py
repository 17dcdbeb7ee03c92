"""Jobs: what a user launches from the UI, a schedule or a sensor."""

from __future__ import annotations

import dagster as dg

PIPELINE_JOB_NAME = "sfmc_pipeline_job"
# Runs carrying this tag wait for each other in the daemon's run queue (deploy/dagster.yaml): one run
# at a time writes to the storage directory.
STORAGE_TAG = {"sfmc_pipeline/storage": "default"}

sfmc_pipeline_job = dg.define_asset_job(
    PIPELINE_JOB_NAME,
    selection=dg.AssetSelection.all(),
    description="The whole flow: SFMC Data Extensions -> validated datasets (-> segments -> CRM sync).",
    tags=STORAGE_TAG,
)
