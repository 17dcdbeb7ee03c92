"""Where the pipeline keeps its datasets, quarantines and state."""

from __future__ import annotations

import dagster as dg
from pydantic import Field

from sfmc_pipeline.datasets.storage import DatasetStore
from sfmc_pipeline.settings import DEFAULT_STORAGE_DIR


class StorageResource(dg.ConfigurableResource):
    """Base directory for everything the pipeline writes (SFMC_PIPELINE_STORAGE)."""

    base_dir: str = Field(
        default=str(DEFAULT_STORAGE_DIR),
        description="Base directory for datasets/, quarantine/ and state/ (SFMC_PIPELINE_STORAGE).",
    )

    def get_store(self) -> DatasetStore:
        return DatasetStore(self.base_dir)
