"""Contract: nothing wrong reaches the CRM silently. Over real HTTP against the fake org: the exit
guard sends nothing when a run would exit too many confirmed members; values reach Salesforce
exactly (decimals, dates per field type) and preflight refuses a column that does not fit its
field; a null attribute leaves the field alone unless the destination opts in to clearing; a
segment removed from a mapping (or moved) is cleared from its old field once; the ledger belongs
to one org, so a new org gets a first sync; reconciliation reads the CRM back and catches drift,
which the next run repairs."""

from decimal import Decimal

import pytest

from sfmc_pipeline.config.destinations import DestinationConfig
from sfmc_pipeline.config.governance import GovernanceConfig
from sfmc_pipeline.crm.exit_guard import ExitGuardTripped
from sfmc_pipeline.crm.ledger import SyncLedger
from sfmc_pipeline.crm.local.target import LocalCrmTarget
from sfmc_pipeline.crm.preflight import PreflightError
from sfmc_pipeline.crm.reconciliation import reconcile
from sfmc_pipeline.salesforce.rest import SalesforceClient
from sfmc_pipeline_testing.salesforce_server import FakeSalesforceServer
from sfmc_pipeline_tests.crm_fixtures import (  # noqa: F401 - org and client are fixtures
    CONTACTS,
    STATUS_FIELDS,
    cid,
    client,
    collection_requests,
    members,
    org,
    profiles,
    run,
    seed,
    statuses,
)
from sfmc_pipeline_tests.segment_fixtures import CONFIG, contact, typed


def _reconcile(target, tmp_path, out, dest=CONTACTS, sample_size=10_000):
    ledger = SyncLedger(tmp_path / "ledger.sqlite", target.target_id)
    try:
        return reconcile(target, dest.object, out.status_fields, out.desired.members,
                         ledger.confirmed(dest.object, dest.name), out.unsettled | out.desired.held_records,
                         sample_size=sample_size, seed="run"), ledger
    except Exception:
        ledger.close()
        raise


# ------------------------------------------------------------------ exit guard


def test_exit_guard_sends_nothing_when_most_members_would_exit(org, client, tmp_path):
    ids = [cid(i) for i in range(20)]
    seed(org, ids)
    run(client(), tmp_path, members(ids), profiles(ids), run_id="r1")
    writes = len(collection_requests(org))
    exits = statuses(*((rid, "new_customer", "exited") for rid in ids[:15]),
                     *((rid, "new_customer", "existing") for rid in ids[15:]))
    with pytest.raises(ExitGuardTripped) as info:
        run(client(), tmp_path, exits, profiles(ids), run_id="r2")
    message = str(info.value)
    assert "new_customer: 15 of 20 confirmed members would exit (75%, limit 50%)" in message
    assert "accept_exits: true" in message and "max_exit_share" in message
    assert len(collection_requests(org)) == writes  # nothing was sent
    assert all(org.records["Contact"][rid]["new_customer__c"] == "new_customer:realized" for rid in ids)

    # a dry run shows the same numbers without failing
    preview = run(client(), tmp_path, exits, profiles(ids), run_id="r3", dry_run=True)
    row = preview.exit_guard.set_index("segment").loc["new_customer"]
    assert (row["confirmed_members"], row["exits"], bool(row["tripped"])) == (20, 15, True)
    assert len(collection_requests(org)) == writes

    # accepted on purpose for one run: the exits go through
    out = run(client(), tmp_path, exits, profiles(ids), run_id="r4", accept_exits=True)
    assert out.succeeded == 20
    assert org.records["Contact"][ids[0]]["new_customer__c"] == "new_customer:exited"


def test_exit_guard_limit_is_set_per_segment(org, client, tmp_path):
    ids = [cid(i) for i in range(20)]
    seed(org, ids)
    run(client(), tmp_path, members(ids), profiles(ids), run_id="r1")
    exits = statuses(*((rid, "new_customer", "exited") for rid in ids[:15]),
                     *((rid, "new_customer", "existing") for rid in ids[15:]))
    churny = CONFIG.model_copy(update={"segments": [
        s.model_copy(update={"max_exit_share": 0.9}) if s.name == "new_customer" else s for s in CONFIG.segments]})
    out = run(client(), tmp_path, exits, profiles(ids), run_id="r2", pipeline=churny)
    assert not out.exit_guard_tripped and out.succeeded == 20  # 15 exits, 5 realized -> existing
    assert org.records["Contact"][ids[0]]["new_customer__c"] == "new_customer:exited"


def test_exit_guard_ignores_segments_below_its_minimum_size(org, client, tmp_path):
    ids = [cid(i) for i in range(4)]
    seed(org, ids)
    run(client(), tmp_path, members(ids), profiles(ids), run_id="r1")
    out = run(client(), tmp_path, members(ids, status="exited"), profiles(ids), run_id="r2")
    assert out.succeeded == 4  # 4 < sync.exit_guard_min_members (10): a small segment may empty out


# ------------------------------------------------------------------ exact values


@pytest.fixture()
def typed_org(org):
    org.add_field("Contact", "Spend__c", type="currency", length=0)
    org.add_field("Contact", "Orders__c", type="double", length=0)
    org.add_field("Contact", "LastPurchase__c", type="date", length=0)
    org.add_field("Contact", "Created__c", type="datetime", length=0)
    return org


# The shipped policies keep TotalSpend (S1) out of the CRM; these tests are about exact values and types,
# so they run without policies.
UNGOVERNED = CONFIG.model_copy(update={"governance": GovernanceConfig()})


def _typed_destination(**attributes):
    return DestinationConfig(name="contacts", object="Contact", identity_column="SubscriberKey",
                             attributes={"LastName": "LastName", **attributes},
                             segments={"new_customer": "new_customer__c"})


def test_values_reach_salesforce_exactly(typed_org, client, tmp_path):
    profile = typed("contacts", [contact(1, TotalSpend="1234567890123456.78", OrderCount="9007199254740993",
                                         LastPurchaseDate="11/19/2026 11:30:00 PM", CreatedDate="1/2/2025 6:00:00 AM")])
    dest = _typed_destination(TotalSpend="Spend__c", OrderCount="Orders__c", LastPurchaseDate="LastPurchase__c",
                              CreatedDate="Created__c")
    rid = profile["SubscriberKey"][0]
    typed_org.add_record("Contact", rid, LastName="Old")
    out = run(client(), tmp_path, members([rid]), profile, dest=dest, pipeline=UNGOVERNED)
    assert out.succeeded == 1
    body = collection_requests(typed_org)[-1].body
    assert '"Spend__c": 1234567890123456.78' in body  # a float would have been 1234567890123456.8
    assert '"Orders__c": 9007199254740993' in body  # beyond 2**53: a float would have been ...992
    # 11:30 PM SFMC time (UTC-6) is 05:30 UTC the next day; date fields take the day, datetime fields ISO 8601
    assert '"LastPurchase__c": "2026-11-20"' in body
    assert '"Created__c": "2025-01-02T12:00:00Z"' in body
    assert typed_org.records["Contact"][rid]["Spend__c"] == Decimal("1234567890123456.78")
    again = run(client(), tmp_path, members([rid]), profile, dest=dest, run_id="r2", pipeline=UNGOVERNED)
    assert again.to_send == 0  # the exact values were confirmed as written


def test_date_fields_take_the_day_in_the_evaluation_time_zone(typed_org, client, tmp_path):
    profile = typed("contacts", [contact(1, LastPurchaseDate="11/19/2026 11:30:00 PM")])  # 2026-11-20 05:30 UTC
    rid = profile["SubscriberKey"][0]
    typed_org.add_record("Contact", rid, LastName="Old")
    chicago = CONFIG.model_copy(update={"evaluation": CONFIG.evaluation.model_copy(update={"timezone": "America/Chicago"})})
    run(client(), tmp_path, members([rid]), profile, dest=_typed_destination(LastPurchaseDate="LastPurchase__c"),
        pipeline=chicago)
    assert typed_org.records["Contact"][rid]["LastPurchase__c"] == "2026-11-19"


@pytest.mark.parametrize(
    "attributes, expected",
    [
        # a date column cannot go to a text field: its format would be a guess
        ({"LastPurchaseDate": "FirstName"}, "Contact.FirstName: is a string field, but it is mapped from "
                                            "'LastPurchaseDate', a Date column; map 'LastPurchaseDate' to a date"),
        # a decimal with cents cannot go to a whole-number field without rounding
        ({"TotalSpend": "Count__c"}, "Contact.Count__c: is a int field, but it is mapped from 'TotalSpend', a Decimal"),
        # text into a date field
        ({"Email": "LastPurchase__c"}, "Contact.LastPurchase__c: is a date field, but it is mapped from 'Email'"),
    ],
)
def test_preflight_checks_each_attribute_type_against_its_field(typed_org, client, tmp_path, attributes, expected):
    typed_org.add_field("Contact", "Count__c", type="int", length=0)
    profile = typed("contacts", [contact(1)])
    rid = profile["SubscriberKey"][0]
    typed_org.add_record("Contact", rid, LastName="Old")
    with pytest.raises(PreflightError) as info:
        run(client(), tmp_path, members([rid]), profile, dest=_typed_destination(**attributes), pipeline=UNGOVERNED)
    assert expected in str(info.value)
    assert collection_requests(typed_org) == []


# ------------------------------------------------------------------ null attributes


def test_a_null_attribute_leaves_the_field_unless_clearing_is_opted_in(org, client, tmp_path):
    a = cid(1)
    seed(org, [a])
    run(client(), tmp_path, members([a]), profiles([a]), run_id="r1")
    assert org.records["Contact"][a]["FirstName"] == "First0"
    no_first_name = profiles([a], {(a, "FirstName"): None})
    out = run(client(), tmp_path, members([a], status="existing"), no_first_name, run_id="r2")
    assert out.null_attributes == 1 and out.succeeded == 1
    assert org.records["Contact"][a]["FirstName"] == "First0"  # left as it is
    clearing = CONTACTS.model_copy(update={"clear_null_attributes": True})
    out = run(client(), tmp_path, members([a], status="existing"), no_first_name, dest=clearing, run_id="r3")
    assert out.succeeded == 1 and org.records["Contact"][a].get("FirstName") is None


def test_a_null_required_field_is_still_rejected(org, client, tmp_path):
    a = cid(1)
    seed(org, [a])
    out = run(client(), tmp_path, members([a]), profiles([a], {(a, "LastName"): None}))
    assert out.rejected["REQUIRED_FIELD_MISSING"] == 1 and collection_requests(org) == []


# ------------------------------------------------------------------ mapping changes


def test_a_segment_removed_from_the_mapping_is_cleared_once(org, client, tmp_path):
    a, b = cid(1), cid(2)
    seed(org, [a, b])
    both = DestinationConfig(name="contacts", object="Contact", identity_column="SubscriberKey",
                             segments={"new_customer": "new_customer__c", "repeat_buyer": "repeat_buyer__c"})
    frame = statuses((a, "new_customer", "realized"), (a, "repeat_buyer", "realized"), (b, "repeat_buyer", "realized"))
    run(client(), tmp_path, frame, profiles([a, b]), dest=both, run_id="r1")
    assert org.records["Contact"][b]["repeat_buyer__c"] == "repeat_buyer:realized"

    only_new = DestinationConfig(name="contacts", object="Contact", identity_column="SubscriberKey",
                                 segments={"new_customer": "new_customer__c"})
    out = run(client(), tmp_path, frame, profiles([a, b]), dest=only_new, run_id="r2")
    assert out.cleared[("repeat_buyer__c", "repeat_buyer")] == 2
    assert org.records["Contact"][a].get("repeat_buyer__c") is None
    assert org.records["Contact"][b].get("repeat_buyer__c") is None
    assert org.records["Contact"][a]["new_customer__c"] == "new_customer:realized"
    again = run(client(), tmp_path, frame, profiles([a, b]), dest=only_new, run_id="r3")
    assert again.to_send == 0 and not again.cleared  # cleared once


def test_a_segment_moved_to_another_field_leaves_the_old_one(org, client, tmp_path):
    org.add_field("Contact", "crm_2_seg__c")
    a = cid(1)
    seed(org, [a])
    run(client(), tmp_path, members([a]), profiles([a]), run_id="r1")
    moved = DestinationConfig(name="contacts", object="Contact", identity_column="SubscriberKey",
                              segments={"new_customer": "crm_2_seg"})
    out = run(client(), tmp_path, members([a], status="existing"), profiles([a]), dest=moved, run_id="r2")
    record = org.records["Contact"][a]
    assert record.get("new_customer__c") is None and record["crm_2_seg__c"] == "new_customer:existing"
    assert out.cleared[("new_customer__c", "new_customer")] == 1


# ------------------------------------------------------------------ the ledger belongs to one org


def test_a_new_org_is_a_first_sync(org, client, tmp_path, sleeps):
    ids = [cid(i) for i in range(3)]
    seed(org, ids)
    first = client()
    out = run(first, tmp_path, members(ids), profiles(ids))
    assert out.succeeded == 3 and out.target == f"salesforce:{org.org_id}"
    with FakeSalesforceServer() as production:  # another org, e.g. production after a sandbox
        for name in STATUS_FIELDS:
            production.add_field("Contact", name)
        seed(production, ids)
        other = SalesforceClient(base_url=production.base_url, client_id=production.client_id,
                                 client_secret=production.client_secret, sleep=sleeps)
        try:
            moved = run(other, tmp_path, members(ids), profiles(ids), run_id="r2")
            assert moved.target == f"salesforce:{production.org_id}" != out.target
            assert moved.succeeded == 3  # nothing was confirmed in this org yet
            assert production.records["Contact"][ids[0]]["new_customer__c"] == "new_customer:realized"
            check, ledger = _reconcile(other, tmp_path, moved)
            ledger.close()
            assert check.passed
        finally:
            other.close()
    # and the first org's confirmations are untouched: nothing to send there
    assert run(client(), tmp_path, members(ids), profiles(ids), run_id="r3").to_send == 0


def test_moving_from_the_local_target_to_an_org_is_a_first_sync(org, client, tmp_path):
    ids = [cid(i) for i in range(3)]
    seed(org, ids)
    with LocalCrmTarget(tmp_path / "local.sqlite") as local:
        local.ensure_object("Contact", status_fields=STATUS_FIELDS)
        local.seed("Contact", [{"Id": rid, "LastName": "x"} for rid in ids])
        assert run(local, tmp_path, members(ids), profiles(ids)).succeeded == 3
    assert run(client(), tmp_path, members(ids), profiles(ids), run_id="r2").succeeded == 3


# ------------------------------------------------------------------ reconciliation reads the CRM


def test_reconciliation_catches_an_edited_field_and_the_next_run_repairs_it(org, client, tmp_path):
    ids = [cid(i) for i in range(5)]
    seed(org, ids)
    target = client()
    out = run(target, tmp_path, members(ids), profiles(ids))
    org.records["Contact"][ids[0]]["new_customer__c"] = "edited by hand"  # someone edits the field in Salesforce
    del org.records["Contact"][ids[1]]["new_customer__c"]  # ...and someone clears another
    check, ledger = _reconcile(target, tmp_path, out)
    try:
        table = check.table.set_index("segment")
        assert not check.passed and check.drifted_records == 2
        assert (table.loc["new_customer", "members"], table.loc["new_customer", "confirmed"],
                table.loc["new_customer", "missing"]) == (5, 3, 2)
        assert check.api_requests == 1  # one collections retrieve for up to 2,000 records
        ledger.forget("Contact", check.drifted)
    finally:
        ledger.close()
    again = run(client(), tmp_path, members(ids), profiles(ids), run_id="r2")
    assert again.to_send == 2 and again.succeeded == 2
    assert org.records["Contact"][ids[0]]["new_customer__c"] == "new_customer:realized"


def test_reconciliation_cannot_pass_when_the_crm_lacks_what_the_ledger_claims(org, client, tmp_path):
    ids = [cid(i) for i in range(3)]
    seed(org, ids)
    target = client()
    out = run(target, tmp_path, members(ids), profiles(ids))
    org.records["Contact"][ids[2]].pop("new_customer__c")
    check, ledger = _reconcile(target, tmp_path, out)
    ledger.close()
    assert not check.passed and check.table.set_index("segment").loc["new_customer", "missing"] == 1


def test_reconciliation_samples_above_its_size(org, client, tmp_path):
    ids = [cid(i) for i in range(12)]
    seed(org, ids)
    target = client()
    out = run(target, tmp_path, members(ids), profiles(ids))
    check, ledger = _reconcile(target, tmp_path, out, sample_size=5)
    ledger.close()
    assert check.sampled and check.checked_records == 5 and check.managed_records == 12 and check.passed
    read_back = [r for r in org.requests if r.method == "POST" and r.path.endswith("/composite/sobjects/Contact")]
    assert len(read_back[-1].json["ids"]) == 5
    assert set(read_back[-1].json["fields"]) >= set(out.status_fields.values())


def test_ledger_rows_know_their_profile_so_a_profile_that_left_still_exits(org, client, tmp_path):
    ids = [cid(i) for i in range(2)]
    seed(org, ids)
    run(client(), tmp_path, members(ids), profiles(ids), run_id="r1")
    # the second profile is gone from the dataset and from the statuses: its exit is derived from the ledger
    out = run(client(), tmp_path, members(ids[:1], status="existing"), profiles(ids[:1]), run_id="r2")
    assert org.records["Contact"][ids[1]]["new_customer__c"] == "new_customer:exited" and out.failed_total == 0


def test_a_mapping_id_with_and_without_the_suffix_is_one_field(org, client, tmp_path):
    org.add_field("Contact", "crm_2_seg__c")
    dest = DestinationConfig(name="shared", object="Contact", identity_column="SubscriberKey",
                             segments={"offer_clickers": "crm_2_seg", "new_customer": "CRM_2_SEG__c"})
    assert list(dest.status_fields) == ["crm_2_seg__c"]
    a = cid(1)
    seed(org, [a])
    frame = statuses((a, "offer_clickers", "existing"), (a, "new_customer", "realized"))
    run(client(), tmp_path, frame, profiles([a]), dest=dest, run_id="r1")
    assert org.records["Contact"][a]["crm_2_seg__c"] == "new_customer:realized;offer_clickers:existing"
    assert run(client(), tmp_path, frame, profiles([a]), dest=dest, run_id="r2").to_send == 0  # no flip-flop
