"""The issues of a validation in pandera's order, and the quarantine: each failed row's raw values
with its reasons, checks and columns.

Issue groups are sorted as pandera's lazy validation reports them: ("a", column) type problems;
("b",) primary key; ("c", check) row checks; ("d", column, -1) required; ("d", column, check)
column checks. Within a group, an ``_order`` column (when present) orders the rows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sfmc_pipeline.datasets.conversion import ISSUE_COLUMNS, empty_issues


def issue_frame(rows, column: str, check: str, reasons: list[str], summaries: list[str] | None = None,
            order: np.ndarray | None = None) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "row": np.asarray(rows, dtype=np.int64),
            "column": column,
            "check": check,
            "reason": reasons,
            "summary": reasons if summaries is None else summaries,
        }
    )
    if order is not None:
        frame["_order"] = order
    return frame


def ordered_issues(groups: dict[tuple, list[pd.DataFrame]]) -> pd.DataFrame:
    """Every issue (``ISSUE_COLUMNS``), group by group in pandera's order."""
    ordered = []
    for group in sorted(groups):
        frames = groups[group]
        frame = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
        if "_order" in frame:
            frame = frame.sort_values("_order", kind="stable").drop(columns="_order")
        ordered.append(frame)
    if not ordered:
        return empty_issues()
    return pd.concat(ordered, ignore_index=True)[ISSUE_COLUMNS]


def quarantine_rows(issues: pd.DataFrame, raw_parts: list[pd.DataFrame], names: list[str]) -> pd.DataFrame:
    """The rows named in ``issues``: their raw values (``raw_parts``, indexed by row number) under the
    configured ``names``, and ``_row_number``, ``_reasons``, ``_checks``, ``_columns``."""
    bad_rows = np.unique(issues["row"].to_numpy(dtype=np.int64))
    if raw_parts:
        raw = pd.concat(raw_parts) if len(raw_parts) > 1 else raw_parts[0]
        out = raw.loc[bad_rows].astype("string")
    else:
        out = pd.DataFrame({name: pd.Series(dtype="string") for name in names})
    reasons: dict[int, list[str]] = {}
    checks: dict[int, dict[str, None]] = {}
    columns: dict[int, dict[str, None]] = {}
    for row, column, check, reason in zip(issues["row"].tolist(), issues["column"].tolist(),
                                          issues["check"].tolist(), issues["reason"].tolist()):
        reasons.setdefault(row, []).append(reason)
        checks.setdefault(row, {})[check] = None
        named = columns.setdefault(row, {})
        for name in column.split(","):
            named[name] = None
    order = bad_rows.tolist()
    out["_row_number"] = (bad_rows + 1).astype("int64")
    # plain strings: the column dtype pandas infers for them (``str``), as before
    out["_reasons"] = np.array(["; ".join(reasons[row]) for row in order], dtype=object)
    out["_checks"] = np.array([",".join(checks[row]) for row in order], dtype=object)
    out["_columns"] = np.array([",".join(columns[row]) for row in order], dtype=object)
    return out.reset_index(drop=True)
