"""The exit guard: a second line of defence against writing a broken evaluation to the CRM.

Before the first write, per segment: when this run would mark ``exited`` more than the segment's limit
(``max_exit_share``) of its confirmed members, or leave it more than that below its most members in the
rolling window (``exit_window.py``), the sync sends nothing and fails with the numbers, unless the run
accepts the exits (``accept_exits``). The rule in full: docs/crm-sync.md, "Before anything is sent".
"""

from __future__ import annotations

from collections import Counter
from typing import Mapping

import pandas as pd

from sfmc_pipeline.crm.status_format import EXITED, IN_SEGMENT
from sfmc_pipeline.crm.vectors import isin, parse_entries, text
from sfmc_pipeline.errors import ConfigurationError

GUARD_COLUMNS = ["segment", "confirmed_members", "exits", "exit_share", "entries", "members_after", "window_peak",
                 "window_loss", "limit", "tripped"]


class ExitGuardTripped(ConfigurationError):
    """This run would exit more of a segment's confirmed members than its limit allows."""


def exit_guard(
    confirmed_entries: pd.DataFrame, to_send: list[tuple[str, dict]] | pd.DataFrame, status_fields: set[str],
    limits: Mapping[str, float], *, min_members: int = 1, window_peaks: Mapping[str, int] | None = None,
) -> pd.DataFrame:
    """Per segment in ``limits``: confirmed in-segment records, exits this run would write and their share;
    new entries, the members after the run, the most members in the window and the share lost since.

    ``confirmed_entries``: ``record_id, segment, status`` of the ledger's confirmed status entries;
    ``to_send``: what is about to be written, as ``(record_id, fields)`` pairs or as a frame of
    ``record_id, field, value`` rows; ``status_fields``: the API names of the status fields;
    ``window_peaks``: segment -> the most confirmed members at the start of a run in the window
    (``ExitWindow.peaks``; none: the window holds only this run).

    A segment trips on its share of exits, or on its loss over the window: the members after the run
    (confirmed, minus exits, plus new entries) against the window's peak. Measuring what the segment lost,
    not how many records passed through it, never catches a segment that churns or grows; two runs that
    each exit 40% are caught like one that exits 64%. Segments below ``min_members`` (over the window: at
    its peak) are not guarded: a handful of records may all leave on a normal day. Computed column-wise,
    since a first sync sends a status value per record and status field."""
    return guard_table(guard_counts(confirmed_entries, to_send, status_fields), limits, min_members=min_members,
                       window_peaks=window_peaks)


def guard_counts(confirmed_entries: pd.DataFrame, to_send: list[tuple[str, dict]] | pd.DataFrame,
                 status_fields: set[str]) -> Counter:
    """``(segment, "members" | "exits" | "entries") -> records`` of ``exit_guard``'s inputs. Each count is of distinct
    records, so the counts of disjoint sets of records (a sync planned a range of record ids at a time) add up."""
    members = confirmed_entries.loc[confirmed_entries["status"].isin(list(IN_SEGMENT)).to_numpy(dtype=bool),
                                    ["record_id", "segment"]].drop_duplicates()
    sent = _sent_statuses(to_send, status_fields)
    entries = parse_entries(sent["value"])
    at = entries.index.to_numpy()
    # ``str`` columns (Arrow), not objects: a first sync writes a status value per record and status field
    written = pd.DataFrame({"record_id": text(sent["record_id"]).take(at).reset_index(drop=True),
                            "segment": entries["segment"].reset_index(drop=True),
                            "status": entries["status"].reset_index(drop=True)})
    exits = written.loc[(written["status"] == EXITED).to_numpy(dtype=bool, na_value=False), ["record_id", "segment"]]
    if len(exits):
        exits = exits[isin(exits["segment"], members["segment"].unique())]
        exits = exits.merge(members, on=["record_id", "segment"])
    joins = written.loc[written["status"].isin(list(IN_SEGMENT)).to_numpy(dtype=bool), ["record_id", "segment"]]
    if len(joins) and len(members):
        known = joins.merge(members, on=["record_id", "segment"], how="left", indicator=True)
        joins = known.loc[(known["_merge"] == "left_only").to_numpy(), ["record_id", "segment"]]
    counts: Counter = Counter()
    for name, rows in (("members", members), ("exits", exits), ("entries", joins)):
        if len(rows):
            counts.update({(segment, name): int(n) for segment, n in rows.groupby("segment")["record_id"].nunique()
                           .items()})
    return counts


def guard_table(counts: Counter, limits: Mapping[str, float], *, min_members: int = 1,
                window_peaks: Mapping[str, int] | None = None) -> pd.DataFrame:
    """The guard's verdict per segment in ``limits`` from ``guard_counts`` (summed over the ranges of a sync)."""
    rows = []
    for segment, limit in sorted(limits.items()):
        n_members, n_exits = counts[(segment, "members")], counts[(segment, "exits")]
        n_joins = counts[(segment, "entries")]
        share = n_exits / n_members if n_members else 0.0
        after = n_members - n_exits + n_joins
        peak = max(int((window_peaks or {}).get(segment, 0)), n_members)
        loss = max(peak - after, 0) / peak if peak else 0.0
        tripped = (n_members >= min_members and share > limit) or (peak >= min_members and loss > limit)
        rows.append((segment, n_members, n_exits, round(share, 6), n_joins, after, peak, round(loss, 6), limit,
                     tripped))
    return pd.DataFrame(rows, columns=GUARD_COLUMNS)


def _sent_statuses(to_send: list[tuple[str, dict]] | pd.DataFrame, status_fields: set[str]) -> pd.DataFrame:
    """``record_id, value`` of the non-empty status values about to be written."""
    if isinstance(to_send, pd.DataFrame):
        frame = to_send[isin(to_send["field"], sorted(status_fields))] if len(to_send) else to_send
        values = frame["value"]
        keep = (values.notna() & (values != "")).to_numpy(dtype=bool)
        return pd.DataFrame({"record_id": text(frame["record_id"][keep]).reset_index(drop=True),
                             "value": text(values[keep]).reset_index(drop=True)})
    sent = [(rid, value) for rid, fields in to_send for name, value in fields.items() if name in status_fields and value]
    return pd.DataFrame({"record_id": text([rid for rid, _ in sent]), "value": text([value for _, value in sent])})


def explain(destination: str, table: pd.DataFrame, window_days: int = 7, min_members: int = 1) -> str:
    tripped = table[table["tripped"]]
    lines = "; ".join(_why(r, window_days, min_members) for r in tripped.itertuples())
    return (
        f"Exit guard: the sync to {destination} sent nothing because it would exit more of a segment's members than "
        f"allowed: {lines}. That usually means an incomplete extract or a broken rule. If the exits are real, accept "
        f"them for one run (the segment's guard window then starts again) with run config "
        f"`ops: {{salesforce__{destination}: {{config: {{accept_exits: true}}}}}}`, "
        "or raise `max_exit_share` for the segment (segments[].max_exit_share) or for all (sync.max_exit_share)."
    )


def _why(row, window_days: int, min_members: int) -> str:
    if row.confirmed_members >= min_members and row.exit_share > row.limit:
        return (f"{row.segment}: {row.exits} of {row.confirmed_members} confirmed members would exit "
                f"({row.exit_share:.0%}, limit {row.limit:.0%})")
    return (f"{row.segment}: {row.members_after} members would be left of the {row.window_peak} it had in the last "
            f"{window_days} day(s) ({row.window_loss:.0%} gone over the window, limit {row.limit:.0%}; this run "
            f"exits {row.exits} and adds {row.entries})")
