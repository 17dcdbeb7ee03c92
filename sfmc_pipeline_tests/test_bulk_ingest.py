"""Contract: large change sets go through Salesforce Bulk API 2.0 (``salesforce/bulk_api.py``, ``crm/bulk/``),
over real HTTP against the fake org, without real waiting (injected sleep and clock).

A change set becomes one CSV per job (UTF-8, LF, ``Id`` or the external id column first, ``#N/A`` for null, an
empty cell for a field the record does not change, exact decimals, quoting of quotes, commas and line breaks),
split over several jobs above ``max_upload_bytes``. A job is recorded in the ``BulkJobStore`` before it is created,
then uploaded, closed and polled with backoff (1, 2, 4 ... capped at 30 s) within ``poll_timeout_seconds``.
Results are matched by ``Id`` (update) or the external id (upsert), never by position: succeeded records become
ledger rows (``Confirmed``), failed ones carry Salesforce's code, message and fields parsed from ``sf__Error``,
unprocessed ones are pending. A failed job raises an error naming the job and Salesforce's ``errorMessage``. On a
poll timeout the job stays recorded and its records are in flight (never sent again) until ``recover()`` collects
it; a job a crashed run left ``Open`` is aborted and its records resent; one left ``UploadComplete`` or
``JobComplete`` is collected and confirmed, with no second job. ``partition()`` sends to composite what Bulk cannot
carry (over 32,000 characters per field, the text ``#N/A``, ...). ``SalesforceClient.request`` is the generic
authorized call Bulk uses (login, 401 re-login, retries, limit info, errors)."""

from __future__ import annotations

import json
from collections import Counter
from decimal import Decimal

import pytest

from sfmc_pipeline.crm.bulk.csv_format import csv_cell, csv_line
from sfmc_pipeline.crm.bulk.job_store import BulkJobStore
from sfmc_pipeline.crm.bulk.results import BulkJobFailed
from sfmc_pipeline.crm.bulk.writer import BulkWriter
from sfmc_pipeline.crm.ledger import Confirmed, SyncLedger, encode
from sfmc_pipeline.errors import ApiError
from sfmc_pipeline.http import RetrySettings
from sfmc_pipeline.salesforce.api_errors import RequestLimitExceeded
from sfmc_pipeline.salesforce.bulk_api import parse_error
from sfmc_pipeline.salesforce.ids import CONTACT_PREFIX
from sfmc_pipeline.salesforce.records import RecordError
from sfmc_pipeline.salesforce.rest import SalesforceClient
from sfmc_pipeline_testing.salesforce_server import FakeSalesforceServer, fake_id

SEG = "crm_2_seg__c"
EXT = "Ext_Id__c"
IDS = [fake_id(CONTACT_PREFIX, n) for n in range(1, 9)]


class Crash(BaseException):
    """Stands for the process dying: passes every ``except Exception``, so nothing is cleaned up."""


class Time:
    """A clock that only moves when the code under test sleeps."""

    def __init__(self):
        self.now = 0.0
        self.calls: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.calls.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now


@pytest.fixture()
def org(fake_salesforce: FakeSalesforceServer) -> FakeSalesforceServer:
    sf = fake_salesforce
    sf.add_field("Contact", SEG)
    sf.add_field("Contact", "Short__c", type="string", length=10)
    sf.add_field("Contact", "Score__c", type="double", length=0)
    sf.add_field("Contact", "Amount__c", type="currency", length=0)
    sf.add_field("Contact", "Visits__c", type="int", length=0)
    sf.add_field("Contact", "Active__c", type="boolean", length=0)
    sf.add_field("Contact", "Birthdate__c", type="date", length=0)
    sf.add_field("Contact", EXT, type="string", length=64, external_id=True)
    for n, rid in enumerate(IDS):
        sf.add_record("Contact", rid, LastName=f"Old{n}", Email=f"old{n}@example.com")
    return sf


@pytest.fixture()
def new_client(org, sleeps):
    made: list[SalesforceClient] = []

    def make() -> SalesforceClient:
        client = SalesforceClient(base_url=org.base_url, client_id=org.client_id, client_secret=org.client_secret,
                                  username=org.username, password=org.password, security_token=org.security_token,
                                  retry=RetrySettings(max_retries=2, backoff_seconds=0.5), sleep=sleeps)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


@pytest.fixture()
def client(new_client) -> SalesforceClient:
    return new_client()


@pytest.fixture()
def timer() -> Time:
    return Time()


@pytest.fixture()
def state_dir(tmp_path):
    return tmp_path / "state" / "crm"


@pytest.fixture()
def open_store(state_dir):
    opened: list[BulkJobStore] = []

    def make(client) -> BulkJobStore:
        store = BulkJobStore.beside(state_dir / "ledger.sqlite", client.target_id)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture()
def ledger(state_dir, client):
    ledger = SyncLedger(state_dir / "ledger.sqlite", client.target_id)
    yield ledger
    ledger.close()


def make_writer(client, store, timer, ledger=None, **kwargs) -> BulkWriter:
    confirm = None
    if ledger is not None:
        def confirm(rows):
            ledger.record("Contact", "contacts", "run-1", rows)
    kwargs.setdefault("poll_timeout_seconds", 600)
    return BulkWriter(client, "Contact", kwargs.pop("operation", "update"), kwargs.pop("external_id_field", None),
                      state=store, destination="contacts", sleep=timer.sleep, clock=timer.clock, confirm=confirm,
                      **kwargs)


def changes(ids=IDS, **extra) -> list[tuple[str, dict]]:
    return [(rid, {SEG: f"new_customer:realized;n{n}", **extra}) for n, rid in enumerate(ids)]


def confirmed_values(ledger) -> dict[tuple[str, str], str]:
    frame = ledger.confirmed("Contact", "contacts")
    return {(r, f): v for r, f, v in zip(frame["record_id"], frame["field"], frame["value"])}


def job_paths(org) -> list[str]:
    """The Bulk requests as ``METHOD last-path-part``."""
    return [f"{r.method} {r.path.rstrip('/').rsplit('/', 1)[-1] if 'ingest/' in r.path else 'ingest'}"
            for r in org.bulk_requests()]


# ---------------------------------------------------------------------------------------------- writing


def test_success_confirms_every_record_matched_by_id_whatever_the_result_order(org, client, open_store, timer,
                                                                                ledger):
    org.bulk_result_order = "reversed"
    writer = make_writer(client, open_store(client), timer, ledger)
    owners = {rid: f"profile-{n}" for n, rid in enumerate(IDS)}
    records = changes(Email="new@example.com")

    out = writer.write(records, owners=owners, status_fields={SEG})

    assert [r.status for r in out.records.values()] == ["succeeded"] * len(IDS)
    assert {rid: out.records[rid].crm_id for rid in IDS} == {rid: rid for rid in IDS}
    job = org.bulk_job(out.job_id)
    assert job["state"] == "JobComplete" and job["operation"] == "update" and job["lineEnding"] == "LF"
    assert [org.records["Contact"][rid][SEG] for rid in IDS] == [fields[SEG] for _, fields in records]
    # the ledger holds exactly what the composite path would have confirmed
    assert confirmed_values(ledger) == {(rid, name): encode(value) for rid, fields in records
                                        for name, value in fields.items()}
    frame = ledger.confirmed("Contact", "contacts").set_index(["record_id", "field"])
    assert frame.loc[(IDS[0], SEG), "kind"] == "status" and frame.loc[(IDS[0], "Email"), "kind"] == "attribute"
    assert frame.loc[(IDS[3], SEG), "profile_key"] == "profile-3" and frame.loc[(IDS[3], SEG), "crm_id"] == IDS[3]
    # create, upload, close, one poll, successful results: the minimum
    assert job_paths(org) == ["POST ingest", "PUT batches", f"PATCH {out.job_id}", f"GET {out.job_id}",
                              "GET successfulResults"]
    assert out.requests == out.min_requests == 5 and timer.calls == [1.0]
    assert client.api_usage.used == org.api_usage == 5
    assert writer.in_flight() == {} and out.pending == [] and out.stopped is None


def test_partial_failure_keeps_salesforce_codes_messages_and_fields(org, client, open_store, timer, ledger):
    gone, unknown = IDS[6], fake_id(CONTACT_PREFIX, 99)
    org.delete_record("Contact", gone)
    org.reject_bulk_records({IDS[5]: ("FIELD_CUSTOM_VALIDATION_EXCEPTION", "Email: use a corporate address: "
                                      "see policy 7", ["Email"])})
    records = [
        (IDS[0], {SEG: "a"}),
        (IDS[1], {"Short__c": "X" * 11}),
        (IDS[2], {"Email": "not-an-email"}),
        (IDS[3], {"LastName": None}),
        (IDS[4], {"Visits__c": "many"}),
        (IDS[5], {"Email": "me@gmail.com"}),
        (gone, {SEG: "b"}),
        (unknown, {SEG: "c"}),
    ]
    out = make_writer(client, open_store(client), timer, ledger).write(records)

    errors = {rid: r.error for rid, r in out.records.items() if r.status == "failed"}
    assert [r.record_id for r in out.succeeded] == [IDS[0]]
    assert {rid: e.status_code for rid, e in errors.items()} == {
        IDS[1]: "STRING_TOO_LONG", IDS[2]: "INVALID_EMAIL_ADDRESS", IDS[3]: "REQUIRED_FIELD_MISSING",
        IDS[4]: "INVALID_TYPE_ON_FIELD_IN_RECORD", IDS[5]: "FIELD_CUSTOM_VALIDATION_EXCEPTION",
        gone: "ENTITY_IS_DELETED", unknown: "INVALID_CROSS_REFERENCE_KEY"}
    assert errors[IDS[5]] == RecordError("FIELD_CUSTOM_VALIDATION_EXCEPTION",
                                         "Email: use a corporate address: see policy 7", ("Email",))
    assert errors[IDS[3]] == RecordError("REQUIRED_FIELD_MISSING", "Required fields are missing: [LastName]",
                                         ("LastName",))
    assert errors[unknown] == RecordError("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", ())
    assert errors[IDS[1]].fields == ("Short__c",) and "(max length=10)" in errors[IDS[1]].message
    assert set(confirmed_values(ledger)) == {(IDS[0], SEG)}
    assert out.requests == out.min_requests == 6  # + failed results

    # the composite path fails the same records for the same reasons ("many" in an int field is a request-level
    # 400 there, and the validation rule is a Bulk-only fault of the fake)
    again = [(rid, fields) for rid, fields in records if rid not in (IDS[4], IDS[5])]
    composite = client.update([{"attributes": {"type": "Contact"}, "id": rid, **fields} for rid, fields in again])
    assert {rid: r.errors[0] for (rid, _), r in zip(again, composite) if not r.success} == {
        rid: e for rid, e in errors.items() if rid not in (IDS[4], IDS[5])}


def test_unprocessed_records_are_pending_for_the_next_run(org, client, open_store, timer, ledger):
    org.leave_unprocessed_next(3)
    writer = make_writer(client, open_store(client), timer, ledger)
    out = writer.write(changes())

    pending = out.pending
    assert len(out.succeeded) == 5 and len(pending) == 3
    assert {r.reason for r in pending} == {"unprocessed"} and not any(r.in_flight for r in pending)
    assert {rid for rid, _ in confirmed_values(ledger)} == {r.record_id for r in out.succeeded}
    assert all(SEG not in org.records["Contact"][r.record_id] for r in pending)
    assert out.requests == out.min_requests == 6  # + unprocessed records
    assert writer.in_flight() == {}  # nothing left to collect: the next diff sends them again


def test_a_failed_job_names_the_job_and_salesforces_message_and_confirms_nothing(org, client, open_store, timer,
                                                                                 ledger):
    store = open_store(client)
    records = [(rid, {"Nope__c": "x"}) for rid in IDS[:3]]  # no such field: the whole job fails
    with pytest.raises(BulkJobFailed) as raised:
        make_writer(client, store, timer, ledger).write(records)

    job_id = raised.value.outcome.job_id
    message = str(raised.value)
    assert job_id in message and "InvalidBatch : Field name not found : Nope__c" in message
    assert "update of Contact" in message and "0 of 3 record(s) processed" in message
    assert [r.status for r in raised.value.outcome.records.values()] == ["pending"] * 3
    assert confirmed_values(ledger) == {} and org.write_log == []
    assert store.jobs("contacts", "Contact") == []  # settled: the next diff sends the records again


def test_a_job_that_fails_midway_still_confirms_what_it_wrote(org, client, open_store, timer, ledger):
    org.fail_next_bulk_job("Failed after 10 retries: internal server error", process_first=2)
    with pytest.raises(BulkJobFailed, match="ended Failed: Failed after 10 retries") as raised:
        make_writer(client, open_store(client), timer, ledger).write(changes(IDS[:5]))

    outcome = raised.value.outcome
    assert [r.record_id for r in outcome.succeeded] == IDS[:2]
    assert {rid for rid, _ in confirmed_values(ledger)} == set(IDS[:2])
    assert {r.record_id: r.reason for r in outcome.pending} == {rid: "unprocessed" for rid in IDS[2:5]}


def test_poll_timeout_leaves_the_job_recorded_and_the_next_run_collects_it(org, new_client, open_store, timer,
                                                                           state_dir):
    org.stall_bulk_jobs()
    client = new_client()
    writer = make_writer(client, open_store(client), timer, poll_timeout_seconds=60)
    out = writer.write(changes())

    assert out.timed_out and out.job_id in out.stopped and "still InProgress" in out.stopped
    assert timer.calls == [1, 2, 4, 8, 16, 29]  # backoff, the last wait cut to the deadline
    assert {r.reason for r in out.pending} == {"timeout"} and out.in_flight == set(IDS)
    assert org.bulk_job(out.job_id)["state"] == "InProgress"  # not aborted: it may still be processing
    assert set(writer.in_flight()) == set(IDS)
    again = writer.write(changes())  # the same change is never sent twice while the first job may apply it
    assert len(org.bulk_jobs) == 1 and again.requests == 0
    assert {r.reason for r in again.pending} == {"in_flight"} and again.in_flight == set(IDS)

    org.stall_bulk_jobs(False)
    client2 = new_client()  # the next run
    ledger = SyncLedger(state_dir / "ledger.sqlite", client2.target_id)
    try:
        recovered = make_writer(client2, open_store(client2), Time(), ledger).recover()
        assert [r.record_id for r in recovered.succeeded] == IDS and recovered.jobs[0].recovered
        assert {rid for rid, _ in confirmed_values(ledger)} == set(IDS)
    finally:
        ledger.close()
    assert len(org.bulk_jobs) == 1 and set(Counter(rid for _, rid, _ in org.write_log).values()) == {1}
    assert recovered.unrecorded_jobs == [] and recovered.requests == recovered.min_requests == 3  # info, results, list


def test_backoff_doubles_up_to_30_seconds(org, client, open_store, timer):
    org.bulk_polls_before_complete = 8
    out = make_writer(client, open_store(client), timer).write(changes(IDS[:2]))
    assert timer.calls == [1, 2, 4, 8, 16, 30, 30, 30, 30]
    assert out.jobs[0].polls == 9 and out.requests == out.min_requests + 8


def test_crash_leaving_an_open_job_aborts_it_on_the_next_run_and_sends_the_records_once(org, new_client, open_store,
                                                                                        state_dir):
    client = new_client()
    real = client.request

    def crash_on_upload(method, path, **kwargs):
        if method == "PUT":
            raise Crash("killed during the upload")
        return real(method, path, **kwargs)

    client.request = crash_on_upload
    with pytest.raises(Crash):
        make_writer(client, open_store(client), Time()).write(changes())
    (left,) = org.bulk_jobs.values()
    assert left.state == "Open" and left.data is None

    client2 = new_client()
    store2 = open_store(client2)
    ledger = SyncLedger(state_dir / "ledger.sqlite", client2.target_id)
    try:
        writer = make_writer(client2, store2, Time(), ledger)
        recovered = writer.recover()
        assert org.bulk_job(left.id)["state"] == "Aborted"
        assert {r.reason for r in recovered.records.values()} == {"aborted"} and recovered.in_flight == set()
        assert any(left.id in m and "aborted" in m for m in recovered.messages)
        assert writer.in_flight() == {} and store2.jobs("contacts", "Contact") == []
        assert recovered.requests == recovered.min_requests == 3  # job info, abort, job list
        out = writer.write(changes())  # the diff sends them again: one new job
    finally:
        ledger.close()
    assert len(out.succeeded) == len(IDS) and len(org.bulk_jobs) == 2
    assert Counter(rid for _, rid, _ in org.write_log) == Counter(IDS)  # each record written once


@pytest.mark.parametrize("processed_meanwhile", [True, False])
def test_crash_after_close_is_collected_and_confirmed_without_a_second_job(org, new_client, open_store, state_dir,
                                                                           processed_meanwhile):
    client = new_client()

    def die(seconds):
        raise Crash("killed while waiting")

    writer = BulkWriter(client, "Contact", state=open_store(client), destination="contacts", sleep=die,
                        clock=Time().clock)
    with pytest.raises(Crash):
        writer.write(changes(), owners={IDS[0]: "p0"}, status_fields={SEG})
    (job,) = org.bulk_jobs.values()
    assert job.state == "UploadComplete"
    if processed_meanwhile:
        org.process_bulk_jobs()
    else:
        org.bulk_polls_before_complete = 2  # the next run waits for it

    client2 = new_client()
    ledger = SyncLedger(state_dir / "ledger.sqlite", client2.target_id)
    try:
        recovered = make_writer(client2, open_store(client2), Time(), ledger).recover()
        frame = ledger.confirmed("Contact", "contacts").set_index("record_id")
    finally:
        ledger.close()
    assert [r.record_id for r in recovered.succeeded] == IDS and recovered.job_id == job.id
    assert set(frame.index) == set(IDS) and frame.loc[IDS[0], "profile_key"] == "p0"
    assert frame.loc[IDS[0], "kind"] == "status"  # what the crashed run recorded is enough to confirm
    assert len(org.bulk_jobs) == 1 and Counter(rid for _, rid, _ in org.write_log) == Counter(IDS)
    assert recovered.jobs[0].polls == (1 if processed_meanwhile else 3)


def test_crash_before_the_results_were_read_is_collected_on_the_next_run(org, new_client, open_store, state_dir):
    client = new_client()
    real = client.request

    def crash_on_results(method, path, **kwargs):
        if "successfulResults" in path:
            raise Crash("killed while reading results")
        return real(method, path, **kwargs)

    client.request = crash_on_results
    with pytest.raises(Crash):
        make_writer(client, open_store(client), Time()).write(changes(IDS[:4]))
    assert [j.state for j in org.bulk_jobs.values()] == ["JobComplete"]

    client2 = new_client()
    ledger = SyncLedger(state_dir / "ledger.sqlite", client2.target_id)
    try:
        recovered = make_writer(client2, open_store(client2), Time(), ledger).recover()
        assert {rid for rid, _ in confirmed_values(ledger)} == set(IDS[:4])
    finally:
        ledger.close()
    assert len(recovered.succeeded) == 4 and len(org.bulk_jobs) == 1


def test_crash_during_the_create_call_is_noticed_and_its_records_sent_again(org, new_client, open_store):
    client = new_client()
    real = client.request

    def create_then_crash(method, path, **kwargs):
        response = real(method, path, **kwargs)
        if method == "POST":
            raise Crash("killed before the job id was recorded")
        return response

    client.request = create_then_crash
    with pytest.raises(Crash):
        make_writer(client, open_store(client), Time()).write(changes(IDS[:2]))
    (orphan,) = org.bulk_jobs  # created, but its id never reached the store

    client2 = new_client()
    writer = make_writer(client2, open_store(client2), Time())
    assert set(writer.in_flight()) == set(IDS[:2])  # until recover() has looked
    recovered = writer.recover()
    assert {r.reason for r in recovered.records.values()} == {"never_created"} and recovered.in_flight == set()
    assert [j.id for j in recovered.unrecorded_jobs] == [orphan]  # reported (any user: none known yet), untouched
    assert org.bulk_job(orphan)["state"] == "Open" and writer.in_flight() == {}


def test_open_jobs_in_the_org_that_were_not_recorded_are_reported_and_left_alone(org, client, open_store, timer):
    store = open_store(client)
    writer = make_writer(client, store, timer)
    writer.write(changes(IDS[:1]))  # learns the integration user's id from the job it creates
    mine = org.seed_bulk_job("Contact")  # e.g. created just before a crash, id never recorded
    other_user = org.seed_bulk_job("Contact", created_by_id=fake_id("005", 77))
    lead_job = org.seed_bulk_job("Lead")
    org.bulk_list_page_size = 2  # four jobs: two pages

    assert writer.recover() is None  # nothing recorded: costs nothing
    out = writer.recover(check_org=True)

    assert [j.id for j in out.unrecorded_jobs] == [mine]
    assert any(mine in m and "left alone" in m for m in out.messages)
    assert {org.bulk_job(j)["state"] for j in (mine, other_user, lead_job)} == {"Open"}
    assert out.requests == out.min_requests == 2  # two pages of GET jobs/ingest


def test_recorded_jobs_belong_to_their_target_and_destination(org, client, open_store, state_dir, timer):
    org.stall_bulk_jobs()
    store = open_store(client)
    make_writer(client, store, timer, poll_timeout_seconds=10).write(changes(IDS[:2]))
    other_destination = BulkWriter(client, "Contact", state=store, destination="contacts_2", sleep=timer.sleep,
                                   clock=timer.clock)
    assert other_destination.recover() is None and other_destination.in_flight() == {}
    with BulkJobStore.beside(state_dir / "ledger.sqlite", "salesforce:00DOTHERORG0000000") as other_org:
        assert other_org.jobs("contacts", "Contact") == [] and other_org.in_flight("contacts", "Contact") == {}
    assert set(store.in_flight("contacts", "Contact")) == set(IDS[:2])


def test_request_limit_stops_cleanly_and_the_open_job_is_aborted_next_run(org, new_client, open_store):
    client = new_client()
    org.exceed_request_limit_after(2)  # create and upload pass; close is refused
    writer = make_writer(client, open_store(client), Time())
    out = writer.write(changes(IDS[:3]))
    assert out.stopped.startswith("Salesforce refused further requests") and len(out.pending) == 3
    assert out.in_flight == set(IDS[:3])  # the job could not be aborted either, so it stays recorded
    assert org.bulk_job(out.job_id)["state"] == "Open"

    org.reset_request_limit()
    client2 = new_client()
    recovered = make_writer(client2, open_store(client2), Time()).recover()
    assert org.bulk_job(out.job_id)["state"] == "Aborted" and recovered.in_flight == set()


def test_usage_threshold_stops_before_a_job_is_created(org, client, open_store, timer):
    client.describe("Contact")
    org.set_api_usage(13000)  # 87% of 15,000 after the next call
    client.limits()
    out = make_writer(client, open_store(client), timer, usage_threshold=0.8).write(changes(IDS[:3]))
    assert out.stopped.startswith("daily API usage") and {r.reason for r in out.pending} == {"stopped"}
    assert out.requests == 0 and org.bulk_jobs == {} and out.in_flight == set()


def test_an_expired_session_during_polling_logs_in_again(org, client, open_store):
    polls = Time()

    def sleep(seconds):
        polls.sleep(seconds)
        org.expire_sessions()

    writer = BulkWriter(client, "Contact", state=open_store(client), sleep=sleep, clock=polls.clock)
    out = writer.write(changes(IDS[:2]))
    assert len(out.succeeded) == 2 and client.logins == 2


# ---------------------------------------------------------------------------------------------- routing and CSV


def test_partition_sends_what_bulk_cannot_carry_to_composite(org, client, open_store, timer):
    store = open_store(client)
    writer = make_writer(client, store, timer)
    records = [
        (IDS[0], {SEG: "x" * 32000}),                        # at the limit: Bulk
        (IDS[1], {SEG: "x" * 32001}),                        # over Bulk's per-field limit
        (IDS[2], {SEG: "ok", "Email": "#N/A"}),              # Bulk would read it as null
        (IDS[3], {SEG: "   "}),                              # a blank cell may read as "leave as it is"
        (IDS[4], {f"F{n}__c": "y" * 31000 for n in range(13)}),  # over 400,000 characters per record
        (IDS[5], {SEG: "fine", "Score__c": Decimal("1.5"), "LastName": None}),
    ]
    bulk, composite = writer.partition(records)
    assert [rid for rid, _ in bulk] == [IDS[0], IDS[5]]
    assert [rid for rid, _ in composite] == [IDS[1], IDS[2], IDS[3], IDS[4]]
    assert "32001 characters, over Bulk's 32000 per field" in writer.composite_reason(*records[1])
    assert "'#N/A'" in writer.composite_reason(*records[2])
    assert "403000 characters in the record" in writer.composite_reason(*records[4])

    small = make_writer(client, store, timer, max_upload_bytes=200)
    assert small.partition([(IDS[0], {SEG: "x" * 100}), (IDS[1], {SEG: "x" * 300})])[1] == [(IDS[1], {SEG: "x" * 300})]
    upsert = make_writer(client, store, timer, operation="upsert", external_id_field=EXT)
    keyed = [("E-1", {EXT: "E-1"}), ("E-2", {SEG: "no key"}), ("E-3", {EXT: "E-3"}), ("E-3b", {EXT: "E-3"})]
    assert [rid for rid, _ in upsert.partition(keyed)[1]] == ["E-2", "E-3", "E-3b"]

    with pytest.raises(ValueError, match="partition"):
        writer.write(records[:2])
    assert org.bulk_jobs == {} and store.jobs("contacts", "Contact") == []


def test_csv_cells_round_trip_through_bulk_exactly(org, client, open_store, timer):
    org.add_record("Contact", IDS[0], LastName="Keep", Email="keep@example.com", **{SEG: "old", "Short__c": "old"})
    values = {
        SEG: 'quotes "x", commas, a\nnewline, a\r\nCRLF, a lone \r CR; ümlaut, 漢字, emoji 🎯',
        "FirstName": "  padded  ",
        "Short__c": None,                                  # cleared (#N/A)
        "Score__c": Decimal("12345678901234567.89"),       # exact, never through float
        "Amount__c": Decimal("10.50"),
        "Visits__c": 7,
        "Active__c": False,
        "Birthdate__c": "1990-02-28",
    }
    records = [(IDS[0], values), (IDS[1], {"Email": ""})]  # an empty text clears too
    out = make_writer(client, open_store(client), timer).write(records)
    assert len(out.succeeded) == 2

    stored = org.records["Contact"][IDS[0]]
    assert {name: stored.get(name) for name in values} == values
    assert str(stored["Amount__c"]) == "10.50" and stored["LastName"] == "Keep"  # not in the CSV row: kept
    assert stored["Email"] == "keep@example.com" and org.records["Contact"][IDS[1]]["Email"] is None
    data = org.bulk_job(out.job_id)["data"]
    assert data.startswith(f"Id,{SEG},FirstName,Short__c,Score__c,Amount__c,Visits__c,Active__c,Birthdate__c,Email\n")
    assert f"{IDS[1]},,,,,,,,,#N/A\n" in data and ",#N/A,12345678901234567.89,10.50,7,false,1990-02-28,\n" in data
    assert data.encode("utf-8").decode("utf-8") == data and "\ufeff" not in data


@pytest.mark.parametrize("value, cell", [
    (None, "#N/A"), ("", "#N/A"), (True, "true"), (False, "false"), (0, "0"), (-12, "-12"),
    (Decimal("1E+3"), "1000"), (Decimal("0.000001"), "0.000001"), (Decimal("-0.50"), "-0.50"),
    (0.1, "0.1"), (1.5e20, "150000000000000000000"), ("2026-11-20T18:00:00Z", "2026-11-20T18:00:00Z"),
])
def test_csv_cell_formats(value, cell):
    assert csv_cell(value) == cell


def test_csv_cells_that_cannot_be_written():
    for bad in (Decimal("NaN"), float("inf")):
        with pytest.raises(ValueError):
            csv_cell(bad)
    with pytest.raises(TypeError):
        csv_cell(["a"])
    assert csv_line(["a", 'b"c', "d,e", "f\rg", " h", ""]) == 'a,"b""c","d,e","f\rg"," h",\n'


def test_uploads_are_split_over_several_jobs_under_max_upload_bytes(org, client, open_store, timer, ledger):
    records = [(rid, {SEG: f"{n}:" + "z" * 80}) for n, rid in enumerate(IDS)]
    out = make_writer(client, open_store(client), timer, ledger, max_upload_bytes=400).write(records)

    uploads = [r.body for r in org.bulk_requests("/batches", "PUT")]
    assert len(uploads) == len(out.jobs) == 3
    assert all(len(body.encode()) <= 400 and body.startswith(f"Id,{SEG}\n") for body in uploads)
    assert sorted(line.split(",")[0] for body in uploads for line in body.splitlines()[1:]) == sorted(IDS)
    assert len(out.succeeded) == len(IDS) and {rid for rid, _ in confirmed_values(ledger)} == set(IDS)
    assert out.requests == out.min_requests == 15


def test_upsert_results_are_matched_by_external_id(org, client, open_store, timer, ledger):
    org.add_record("Contact", IDS[0], LastName="Existing", **{EXT: "E-1"})
    org.bulk_result_order = "reversed"
    writer = make_writer(client, open_store(client), timer, ledger, operation="upsert", external_id_field=EXT)
    records = [("E-1", {EXT: "E-1", SEG: "a"}), ("E-2", {EXT: "E-2", "LastName": "New", SEG: "b"}),
               ("E-3", {EXT: "E-3", SEG: "c"})]  # creating without LastName fails
    out = writer.write(records, status_fields={SEG})

    updated, created, failed = (out.records[k] for k in ("E-1", "E-2", "E-3"))
    assert (updated.status, updated.created, updated.crm_id) == ("succeeded", False, IDS[0])
    assert created.status == "succeeded" and created.created is True
    assert org.records["Contact"][created.crm_id][SEG] == "b" and out.created == 1
    assert failed.error.status_code == "REQUIRED_FIELD_MISSING"
    assert org.bulk_job(out.job_id)["externalIdFieldName"] == EXT
    assert org.bulk_job(out.job_id)["data"].splitlines()[0] == f"{EXT},{SEG},LastName"
    rows = ledger.confirmed("Contact", "contacts").set_index(["record_id", "field"])["crm_id"]
    assert rows[("E-1", SEG)] == IDS[0] and rows[("E-2", SEG)] == created.crm_id


def test_confirmed_rows_build_ledger_rows_without_a_callback(org, client, open_store, timer):
    out = make_writer(client, open_store(client), timer).write([(IDS[0], {SEG: "a", "Score__c": Decimal("2.50")})],
                                                               owners={IDS[0]: "p"}, status_fields={SEG})
    assert out.confirmed_rows() == [Confirmed(IDS[0], SEG, "status", "p", IDS[0], "a"),
                                    Confirmed(IDS[0], "Score__c", "attribute", "p", IDS[0], Decimal("2.50"))]


@pytest.mark.parametrize("text, error", [
    ("FIELD_CUSTOM_VALIDATION_EXCEPTION:Email must be corporate:Email",
     RecordError("FIELD_CUSTOM_VALIDATION_EXCEPTION", "Email must be corporate", ("Email",))),
    ("INVALID_CROSS_REFERENCE_KEY:invalid cross reference id:--",
     RecordError("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id")),
    ("INVALID_EMAIL_ADDRESS:Email: invalid email address: x@:Email",
     RecordError("INVALID_EMAIL_ADDRESS", "Email: invalid email address: x@", ("Email",))),
    ("REQUIRED_FIELD_MISSING:Required fields are missing: [LastName, Company]:LastName,Company",
     RecordError("REQUIRED_FIELD_MISSING", "Required fields are missing: [LastName, Company]",
                 ("LastName", "Company"))),
    ("UNABLE_TO_LOCK_ROW:unable to obtain exclusive access to this record: 003x",
     RecordError("UNABLE_TO_LOCK_ROW", "unable to obtain exclusive access to this record: 003x")),
    ("DUPLICATE_VALUE:duplicate", RecordError("DUPLICATE_VALUE", "duplicate")),
    ("UNABLE_TO_LOCK_ROW", RecordError("UNABLE_TO_LOCK_ROW", "")),  # a bare code, as some orgs serve it
    (" UNABLE_TO_LOCK_ROW\n", RecordError("UNABLE_TO_LOCK_ROW", "")),
    ("FIELD_CUSTOM_VALIDATION_EXCEPTION:Email must be: corporate",  # a colon inside a message without fields
     RecordError("FIELD_CUSTOM_VALIDATION_EXCEPTION", "Email must be: corporate")),
    ("not_a_code", RecordError("UNKNOWN", "not_a_code")),
    ("something broke", RecordError("UNKNOWN", "something broke")),
    ("", RecordError("UNKNOWN", "no error detail returned")),
])
def test_sf_error_parsing(text, error):
    assert parse_error(text) == error


# ---------------------------------------------------------------------------------------------- the generic request


def test_client_request_sends_raw_bodies_through_the_clients_error_paths(org, client, sleeps):
    job = json.loads(client.request("POST", "jobs/ingest", body=b'{"object": "Contact", "operation": "update"}',
                                    content_type="application/json", accept="application/json").text)
    response = client.request("PUT", f"/services/data/v66.0/jobs/ingest/{job['id']}/batches",
                              body="Id\n\u00e9".encode(), content_type="text/csv")
    assert response.status_code == 201
    (upload,) = org.bulk_requests("/batches")
    assert upload.header("Content-Type") == "text/csv" and upload.body == "Id\n\u00e9"
    assert upload.header("Authorization") == f"Bearer {org.issued_tokens[0]}"
    assert client.api_usage.used == org.api_usage == 2

    org.fail_next(503, path_contains="/jobs/ingest")
    assert client.request("GET", f"jobs/ingest/{job['id']}").json()["state"] == "Open" and sleeps.calls == [0.5]
    org.expire_sessions()
    assert client.request("GET", "jobs/ingest").json()["done"] is True and client.logins == 2
    with pytest.raises(ApiError, match="HTTP 404 NOT_FOUND") as missing:
        client.request("GET", "jobs/ingest/750Fk0000000099AAA", what="Bulk job info")
    assert missing.value.status == 404 and str(missing.value).startswith("Salesforce Bulk job info failed")
    org.exceed_request_limit_after(0)
    with pytest.raises(RequestLimitExceeded):
        client.request("GET", "jobs/ingest")
    for bad in ("https://evil.example/x", "services/oauth2/token", "../../x"):
        with pytest.raises(ValueError):
            client.request("GET", bad)
