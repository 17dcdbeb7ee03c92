"""The embedded default: Data Extension extracts shipped as CSV files in ``data/sample``.

Files are named ``<external key>.csv`` in the format an SFMC Data Extract produces (header row,
every value a string). They go through exactly the same typing and validation as API rows.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pandas as pd

from sfmc_pipeline.config.models import DataExtensionConfig
from sfmc_pipeline.sfmc.source import RawExtract, align_columns


class EmbeddedSampleSource:
    mode = "embedded"

    def __init__(self, sample_dir: str | Path):
        self.sample_dir = Path(sample_dir)

    def anchor_date(self) -> dt.date | None:
        """The date the sample's relative dates were generated from (``sample.json``), if known."""
        manifest = self.sample_dir / "sample.json"
        if not manifest.is_file():
            return None
        return dt.date.fromisoformat(json.loads(manifest.read_text(encoding="utf-8"))["anchor_date"])

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
