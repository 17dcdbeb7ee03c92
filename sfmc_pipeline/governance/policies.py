"""Policies on destinations: a label a policy forbids for a marketing action never reaches a
destination that performs that action, unless the destination holds an explicit exception.

Checked when the config loads (``policy_problems``: the code location does not load with a
violation) and again by the sink before anything is sent (``enforce``: a config built around the
loader still sends nothing). Every message names the destination, the field or segment, the column
and label it comes from, the policy, and the two ways out (remove the mapping, or an exception with
a reason).
"""

from __future__ import annotations

from dataclasses import dataclass

from sfmc_pipeline.config.destinations import DestinationConfig
from sfmc_pipeline.config.governance import PolicyConfig, PolicyExceptionConfig
from sfmc_pipeline.config.pipeline import PipelineConfig
from sfmc_pipeline.errors import ConfigurationError
from sfmc_pipeline.governance.lineage import SEGMENT, Flow, Source, destination_flows


class PolicyViolation(ConfigurationError):
    """A destination would write data a policy forbids for its actions; nothing was sent."""


@dataclass(frozen=True)
class Violation:
    flow: Flow
    source: Source
    policy: PolicyConfig
    action: str

    def describe(self, pipeline: PipelineConfig) -> str:
        flow, source, label = self.flow, self.source, self.source.label
        meaning = pipeline.governance.labels[label].description
        if flow.kind == SEGMENT:
            what = (f"segments > {flow.item} (status field {flow.field}): the segment's rule reads "
                    f"{source.describe()}, labelled {label} ({meaning})")
            remedy, key = "remove the segment from this destination", f"segment: {flow.item}"
        else:
            what = f"field {flow.field}: fed by {source.describe()}, labelled {label} ({meaning})"
            remedy, key = "remove the mapping", f"field: {flow.field}"
        return (f"{what}; policy {self.policy.name} forbids {label} for {self.action}, an action of destination "
                f"{flow.destination!r}. Fix: {remedy} (or relabel the column), or allow this pairing on purpose in "
                f"the destination's policy_exceptions: [{{policy: {self.policy.name}, {key}, reason: <why>}}]")


@dataclass(frozen=True)
class Allowed:
    """A violation set aside by one of the destination's exceptions."""

    violation: Violation
    exception: PolicyExceptionConfig


def violations(pipeline: PipelineConfig, dest: DestinationConfig) -> list[Violation]:
    """Every (flow, labelled source, policy, action) a policy forbids, before exceptions."""
    found = []
    for flow in destination_flows(pipeline, dest):
        for source in flow.sources:
            for policy in pipeline.governance.policies:
                if source.label not in policy.labels:
                    continue
                for action in dest.marketing_actions:
                    if action in policy.forbidden_actions:
                        found.append(Violation(flow, source, policy, action))
    return found


def _covers(exception: PolicyExceptionConfig, violation: Violation) -> bool:
    flow = violation.flow
    if exception.policy != violation.policy.name:
        return False
    if flow.kind == SEGMENT:
        return exception.segment == flow.item
    return exception.field is not None and exception.field.lower() == flow.field.lower()


def split(pipeline: PipelineConfig, dest: DestinationConfig) -> tuple[list[Violation], list[Allowed]]:
    """(violations no exception covers, the ones an exception allows)."""
    blocking, allowed = [], []
    for violation in violations(pipeline, dest):
        exception = next((e for e in dest.policy_exceptions if _covers(e, violation)), None)
        if exception is None:
            blocking.append(violation)
        else:
            allowed.append(Allowed(violation, exception))
    return blocking, allowed


def _exception_problems(pipeline: PipelineConfig, dest: DestinationConfig, where: str,
                        allowed: list[Allowed]) -> list[str]:
    problems = []
    policies = {p.name for p in pipeline.governance.policies}
    written = {f.field.lower() for f in destination_flows(pipeline, dest) if f.kind != SEGMENT}
    used = {id(a.exception) for a in allowed}
    for i, exception in enumerate(dest.policy_exceptions):
        at = f"{where} > policy_exceptions[{i}]"
        if exception.policy not in policies:
            known = ", ".join(sorted(policies)) or "none are declared"
            problems.append(f"{at}: unknown policy {exception.policy!r} (governance > policies: {known})")
        elif exception.field is not None and exception.field.lower() not in written:
            problems.append(f"{at}: the destination writes no field {exception.field!r} "
                            f"(it writes {', '.join(sorted(written)) or 'none'}); fix the name or remove the exception")
        elif exception.segment is not None and exception.segment not in dest.segments:
            problems.append(f"{at}: the destination maps no segment {exception.segment!r}; fix the name or remove "
                            "the exception")
        elif id(exception) not in used:
            problems.append(f"{at}: policy {exception.policy} does not refuse {exception.item} here, so the exception "
                            "allows nothing; remove it")
    return problems


def policy_problems(pipeline: PipelineConfig) -> list[str]:
    """Load-time problems: exceptions that name nothing or allow nothing, and every violation no
    exception covers."""
    problems = []
    for i, dest in enumerate(pipeline.destinations):
        where = f"destinations[{i}] ({dest.name})"
        blocking, allowed = split(pipeline, dest)
        problems += _exception_problems(pipeline, dest, where, allowed)
        problems += [f"{where} > {v.describe(pipeline)}" for v in blocking]
    return problems


def enforce(pipeline: PipelineConfig, dest: DestinationConfig) -> list[Allowed]:
    """The sink's preflight: raise ``PolicyViolation`` (nothing is sent) when a policy forbids what
    ``dest`` would write; otherwise the pairings its exceptions allow (shown in the run's metadata)."""
    blocking, allowed = split(pipeline, dest)
    if blocking:
        lines = "\n  - ".join(v.describe(pipeline) for v in blocking)
        raise PolicyViolation(
            f"Destination {dest.name!r} ({dest.object}) was refused before anything was sent: "
            f"{len(blocking)} policy violation{'s' if len(blocking) > 1 else ''}:\n  - {lines}"
        )
    return allowed
