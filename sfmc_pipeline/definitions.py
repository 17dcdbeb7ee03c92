"""The code location: the one place ``Definitions`` is built, from explicit lists.

Assets come from the pipeline config (``$SFMC_PIPELINE_CONFIG`` or ``pipeline.yaml``), which is
validated here, at load time. Credentials are wired with ``dg.EnvVar`` only when set (see
``settings.env_if_set``); with none set the pipeline runs on the embedded sample data.
"""

from __future__ import annotations

import dagster as dg

from sfmc_pipeline import settings
from sfmc_pipeline.assets.crm import build_crm_assets
from sfmc_pipeline.assets.datasets import build_dataset_assets
from sfmc_pipeline.assets.segments import build_segment_assets
from sfmc_pipeline.config import PipelineConfig, load_pipeline_config
from sfmc_pipeline.jobs import sfmc_pipeline_job
from sfmc_pipeline.resources.salesforce import SalesforceResource
from sfmc_pipeline.resources.sfmc import SfmcResource
from sfmc_pipeline.resources.storage import StorageResource


def build_resources() -> dict:
    return {
        "sfmc": SfmcResource(
            client_id=settings.env_if_set("SFMC_CLIENT_ID"),
            client_secret=settings.env_if_set("SFMC_CLIENT_SECRET"),
            auth_base_uri=settings.env_if_set("SFMC_AUTH_BASE_URI"),
            account_id=settings.env_if_set("SFMC_ACCOUNT_ID"),
            sample_dir=str(settings.sample_data_dir()),
        ),
        "salesforce": SalesforceResource(
            domain=settings.env_if_set("SALESFORCE_DOMAIN"),
            login_url=settings.env_if_set("SALESFORCE_LOGIN_URL"),
            client_id=settings.env_if_set("SALESFORCE_CLIENT_ID"),
            client_secret=settings.env_if_set("SALESFORCE_CLIENT_SECRET"),
            username=settings.env_if_set("SALESFORCE_USERNAME"),
            password=settings.env_if_set("SALESFORCE_PASSWORD"),
            security_token=settings.env_if_set("SALESFORCE_SECURITY_TOKEN"),
        ),
        "storage": StorageResource(
            base_dir=settings.env_or_default(settings.STORAGE_ENV, str(settings.DEFAULT_STORAGE_DIR))
        ),
    }


def build_definitions(config: PipelineConfig) -> dg.Definitions:
    return dg.Definitions(
        assets=[*build_dataset_assets(config), *build_segment_assets(config), *build_crm_assets(config)],
        jobs=[sfmc_pipeline_job],
        resources=build_resources(),
    )


defs = build_definitions(load_pipeline_config(settings.config_path()))
