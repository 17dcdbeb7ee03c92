"""Where things live: the pipeline config file, the shipped sample data and the storage directory.

The one place that reads the location environment variables. Credentials are not read here:
they reach the resources through ``dagster.EnvVar`` (see ``definitions.py``).
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

REPO_ROOT = Path(__file__).resolve().parent.parent

CONFIG_ENV = "SFMC_PIPELINE_CONFIG"
STORAGE_ENV = "SFMC_PIPELINE_STORAGE"

DEFAULT_CONFIG_PATH = REPO_ROOT / "pipeline.yaml"
DEFAULT_STORAGE_DIR = REPO_ROOT / "data" / "storage"
SAMPLE_DATA_DIR = REPO_ROOT / "data" / "sample"


def config_path() -> Path:
    """The pipeline config file: ``$SFMC_PIPELINE_CONFIG`` or ``pipeline.yaml`` at the repo root."""
    return Path(os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH)


def env_if_set(name: str) -> dg.EnvVar | None:
    """``dg.EnvVar(name)`` when the variable is set and not empty, else ``None``.

    Dagster refuses to start a run when an ``EnvVar`` points at an unset variable, so optional
    settings (credentials absent = embedded default) are only wired to the variable when it is
    set. The value itself is still resolved by Dagster at run launch and never shown in the UI.
    """
    return dg.EnvVar(name) if os.environ.get(name) else None


def env_or_default(name: str, default: str) -> str:
    """``dg.EnvVar(name)`` when set, else ``default`` (for non-secret locations)."""
    return env_if_set(name) or default


def sample_data_dir() -> Path:
    """The sample extracts the embedded default reads."""
    return SAMPLE_DATA_DIR
