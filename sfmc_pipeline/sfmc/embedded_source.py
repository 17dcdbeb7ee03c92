"""The embedded default: Data Extension extracts shipped as CSV files in ``data/sample``.

Files are named ``<external key>.csv`` in the format an SFMC Data Extract produces (header row,
every value a string). They go through exactly the same typing and validation as API rows.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from sfmc_pipeline.config.models import DataExtensionConfig
from sfmc_pipeline.sfmc.source import RawExtract, align_columns


class EmbeddedSampleSource:
    mode = "embedded"

    def __init__(self, sample_dir: str | Path):
        self.sample_dir = Path(sample_dir)

    def read(self, extension: DataExtensionConfig) -> RawExtract:
        path = self.sample_dir / f"{extension.key}.csv"
        if not path.is_file():
            raise FileNotFoundError(
                f"No sample extract for Data Extension {extension.key!r}: expected {path}. "
                "Run `python scripts/generate_sample_data.py`, or set the SFMC_* credentials to read "
                "from your SFMC tenant."
            )
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False, encoding="utf-8")
        frame, unmapped, missing = align_columns(raw, extension)
        return RawExtract(
            frame=frame,
            source=f"embedded sample {path}",
            unmapped_columns=unmapped,
            missing_columns=missing,
        )
