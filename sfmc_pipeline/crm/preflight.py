"""Preflight: before a single record is sent, check every mapped field against the object's
describe, and say exactly what to fix (replaces the reference product's opaque
"Unknown errors encountered while pushing events to the destination")."""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from sfmc_pipeline.config.models import DestinationConfig
from sfmc_pipeline.crm.records import Describe, FieldInfo
from sfmc_pipeline.transport import ConfigurationError


class PreflightError(ConfigurationError):
    """The org's fields do not fit the mapping: a configuration problem, not worth retrying."""

    def __init__(self, problems: list[str]):
        super().__init__("Salesforce preflight failed; nothing was sent:\n" + "\n".join(f"  - {p}" for p in problems))
        self.problems = problems


def custom_field_name(mapping_id: str) -> str:
    """The custom field a Mapping ID names: ``crm_2_seg`` -> ``crm_2_seg__c`` (kept if it has ``__c``)."""
    return mapping_id if mapping_id.lower().endswith("__c") else f"{mapping_id}__c"


@dataclass(frozen=True)
class ResolvedFields:
    api_names: dict[str, str]  # configured name (Mapping ID / attribute field) -> API name in the org
    info: dict[str, FieldInfo]  # API name -> describe


def run_preflight(dest: DestinationConfig, describe: Describe, longest: dict[str, int]) -> ResolvedFields:
    """``longest``: configured status field -> longest value about to be written to it."""
    problems: list[str] = []
    api_names: dict[str, str] = {}
    info: dict[str, FieldInfo] = {}
    obj = dest.object
    wanted = [(field, "status") for field in dest.status_fields]
    wanted += [(field, "attribute") for field in dest.attribute_map.values()]
    if dest.external_id is not None:
        wanted.append((dest.external_id.field, "external_id"))
    for configured, role in wanted:
        found = describe.find(configured)
        if found is None and role == "status":
            found = describe.find(custom_field_name(configured))
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
        api = custom_field_name(configured)
        return (
            f"{obj}.{configured}: no such field. Create it on {obj} as a Long Text Area custom field (API name "
            f"{api}) or fix the segment's Mapping ID in the pipeline config{hint}"
        )
    return f"{obj}.{configured}: no such field (mapped {role}); fix the mapping in the pipeline config{hint}"
