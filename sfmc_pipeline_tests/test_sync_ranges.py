"""Contract: a sync planned a range of record ids at a time (``sync.partition_records``, so a large org's sync
fits in memory) leaves the CRM, the ledger and the standing failures exactly as one planned all at once, and
reports the same figures, over days that exercise every rule that looks across records: exits of profiles that
left, a profile whose record changed, held profiles, profiles without a record, a segment moved to another field
(clears), a rejected record held back the next day, and the exit guard's counts."""

import pandas as pd
import pytest

from sfmc_pipeline.crm.ledger import SyncLedger
from sfmc_pipeline.crm.local.target import LocalCrmTarget
from sfmc_pipeline.crm.sink import SyncOptions, sync_destination
from sfmc_pipeline.crm.standing_failures import listing
from sfmc_pipeline.crm.exit_guard import ExitGuardTripped
from sfmc_pipeline_tests.crm_fixtures import CONTACTS, cid
from sfmc_pipeline_tests.segment_fixtures import CONFIG

DEST = CONTACTS.model_copy(update={"identity_column": "ContactId"})  # profile key and record id differ
MOVED = DEST.model_copy(update={"segments": {**DEST.segments, "repeat_buyer": "loyal_customer__c"}})
N = 40


def _profiles(day: int) -> pd.DataFrame:
    rows = []
    for i in range(N):
        if day >= 2 and i in (11, 12, 13):  # left the profiles (and the statuses) on day 2
            continue
        record = cid(900 + i) if (day >= 2 and i == 9) else cid(i)  # profile 9's record changed on day 2
        if i == 38:
            record = None  # no record: skipped
        if i == 37:
            record = cid(i, prefix="00Q")  # a Lead's Id: not this destination's object
        email = "not-an-email" if (day >= 3 and i == 21) else f"p{i}@example.com"
        last = f"Renamed{i}" if (day >= 2 and i % 5 == 0) else f"Last{i}"
        rows.append({"SubscriberKey": f"P{i:03d}", "ContactId": record, "FirstName": f"First{i}", "LastName": last,
                     "Email": email, "Company": f"Co{i}"})
    return pd.DataFrame(rows, dtype="string")


def _statuses(day: int) -> pd.DataFrame:
    rows = []
    for i in range(N):
        if day >= 2 and i in (11, 12, 13):
            continue
        key = f"P{i:03d}"
        if i % 2 == 0:
            status = "exited" if (day >= 2 and i % 8 == 0) else ("existing" if day >= 2 else "realized")
            rows.append((key, "new_customer", status, i == 5))
        if i % 3 == 0:
            rows.append((key, "repeat_buyer", "existing" if day >= 2 else "realized", i == 5))
        if i % 4 == 1:
            rows.append((key, "loyal_customer", "realized" if day == 1 else "existing", i == 5))
        if i == 5:
            rows.append((key, "offer_clickers", "realized", True))
    frame = pd.DataFrame(rows, columns=["profile_key", "segment", "status", "held"])
    return frame.astype({"profile_key": "string", "segment": "string", "status": "string", "held": bool})


DAYS = [(1, DEST), (2, DEST), (3, MOVED), (4, MOVED)]


def _figures(out) -> dict:
    guard = out.exit_guard[["segment", "confirmed_members", "exits", "entries", "members_after", "tripped"]]
    return {
        "counts": (out.considered, out.unchanged, out.skipped, out.held, out.null_attributes, out.to_send, out.sent,
                   out.succeeded, out.pending, out.min_requests),
        "codes": (dict(out.failed), dict(out.rejected), dict(out.held_back), dict(out.cleared)),
        "errors": sorted((e["record_id"], e["status_code"], e["stage"], e["payload"]) for e in out.errors),
        "unsettled": sorted(out.unsettled),
        "longest": out.longest,
        "guard": guard.to_dict("records"),
        "members": {s: sorted(ids.to_pylist()) for s, ids in out.desired.members.items()},
        "held_records": sorted(out.desired.held_records),
    }


def _run_days(directory, partition_records: int, days=DAYS) -> tuple[list, list, list, list]:
    pipeline = CONFIG.model_copy(update={"sync": CONFIG.sync.model_copy(
        update={"partition_records": partition_records, "exit_guard_min_members": 1000})})
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ledger.key").write_text("ab" * 32 + "\n")  # one key: the keyed hashes of both runs compare
    figures = []
    for day, dest in days:
        target = LocalCrmTarget(directory / "crm.sqlite")
        result = sync_destination(
            target, pipeline, dest, _statuses(day), _profiles(day), ledger_file=directory / "ledger.sqlite",
            run_id=f"day-{day}", options=SyncOptions(), policy_exceptions=[], log=lambda m: None,
            info=lambda m: None)
        figures.append({**_figures(result.outcome), "reconciled": result.check.table.to_dict("records"),
                        "ranges": result.outcome.ranges})
    with LocalCrmTarget(directory / "crm.sqlite") as target:
        crm = sorted((str(row["Id"]), sorted((k, str(v)) for k, v in row.items())) for row in target.read("Contact"))
        target_id = target.target_id
    ledger = SyncLedger(directory / "ledger.sqlite", target_id)
    try:
        rows = ledger.confirmed("Contact").astype(object).to_dict("records")
        standing = [(*row[1:6], row[8]) for row in listing(ledger.db)]  # not the target, nor the clock
    finally:
        ledger.close()
    return figures, crm, rows, standing


def test_a_sync_planned_in_ranges_leaves_the_crm_and_ledger_as_one_planned_at_once(tmp_path):
    whole = _run_days(tmp_path / "whole", partition_records=1000)
    ranged = _run_days(tmp_path / "ranged", partition_records=3)
    assert [day["ranges"] for day in whole[0]] == [1, 1, 1, 1]
    assert all(day["ranges"] > 10 for day in ranged[0])
    for one, many in zip(whole[0], ranged[0]):
        assert {k: v for k, v in many.items() if k != "ranges"} == {k: v for k, v in one.items() if k != "ranges"}
    assert ranged[1:] == whole[1:]  # the CRM's records, the ledger's rows, the standing failures

    day1, day2, day3, day4 = whole[0]  # the days did what they are for
    assert day1["counts"][2] == 2 and day1["held_records"] == [cid(5)]  # skipped: no record, a Lead's Id
    assert any(code == "INVALID_EMAIL_ADDRESS" for _, code, _, _ in day3["errors"])
    assert day4["codes"][2] == {"INVALID_EMAIL_ADDRESS": 1}  # held back: its values did not change
    assert day3["codes"][3]  # repeat_buyer moved to another field: cleared from its old one
    assert sum(row["exits"] for row in day2["guard"]) > 0
    assert cid(9) not in day2["members"]["repeat_buyer"] and cid(909) in day2["members"]["repeat_buyer"]


def test_the_exit_guard_judges_every_range_together_before_anything_is_sent(tmp_path):
    """Exits spread over many ranges trip the guard as they would in one plan: nothing is sent."""
    _run_days(tmp_path, partition_records=3, days=[(1, DEST)])
    pipeline = CONFIG.model_copy(update={"sync": CONFIG.sync.model_copy(
        update={"partition_records": 3, "exit_guard_min_members": 1, "max_exit_share": 0.2})})
    everyone_exits = _statuses(1).assign(status="exited")
    target = LocalCrmTarget(tmp_path / "crm.sqlite")
    with pytest.raises(ExitGuardTripped):
        sync_destination(target, pipeline, DEST, everyone_exits, _profiles(1), ledger_file=tmp_path / "ledger.sqlite",
                         run_id="day-2", options=SyncOptions(), policy_exceptions=[], log=lambda m: None,
                         info=lambda m: None)
    with LocalCrmTarget(tmp_path / "crm.sqlite") as target:
        values = [row.get("new_customer__c") for row in target.read("Contact")]
    assert values and not any(v and "exited" in v for v in values)
    assert not list((tmp_path / "sync-spill").glob("*"))  # the planned records on disk are removed


def test_planned_records_spill_to_disk_in_order_and_a_killed_runs_spill_is_removed(tmp_path):
    from decimal import Decimal

    from sfmc_pipeline.crm.change_spill import ChangeSpill, SpilledChanges

    left = tmp_path / "planned-contacts-killed.pickle"  # what a killed run of the destination left
    other = tmp_path / "planned-leads-running.pickle"
    left.write_bytes(b"x")
    other.write_bytes(b"x")
    spill = ChangeSpill(tmp_path, "contacts")
    assert not left.exists() and other.exists()
    records = [(f"003{i:015d}", {"Amount__c": Decimal("1.50"), "LastName": f"L{i}"}, ('"1.50"', f'"L{i}"'), f"P{i}")
               for i in range(25_000)]
    spill.add(records[:12_000])
    spill.add(records[12_000:])
    assert list(spill) == records and len(spill) == 25_000  # typed values come back as they were planned
    changes = SpilledChanges(spill)
    assert changes.owners.get("003000000000000007") == "P7"
    assert changes.encoded["003000000000024999"] == ('"1.50"', '"L24999"')
    assert changes.records.get("003999999999999999") is None
    assert (spill.path.stat().st_mode & 0o777) == 0o600
    spill.close()
    assert not spill.path.exists()
