"""Contract: the exit guard compares a run with a rolling window of runs (``settings.guard_window_days``),
not only with the previous one. Over real HTTP against the fake org, with one run per simulated day: two
40% steps are caught like one big step; a segment that churns (as many enter as leave) is never caught;
a run that accepts the exits starts a new window for the segments it accepted; runs older than the window
no longer count; a ledger written before the window existed keeps working."""

from __future__ import annotations

import datetime as dt
import sqlite3
from contextlib import closing

import pytest

from sfmc_pipeline.crm.exit_guard import ExitGuardTripped
from sfmc_pipeline.crm.ledger import SyncLedger
from sfmc_pipeline.crm.sync import DestinationSync
from sfmc_pipeline_tests.crm_fixtures import (  # noqa: F401 - org and client are fixtures
    CONTACTS,
    cid,
    client,
    members,
    org,
    profiles,
    seed,
    statuses,
)
from sfmc_pipeline_tests.segment_fixtures import CONFIG

DAY_ONE = dt.datetime(2026, 11, 20, 6, 0, tzinfo=dt.timezone.utc)
IDS = [cid(i) for i in range(60)]


def _day(connect, tmp_path, n: float, frame, *, accept_exits=False, dry_run=False, pipeline=CONFIG):
    target = connect()
    ledger = SyncLedger(tmp_path / "ledger.sqlite", target.target_id)
    try:
        sync = DestinationSync.for_pipeline(pipeline, CONTACTS, target, ledger, run_id=f"day-{n}",
                                            clock=lambda: DAY_ONE + dt.timedelta(days=n - 1))
        return sync.run(frame, profiles(IDS), accept_exits=accept_exits, dry_run=dry_run)
    finally:
        ledger.close()


def _in_segment(members_now, exited=()) -> object:
    """``new_customer`` statuses: ``members_now`` existing, ``exited`` exited."""
    return statuses(*((rid, "new_customer", "existing") for rid in members_now),
                    *((rid, "new_customer", "exited") for rid in exited))


@pytest.fixture()
def org_with_members(org):
    seed(org, IDS)
    return org


def test_two_forty_percent_steps_are_caught_like_one_big_step(org_with_members, client, tmp_path):
    start = IDS[:30]
    _day(client, tmp_path, 1, members(start))  # 30 members
    out = _day(client, tmp_path, 2, _in_segment(start[12:], exited=start[:12]))  # 12 of 30 exit: 40%, allowed
    assert not out.exit_guard_tripped
    with pytest.raises(ExitGuardTripped) as info:  # 7 of the 18 left exit: 39% of this run, 63% over the window
        _day(client, tmp_path, 3, _in_segment(start[19:], exited=start[12:19]))
    assert ("new_customer: 11 members would be left of the 30 it had in the last 7 day(s) (63% gone over the window, "
            "limit 50%; this run exits 7 and adds 0)") in str(info.value)
    assert all(org_with_members.records["Contact"][rid]["new_customer__c"] == "new_customer:existing"
               for rid in start[12:19])  # nothing was sent

    preview = _day(client, tmp_path, 3.5, _in_segment(start[19:], exited=start[12:19]), dry_run=True)
    row = preview.exit_guard.set_index("segment").loc["new_customer"]  # a dry run shows the window's numbers
    assert (row["confirmed_members"], row["exits"], row["window_peak"], row["members_after"]) == (18, 7, 30, 11)
    assert bool(row["tripped"])


def test_a_segment_that_churns_is_not_caught(org_with_members, client, tmp_path):
    """Every day a fifth of the members leave and as many new ones enter (a 7-day window segment): after five
    days none of the first members is left, yet the segment never shrank."""
    members_now = IDS[:20]
    _day(client, tmp_path, 1, members(members_now))
    for n in range(2, 7):
        leaving, entering = members_now[:4], IDS[20 + 4 * (n - 2): 24 + 4 * (n - 2)]
        frame = statuses(*((rid, "new_customer", "existing") for rid in members_now[4:]),
                         *((rid, "new_customer", "realized") for rid in entering),
                         *((rid, "new_customer", "exited") for rid in leaving))
        out = _day(client, tmp_path, n, frame)
        row = out.exit_guard.set_index("segment").loc["new_customer"]
        assert (row["exits"], row["entries"], row["members_after"], row["window_peak"]) == (4, 4, 20, 20)
        assert not out.exit_guard_tripped and out.failed_total == 0
        members_now = members_now[4:] + entering
    assert not set(members_now) & set(IDS[:20])  # 20 exits in the window, all of the first members


def test_accepting_the_exits_starts_a_new_window(org_with_members, client, tmp_path):
    start = IDS[:30]
    _day(client, tmp_path, 1, members(start))
    _day(client, tmp_path, 2, _in_segment(start[12:], exited=start[:12]))
    out = _day(client, tmp_path, 3, _in_segment(start[19:], exited=start[12:19]), accept_exits=True)
    assert out.exit_guard_tripped and out.succeeded == 7  # accepted on purpose: the 7 exits are sent
    # the next run compares with the 11 members the accepted run left, not with the 30 of day 1
    out = _day(client, tmp_path, 4, _in_segment(start[21:], exited=start[19:21]))
    row = out.exit_guard.set_index("segment").loc["new_customer"]
    assert (row["window_peak"], row["members_after"], bool(row["tripped"])) == (11, 9, False)


def test_runs_older_than_the_window_no_longer_count(org_with_members, client, tmp_path):
    start = IDS[:30]
    _day(client, tmp_path, 1, members(start))
    _day(client, tmp_path, 2, _in_segment(start[12:], exited=start[:12]))
    out = _day(client, tmp_path, 10, _in_segment(start[19:], exited=start[12:19]))  # day 2 is 8 days back
    row = out.exit_guard.set_index("segment").loc["new_customer"]
    assert (row["window_peak"], bool(row["tripped"])) == (18, False)  # compared with the 18 members of today
    shorter = CONFIG.model_copy(update={"settings": CONFIG.settings.model_copy(update={"guard_window_days": 1})})
    _day(client, tmp_path / "short", 1, members(start), pipeline=shorter)
    _day(client, tmp_path / "short", 2, _in_segment(start[12:], exited=start[:12]), pipeline=shorter)
    out = _day(client, tmp_path / "short", 4, _in_segment(start[19:], exited=start[12:19]), pipeline=shorter)
    assert not out.exit_guard_tripped  # with a one-day window, day 2's run (30 members at its start) is out of it


def test_a_ledger_from_before_the_window_keeps_working(org_with_members, client, tmp_path):
    start = IDS[:30]
    _day(client, tmp_path, 1, members(start))
    with closing(sqlite3.connect(tmp_path / "ledger.sqlite")) as db:  # as a ledger written before this release
        db.execute("DROP TABLE exit_guard_runs")
    out = _day(client, tmp_path, 2, _in_segment(start[12:], exited=start[:12]))
    assert not out.exit_guard_tripped and out.succeeded == 30  # compared with the current members, as before
    with pytest.raises(ExitGuardTripped):  # and the window is remembered from then on
        _day(client, tmp_path, 3, _in_segment(start[19:], exited=start[12:19]))
