"""The user's declarative pipeline config (``pipeline.yaml``): models and loader."""

from sfmc_pipeline.config.data_extensions import (
    ColumnConfig,
    DataExtensionConfig,
    SfmcType,
)
from sfmc_pipeline.config.loader import PipelineConfigError, load_pipeline_config
from sfmc_pipeline.config.pipeline import PipelineConfig

__all__ = [
    "ColumnConfig",
    "DataExtensionConfig",
    "PipelineConfig",
    "PipelineConfigError",
    "SfmcType",
    "load_pipeline_config",
]
