"""Preflight: before a single record is sent, check every mapped field against the object's
describe, and say exactly what to fix (replaces the reference product's opaque
"Unknown errors encountered while pushing events to the destination").

``preflight_destination`` is the one entry point: the sync calls it before sending, and
``sfmc-pipeline check`` calls it too, so the check refuses exactly what a run would refuse."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Mapping

from sfmc_pipeline.config.data_extensions import ColumnConfig
from sfmc_pipeline.config.destinations import DestinationConfig
from sfmc_pipeline.errors import ConfigurationError
from sfmc_pipeline.salesforce.records import CrmTarget, Describe, FieldInfo
from sfmc_pipeline.salesforce.rules import accepts, expected_field_types


class PreflightError(ConfigurationError):
    """The org's fields do not fit the mapping: a configuration problem, not worth retrying."""

    def __init__(self, problems: list[str]):
        super().__init__("Salesforce preflight failed; nothing was sent:\n" + "\n".join(f"  - {p}" for p in problems))
        self.problems = problems


@dataclass(frozen=True)
class ResolvedFields:
    api_names: dict[str, str]  # configured name (Mapping ID / attribute field) -> API name in the org
    info: dict[str, FieldInfo]  # API name -> describe


def preflight_destination(
    target: CrmTarget, dest: DestinationConfig, longest: dict[str, int], columns: Mapping[str, ColumnConfig]
) -> tuple[Describe, ResolvedFields]:
    """The object's describe from ``target``, and the mapping checked against it (``run_preflight``); raises
    ``PreflightError`` listing every problem."""
    describe = target.describe(dest.object)
    return describe, run_preflight(dest, describe, longest, columns)


def run_preflight(
    dest: DestinationConfig, describe: Describe, longest: dict[str, int], columns: Mapping[str, ColumnConfig]
) -> ResolvedFields:
    """``longest``: status field -> longest value about to be written to it; ``columns``: the profile
    dataset's columns (an attribute's column type must fit its field's type)."""
    problems: list[str] = []
    api_names: dict[str, str] = {}
    info: dict[str, FieldInfo] = {}
    obj = dest.object
    source_of = {field: column for column, field in dest.attribute_map.items()}
    wanted = [(field, "status") for field in dest.status_fields]
    wanted += [(field, "attribute") for field in dest.attribute_map.values()]
    if dest.external_id is not None:
        wanted.append((dest.external_id.field, "external_id"))
    for configured, role in wanted:
        found = describe.find(configured)
        if found is None:
            problems.append(_missing(obj, configured, role, describe))
            continue
        api_names[configured] = found.name
        info[found.name] = found
        if role == "external_id":
            if not (found.external_id or found.id_lookup):
                problems.append(f"{obj}.{found.name}: not an External ID field; mark it External ID or use another field")
            continue
        if not found.updateable:
            problems.append(
                f"{obj}.{found.name}: not updateable by the integration user; grant Edit access in its "
                "field-level security (or remove it from the mapping)"
            )
        if role == "attribute" and configured in source_of and source_of[configured] in columns:
            column = columns[source_of[configured]]
            if not accepts(column, found):
                problems.append(
                    f"{obj}.{found.name}: is a {found.type} field, but it is mapped from {column.name!r}, a "
                    f"{column.type.value} column; map {column.name!r} to {expected_field_types(column)}, or map "
                    f"another column to {found.name}"
                )
        if role == "status":
            if found.type != "textarea":
                problems.append(
                    f"{obj}.{found.name}: is a {found.type} field; a segment status field must be a Long Text Area "
                    f"(textarea). Create a Long Text Area field (256-131,072 characters) and map the segment to it"
                )
            elif found.length < longest.get(configured, 0):
                problems.append(
                    f"{obj}.{found.name}: holds at most {found.length} characters but values of "
                    f"{longest[configured]} characters must be written; increase its length (Long Text Area, up to 131,072)"
                )
    if problems:
        raise PreflightError(problems)
    return ResolvedFields(api_names=api_names, info=info)


def _missing(obj: str, configured: str, role: str, describe: Describe) -> str:
    names = [f.name for f in describe.fields.values()]
    close = difflib.get_close_matches(configured.lower(), [n.lower() for n in names], n=1, cutoff=0.75)
    hint = ""
    if close:
        hint = f"; did you mean {next(n for n in names if n.lower() == close[0])!r}?"
    if role == "status":
        return (
            f"{obj}.{configured}: no such field. Create it on {obj} as a Long Text Area custom field (API name "
            f"{configured}) or fix the segment's Mapping ID in the pipeline config{hint}"
        )
    return f"{obj}.{configured}: no such field (mapped {role}); fix the mapping in the pipeline config{hint}"
