"""Membership statuses against the previous evaluation, as engine plans over the membership datasets.

- ``realized``: in the segment now, not before (or first evaluation);
- ``existing``: in before and now;
- ``exited``: in before, not now (including a profile that disappeared or became invalid).
A profile out before and out now has no row; re-entering is ``realized`` again. Held profiles (their
row quarantined) keep their previous memberships: they are carried into the current ones.
"""

from __future__ import annotations

import datetime as dt

import ibis
import ibis.expr.types as ir
import pandas as pd

from sfmc_pipeline.segments.columns import (
    AS_OF,
    HELD,
    MEMBERSHIP_COLUMNS,
    PROFILE_KEY,
    SEGMENT,
    STATUS,
    STATUSES,
)

def members_only(table: ir.Table) -> ir.Table:
    """``profile_key, segment`` of a membership table, as strings."""
    return table.select(**{c: table[c].cast("string") for c in MEMBERSHIP_COLUMNS})


def with_held(members: ir.Table, previous: ir.Table | None, held: ir.Table | None) -> ir.Table:
    """``members`` plus the previous memberships of held profiles (``held``: a ``profile_key`` table)."""
    if previous is None or held is None:
        return members_only(members)
    carried = members_only(previous).semi_join(held, PROFILE_KEY)
    return ibis.union(members_only(members), carried, distinct=False)


def status_plan(current: ir.Table, previous: ir.Table | None, held: ir.Table | None, as_of: dt.date) -> ir.Table:
    """One row per (profile, segment) in ``current`` or ``previous`` with its status, whether the profile is
    held, and the evaluation date, in no particular order."""
    tagged = members_only(current).mutate(_now=ibis.literal(1, "int8"), _before=ibis.literal(0, "int8"))
    if previous is not None:
        earlier = members_only(previous).mutate(_now=ibis.literal(0, "int8"), _before=ibis.literal(1, "int8"))
        tagged = ibis.union(tagged, earlier, distinct=False)
    pairs = tagged.group_by(MEMBERSHIP_COLUMNS).aggregate(_now=tagged["_now"].max(), _before=tagged["_before"].max())
    now, before = pairs["_now"] == 1, pairs["_before"] == 1
    status = ibis.cases((now & before, "existing"), (now, "realized"), else_="exited")
    is_held = pairs[PROFILE_KEY].isin(held[PROFILE_KEY]) if held is not None else ibis.literal(False)
    return pairs.select(
        PROFILE_KEY, SEGMENT, **{STATUS: status, HELD: is_held.fill_null(False),
                                 AS_OF: ibis.literal(dt.datetime.combine(as_of, dt.time()), "timestamp")},
    )


def consistency_problems(counts: pd.DataFrame, current_rows: int, previous_rows: int) -> dict[str, int]:
    """Counts that must all be zero: every current membership has exactly one realized or existing row,
    every previous one exactly one existing or exited row (a membership listed twice, or a status on the
    wrong side, breaks one of them). ``counts``: statuses per (segment, status) with their count ``n``."""
    total = counts.groupby(STATUS)["n"].sum().reindex(list(STATUSES), fill_value=0)
    return {
        "current memberships minus realized and existing rows": current_rows - int(total["realized"] + total["existing"]),
        "previous memberships minus existing and exited rows": previous_rows - int(total["existing"] + total["exited"]),
    }


def status_counts(counts: pd.DataFrame, segments: list[str]) -> pd.DataFrame:
    """Per segment: members (realized + existing) and each status count, zeros included. ``counts``: one row
    per (segment, status) with its count ``n``."""
    table = (
        counts.pivot_table(index=SEGMENT, columns=STATUS, values="n", aggfunc="sum", fill_value=0, observed=True)
        .reindex(index=segments, columns=list(STATUSES), fill_value=0)
    )
    table.columns.name = None
    table.insert(0, "members", table["realized"] + table["existing"])
    return table.astype("int64")
