"""The Activities extension on the fake SFMC server, as the incremental-read tests use it: rows that
occurred ``i`` hours after ``BASE`` (SFMC system time), an asset with a hand-moved clock, runs on one
Dagster instance, and readers of what a run left behind (dataset, quarantine, the rejected quarantine of
a failed run, the incremental state, the ``$filter`` of each read, the count probes)."""

import datetime as dt
import json
from pathlib import Path

import dagster as dg
import pandas as pd
import yaml

from sfmc_pipeline.config.loader import parse_pipeline_config
from sfmc_pipeline.datasets.incremental import state_path
from sfmc_pipeline.datasets.storage import DatasetStore, read_parquet
from sfmc_pipeline.defs.assets.datasets import build_dataset_asset
from sfmc_pipeline.defs.resources.sfmc import SfmcResource
from sfmc_pipeline.defs.resources.storage import StorageResource
from sfmc_pipeline.settings import DEFAULT_CONFIG_PATH
from sfmc_pipeline_tests.flow_fixtures import materialize, step_failures

BASE = dt.datetime(2026, 11, 19)  # SFMC system time (UTC-6): row i occurred at BASE + i hours
START = dt.datetime(2026, 11, 21, 12, tzinfo=dt.timezone.utc)  # the clock of the first run
FAR = "9999-12-31T23:59:59"
FULL_REFRESH = {"ops": {"activities": {"config": {"full_refresh": True}}}}


def config_with(**settings):
    raw = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text(encoding="utf-8"))
    raw["settings"].update(settings)
    return parse_pipeline_config(raw, source="test config")


def activity(i: int, *, hour: float | None = None, detail: str | None = None, kind: str = "web_visit") -> dict:
    return {
        "ActivityId": f"00000000-0000-4000-8000-{i:012d}",
        "SubscriberKey": "0035e00000ABCdeAAH",
        "ActivityType": kind,
        "OccurredAt": BASE + dt.timedelta(hours=i if hour is None else hour),
        "Detail": detail if detail is not None else f"https://www.example.com/p/{i}",
    }


def between(hour: str) -> str:
    """The $filter of a window starting at ``hour`` (SFMC system time, ``YYYY-MM-DDTHH:MM:SS``)."""
    return f"OccurredAt between '{hour}' and '{FAR}'"


class Clock:
    def __init__(self):
        self.now = START

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **delta) -> None:
        self.now += dt.timedelta(**delta)


class Activities:
    """The Activities extension on the fake SFMC server, its asset, and what a run left behind."""

    def __init__(self, fake_sfmc, storage: Path, config=None):
        self.fake, self.storage, self.clock = fake_sfmc, storage, Clock()
        self.config = config or config_with()
        self.rows = {i: activity(i) for i in range(25)}
        self.instance = dg.DagsterInstance.ephemeral()

    def serve(self) -> None:
        """Serve ``rows`` as they are now (rows added, changed or deleted since the last run)."""
        self.fake.add_data_extension("Activities", list(self.rows.values()), primary_key=["ActivityId"],
                                     field_types={name: "Date" if name == "OccurredAt" else "Text"
                                                  for name in activity(0)})

    def resources(self) -> dict:
        return {"sfmc": SfmcResource(client_id=self.fake.client_id, client_secret=self.fake.client_secret,
                                     auth_base_uri=self.fake.auth_base_uri, max_retries=0, backoff_seconds=0),
                "storage": StorageResource(base_dir=str(self.storage))}

    def assets(self) -> list:
        return [build_dataset_asset(self.config.extension("activities"), self.config, clock=self.clock)]

    def run(self, run_config=None, *, ok: bool = True, extra_assets=()):
        self.serve()
        self.fake.clear_requests()
        result = materialize([*self.assets(), *extra_assets], self.resources(), run_config=run_config,
                             selection=[dg.AssetKey("activities")] if not extra_assets else None,
                             instance=self.instance)
        assert result.success is ok, step_failures(result)
        return result

    def filters(self) -> list:
        """The ``$filter`` of each read's first page since the last run started (not the count probes)."""
        return [r.query.get("$filter") for r in self.fake.rowset_requests()
                if "/key/" in r.path and r.query.get("$pageSize") != "1"]

    def probes(self) -> int:
        """How many count probes (``$pageSize=1``, no filter) the last run made."""
        return sum(1 for r in self.fake.rowset_requests()
                   if "/key/" in r.path and r.query == {"$page": "1", "$pageSize": "1"})

    def dataset(self) -> pd.DataFrame:
        return DatasetStore(self.storage).read_dataset("activities")

    def rejected_path(self) -> Path:
        return DatasetStore(self.storage).rejected_quarantine_path("activities")

    def rejected(self) -> pd.DataFrame:
        """The quarantine a failed run would have landed (kept apart, for inspection)."""
        return read_parquet(self.rejected_path())

    def quarantine(self) -> pd.DataFrame:
        return read_parquet(DatasetStore(self.storage).quarantine_path("activities"))

    def state(self) -> dict:
        return json.loads(state_path(DatasetStore(self.storage), "activities").read_text(encoding="utf-8"))

    def details(self) -> dict[int, str]:
        frame = self.dataset()
        return {int(key[-12:]): detail for key, detail in zip(frame["ActivityId"], frame["Detail"])}
