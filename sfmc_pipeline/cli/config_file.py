"""The pipeline config a command reads: ``--config PATH``, else ``$SFMC_PIPELINE_CONFIG``, else the repository's
``pipeline.yaml``; a command that cannot go on without it prints the loader's error (file, entry, fix)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from sfmc_pipeline import settings
from sfmc_pipeline.config.loader import PipelineConfigError, load_pipeline_config
from sfmc_pipeline.config.pipeline import PipelineConfig


def chosen_config(config_path: Path | None) -> Path:
    return Path(config_path) if config_path else settings.config_path()


def load_or_report(config_path: Path | None, err: Callable[[str], None]) -> tuple[Path, PipelineConfig | None]:
    """``(the config's path, the config)``; None for the config after printing why it does not load."""
    path = chosen_config(config_path)
    try:
        return path, load_pipeline_config(path)
    except PipelineConfigError as exc:
        err(f"error: {exc}")
        return path, None
