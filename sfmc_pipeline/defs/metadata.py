"""Small helpers that turn frames and counts into metadata a user reads in the Dagster UI."""

from __future__ import annotations

from typing import Callable, Iterable, Sequence

import pandas as pd


def markdown_table(frame: pd.DataFrame, max_rows: int = 10, max_width: int = 60, *,
                   shown: Callable[[pd.DataFrame], pd.DataFrame] | None = None) -> str:
    """A GitHub-style markdown table of the first ``max_rows`` rows (cells cut at ``max_width``).
    ``shown``: applied to those rows only, before they are written (e.g. ``lambda rows: masker.frame(rows, ds)``)."""
    if frame.empty:
        return "_(no rows)_"
    head = frame.head(max_rows)
    if shown is not None:
        head = shown(head)
    header = "| " + " | ".join(_cell(c, max_width) for c in head.columns) + " |"
    rule = "| " + " | ".join("---" for _ in head.columns) + " |"
    rows = ["| " + " | ".join(_cell(v, max_width) for v in row) + " |" for row in head.itertuples(index=False)]
    more = f"\n\n_{len(frame) - max_rows} more rows_" if len(frame) > max_rows else ""
    return "\n".join([header, rule, *rows]) + more


def counts_table(rows: Iterable[Sequence], headers: Sequence[str]) -> str:
    """A markdown table from plain tuples, e.g. ``[("Email: not a valid email address", 3)]``."""
    return markdown_table(pd.DataFrame(list(rows), columns=list(headers)), max_rows=50, max_width=120)


def _cell(value, max_width: int) -> str:
    text = "" if value is None or (not isinstance(value, (list, tuple)) and pd.isna(value)) else str(value)
    text = text.replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= max_width else text[: max_width - 1] + "…"
