"""Contract: the code location loads (as `dagster dev` would) and every asset, check and job
resolves: each configured Data Extension is one asset in `sfmc_datasets` with a description and
its column schema; segments and one sync asset per destination follow with their checks and
lineage (datasets -> segments -> salesforce)."""

import dagster as dg

from sfmc_pipeline.config.loader import load_pipeline_config
from sfmc_pipeline.settings import DEFAULT_CONFIG_PATH


def test_definitions_load_and_resolve():
    from sfmc_pipeline.definitions import defs

    config = load_pipeline_config(DEFAULT_CONFIG_PATH)
    graph = defs.resolve_asset_graph()
    keys = set(graph.get_all_asset_keys())
    datasets = {dg.AssetKey(e.asset) for e in config.data_extensions}
    segments = {dg.AssetKey("segment_memberships"), dg.AssetKey("segment_statuses")}
    syncs = {dg.AssetKey(["salesforce", d.name]) for d in config.destinations}
    assert keys == datasets | segments | syncs
    for ext in config.data_extensions:
        node = graph.get(dg.AssetKey(ext.asset))
        assert node.group_name == "sfmc_datasets"
        assert node.description and ext.key in node.description
        schema = node.metadata["dagster/column_schema"]
        assert [c.name for c in schema.columns] == [c.name for c in ext.columns]
    assert {graph.get(k).group_name for k in segments} == {"segments"}
    assert {graph.get(k).group_name for k in syncs} == {"salesforce"}
    # lineage: memberships read the datasets its rules use, syncs read the statuses
    assert graph.get(dg.AssetKey("segment_memberships")).parent_keys == datasets
    for key in syncs:
        assert dg.AssetKey("segment_statuses") in graph.get(key).parent_keys
    checks = {(c.asset_key.to_user_string(), c.name) for c in graph.asset_check_keys}
    assert {(e.asset, name) for e in config.data_extensions
            for name in ("quarantine_below_threshold", "no_rows_quarantined", "row_volume_stable")} <= checks
    assert {("segment_statuses", "statuses_consistent"), ("segment_statuses", "members_are_valid_profiles")} <= checks
    assert {(f"salesforce/{d.name}", n) for d in config.destinations for n in ("reconciliation", "failed_records_below_threshold", "no_failed_records")} <= checks
    job = defs.resolve_job_def("sfmc_pipeline_job")
    assert set(job.asset_layer.executable_asset_keys) == keys
    defs.resolve_all_job_defs()


def test_a_deployment_can_point_at_its_own_config_and_storage(tmp_path, monkeypatch):
    import yaml

    from sfmc_pipeline import settings
    from sfmc_pipeline.definitions import build_definitions, build_resources

    raw = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    raw["data_extensions"] = raw["data_extensions"][:1]  # only Contacts
    raw["segments"] = raw["segments"][:2]  # segments on profile columns only
    for dest in raw["destinations"]:
        dest["segments"] = {s: f"{s}__c" for s in ("new_customer", "repeat_buyer")}
    path = tmp_path / "my-pipeline.yaml"
    path.write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("SFMC_PIPELINE_CONFIG", str(path))
    monkeypatch.setenv("SFMC_PIPELINE_STORAGE", str(tmp_path / "store"))
    assert settings.config_path() == path
    defs = build_definitions(load_pipeline_config(settings.config_path()))
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert keys == {"contacts", "segment_memberships", "segment_statuses", "salesforce/contacts", "salesforce/leads"}
    base_dir = build_resources()["storage"].base_dir  # resolved by Dagster at run launch
    assert isinstance(base_dir, dg.EnvVar) and base_dir.get_value() == str(tmp_path / "store")
