"""The whole ``pipeline.yaml``: its sections, and look-ups by name across them.

Each section validates its own fields; what one section says about another (a segment's columns, a
destination's segments, the policies) is checked by ``checks.py`` once the sections have parsed.
"""

from __future__ import annotations

from pydantic import Field

from sfmc_pipeline.config.automation import AutomationConfig
from sfmc_pipeline.config.data_extensions import DataExtensionConfig, PipelineSettings
from sfmc_pipeline.config.destinations import DestinationConfig, SyncSettings
from sfmc_pipeline.config.field_rules import StrictModel
from sfmc_pipeline.config.governance import GovernanceConfig
from sfmc_pipeline.config.segments import (
    EvaluationConfig,
    ProfilesConfig,
    SegmentConfig,
)


class PipelineConfig(StrictModel):
    settings: PipelineSettings = Field(default_factory=PipelineSettings)
    data_extensions: list[DataExtensionConfig] = Field(min_length=1)
    profiles: ProfilesConfig = Field(default_factory=ProfilesConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    segments: list[SegmentConfig] = Field(default_factory=list)
    destinations: list[DestinationConfig] = Field(default_factory=list)
    sync: SyncSettings = Field(default_factory=SyncSettings)
    automation: AutomationConfig = Field(default_factory=AutomationConfig)
    governance: GovernanceConfig = Field(default_factory=GovernanceConfig)

    def extension(self, asset: str) -> DataExtensionConfig:
        for ext in self.data_extensions:
            if ext.asset == asset:
                return ext
        raise KeyError(f"no data extension with asset name {asset!r}")

    def segment(self, name: str) -> SegmentConfig:
        for segment in self.segments:
            if segment.name == name:
                return segment
        raise KeyError(f"no segment named {name!r}")

    def destination(self, name: str) -> DestinationConfig:
        for dest in self.destinations:
            if dest.name == name:
                return dest
        raise KeyError(f"no destination named {name!r}")

    @property
    def profile_key(self) -> str:
        """The profile key column (resolved at load: ``profiles.key`` or the profile dataset's primary key)."""
        assert self.profiles.key is not None
        return self.profiles.key

    def threshold_for(self, ext: DataExtensionConfig) -> float:
        if ext.quarantine_threshold is not None:
            return ext.quarantine_threshold
        return self.settings.quarantine_threshold

    def max_row_drop_for(self, ext: DataExtensionConfig) -> float:
        return ext.max_row_drop if ext.max_row_drop is not None else self.settings.max_row_drop

    def max_exit_share_for(self, segment: str) -> float:
        configured = self.segment(segment).max_exit_share
        return configured if configured is not None else self.sync.max_exit_share
