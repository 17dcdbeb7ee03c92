"""Contract: a record that cannot be written is not re-sent forever. Over real HTTP against the fake org:
a record deleted in the CRM is marked gone and held back until its profile changes (or an operator resets
it); values Salesforce rejects (a validation rule, a too-long value) are held back until the values to send
change; transient failures are sent again by the next run. The failure threshold counts only a run's new
failures, so over days of shrinking change sets the same standing failures never fail the sync again; they
are reported every run, and the reconciliation does not count them as drift. Bulk API 2.0 results are
classified the same way, and ``sfmc-pipeline ledger`` lists and resets the marks."""

from __future__ import annotations

import datetime as dt
from collections import Counter

import pytest

from sfmc_pipeline.cli import main
from sfmc_pipeline.crm.bulk.job_store import BulkJobStore
from sfmc_pipeline.crm.bulk.writer import BulkWriter
from sfmc_pipeline.crm.ledger import SyncLedger
from sfmc_pipeline.crm.sink import reconcile_sync
from sfmc_pipeline.crm.sync import DestinationSync
from sfmc_pipeline.datasets.storage import DatasetStore
from sfmc_pipeline.defs.assets.crm import _failure_results, ledger_path
from sfmc_pipeline.defs.assets.standing_metadata import standing_metadata
from sfmc_pipeline.governance.masking import Masker
from sfmc_pipeline.salesforce.records import RecordError
from sfmc_pipeline.salesforce.rules import (
    RECORD_GONE,
    TRANSIENT,
    VALUE_REJECTED,
    failure_kind,
)
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
THRESHOLD = CONFIG.sync.failure_threshold


@pytest.mark.parametrize(
    "code, fields, kind",
    [
        ("ENTITY_IS_DELETED", (), RECORD_GONE),  # in the recycle bin
        ("INVALID_CROSS_REFERENCE_KEY", (), RECORD_GONE),  # deleted for good: the Id points nowhere
        ("INVALID_CROSS_REFERENCE_KEY", ("Id",), RECORD_GONE),
        ("INVALID_CROSS_REFERENCE_KEY", ("AccountId",), VALUE_REJECTED),  # a lookup value points nowhere
        ("STRING_TOO_LONG", ("FirstName",), VALUE_REJECTED),
        ("FIELD_CUSTOM_VALIDATION_EXCEPTION", (), VALUE_REJECTED),  # a validation rule shown at the top
        ("REQUIRED_FIELD_MISSING", ("LastName",), VALUE_REJECTED),
        ("UNABLE_TO_LOCK_ROW", (), TRANSIENT),
        ("REQUEST_RUNNING_TOO_LONG", (), TRANSIENT),
        ("SOME_CODE_NOBODY_KNOWS", (), TRANSIENT),  # unknown: sent again, never parked silently
    ],
)
def test_each_salesforce_code_says_what_the_record_needs(code, fields, kind):
    assert failure_kind(RecordError(code, "message", fields)) == kind


def _day(connect, storage, n: int, status_frame, profile_frame, *, pipeline=CONFIG, bulk=None, retry=False):
    """One daily run of the contacts sync at day ``n``, and its reconciliation, as the sync asset does them."""
    target = connect()
    ledger = SyncLedger(storage / "ledger.sqlite", target.target_id)
    try:
        sync = DestinationSync.for_pipeline(pipeline, CONTACTS, target, ledger, run_id=f"day-{n}", bulk=bulk(ledger)
                                            if bulk else None, clock=lambda: DAY_ONE + dt.timedelta(days=n - 1))
        out = sync.run(status_frame, profile_frame, retry_standing=retry)
        return out, reconcile_sync(sync, target, CONTACTS, pipeline, ledger, out, f"day-{n}")
    finally:
        ledger.close()


def _writes(org) -> list:
    return org.api_requests("/composite/sobjects", method="PATCH")  # not the reconciliation's read-back


def _sent_ids(org, since: int) -> set[str]:
    return {rec["id"] for r in _writes(org)[since:] for rec in r.json["records"]}


def test_standing_failures_never_fail_the_sync_again_over_days_of_small_change_sets(org, client, tmp_path):
    ids = [cid(i) for i in range(80)]
    gone_a, gone_b, blocked = ids[0], ids[1], ids[2]
    seed(org, ids)
    org.delete_record("Contact", gone_a)
    org.delete_record("Contact", gone_b)
    org.add_validation_rule("Contact", "Email", lambda v: str(v or "").endswith("@blocked.example"),
                            "Email must not be a blocked domain")
    overrides = {(blocked, "Email"): "p2@blocked.example"}
    names = {}

    def day(n, status="existing", **extra):
        before = len(_writes(org))
        frame = profiles(ids, {**overrides, **{(rid, "FirstName"): v for rid, v in names.items()}})
        out, check = _day(client, tmp_path, n, members(ids, status=status), frame, **extra)
        threshold = _failure_results(out, THRESHOLD)[0]
        assert threshold.passed, f"day {n}: {threshold.metadata}"  # the run stays green, day after day
        assert check.passed, f"day {n}: {check.table} drifted={check.drifted}"  # standing failures are not drift
        return out, _sent_ids(org, before)

    out, _ = day(1, status="realized")  # the first sync: 3 of 80 fail (3.75%), the rest is written
    assert out.failed == Counter({"ENTITY_IS_DELETED": 2, "FIELD_CUSTOM_VALIDATION_EXCEPTION": 1})
    assert out.new_failures == 3 and set(out.standing) == {gone_a, gone_b, blocked}
    assert out.standing[blocked].kind == VALUE_REJECTED and out.standing[gone_a].kind == RECORD_GONE

    # day 2: every status moves to existing. The blocked record's values changed, so it is tried again and fails
    # the way it stood failed (not a new failure); the gone records' attributes did not change: held back
    out, sent = day(2)
    assert out.failed == Counter({"FIELD_CUSTOM_VALIDATION_EXCEPTION": 1}) and out.new_failures == 0
    assert out.held_back == Counter({"ENTITY_IS_DELETED": 2}) and not {gone_a, gone_b} & sent

    for n in (3, 4):  # small change sets: a few names change; the standing failures are reported, not sent
        for i in range(3 + n, 7 + n):
            names[ids[i]] = f"First{i}-day{n}"
        out, sent = day(n)
        assert out.succeeded == 4 and out.failed_total == 0 and sent == {ids[i] for i in range(3 + n, 7 + n)}
        assert out.held_back == Counter({"ENTITY_IS_DELETED": 2, "FIELD_CUSTOM_VALIDATION_EXCEPTION": 1})
        reported = standing_metadata(out, CONTACTS, Masker())  # reported every run, as numbers the UI plots
        assert (reported["standing_failures"], reported["standing_records_gone"],
                reported["standing_values_rejected"], reported["records_held_back_standing"]) == (3, 2, 1, 3)
        assert "ENTITY_IS_DELETED" in reported["standing_failures_sample"].value

    names[gone_a] = "Renamed"  # day 5: a gone record's profile changed: it is tried again, once
    out, sent = day(5)
    assert gone_a in sent and gone_b not in sent and blocked not in sent
    assert out.failed == Counter({"ENTITY_IS_DELETED": 1}) and out.new_failures == 0
    assert out.standing[gone_a].attempts == 2
    _, sent = day(6)
    assert sent == set()  # and held back again afterwards

    overrides[(blocked, "Email")] = "p2@example.com"  # day 7: the value is fixed in SFMC: written, mark cleared
    org.add_record("Contact", gone_b, LastName="Restored")  # and a deleted record restored, its profile changed
    names[gone_b] = "Back"
    out, sent = day(7)
    assert {blocked, gone_b} <= sent and out.failed_total == 0
    assert set(out.standing) == {gone_a}
    assert org.records["Contact"][blocked]["Email"] == "p2@example.com"
    assert org.records["Contact"][gone_b]["new_customer__c"] == "new_customer:existing"


def test_a_transient_failure_is_sent_again_by_the_next_run(org, client, tmp_path):
    ids = [cid(i) for i in range(3)]
    seed(org, ids)
    org.lock_rows_next([ids[0]], times=1 + CONFIG.sync.lock_retries)  # locked for this whole run (its retries too)
    out, _ = _day(client, tmp_path, 1, members(ids), profiles(ids))
    assert out.failed == Counter({"UNABLE_TO_LOCK_ROW": 1}) and not out.standing
    before = len(_writes(org))
    again, _ = _day(client, tmp_path, 2, members(ids), profiles(ids))
    assert _sent_ids(org, before) == {ids[0]} and again.succeeded == 1


def test_a_rejected_value_that_is_no_longer_to_be_sent_loses_its_mark(org, client, tmp_path):
    a = cid(1)
    seed(org, [a])
    org.add_validation_rule("Contact", "Email", lambda v: str(v or "").endswith("@blocked.example"), "blocked")
    _day(client, tmp_path, 1, members([a]), profiles([a]))  # written with p0@example.com
    out, _ = _day(client, tmp_path, 2, members([a]), profiles([a], {(a, "Email"): "p0@blocked.example"}))
    assert set(out.standing) == {a}
    out, _ = _day(client, tmp_path, 3, members([a]), profiles([a]))  # back to what the CRM holds: nothing to send
    assert out.to_send == 0 and not out.standing


def test_bulk_results_are_classified_like_collections_results(org, client, tmp_path):
    pipeline = CONFIG.model_copy(update={"sync": CONFIG.sync.model_copy(update={"bulk_threshold": 20})})
    ids = [cid(i) for i in range(30)]
    seed(org, ids)
    org.delete_record("Contact", ids[4])
    org.reject_bulk_records({ids[3]: ("FIELD_CUSTOM_VALIDATION_EXCEPTION", "Email must be corporate", ["Email"])})

    def bulk(ledger):
        return BulkWriter(client(), "Contact", state=BulkJobStore.beside(tmp_path / "ledger.sqlite", "x"),
                          destination=CONTACTS.name, poll_timeout_seconds=60, sleep=lambda s: None,
                          confirm=lambda rows: ledger.record("Contact", CONTACTS.name, "run", rows))

    out, _ = _day(client, tmp_path, 1, members(ids), profiles(ids), pipeline=pipeline, bulk=bulk)
    assert out.bulk_jobs and out.failed == Counter({"FIELD_CUSTOM_VALIDATION_EXCEPTION": 1, "ENTITY_IS_DELETED": 1})
    assert {rid: mark.kind for rid, mark in out.standing.items()} == {ids[3]: VALUE_REJECTED, ids[4]: RECORD_GONE}
    jobs = len(org.bulk_jobs)
    again, _ = _day(client, tmp_path, 2, members(ids), profiles(ids), pipeline=pipeline, bulk=bulk)
    assert again.to_send == 0 and len(org.bulk_jobs) == jobs  # nothing sent again
    assert again.held_back == Counter({"FIELD_CUSTOM_VALIDATION_EXCEPTION": 1, "ENTITY_IS_DELETED": 1})


def test_an_operator_lists_and_resets_standing_failures(org, client, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SFMC_PIPELINE_STORAGE", str(tmp_path))
    storage = ledger_path(DatasetStore(tmp_path)).parent  # where the sync asset keeps its ledger
    ids = [cid(i) for i in range(4)]
    seed(org, ids)
    org.delete_record("Contact", ids[1])
    org.delete_record("Contact", ids[2])
    _day(client, storage, 1, members(ids), profiles(ids))

    assert main(["ledger", "standing", "--destination", "contacts"]) == 0
    listed = capsys.readouterr().out
    assert f"contacts {ids[1]}: gone from the CRM, ENTITY_IS_DELETED" in listed and "2 standing failure(s)" in listed

    org.add_record("Contact", ids[1], LastName="Restored")  # restored in Salesforce; its SFMC profile is unchanged
    assert main(["ledger", "reset", "--destination", "contacts", "--record", ids[1][:15]]) == 0  # 15 chars work
    assert f"reset contacts {ids[1]}" in capsys.readouterr().out
    before = len(_writes(org))
    out, _ = _day(client, storage, 2, members(ids), profiles(ids))
    assert _sent_ids(org, before) == {ids[1]} and out.succeeded == 1 and set(out.standing) == {ids[2]}

    assert main(["ledger", "reset", "--destination", "leads", "--gone"]) == 0  # another destination: untouched
    assert main(["ledger", "reset", "--destination", "nope", "--all"]) == 2
    assert "use one of: contacts, leads" in capsys.readouterr().err


def test_a_gone_record_is_not_drift_even_with_nothing_to_send(org, client, tmp_path):
    ids = [cid(i) for i in range(3)]
    seed(org, ids)
    _day(client, tmp_path, 1, members(ids), profiles(ids))  # all written and confirmed
    org.delete_record("Contact", ids[0])
    out, _ = _day(client, tmp_path, 2, members(ids, status="existing"), profiles(ids))
    assert out.failed == Counter({"ENTITY_IS_DELETED": 1}) and out.standing[ids[0]].kind == RECORD_GONE
    # day 3: its statuses are what the ledger confirmed on day 1 again, so it has nothing to send; the CRM
    # no longer has it, which the reconciliation must not take for drift (the record is known to be gone)
    frame = statuses((ids[0], "new_customer", "realized"), *((rid, "new_customer", "existing") for rid in ids[1:]))
    out, check = _day(client, tmp_path, 3, frame, profiles(ids))
    assert out.to_send == 0 and set(out.standing) == {ids[0]}
    assert check.passed and not check.drifted


def test_a_record_deleted_in_the_crm_with_nothing_to_send_is_marked_gone_when_read_back(org, client, tmp_path):
    """Deleted in Salesforce on a day its values do not change: the sync sends it nothing, the read-back finds
    it absent. That is not the pipeline's failure: the record is marked gone (held back until its profile
    changes), reported, and the run passes; only a share of absent records above the threshold fails it."""
    ids = [cid(i) for i in range(40)]
    seed(org, ids)
    _day(client, tmp_path, 1, members(ids), profiles(ids))
    org.delete_record("Contact", ids[0])
    out, check = _day(client, tmp_path, 2, members(ids), profiles(ids))  # nothing changed: nothing to send
    assert out.to_send == 0 and check.passed and check.not_found_records == {ids[0]}
    assert (out.standing[ids[0]].kind, out.standing[ids[0]].code) == (RECORD_GONE, "NOT_FOUND")
    before = len(_writes(org))
    out, check = _day(client, tmp_path, 3, members(ids, status="existing"), profiles(ids))  # statuses move on
    assert ids[0] not in _sent_ids(org, before) and out.held_back == Counter({"NOT_FOUND": 1})
    assert check.passed and not check.not_found_records  # held back: not read back again
    for rid in ids[1:4]:  # a permission change hides records: too many absent at once fails the check
        org.delete_record("Contact", rid)
    out, check = _day(client, tmp_path, 4, members(ids, status="existing"), profiles(ids))
    assert check.not_found_records == set(ids[1:4]) and check.too_many_not_found and not check.passed
