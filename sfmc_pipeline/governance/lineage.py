"""Where the labels of a column go: into the segments whose rules read it, and into the destination
fields fed by it (a mapped attribute, an upsert's external id, or a segment's status field).

A column's labels are those it declares (``columns[].labels``). A segment carries the labels of
every column whose values decide its rule (``rules.columns_read``: directly, or through
``has_related``); the keys that only join rows to profiles carry none. A destination field carries
the labels of the column it is fed by or, for a status field, of the segments it holds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sfmc_pipeline.config.data_extensions import DataExtensionConfig, SfmcType
from sfmc_pipeline.config.destinations import DestinationConfig
from sfmc_pipeline.config.pipeline import PipelineConfig
from sfmc_pipeline.segments.rules import columns_read

ATTRIBUTE, EXTERNAL_ID, SEGMENT = "attribute", "external_id", "segment"
# Columns that identify a person by default (without an identifying label): email and phone types, and names.
PERSON_NAME = re.compile(r"^(first|last|middle|full|given|family|sur|display|contact|person)_?name$|^name$", re.I)


@dataclass(frozen=True)
class Source:
    """A labelled column a value comes from."""

    dataset: str
    column: str
    label: str

    def describe(self) -> str:
        return f"{self.dataset}.{self.column}"


@dataclass(frozen=True)
class Flow:
    """One thing a destination writes: a mapped attribute or external id (``item`` is the field), or a
    segment's status (``item`` is the segment), with the labelled columns it comes from."""

    destination: str
    kind: str  # ATTRIBUTE, EXTERNAL_ID or SEGMENT
    item: str
    field: str  # the Salesforce field written
    sources: tuple[Source, ...]

    @property
    def labels(self) -> list[str]:
        return sorted({s.label for s in self.sources})

    @property
    def holds(self) -> str:
        return {ATTRIBUTE: "attribute", EXTERNAL_ID: "external id"}.get(self.kind, f"status of segment {self.item}")

    def describe(self) -> str:
        if self.kind == SEGMENT:
            return f"segment {self.item} (field {self.field})"
        return f"field {self.field}" + (" (external id)" if self.kind == EXTERNAL_ID else "")


def column_labels(pipeline: PipelineConfig) -> dict[tuple[str, str], tuple[str, ...]]:
    """``(dataset, column) -> labels`` of every labelled column."""
    return {(ext.asset, col.name): tuple(col.labels) for ext in pipeline.data_extensions for col in ext.columns
            if col.labels}


def _sources(columns, labels: dict[tuple[str, str], tuple[str, ...]]) -> tuple[Source, ...]:
    return tuple(Source(dataset, column, label) for dataset, column in sorted(columns)
                 for label in labels.get((dataset, column), ()))


def segment_sources(pipeline: PipelineConfig, segment: str) -> tuple[Source, ...]:
    """The labelled columns the segment's rule reads (so the labels the segment carries)."""
    rule = pipeline.segment(segment).rule
    return _sources(columns_read(rule, pipeline.profiles.dataset), column_labels(pipeline))


def destination_flows(pipeline: PipelineConfig, dest: DestinationConfig) -> list[Flow]:
    """Everything ``dest`` writes, in mapping order: attributes, the external id, the segments."""
    labels, profile = column_labels(pipeline), pipeline.profiles.dataset
    flows = [Flow(dest.name, ATTRIBUTE, field, field, _sources([(profile, column)], labels))
             for column, field in dest.attribute_map.items()]
    if dest.external_id is not None:
        flows.append(Flow(dest.name, EXTERNAL_ID, dest.external_id.field, dest.external_id.field,
                          _sources([(profile, dest.external_id.column)], labels)))
    flows += [Flow(dest.name, SEGMENT, segment, field, segment_sources(pipeline, segment))
              for segment, field in dest.segments.items() if segment in {s.name for s in pipeline.segments}]
    return flows


def is_identifying(ext: DataExtensionConfig, column: str, pipeline: PipelineConfig) -> bool:
    """A column with an identifying label or, by default, an email, phone or person-name column."""
    col = next((c for c in ext.columns if c.name == column), None)
    if col is None:
        return False
    declared = pipeline.governance.labels
    if any(declared[label].identifying for label in col.labels if label in declared):
        return True
    return col.type in (SfmcType.EMAIL_ADDRESS, SfmcType.PHONE) or bool(PERSON_NAME.match(col.name))


def identifying_columns(pipeline: PipelineConfig) -> dict[str, frozenset[str]]:
    """Dataset -> its identifying columns (``is_identifying``)."""
    return {ext.asset: frozenset(c.name for c in ext.columns if is_identifying(ext, c.name, pipeline))
            for ext in pipeline.data_extensions}


def identifying_fields(pipeline: PipelineConfig, dest: DestinationConfig) -> frozenset[str]:
    """The Salesforce fields of ``dest`` (lower-cased) fed by an identifying profile column."""
    profile = pipeline.extension(pipeline.profiles.dataset)
    fed = dict(dest.attribute_map)
    if dest.external_id is not None:
        fed[dest.external_id.column] = dest.external_id.field
    return frozenset(field.lower() for column, field in fed.items() if is_identifying(profile, column, pipeline))
