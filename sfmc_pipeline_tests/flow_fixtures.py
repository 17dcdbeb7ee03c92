"""Plain helpers for the tests that run the pipeline's assets with ``dg.materialize`` and read what
a run left behind: the assets of the whole flow (datasets -> segments -> CRM sync), local-mode
resources (a sample directory, the embedded local CRM target, a storage directory), a materialize
that returns the result even when a step fails, and readers of a result (an asset's metadata as
plain values, the sync assets' metadata, the check evaluations, the step failure messages) and of
the storage directory (the sync ledger's rows, the local CRM's records)."""

import sqlite3
from contextlib import closing
from pathlib import Path

import dagster as dg
import yaml

from sfmc_pipeline.config.loader import load_pipeline_config
from sfmc_pipeline.config.pipeline import PipelineConfig
from sfmc_pipeline.crm.local.target import LocalCrmTarget
from sfmc_pipeline.datasets.storage import DatasetStore
from sfmc_pipeline.defs.assets.crm import build_crm_assets, ledger_path, local_db_path
from sfmc_pipeline.defs.assets.datasets import build_dataset_assets
from sfmc_pipeline.defs.assets.segments import build_segment_assets
from sfmc_pipeline.defs.resources.salesforce import SalesforceResource
from sfmc_pipeline.defs.resources.sfmc import SfmcResource
from sfmc_pipeline.defs.resources.storage import StorageResource
from sfmc_pipeline.salesforce.ids import is_valid_id
from sfmc_pipeline.settings import DEFAULT_CONFIG_PATH
from sfmc_pipeline.sfmc.embedded_source import EmbeddedSampleSource
from sfmc_pipeline_tests.segment_fixtures import CONFIG
from sfmc_pipeline_tests.shipped_sample import SHIPPED_SAMPLE


def flow_assets(config: PipelineConfig) -> list:
    """Every asset ``config`` builds: the datasets, the segments and the CRM syncs."""
    return [*build_dataset_assets(config), *build_segment_assets(config), *build_crm_assets(config)]


ASSETS = flow_assets(CONFIG)  # the whole flow of the shipped config


def edited_config(tmp_path: Path, edit) -> PipelineConfig:
    """The shipped pipeline.yaml after ``edit(raw)`` changed its parsed YAML in place, written to ``tmp_path``
    and loaded (validated) like any config."""
    raw = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text(encoding="utf-8"))
    edit(raw)
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return load_pipeline_config(path)


def seed_sample_org(org, objects=("Contact", "Lead"), sample: Path = SHIPPED_SAMPLE):
    """The fake org with the shipped status fields and a record for each profile of ``sample`` (the shipped
    sample unless given; e.g. the tiny sample) of ``objects`` (by Id prefix; the shipped sample's deliberately
    broken id is quarantined before a sync, so it gets none)."""
    for dest in CONFIG.destinations:
        if dest.object in objects:
            for name in dest.status_fields:
                org.add_field(dest.object, name)
    contacts = EmbeddedSampleSource(sample).read(CONFIG.extension("contacts")).frame
    for rid in set(contacts["SubscriberKey"]):
        if not is_valid_id(rid):
            continue
        if rid.startswith("003") and "Contact" in objects:
            org.add_record("Contact", rid, LastName="x")
        elif rid.startswith("00Q") and "Lead" in objects:
            org.add_record("Lead", rid, LastName="x", Company="x")
    return org


def local_resources(storage: Path, sample: Path = SHIPPED_SAMPLE) -> dict:
    """Resources for a run with no credentials: SFMC extracts from ``sample``, the embedded local CRM
    target, everything written under ``storage``."""
    return {"sfmc": SfmcResource(sample_dir=str(sample)), "salesforce": SalesforceResource(),
            "storage": StorageResource(base_dir=str(storage))}


def materialize(assets, resources, *, run_config=None, selection=None, instance=None):
    """``dg.materialize`` with ``raise_on_error=False`` (a failed step is in the result, not raised), on a
    fresh ephemeral instance unless ``instance`` is given."""
    return dg.materialize(assets, resources=resources, run_config=run_config, selection=selection,
                          raise_on_error=False, instance=instance or dg.DagsterInstance.ephemeral())


def run_flow(sample: Path, storage: Path, run_config: dict | None = None):
    """The whole flow on ``sample`` into ``storage`` in local mode; asserts the run succeeded (showing the
    step failures if not)."""
    result = materialize(ASSETS, local_resources(storage, sample), run_config=run_config)
    assert result.success, step_failures(result)
    return result


def plain_values(metadata) -> dict:
    """Metadata entries as plain values (``MetadataValue.value``)."""
    return {k: getattr(v, "value", v) for k, v in metadata.items()}


def asset_metadata(result, asset: str) -> dict:
    """The metadata of the one materialization of ``asset`` (e.g. ``"salesforce/contacts"``) in ``result``."""
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == asset]
    return plain_values(event.materialization.metadata)


def sync_metadata(result) -> dict[str, dict]:
    """The metadata of each CRM sync materialized in ``result``, by destination name."""
    return {e.asset_key.path[1]: plain_values(e.materialization.metadata)
            for e in result.get_asset_materialization_events() if e.asset_key.path[0] == "salesforce"}


def check_evaluations(result) -> list[dg.AssetCheckEvaluation]:
    """Every asset check evaluation in ``result``, in event order."""
    return [e.event_specific_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]


def step_failures(result) -> dict[str, str]:
    """The error message of each failed step in ``result``, by step key."""
    return {e.step_key: e.event_specific_data.error.message for e in result.all_events
            if e.event_type_value == "STEP_FAILURE"}


def ledger_rows(storage: Path) -> dict[str, list]:
    """Every row of every table of the sync ledger under ``storage`` (``{}`` when there is none yet)."""
    path = ledger_path(DatasetStore(storage))
    if not path.exists():
        return {}
    with closing(sqlite3.connect(path)) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        return {t: sorted(db.execute(f'SELECT * FROM "{t}"').fetchall(), key=repr) for t in tables}


def local_crm_records(storage: Path) -> dict[str, list[dict]]:
    """The Contact and Lead records of the embedded local CRM target under ``storage``."""
    with LocalCrmTarget(local_db_path(DatasetStore(storage))) as crm:
        return {sobject: crm.read(sobject) for sobject in ("Contact", "Lead")}
