"""Contract: materializing the dataset assets lands one parquet dataset and one quarantine per
Data Extension, in both modes (embedded sample data; SFMC REST via environment variables), with
metadata a user reads, a validation check with the right severity, atomic replace-not-append
writes (an incremental extension merges its delta), and a failed run (with counts and top
reasons) above the quarantine threshold. The embedded default lands the full shipped sample (the
smoke run of this flow); the rerun and the threshold read the tiny sample (``tiny_sample.py``)."""

import dagster as dg
import pandas as pd
import pytest

from sfmc_pipeline.config.loader import load_pipeline_config
from sfmc_pipeline.datasets.storage import DatasetStore, atomic_path
from sfmc_pipeline.definitions import build_resources
from sfmc_pipeline.defs.assets.datasets import build_dataset_assets
from sfmc_pipeline.defs.resources.sfmc import SfmcResource
from sfmc_pipeline.defs.resources.storage import StorageResource
from sfmc_pipeline.settings import DEFAULT_CONFIG_PATH
from sfmc_pipeline.sfmc.embedded_source import EmbeddedSampleSource
from sfmc_pipeline_tests.shipped_sample import SHIPPED_SAMPLE
from sfmc_pipeline_tests.tiny_sample import write_tiny_sample

CONFIG = load_pipeline_config(DEFAULT_CONFIG_PATH)
DATASET_ASSETS = build_dataset_assets(CONFIG)


def _materialize(tmp_path, sfmc: SfmcResource | None = None, raise_on_error=True):
    resources = {"sfmc": sfmc or SfmcResource(), "storage": StorageResource(base_dir=str(tmp_path))}
    return dg.materialize(DATASET_ASSETS, resources=resources, raise_on_error=raise_on_error)


def _materializations(result) -> dict[str, dict]:
    return {
        e.asset_key.to_user_string(): {k: getattr(v, "value", v) for k, v in e.materialization.metadata.items()}
        for e in result.get_asset_materialization_events()
    }


def _checks(result, check="quarantine_below_threshold") -> dict[str, dg.AssetCheckEvaluation]:
    return {
        e.event_specific_data.asset_key.to_user_string(): e.event_specific_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION" and e.event_specific_data.check_name == check
    }


def test_embedded_default_lands_every_extension(tmp_path):
    result = _materialize(tmp_path)
    assert result.success
    metadata = _materializations(result)
    store = DatasetStore(tmp_path)
    source = EmbeddedSampleSource(SHIPPED_SAMPLE)
    for ext in CONFIG.data_extensions:
        meta = metadata[ext.asset]
        assert meta["source_mode"] == "embedded"
        dataset = pd.read_parquet(store.dataset_path(ext.asset))
        quarantine = pd.read_parquet(store.quarantine_path(ext.asset))
        assert len(dataset) == meta["rows_valid"] == meta["dagster/row_count"]
        assert len(quarantine) == meta["rows_quarantined"] > 0
        assert meta["rows_read"] == len(source.read(ext).frame) == len(dataset) + len(quarantine)
        assert (quarantine["_run_id"] == result.run_id).all()
        assert "| reason | rows |" in meta["top_quarantine_reasons"]
        assert meta["preview"].startswith("| " + ext.columns[0].name)
    contacts = store.read_dataset("contacts")
    assert str(contacts["OrderCount"].dtype) == "Int64"
    assert str(contacts["CreatedDate"].dtype) == "datetime64[us, UTC]"
    assert "decimal128(18, 2)" in str(contacts["TotalSpend"].dtype)
    # the shipped sample's few bad rows are expected: a WARN, and the threshold check passes
    clean = _checks(result, "no_rows_quarantined")
    assert all(not c.passed and c.severity == dg.AssetCheckSeverity.WARN for c in clean.values())
    threshold = _checks(result)
    assert all(c.passed for c in threshold.values())
    assert set(clean) == set(threshold) == {e.asset for e in CONFIG.data_extensions}


def test_rerun_replaces_instead_of_appending(tmp_path):
    tiny = SfmcResource(sample_dir=str(write_tiny_sample(tmp_path / "sample")))
    _materialize(tmp_path, tiny)
    first = {e.asset: len(pd.read_parquet(DatasetStore(tmp_path).dataset_path(e.asset))) for e in CONFIG.data_extensions}
    again = _materializations(_materialize(tmp_path, tiny))
    second = {e.asset: len(pd.read_parquet(DatasetStore(tmp_path).dataset_path(e.asset))) for e in CONFIG.data_extensions}
    assert first == second
    assert not list(tmp_path.rglob("*.tmp"))
    # Activities (incremental_column OccurredAt) is merged from its last hour; the others are read in full
    assert {asset: meta["read_mode"] for asset, meta in again.items()} == {
        "contacts": "full", "campaign_engagement": "full", "activities": "incremental"}
    assert all(meta["rows_changed"] == 0 for meta in again.values())
    assert again["activities"]["rows_fetched"] < again["activities"]["dagster/row_count"] == first["activities"]


def test_real_mode_via_environment_variables(tmp_path, fake_sfmc, monkeypatch):
    source = EmbeddedSampleSource(SHIPPED_SAMPLE)
    served = {}
    for ext in CONFIG.data_extensions:
        rows = source.read(ext).frame.head(300).to_dict("records")
        # SFMC itself enforces the primary key, so the API never serves duplicate keys.
        rows = list({tuple(r[k] for k in ext.primary_key): r for r in rows}.values())
        fake_sfmc.add_data_extension(ext.key, rows, primary_key=ext.primary_key)
        served[ext.key] = len(rows)
    monkeypatch.setenv("SFMC_CLIENT_ID", fake_sfmc.client_id)
    monkeypatch.setenv("SFMC_CLIENT_SECRET", fake_sfmc.client_secret)
    monkeypatch.setenv("SFMC_AUTH_BASE_URI", fake_sfmc.auth_base_uri)
    monkeypatch.setenv("SFMC_PIPELINE_STORAGE", str(tmp_path))
    resources = build_resources()
    result = dg.materialize(DATASET_ASSETS, resources=resources)
    assert result.success
    metadata = _materializations(result)
    for ext in CONFIG.data_extensions:
        meta = metadata[ext.asset]
        assert meta["source_mode"] == "sfmc" and "SFMC REST" in meta["source"]
        assert meta["rows_read"] == served[ext.key]
        assert meta["api_calls"] >= 1
        assert (tmp_path / "datasets" / f"{ext.asset}.parquet").exists()
        assert fake_sfmc.client_secret not in str(meta)
    assert len(fake_sfmc.token_requests()) == 3  # one per asset step (each step builds its client)


def test_above_threshold_the_run_fails_and_keeps_the_old_dataset(tmp_path):
    sample = write_tiny_sample(tmp_path / "sample")
    good = _materialize(tmp_path, SfmcResource(sample_dir=str(sample)))
    assert good.success
    before = pd.read_parquet(DatasetStore(tmp_path).dataset_path("contacts"))
    held = DatasetStore(tmp_path).quarantine_path("contacts").read_bytes()
    contacts = pd.read_csv(sample / "Contacts.csv", dtype=str, keep_default_na=False)
    contacts.loc[: len(contacts) // 10, "Email"] = "broken-address"  # 3 bad rows of the 24
    contacts.to_csv(sample / "Contacts.csv", index=False)

    result = _materialize(tmp_path, SfmcResource(sample_dir=str(sample)), raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE" and e.step_key == "contacts")
    message = failure.event_specific_data.error.message
    assert "above the 5% threshold" in message and "Email: not a valid email address" in message
    threshold = _checks(result)["contacts"]
    assert not threshold.passed and threshold.severity == dg.AssetCheckSeverity.ERROR
    after = pd.read_parquet(DatasetStore(tmp_path).dataset_path("contacts"))
    pd.testing.assert_frame_equal(before, after)  # the previous dataset stays in place ...
    assert DatasetStore(tmp_path).quarantine_path("contacts").read_bytes() == held  # ... with its own quarantine
    rejected = DatasetStore(tmp_path).rejected_quarantine_path("contacts")  # the refused one, for inspection
    assert str(rejected) in message
    assert (pd.read_parquet(rejected)["Email"] == "broken-address").sum() == len(contacts) // 10 + 1


def test_incomplete_credentials_fail_clearly(tmp_path):
    result = _materialize(tmp_path, SfmcResource(client_id="abc", client_secret="shh-secret"), raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = failure.event_specific_data.error.message
    assert "SFMC_AUTH_BASE_URI not set" in message and "shh-secret" not in message


def test_crash_during_a_write_leaves_the_previous_file(tmp_path):
    target = tmp_path / "datasets" / "x.parquet"
    target.parent.mkdir()
    target.write_text("previous")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half a dataset")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "previous"
    assert [p.name for p in target.parent.iterdir()] == ["x.parquet"]
