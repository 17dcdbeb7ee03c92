"""Load ``pipeline.yaml`` and report every problem at once, naming the file, the entry and the fix."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from sfmc_pipeline.config.checks import check_pipeline_config
from sfmc_pipeline.config.pipeline import PipelineConfig


class PipelineConfigError(ValueError):
    """The pipeline config file is missing, not YAML, or breaks a rule."""


_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _ConfigLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that (1) records every key set twice in one mapping, with its line, instead of
    silently keeping the last, and (2) leaves dates as text, so the config models parse them and an
    impossible date (``as_of: 2026-02-30``) is reported as a setting, not raised by the YAML parser."""

    def __init__(self, stream):
        super().__init__(stream)
        self.duplicates: list[tuple[int, str]] = []  # (line, problem)

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            first_line: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == _MERGE_TAG:
                    continue  # `<<: *anchor` merges are overridable on purpose
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    if key in first_line:
                        self.duplicates.append((line, (
                            f"line {line}: {key!r} is set twice in one mapping (first on line {first_line[key]}); "
                            "keep one"
                        )))
                    else:
                        first_line[key] = line
                except TypeError:
                    pass  # an unhashable key: the constructor below reports it
        return super().construct_mapping(node, deep=deep)


_ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _TIMESTAMP_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load_pipeline_config(path: str | Path) -> PipelineConfig:
    path = Path(path)
    if not path.is_file():
        raise PipelineConfigError(
            f"Pipeline config not found: {path}. Set SFMC_PIPELINE_CONFIG to the path of your "
            "pipeline.yaml, or unset it to use the one in the repository root."
        )
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PipelineConfigError(
            f"Pipeline config {path} cannot be read ({exc.strerror or exc}); make it readable for this user."
        ) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise PipelineConfigError(
            f"{path} is not UTF-8 text: line {line} has the byte 0x{data[exc.start]:02x}. Save the file as UTF-8 "
            "(your editor's encoding setting), then load it again."
        ) from None
    return parse_pipeline_config(read_yaml(text, source=str(path)), source=str(path))


def read_yaml(text: str, *, source: str = "<config>") -> Any:
    """The YAML document in ``text``; duplicate keys and control characters are errors listing each
    with its line."""
    control = control_characters(text)
    if control:
        listing = "\n".join(f"  - {source} {problem}" for problem in control)
        raise PipelineConfigError(
            f"{source} holds control characters YAML does not allow:\n{listing}\nDelete them (they usually come "
            "from a copy-paste or an editor that saved binary data; `grep -nP '[\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f]' "
            "FILE` shows the lines), then load the file again."
        )
    try:
        loader = _ConfigLoader(text)
    except yaml.YAMLError as exc:  # the reader refuses some characters before parsing starts
        raise PipelineConfigError(f"{source} is not valid YAML: {exc}") from None
    try:
        raw = loader.get_single_data()
    except yaml.YAMLError as exc:
        raise PipelineConfigError(f"{source} is not valid YAML: {exc}") from None
    finally:
        loader.dispose()
    if loader.duplicates:
        listing = "\n".join(f"  - {source} {problem}" for _, problem in sorted(loader.duplicates))
        raise PipelineConfigError(f"Invalid pipeline config {source}:\n{listing}")
    return raw


# C0 controls but tab, line feed and carriage return; DEL; C1 controls but NEL (YAML's own rule, which
# PyYAML reports only as a character position).
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\x80-\x84\x86-\x9f]")


def control_characters(text: str, *, limit: int = 5) -> list[str]:
    """``line N, column C: <name>`` for the first ``limit`` control characters of ``text``."""
    problems = []
    for found in _CONTROL.finditer(text):
        line = text.count("\n", 0, found.start()) + 1
        column = found.start() - (text.rfind("\n", 0, found.start()) + 1) + 1
        char = found.group()
        name = unicodedata.name(char, None) or _CONTROL_NAMES.get(char, "a control character")
        problems.append(f"line {line}, column {column}: U+{ord(char):04X} ({name})")
        if len(problems) == limit:
            break
    return problems


_CONTROL_NAMES = {"\x00": "NUL", "\x07": "BEL", "\x08": "BACKSPACE", "\x0b": "VERTICAL TAB", "\x0c": "FORM FEED",
                  "\x1b": "ESCAPE", "\x7f": "DELETE"}


def parse_pipeline_config(raw: Any, *, source: str = "<config>") -> PipelineConfig:
    if not isinstance(raw, dict):
        raise PipelineConfigError(f"{source}: expected a mapping with 'data_extensions' at the top level")
    try:
        pipeline = PipelineConfig.model_validate(raw)
    except ValidationError as exc:
        problems = [_describe(error, raw) for error in exc.errors()]
        listing = "\n".join(f"  - {p}" for p in problems)
        raise PipelineConfigError(f"Invalid pipeline config {source}:\n{listing}") from None
    try:
        check_pipeline_config(pipeline)
    except ValueError as exc:
        raise PipelineConfigError(f"Invalid pipeline config {source}:\n  - {exc}") from None
    return pipeline


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
    elif kind.startswith("date"):
        message = f"{message} (got {error.get('input')!r}; use YYYY-MM-DD)"
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
