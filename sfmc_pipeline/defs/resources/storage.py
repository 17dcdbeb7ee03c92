"""Where the pipeline keeps its datasets, quarantines and state, and the lease a writing run holds."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import dagster as dg
from pydantic import Field

from sfmc_pipeline.datasets.storage import DatasetStore, open_store
from sfmc_pipeline.runs.lease import run_lease
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
        """The store, with this step inside the run's storage lease for the block; the run keeps holding the
        storage until it ends (see ``runs/lease.py``). ``StorageBusy`` names the run holding it otherwise."""
        store = self.get_store()
        instance, run = context.instance, context.run
        with run_lease(store.base_dir, run.run_id, context.op_execution_context.op.name, job=run.job_name,
                       run_in_progress=lambda run_id: run_in_progress(instance, run_id)):
            yield store

    def claim(self, context: dg.AssetExecutionContext) -> DatasetStore:
        """The store, after taking the storage lease for this run (held until the run ends), so a step that reads
        before it writes fails at once when another run holds the storage, before reading anything."""
        with self.writing(context) as store:
            return store


def run_in_progress(instance: dg.DagsterInstance, run_id: str) -> bool | None:
    """Whether ``instance`` knows the run and it has not finished (None: not a run of this instance)."""
    run = instance.get_run_by_id(run_id)
    return None if run is None else not run.is_finished
