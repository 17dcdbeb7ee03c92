"""Contract: the CRM sink, over real HTTP against the fake Salesforce org, writes every status
change exactly once (ledger diff; exited once; a killed run re-sends at most its in-flight batch),
splits into requests of 200, reports each failed record with Salesforce's code while the rest go
through, rejects known-bad records before sending, survives session expiry and 503s, stops
cleanly on REQUEST_LIMIT_EXCEEDED or the usage threshold (the next run finishes), preflights
every field before sending anything, supports upsert, and sends nothing in a dry run."""

from collections import Counter

import pytest

from sfmc_pipeline.config.destinations import DestinationConfig
from sfmc_pipeline.crm.ledger import SyncLedger
from sfmc_pipeline.crm.preflight import PreflightError
from sfmc_pipeline.crm.reconciliation import reconcile
from sfmc_pipeline_tests.crm_fixtures import (  # noqa: F401 - org and client are fixtures
    CONTACTS,
    LEADS,
    cid,
    client,
    collection_requests,
    members,
    org,
    profiles,
    run,
    seed,
    statuses,
    writes_per_id,
)


def test_first_sync_writes_statuses_and_attributes_then_unchanged_sends_nothing(org, client, tmp_path):
    ids = [cid(i) for i in range(3)]
    seed(org, ids)
    status_frame = statuses((ids[0], "new_customer", "realized"), (ids[0], "offer_clickers", "existing"),
                            (ids[1], "repeat_buyer", "realized"), (ids[2], "inactive_customer", "realized"))
    out = run(client(), tmp_path, status_frame, profiles(ids))
    assert (out.considered, out.to_send, out.succeeded, out.failed_total, out.requests) == (3, 3, 3, 0, 1)
    record = org.records["Contact"][ids[0]]
    assert record["new_customer__c"] == "new_customer:realized"
    assert record["offer_clickers__c"] == "offer_clickers:existing"
    assert (record["LastName"], record["FirstName"], record["Email"]) == ("Last0", "First0", "p0@example.com")
    assert "repeat_buyer__c" not in org.write_log[0][2]  # only the fields with a value are sent

    before = len(collection_requests(org))
    again = run(client(), tmp_path, status_frame, profiles(ids), run_id="run-2")
    assert (again.unchanged, again.to_send, again.sent) == (3, 0, 0)
    assert len(collection_requests(org)) == before


def test_more_than_200_records_are_split_into_requests(org, client, tmp_path):
    ids = [cid(i) for i in range(450)]
    seed(org, ids)
    out = run(client(), tmp_path, members(ids), profiles(ids))
    sizes = [len(r.json["records"]) for r in collection_requests(org)]
    assert sizes == [200, 200, 50]
    assert out.succeeded == 450 and all(r.json["allOrNone"] is False for r in collection_requests(org))


def test_partial_failures_keep_salesforce_codes_and_the_rest_goes_through(org, client, tmp_path):
    ok, deleted, unknown, locked, relocked = (cid(i) for i in range(5))
    bad_id = "003notAnIdAtAll123"
    long_name, bad_email, no_name = (cid(i) for i in range(5, 8))
    seed(org, [ok, deleted, locked, relocked, long_name, bad_email, no_name])
    org.delete_record("Contact", deleted)
    org.lock_rows_next([locked], times=10)  # stays locked: fails after the lock retries
    org.lock_rows_next([relocked], times=1)  # transient: goes through on the re-send
    ids = [ok, deleted, unknown, locked, relocked, bad_id, long_name, bad_email, no_name]
    frame = profiles(ids, {(long_name, "FirstName"): "x" * 41, (bad_email, "Email"): "not-an-email",
                           (no_name, "LastName"): ""})
    out = run(client(), tmp_path, members(ids), frame)
    assert out.failed == Counter({"ENTITY_IS_DELETED": 1, "INVALID_CROSS_REFERENCE_KEY": 1, "UNABLE_TO_LOCK_ROW": 1})
    assert out.rejected == Counter(
        {"MALFORMED_ID": 1, "STRING_TOO_LONG": 1, "INVALID_EMAIL_ADDRESS": 1, "REQUIRED_FIELD_MISSING": 1})
    assert out.succeeded == 2
    assert org.records["Contact"][ok]["new_customer__c"] == "new_customer:realized"
    assert org.records["Contact"][relocked]["new_customer__c"] == "new_customer:realized"
    by_id = {e["record_id"]: e for e in out.errors}
    assert by_id[unknown]["stage"] == "failed" and "invalid cross reference" in by_id[unknown]["message"]
    assert by_id[bad_email]["stage"] == "rejected" and by_id[bad_email]["fields"] == "Email"
    sent_ids = {rec["id"] for r in collection_requests(org) for rec in r.json["records"]}
    assert not sent_ids & {bad_id, long_name, bad_email, no_name}  # rejected records cost no API call
    # the next run re-sends only the transient failure (the lock); the deleted and unknown records and the
    # rejected values stand failed and are held back until their values change; confirmed ones are not re-sent
    again = run(client(), tmp_path, members(ids), frame, run_id="run-2")
    assert again.to_send == 1 and again.rejected_total == 0
    assert again.held_back == Counter({"ENTITY_IS_DELETED": 1, "INVALID_CROSS_REFERENCE_KEY": 1, "MALFORMED_ID": 1,
                                       "STRING_TOO_LONG": 1, "INVALID_EMAIL_ADDRESS": 1, "REQUIRED_FIELD_MISSING": 1})


def test_lead_required_company(org, client, tmp_path):
    lead_ok, lead_no_company = cid(1, "00Q"), cid(2, "00Q")
    seed(org, [lead_ok, lead_no_company], "Lead")
    frame = profiles([lead_ok, lead_no_company], {(lead_no_company, "Company"): None})
    out = run(client(), tmp_path, members([lead_ok, lead_no_company]), frame, dest=LEADS)
    assert out.succeeded == 1 and out.rejected == Counter({"REQUIRED_FIELD_MISSING": 1})
    assert out.errors[0]["message"] == "Required fields are missing: [Company]"
    assert org.records["Lead"][lead_ok]["Company"] == "Co0"


def test_destinations_take_only_their_prefix(org, client, tmp_path):
    contact, lead = cid(1), cid(2, "00Q")
    seed(org, [contact])
    out = run(client(), tmp_path, members([contact, lead]), profiles([contact, lead]))
    assert (out.considered, out.skipped, out.succeeded, out.failed_total) == (1, 1, 1, 0)


def test_session_expiry_mid_run_logs_in_again(org, client, tmp_path):
    ids = [cid(i) for i in range(250)]
    seed(org, ids)
    target = client(username=org.username, password=org.password, security_token=org.security_token)

    class ExpiresAfterFirstWrite:
        def __getattr__(self, name):
            return getattr(target, name)

        def update(self, records):
            results = target.update(records)
            org.expire_sessions()
            return results

    out = run(ExpiresAfterFirstWrite(), tmp_path, members(ids), profiles(ids))
    assert out.succeeded == 250
    assert len(org.token_requests()) == 2


def test_503_then_success(org, client, tmp_path, sleeps):
    ids = [cid(i) for i in range(3)]
    seed(org, ids)
    org.fail_next(503, path_contains="/composite/sobjects")
    out = run(client(), tmp_path, members(ids), profiles(ids))
    assert out.succeeded == 3 and sleeps.calls == [0.5]


def test_request_limit_exceeded_stops_cleanly_and_the_next_run_finishes(org, client, tmp_path):
    ids = [cid(i) for i in range(450)]
    seed(org, ids)
    org.exceed_request_limit_after(2)  # describe + one write succeed, then the org refuses
    out = run(client(), tmp_path, members(ids), profiles(ids))
    assert (out.succeeded, out.pending, out.failed_total) == (200, 250, 0)
    assert "REQUEST_LIMIT_EXCEEDED" in out.stopped
    org.reset_request_limit()
    again = run(client(), tmp_path, members(ids), profiles(ids), run_id="run-2")
    assert (again.unchanged, again.succeeded, again.pending) == (200, 250, 0)
    assert set(writes_per_id(org).values()) == {1}
    assert all(org.records["Contact"][i]["new_customer__c"] == "new_customer:realized" for i in ids)


def test_a_concurrent_request_refusal_is_waited_out_and_the_run_writes_everything(org, client, tmp_path, sleeps):
    ids = [cid(i) for i in range(450)]
    seed(org, ids)
    org.refuse_concurrent_next(path_contains="/composite/sobjects", times=2)  # ConcurrentPerOrgLongTxn
    out = run(client(), tmp_path, members(ids), profiles(ids))
    assert (out.succeeded, out.pending, out.failed_total, out.stopped) == (450, 0, 0, None)
    assert sleeps.calls == [0.5, 1.0] and set(writes_per_id(org).values()) == {1}


def test_usage_threshold_stops_before_the_allocation_is_used_up(org, client, tmp_path):
    ids = [cid(i) for i in range(450)]
    seed(org, ids)
    org.set_api_usage(11_998)  # limit 15,000: 80% is 12,000; the describe makes it 11,999
    out = run(client(), tmp_path, members(ids), profiles(ids))
    assert (out.succeeded, out.pending) == (200, 250)
    assert "12000/15000" in out.stopped and "80%" in out.stopped


def test_killed_run_rerun_resends_at_most_the_batch_in_flight(org, client, tmp_path):
    ids = [cid(i) for i in range(1000)]
    seed(org, ids)
    target = client()

    class KilledDuringSecondBatch:
        calls = 0

        def __getattr__(self, name):
            return getattr(target, name)

        def update(self, records):
            results = target.update(records)  # Salesforce applied the batch...
            KilledDuringSecondBatch.calls += 1
            if KilledDuringSecondBatch.calls == 2:
                raise KeyboardInterrupt("killed")  # ...but the process died before confirming it
            return results

    with pytest.raises(KeyboardInterrupt):
        run(KilledDuringSecondBatch(), tmp_path, members(ids), profiles(ids))
    again = run(client(), tmp_path, members(ids), profiles(ids), run_id="run-2")
    assert again.unchanged == 200 and again.succeeded == 800
    counts = writes_per_id(org)
    assert sorted(Counter(counts.values()).items()) == [(1, 800), (2, 200)]  # only batch 2 was written twice
    assert {rid for rid, n in counts.items() if n == 2} == set(ids[200:400])
    assert all(org.records["Contact"][i]["new_customer__c"] == "new_customer:realized" for i in ids)


def test_exited_is_written_once_and_never_qualified_never_touched(org, client, tmp_path):
    a, b = cid(1), cid(2)
    seed(org, [a, b])
    frame = profiles([a, b])
    run(client(), tmp_path, members([a]), frame, run_id="r1")
    run(client(), tmp_path, members([a], status="exited"), frame, run_id="r2")
    out = run(client(), tmp_path, members([]), frame, run_id="r3")  # stays out: no status row
    assert out.to_send == 0
    assert org.records["Contact"][a]["new_customer__c"] == "new_customer:exited"
    assert writes_per_id(org)[a] == 2 and b not in writes_per_id(org)


def test_a_lost_exit_is_derived_from_the_ledger(org, client, tmp_path):
    a = cid(1)
    seed(org, [a])
    run(client(), tmp_path, members([a], status="existing"), profiles([a]), run_id="r1")
    # the profile left, but the statuses of that evaluation never reached the sink
    out = run(client(), tmp_path, members([]), profiles([a]), run_id="r2")
    assert out.succeeded == 1
    assert org.records["Contact"][a]["new_customer__c"] == "new_customer:exited"


def test_shared_status_field_holds_sorted_entries(org, client, tmp_path):
    org.add_field("Contact", "crm_2_seg__c")
    dest = DestinationConfig(name="shared", object="Contact", identity_column="SubscriberKey",
                             segments={"offer_clickers": "crm_2_seg", "new_customer": "crm_2_seg"})
    a = cid(1)
    seed(org, [a])
    frame = statuses((a, "offer_clickers", "existing"), (a, "new_customer", "realized"))
    run(client(), tmp_path, frame, profiles([a]), dest=dest)  # Mapping ID without __c resolves to crm_2_seg__c
    assert org.records["Contact"][a]["crm_2_seg__c"] == "new_customer:realized;offer_clickers:existing"


def test_upsert_reports_created_and_updated(org, client, tmp_path):
    org.add_field("Contact", "SFMC_Key__c", type="string", length=255, external_id=True)
    existing, new = cid(1), cid(2)
    org.add_record("Contact", cid(900), LastName="Known", SFMC_Key__c=existing)
    dest = DestinationConfig(name="upserted", object="Contact", operation="upsert", identity_column="SubscriberKey",
                             external_id={"field": "SFMC_Key__c", "column": "SubscriberKey"},
                             segments={"new_customer": "new_customer__c"})
    out = run(client(), tmp_path, members([existing, new]), profiles([existing, new]), dest=dest)
    assert (out.succeeded, out.created) == (2, 1)
    assert org.records["Contact"][cid(900)]["new_customer__c"] == "new_customer:realized"
    created = [r for rid, r in org.records["Contact"].items() if r.get("SFMC_Key__c") == new]
    assert created and created[0]["LastName"] == "Last1"
    assert any("/composite/sobjects/Contact/SFMC_Key__c" in r.path for r in collection_requests(org))


def test_dry_run_sends_nothing_and_shows_what_would_be_written(org, client, tmp_path):
    ids = [cid(i) for i in range(3)]
    seed(org, ids)
    out = run(client(), tmp_path, members(ids), profiles(ids), dry_run=True)
    assert collection_requests(org) == [] and org.write_log == []
    assert out.to_send == 3 and out.planned[("new_customer__c", "realized")] == 3
    assert out.planned[("LastName", "attribute")] == 3
    assert out.samples[0]["Id"] == ids[0] and out.samples[0]["new_customer__c"] == "new_customer:realized"
    real = run(client(), tmp_path, members(ids), profiles(ids), run_id="run-2")
    assert real.to_send == 3  # the dry run confirmed nothing


@pytest.mark.parametrize(
    "setup, expected",
    [
        # the Mapping ID matches no field: create it, with a did-you-mean for a near miss
        (lambda org: (org.remove_field("Contact", "new_customer__c"), org.add_field("Contact", "new_customers__c")),
         ["Contact.new_customer__c: no such field. Create it on Contact as a Long Text Area",
          "did you mean 'new_customers__c'?"]),
        # a plain text field cannot hold statuses
        (lambda org: org.add_field("Contact", "new_customer__c", type="string", length=255),
         ["Contact.new_customer__c: is a string field; a segment status field must be a Long Text Area"]),
        # field-level security hides it from the integration user
        (lambda org: org.add_field("Contact", "new_customer__c", updateable=False),
         ["Contact.new_customer__c: not updateable by the integration user"]),
        # too short for the values to write
        (lambda org: org.add_field("Contact", "new_customer__c", length=10),
         ["Contact.new_customer__c: holds at most 10 characters but values of 21 characters"]),
        # a mapped attribute that does not exist
        (lambda org: org.remove_field("Contact", "Email"), ["Contact.Email: no such field (mapped attribute)"]),
    ],
)
def test_preflight_fails_before_anything_is_sent(org, client, tmp_path, setup, expected):
    setup(org)
    ids = [cid(1)]
    seed(org, ids)
    with pytest.raises(PreflightError) as info:
        run(client(), tmp_path, members(ids), profiles(ids))
    for fragment in expected:
        assert fragment in str(info.value)
    assert collection_requests(org) == []


def _reconcile(target, tmp_path, out, sample_size=10_000):
    ledger = SyncLedger(tmp_path / "ledger.sqlite", target.target_id)
    try:
        return reconcile(target, "Contact", out.status_fields, out.desired.members,
                         ledger.confirmed("Contact", CONTACTS.name), out.unsettled | out.desired.held_records,
                         sample_size=sample_size, seed="run")
    finally:
        ledger.close()


def test_reconciliation_matches_segment_sizes_with_what_the_crm_holds(org, client, tmp_path):
    ids = [cid(i) for i in range(5)]
    seed(org, ids[:4])  # the last one does not exist in the org
    target = client()
    out = run(target, tmp_path, members(ids), profiles(ids))
    check = _reconcile(target, tmp_path, out)
    table = check.table.set_index("segment")
    assert table.loc["new_customer", "members"] == 4 == table.loc["new_customer", "confirmed"]
    assert table.loc["new_customer", ["missing", "stale"]].tolist() == [0, 0]
    assert out.unsettled == {ids[4]} and check.passed and check.api_requests == 1


def test_truncation_is_opt_in(org, client, tmp_path):
    a = cid(1)
    seed(org, [a])
    frame = profiles([a], {(a, "FirstName"): "x" * 45})
    strict = run(client(), tmp_path, members([a]), frame)
    assert strict.rejected == Counter({"STRING_TOO_LONG": 1})
    lenient = CONTACTS.model_copy(update={"truncate_long_values": True})
    out = run(client(), tmp_path, members([a]), frame, dest=lenient, run_id="run-2")
    assert out.succeeded == 1 and org.records["Contact"][a]["FirstName"] == "x" * 40
    # the ledger holds what was written (the cut value), so unchanged input sends nothing
    again = run(client(), tmp_path, members([a]), frame, dest=lenient, run_id="run-3")
    assert (again.to_send, again.sent, again.unchanged) == (0, 0, 1)


def test_a_lost_exit_in_a_shared_field_without_the_suffix(org, client, tmp_path):
    org.add_field("Contact", "crm_2_seg__c")
    dest = DestinationConfig(name="shared", object="Contact", identity_column="SubscriberKey",
                             segments={"offer_clickers": "crm_2_seg", "new_customer": "crm_2_seg"})
    a = cid(1)
    seed(org, [a])
    run(client(), tmp_path, statuses((a, "offer_clickers", "existing"), (a, "new_customer", "existing")),
        profiles([a]), dest=dest, run_id="r1")
    run(client(), tmp_path, statuses((a, "new_customer", "existing")), profiles([a]), dest=dest, run_id="r2")
    assert org.records["Contact"][a]["crm_2_seg__c"] == "new_customer:existing;offer_clickers:exited"


def test_the_diff_reads_the_ledger_in_pages_and_sends_only_what_changed(org, client, tmp_path, monkeypatch):
    """A large ledger is diffed a page at a time (bounded memory): with pages of 4 rows (a record's fields split
    over two pages), an unchanged re-run sends nothing and a changed status is sent for its record alone."""
    from sfmc_pipeline.crm import ledger as ledger_module

    monkeypatch.setattr(ledger_module, "READ_PAGE_ROWS", 4)
    ids = [cid(i) for i in range(5)]
    seed(org, ids)
    first = [(rid, "new_customer", "realized") for rid in ids] + [(ids[3], "repeat_buyer", "realized")]
    out = run(client(), tmp_path, statuses(*first), profiles(ids))
    assert (out.considered, out.succeeded, out.failed_total) == (5, 5, 0)
    again = run(client(), tmp_path, statuses(*first), profiles(ids), run_id="run-2")
    assert (again.unchanged, again.to_send, again.sent) == (5, 0, 0)
    changed = first[:-1] + [(ids[3], "repeat_buyer", "existing")]
    third = run(client(), tmp_path, statuses(*changed), profiles(ids), run_id="run-3")
    assert (third.unchanged, third.to_send, third.succeeded) == (4, 1, 1)
    assert org.records["Contact"][ids[3]]["repeat_buyer__c"] == "repeat_buyer:existing"
