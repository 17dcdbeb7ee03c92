"""Where the pipeline keeps its datasets, quarantines and state, and the lease a writing step holds."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import dagster as dg
from pydantic import Field

from sfmc_pipeline.datasets.storage import DatasetStore, open_store
from sfmc_pipeline.run_lock import run_lease
from sfmc_pipeline.settings import DEFAULT_STORAGE_DIR, STORAGE_ENV


class StorageResource(dg.ConfigurableResource):
    """Base directory for everything the pipeline writes (SFMC_PIPELINE_STORAGE)."""

    base_dir: str = Field(
        default=str(DEFAULT_STORAGE_DIR),
        description="Base directory for datasets/, quarantine/ and state/ (SFMC_PIPELINE_STORAGE).",
    )

    def get_store(self) -> DatasetStore:
        """The store, after checking the directory exists (or can be created) and is writable."""
        return open_store(self.base_dir, setting=STORAGE_ENV)

    @contextmanager
    def writing(self, context: dg.AssetExecutionContext) -> Iterator[DatasetStore]:
        """The store, with this run holding the storage lease for the block (see ``run_lock``)."""
        store = self.get_store()
        with run_lease(store.base_dir, context.run.run_id, context.op_execution_context.op.name):
            yield store
