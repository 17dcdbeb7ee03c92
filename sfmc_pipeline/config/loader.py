"""Load ``pipeline.yaml`` and report every problem at once, naming the file, the entry and the fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from sfmc_pipeline.config.models import PipelineConfig


class PipelineConfigError(ValueError):
    """The pipeline config file is missing, not YAML, or breaks a rule."""


def load_pipeline_config(path: str | Path) -> PipelineConfig:
    path = Path(path)
    if not path.is_file():
        raise PipelineConfigError(
            f"Pipeline config not found: {path}. Set SFMC_PIPELINE_CONFIG to the path of your "
            "pipeline.yaml, or unset it to use the one in the repository root."
        )
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise PipelineConfigError(f"{path} is not valid YAML: {exc}") from None
    return parse_pipeline_config(raw, source=str(path))


def parse_pipeline_config(raw: Any, *, source: str = "<config>") -> PipelineConfig:
    if not isinstance(raw, dict):
        raise PipelineConfigError(f"{source}: expected a mapping with 'data_extensions' at the top level")
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as exc:
        problems = [_describe(error, raw) for error in exc.errors()]
        listing = "\n".join(f"  - {p}" for p in problems)
        raise PipelineConfigError(f"Invalid pipeline config {source}:\n{listing}") from None


def _describe(error: dict, raw: Any) -> str:
    location = _location(error["loc"], raw)
    message = error["msg"].removeprefix("Value error, ")
    kind = error["type"]
    if kind == "extra_forbidden":
        message = f"unknown setting {error['loc'][-1]!r}; remove it or fix the spelling"
    elif kind == "missing":
        message = f"required setting {error['loc'][-1]!r} is missing; add it"
    elif kind == "enum":
        message = f"{message} (got {error.get('input')!r})"
    return f"{location}: {message}" if location else message


def _location(loc: tuple, raw: Any) -> str:
    """``data_extensions[1] (CampaignEngagement) > columns[3] (Opens) > type`` from a pydantic loc."""
    parts: list[str] = []
    node = raw
    for step in loc:
        if isinstance(step, int):
            label = ""
            if isinstance(node, list) and 0 <= step < len(node):
                node = node[step]
                if isinstance(node, dict):
                    name = node.get("key") or node.get("name") or node.get("asset")
                    label = f" ({name})" if name else ""
            else:
                node = None
            if parts:
                parts[-1] += f"[{step}]{label}"
            else:
                parts.append(f"[{step}]{label}")
        else:
            node = node.get(step) if isinstance(node, dict) else None
            parts.append(str(step))
    return " > ".join(parts)
