"""The exit guard's memory: how many confirmed members each segment had at the start of each sync in the
last ``settings.guard_window_days`` days, so a run is also compared with the window, not only with the
previous run (two 40% steps are caught like one 64% step).

Rows live in the ledger's file (table ``exit_guard_runs``), keyed by the target like the ledger's own rows.
A ledger from before this table has no history: the guard then compares with the current members only.
"""

from __future__ import annotations

import datetime as dt
from typing import Mapping

from sfmc_pipeline.crm.ledger import SyncLedger

_SCHEMA = """
CREATE TABLE IF NOT EXISTS exit_guard_runs (
    target TEXT NOT NULL,
    object TEXT NOT NULL,
    destination TEXT NOT NULL,
    segment TEXT NOT NULL,
    run_id TEXT NOT NULL,
    at TEXT NOT NULL,              -- when the run started, ISO 8601 UTC
    members INTEGER NOT NULL,      -- confirmed members of the segment when the run started
    accepted INTEGER NOT NULL,     -- 1: the run accepted this segment's exits (a new window starts after it)
    PRIMARY KEY (target, object, destination, segment, run_id)
) WITHOUT ROWID
"""
KEEP_DAYS = 90  # the longest guard window the config allows (settings.guard_window_days)


class ExitWindow:
    """The history of one destination's segments on the ledger's target: one row per segment and run, with the
    members confirmed when the run started and whether it accepted the segment's exits (``accept_exits`` on a
    run the guard stopped). An accepted run starts a new window: its row and the rows before it no longer count."""

    def __init__(self, ledger: SyncLedger, sobject: str, destination: str):
        self._db = ledger.db
        self._key = (ledger.target, sobject, destination)
        self._db.execute(_SCHEMA)

    def peaks(self, now: dt.datetime, days: int) -> dict[str, int]:
        """Segment -> the most confirmed members it had at the start of a run in the ``days`` before ``now``,
        counting only runs after the segment's latest accepted run in that window."""
        since = _utc(now - dt.timedelta(days=days))
        rows = self._db.execute(
            "SELECT segment, at, members, accepted FROM exit_guard_runs WHERE target = ? AND object = ? "
            "AND destination = ? AND at >= ? ORDER BY segment, at", (*self._key, since)).fetchall()
        peaks: dict[str, int] = {}
        for segment, _, members, accepted in rows:  # in time order per segment
            if accepted:
                peaks.pop(segment, None)  # a new window starts after an accepted run
            else:
                peaks[segment] = max(peaks.get(segment, 0), members)
        return peaks

    def record(self, run_id: str, now: dt.datetime, members: Mapping[str, int], accepted: set[str]) -> None:
        """The members each segment had at the start of run ``run_id``, and the segments whose exits it accepted;
        drops rows older than ``KEEP_DAYS``."""
        at = _utc(now)
        rows = [(*self._key, segment, run_id, at, int(n), int(segment in accepted)) for segment, n in members.items()]
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(
                "INSERT INTO exit_guard_runs (target, object, destination, segment, run_id, at, members, accepted) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (target, object, destination, segment, run_id) DO UPDATE "
                "SET at = excluded.at, members = excluded.members, accepted = max(accepted, excluded.accepted)", rows)
            self._db.execute("DELETE FROM exit_guard_runs WHERE target = ? AND object = ? AND destination = ? "
                             "AND at < ?", (*self._key, _utc(now - dt.timedelta(days=KEEP_DAYS))))


def _utc(moment: dt.datetime) -> str:
    """One text form for every stored time, so that comparing texts compares times."""
    return moment.astimezone(dt.timezone.utc).isoformat(timespec="seconds")
