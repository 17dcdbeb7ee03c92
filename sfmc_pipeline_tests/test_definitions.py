"""Contract: the code location loads (as `dagster dev` would) and every asset, check and job
resolves; each configured Data Extension is one asset in the dataset group with a description
and its column schema."""

import dagster as dg

from sfmc_pipeline.config import load_pipeline_config
from sfmc_pipeline.settings import DEFAULT_CONFIG_PATH


def test_definitions_load_and_resolve():
    from sfmc_pipeline.definitions import defs

    config = load_pipeline_config(DEFAULT_CONFIG_PATH)
    graph = defs.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert {e.asset for e in config.data_extensions} <= keys
    for ext in config.data_extensions:
        node = graph.get(dg.AssetKey(ext.asset))
        assert node.group_name == "sfmc_datasets"
        assert node.description and ext.key in node.description
        schema = node.metadata["dagster/column_schema"]
        assert [c.name for c in schema.columns] == [c.name for c in ext.columns]
        assert dg.AssetCheckKey(dg.AssetKey(ext.asset), "validation") in graph.asset_check_keys
    job = defs.resolve_job_def("sfmc_pipeline_job")
    assert {k.to_user_string() for k in job.asset_layer.executable_asset_keys} == keys
    defs.resolve_all_job_defs()
