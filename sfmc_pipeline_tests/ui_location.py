"""The name of the code location the UI shows, as ``dg dev`` and ``dagster-webserver -w workspace.yaml`` load it."""

import yaml
from dagster_dg_core.context import DgContext

from sfmc_pipeline.settings import REPO_ROOT


def ui_location_name() -> str:
    """``dg dev`` names the location as dg's project context does (pyproject.toml), ``dagster-webserver -w
    workspace.yaml`` (docs/operations.md: Production) from workspace.yaml; both must be one location."""
    dg_dev = DgContext.from_file_discovery_and_command_line_config(REPO_ROOT, {}).code_location_name
    workspace = yaml.safe_load((REPO_ROOT / "workspace.yaml").read_text(encoding="utf-8"))
    [entry] = workspace["load_from"]
    names = {dg_dev, entry["python_module"]["location_name"]}
    assert len(names) == 1, f"dg dev and workspace.yaml load different code locations: {names}"
    return names.pop()
