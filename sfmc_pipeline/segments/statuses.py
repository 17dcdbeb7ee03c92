"""Membership statuses against the previous evaluation.

- ``realized``: in the segment now, not before (or first evaluation);
- ``existing``: in before and now;
- ``exited``: in before, not now (including a profile that disappeared or became invalid).
A profile out before and out now has no row; re-entering is ``realized`` again.
"""

from __future__ import annotations

import pandas as pd

from sfmc_pipeline.segments.evaluate import PROFILE_KEY

STATUSES = ("realized", "existing", "exited")


def compute_statuses(current: pd.DataFrame, previous: pd.DataFrame | None) -> pd.DataFrame:
    """``current``/``previous``: ``profile_key, segment`` members. Returns one row per
    (profile, segment) with a status, sorted by segment then key."""
    pairs = [PROFILE_KEY, "segment"]
    now = current[pairs].astype("string")
    before = (previous[pairs] if previous is not None else now.iloc[0:0]).astype("string")
    merged = now.merge(before, on=pairs, how="outer", indicator=True)
    status = merged["_merge"].map({"left_only": "realized", "both": "existing", "right_only": "exited"})
    out = merged[pairs].assign(status=status.astype("string"))
    return out.sort_values(["segment", PROFILE_KEY], ignore_index=True)


def status_counts(statuses: pd.DataFrame, segments: list[str]) -> pd.DataFrame:
    """Per segment: members (realized + existing) and each status count, zeros included."""
    counts = (
        statuses.groupby(["segment", "status"], observed=True).size().unstack(fill_value=0)
        .reindex(index=segments, columns=list(STATUSES), fill_value=0)
    )
    counts.insert(0, "members", counts["realized"] + counts["existing"])
    return counts.astype("int64")
