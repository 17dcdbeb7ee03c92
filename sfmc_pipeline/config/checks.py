"""What one section of ``pipeline.yaml`` says about another, checked once every section has parsed.

Names used twice, the profile dataset and its key, segment rules against the dataset columns,
destination columns, segments and fields, and governance (labels, actions, policies). Defaults that
depend on another section are filled in here: ``profiles.key`` and each ``identity_column``.
"""

from __future__ import annotations

from typing import Any

from sfmc_pipeline.config.data_extensions import DataExtensionConfig
from sfmc_pipeline.config.destinations import MAX_STATUS_FIELDS_PER_OBJECT
from sfmc_pipeline.config.pipeline import PipelineConfig
from sfmc_pipeline.governance.policies import policy_problems
from sfmc_pipeline.segments.rules import RuleError, check_rule


def check_pipeline_config(pipeline: PipelineConfig) -> None:
    """Raise ``ValueError`` listing the cross-section problems of ``pipeline`` (a freshly parsed config,
    whose cross-section defaults this fills in)."""
    for attr, what in (("asset", "asset name"), ("key", "external key")):
        seen: set[str] = set()
        for ext in pipeline.data_extensions:
            value = getattr(ext, attr)
            if value in seen:
                raise ValueError(
                    f"data_extensions: {what} {value!r} is used twice; each Data Extension "
                    f"needs its own {what}"
                )
            seen.add(value)
    _check_segments(pipeline)


def _fill_in(pipeline: PipelineConfig, name: str, value: Any) -> None:
    """Fill in a default that depends on another section (the model is frozen once loaded)."""
    object.__setattr__(pipeline, name, value)


def _names_used_twice(items: list, section: str, what: str) -> list[str]:
    """A problem for each item whose ``name`` an earlier item of ``section`` already has."""
    problems, seen = [], set()
    for i, item in enumerate(items):
        if item.name in seen:
            problems.append(f"{section}[{i}] ({item.name}): {what} name {item.name!r} is used twice; names must be "
                            "unique")
        seen.add(item.name)
    return problems


def _check_segments(pipeline: PipelineConfig) -> None:
    datasets = {ext.asset: ext for ext in pipeline.data_extensions}
    profile = datasets.get(pipeline.profiles.dataset)
    if profile is None:
        raise ValueError(
            f"profiles > dataset: unknown dataset {pipeline.profiles.dataset!r}; use one of {', '.join(datasets)}"
        )
    if pipeline.profiles.key is None and len(profile.primary_key) == 1:
        _fill_in(pipeline, "profiles", pipeline.profiles.model_copy(update={"key": profile.primary_key[0]}))
    if pipeline.profiles.key is None:
        raise ValueError(
            f"profiles > key: {profile.asset!r} needs a one-column primary_key (it has {profile.primary_key}); "
            "one row per profile, keyed by the column related datasets join on"
        )
    if profile.primary_key != [pipeline.profiles.key]:
        raise ValueError(
            f"profiles > key: {pipeline.profiles.key!r} must be the primary key of {profile.asset!r} "
            f"(its primary_key is {profile.primary_key}); one row per profile"
        )
    _fill_in(pipeline, "destinations", [
        d if d.identity_column else d.model_copy(update={"identity_column": pipeline.profiles.key})
        for d in pipeline.destinations
    ])
    problems = _names_used_twice(pipeline.segments, "segments", "segment")
    for i, segment in enumerate(pipeline.segments):
        where = f"segments[{i}] ({segment.name})"
        try:
            check_rule(segment.rule, profile, datasets, pipeline.profiles.key)
        except RuleError as exc:
            problems.append(f"{where} > {exc}")
    problems += _destination_problems(pipeline, profile)
    problems += _governance_problems(pipeline)
    if problems:
        raise ValueError("\n  - ".join(problems))


def _destination_problems(pipeline: PipelineConfig, profile: DataExtensionConfig) -> list[str]:
    problems = _names_used_twice(pipeline.destinations, "destinations", "destination")
    columns = {c.name for c in profile.columns}
    segments = {s.name for s in pipeline.segments}
    fields_per_object: dict[str, set[str]] = {}
    writer: dict[tuple[str, str], str] = {}  # (object, field) -> the destination that writes it
    for i, dest in enumerate(pipeline.destinations):
        where = f"destinations[{i}] ({dest.name})"
        needed = [("identity_column", dest.identity_column), *(("attributes", c) for c in dest.attribute_map)]
        if dest.external_id:
            needed.append(("external_id > column", dest.external_id.column))
        for setting, column in needed:
            if column not in columns:
                problems.append(
                    f"{where} > {setting}: {profile.asset!r} has no column {column!r} "
                    f"(columns: {', '.join(sorted(columns))})"
                )
        if dest.operation == "update" and dest.identity_column in columns:
            if profile.column(dest.identity_column).format != "salesforce_id":
                problems.append(
                    f"{where} > identity_column: {dest.identity_column!r} must hold Salesforce record Ids: "
                    f"give that column `format: salesforce_id` in {profile.asset!r}, or name the column that does"
                )
        for segment in dest.segments:
            if segment not in segments:
                problems.append(
                    f"{where} > segments: unknown segment {segment!r}; defined segments: {', '.join(sorted(segments))}"
                )
        fields_per_object.setdefault(dest.object, set()).update(f.lower() for f in dest.status_fields)
        written = [*dest.status_fields, *dest.attribute_map.values()]
        if dest.external_id is not None:
            written.append(dest.external_id.field)
        for fld in {f.lower(): f for f in reversed(written)}.values():
            other = writer.setdefault((dest.object, fld.lower()), dest.name)
            if other != dest.name:
                problems.append(
                    f"{where}: {dest.object}.{fld} is also written by destination {other!r}; each field of an "
                    "object is written by one destination (they would overwrite each other): map it in one of them"
                )
    for obj, fields in fields_per_object.items():
        if len(fields) > MAX_STATUS_FIELDS_PER_OBJECT:
            problems.append(
                f"destinations: {len(fields)} distinct status fields map to {obj}, above Salesforce's limit of "
                f"{MAX_STATUS_FIELDS_PER_OBJECT} active segment mappings per object ({', '.join(sorted(fields))}); "
                "let segments share a field or map fewer segments"
            )
    return problems


def _governance_problems(pipeline: PipelineConfig) -> list[str]:
    """Unknown labels and actions, exceptions that name nothing, and every flow a policy forbids."""
    governance = pipeline.governance
    problems = _names_used_twice(governance.policies, "governance > policies", "policy")
    for i, policy in enumerate(governance.policies):
        where = f"governance > policies[{i}] ({policy.name})"
        for label in policy.labels:
            if label not in governance.labels:
                problems.append(f"{where} > labels: unknown label {label!r}; {governance.known_labels}")
        for action in policy.forbidden_actions:
            if action not in governance.actions:
                problems.append(f"{where} > forbidden_actions: unknown action {action!r}; {governance.known_actions}")
    for i, ext in enumerate(pipeline.data_extensions):
        for col in ext.columns:
            for label in col.labels:
                if label not in governance.labels:
                    problems.append(f"data_extensions[{i}] ({ext.key}) > columns > {col.name} > labels: unknown "
                                    f"label {label!r}; {governance.known_labels}")
    for i, dest in enumerate(pipeline.destinations):
        for action in dest.marketing_actions:
            if action not in governance.actions:
                problems.append(f"destinations[{i}] ({dest.name}) > marketing_actions: unknown action {action!r}; "
                                f"{governance.known_actions}")
    if problems:
        return problems
    return policy_problems(pipeline)
