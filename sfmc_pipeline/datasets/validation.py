"""Type and validate a raw Data Extension extract; split it into valid rows and a quarantine.

Invariant: every input row ends up in exactly one of ``valid`` and ``quarantine``; a quarantined
row keeps its raw string values plus the reasons in plain words. Pages are validated batch by batch
as they arrive (``chunked_validation.py``), never all held raw; the result, its reasons and their
order are those of pandera's lazy validation of the whole extract (``test_chunked_validation.py``
checks this against a copy of that implementation).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import pandas as pd

from sfmc_pipeline.config.data_extensions import DataExtensionConfig
from sfmc_pipeline.datasets.chunked_validation import validate_batches

BATCH_ROWS = 65_536  # rows converted at once; pages are gathered (or a large frame sliced) to about this many


@dataclass(frozen=True)
class ValidationResult:
    valid: pd.DataFrame  # typed, valid rows in source order, fresh RangeIndex
    quarantine: pd.DataFrame  # raw values of the configured columns + _row_number, _reasons, _checks, _columns
    issues: pd.DataFrame  # ISSUE_COLUMNS, one row per failed check of a row
    rows_read: int

    @property
    def rows_valid(self) -> int:
        return len(self.valid)

    @property
    def rows_quarantined(self) -> int:
        return len(self.quarantine)

    @property
    def quarantined_share(self) -> float:
        return self.rows_quarantined / self.rows_read if self.rows_read else 0.0

    def top_reasons(self, limit: int = 5) -> list[tuple[str, int]]:
        """The most frequent problems, counted in rows: ``[("Email: not a valid email address", 3), ...]``."""
        per_row = self.issues.drop_duplicates(["row", "summary"])
        return Counter(per_row["summary"]).most_common(limit)


def validate_extract(raw: pd.DataFrame, extension: DataExtensionConfig) -> ValidationResult:
    """``raw`` holds string values under the configured column names, one row per source row."""
    return validate_pages([raw], extension)


def validate_pages(
    pages: Iterable[pd.DataFrame],
    extension: DataExtensionConfig,
    *,
    batch_rows: int = BATCH_ROWS,
    spill_dir: str | Path | None = None,
) -> ValidationResult:
    """Validate an extract served as pages (string values under the configured column names, in
    order), converting them batch by batch as they arrive. The result is the one
    ``validate_extract`` gives for the pages concatenated. ``spill_dir``: where the raw batches are
    spilled (default: the system's temporary directory)."""
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be at least 1, got {batch_rows}")
    valid, quarantine, issues, rows = validate_batches(pages, extension, batch_rows, spill_dir)
    return ValidationResult(valid=valid, quarantine=quarantine, issues=issues, rows_read=rows)
