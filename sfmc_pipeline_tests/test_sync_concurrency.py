"""Contract: the CRM sink sends several sObject Collections requests at once (``sync.concurrent_requests``,
default 4) and that changes nothing but the time. Over real HTTP against the fake org (each request held
for a moment at the fake, so requests overlap): concurrent batches leave exactly the ledger, the records
and the results a one-at-a-time sync leaves; the first batch goes alone, then up to four are in flight
(never more at the fake); UNABLE_TO_LOCK_ROW halves the requests in flight for the rest of the run and
the locked records are still written; REQUEST_LIMIT_EXCEEDED mid-run stops submitting, records every
batch that completed and leaves the rest pending for the next run; one expired session under concurrency
costs exactly one new login; the local target is written one request at a time; and every outcome reports
the fewest write requests its change set needs next to the ones it made.

Counts asserted here do not depend on timing: the sync's own in-flight limit is deterministic, and the
fake's count of requests handled at once can only be lower than the sync's."""

from __future__ import annotations

import math
import shutil
import threading

import pandas as pd
import pytest

from sfmc_pipeline.crm.ledger import SyncLedger
from sfmc_pipeline.crm.local.target import LocalCrmTarget
from sfmc_pipeline.http import RetrySettings
from sfmc_pipeline.salesforce.rest import SalesforceClient
from sfmc_pipeline_testing.salesforce_server import FakeSalesforceServer
from sfmc_pipeline_tests.crm_fixtures import (
    CONTACTS,
    STATUS_FIELDS,
    cid,
    members,
    profiles,
    run,
    seed,
    writes_per_id,
)
from sfmc_pipeline_tests.segment_fixtures import CONFIG

LATENCY = 0.05  # seconds each request is held at the fake: long enough for batches to overlap
N = 2000  # 10 full batches of 200


def _org(**kwargs) -> FakeSalesforceServer:
    org = FakeSalesforceServer(latency_seconds=LATENCY, **kwargs).start()
    for name in STATUS_FIELDS:
        org.add_field("Contact", name)
    return org


@pytest.fixture()
def orgs():
    made: list[FakeSalesforceServer] = []

    def make(**kwargs) -> FakeSalesforceServer:
        made.append(_org(**kwargs))
        return made[-1]

    yield make
    for org in made:
        org.stop()


@pytest.fixture()
def connect(sleeps):
    made: list[SalesforceClient] = []

    def make(org: FakeSalesforceServer, cls=SalesforceClient) -> SalesforceClient:
        made.append(cls(base_url=org.base_url, client_id=org.client_id, client_secret=org.client_secret,
                        retry=RetrySettings(max_retries=3, backoff_seconds=0.5), sleep=sleeps))
        return made[-1]

    yield make
    for client in made:
        client.close()


def _settings(concurrent: int):
    return CONFIG.sync.model_copy(update={"concurrent_requests": concurrent})


def _ledger(path, target_id: str) -> pd.DataFrame:
    ledger = SyncLedger(path, target_id)
    try:
        frame = ledger.confirmed("Contact", CONTACTS.name)
    finally:
        ledger.close()
    return frame.sort_values(["record_id", "field"]).reset_index(drop=True).astype(object)


def _records(org: FakeSalesforceServer) -> dict:
    return {rid: dict(values) for rid, values in org.records["Contact"].items()}


def _writes(org: FakeSalesforceServer) -> list[int]:
    return [len(r.json["records"]) for r in org.api_requests("/composite/sobjects", method="PATCH")]


def test_concurrent_batches_leave_exactly_what_sequential_batches_leave(orgs, connect, tmp_path):
    ids = [cid(i) for i in range(N)]
    deleted, bad_email = ids[700], ids[1300]
    frame = profiles(ids, {(bad_email, "Email"): "not-an-email"})
    outcomes, ledgers, records = [], [], []
    for concurrent in (1, 4):
        org = orgs()
        seed(org, ids)
        org.delete_record("Contact", deleted)
        client = connect(org)
        directory = tmp_path / f"concurrent-{concurrent}"
        directory.mkdir()
        if concurrent > 1:  # one ledger key for both, so their hashed names and emails compare equal
            shutil.copy(tmp_path / "concurrent-1" / "ledger.key", directory / "ledger.key")
        out = run(client, directory, members(ids), frame, settings=_settings(concurrent))
        outcomes.append(out)
        ledgers.append(_ledger(directory / "ledger.sqlite", client.target_id))
        records.append(_records(org))
        assert org.max_in_flight <= concurrent  # never more at the fake than the sync allows
        if concurrent > 1:
            assert org.max_in_flight > 1  # and they did overlap
    sequential, concurrent = outcomes
    assert (sequential.max_in_flight, concurrent.max_in_flight) == (1, 4)
    assert ledgers[0].equals(ledgers[1])
    assert records[0] == records[1]
    for name in ("considered", "unchanged", "to_send", "sent", "succeeded", "failed", "rejected", "pending",
                 "requests", "min_requests", "unsettled", "errors"):
        assert getattr(sequential, name) == getattr(concurrent, name), name
    assert concurrent.succeeded == N - 2 and concurrent.failed == {"ENTITY_IS_DELETED": 1}
    assert concurrent.rejected == {"INVALID_EMAIL_ADDRESS": 1}
    assert concurrent.requests == concurrent.min_requests == math.ceil((N - 1) / 200)


def test_the_first_batch_goes_alone_and_the_partial_last_batch_waits(orgs, connect, tmp_path):
    ids = [cid(i) for i in range(N + 50)]
    org = orgs()
    seed(org, ids)
    out = run(connect(org), tmp_path, members(ids), profiles(ids))
    assert out.succeeded == N + 50 and out.max_in_flight == 4
    assert _writes(org)[0] == 200 and _writes(org)[-1] == 50  # batch sizes as a sequential sync makes them
    assert sorted(_writes(org)) == [50] + [200] * 10
    assert set(writes_per_id(org).values()) == {1}


def test_unable_to_lock_row_halves_concurrency_and_the_locked_records_are_still_written(orgs, connect, tmp_path):
    ids = [cid(i) for i in range(N)]
    org = orgs()
    seed(org, ids)
    locked = ids[:5]  # in the first batch, which goes alone
    org.lock_rows_next(locked, times=1)
    out = run(connect(org), tmp_path, members(ids), profiles(ids))
    assert out.concurrency == 2 and out.max_in_flight == 2  # 4 halved for the rest of the run
    assert org.max_in_flight <= 2
    assert out.succeeded == N and out.failed_total == 0 and out.pending == 0
    assert all(org.records["Contact"][rid]["new_customer__c"] == "new_customer:realized" for rid in locked)
    assert out.requests == out.min_requests + 1  # the re-sent locked records needed one more request


def test_a_lock_later_in_the_run_lowers_concurrency_from_then_on(orgs, connect, tmp_path):
    ids = [cid(i) for i in range(N)]
    org = orgs()
    seed(org, ids)
    org.lock_rows_next(ids[1000:1002], times=1)  # the sixth batch, sent while others are in flight
    out = run(connect(org), tmp_path, members(ids), profiles(ids))
    assert out.max_in_flight == 4 and out.concurrency == 2
    assert out.succeeded == N and out.failed_total == 0
    assert set(writes_per_id(org).values()) == {1}


def test_request_limit_exceeded_mid_run_records_what_completed_and_leaves_the_rest_pending(orgs, connect, tmp_path):
    ids = [cid(i) for i in range(N)]
    org = orgs()
    seed(org, ids)
    org.exceed_request_limit_after(4)  # describe, the first batch (alone), then two of the four sent together
    client = connect(org)
    out = run(client, tmp_path, members(ids), profiles(ids))
    assert "REQUEST_LIMIT_EXCEEDED" in out.stopped
    assert (out.succeeded, out.pending, out.failed_total) == (600, N - 600, 0)
    written = {rid for rid, record in org.records["Contact"].items() if record.get("new_customer__c")}
    confirmed = _ledger(tmp_path / "ledger.sqlite", client.target_id)
    assert set(confirmed["record_id"]) == written and len(written) == 600  # every completed batch is in the ledger
    assert out.unsettled == set(ids) - written

    org.reset_request_limit()
    again = run(connect(org), tmp_path, members(ids), profiles(ids), run_id="run-2")
    assert (again.unchanged, again.succeeded, again.pending) == (600, N - 600, 0)
    assert set(writes_per_id(org).values()) == {1}


class _ExpiresAfterFirstWrite(SalesforceClient):
    """Every session ends right after the first write (e.g. an admin revoked them), while the next
    batches are about to go out together."""

    org: FakeSalesforceServer
    expired = False

    def update(self, records):
        results = super().update(records)
        if not self.expired:
            self.expired = True
            self.org.expire_sessions()
        return results


def test_one_expired_session_under_concurrency_costs_exactly_one_login(orgs, connect, tmp_path):
    ids = [cid(i) for i in range(N)]
    org = orgs()
    seed(org, ids)
    client = connect(org, cls=_ExpiresAfterFirstWrite)
    client.org = org
    out = run(client, tmp_path, members(ids), profiles(ids))
    assert out.succeeded == N and out.max_in_flight == 4
    assert len(org.token_requests()) == 2  # the first login and one re-login, however many requests got a 401
    assert [r.status for r in org.api_requests(method="PATCH")].count(401) >= 1
    assert client.logins == 2


def test_concurrent_calls_share_one_relogin_at_the_client(orgs, connect):
    org = orgs()
    ids = [cid(i) for i in range(8)]
    seed(org, ids)
    client = connect(org)
    client.describe("Contact")
    org.expire_sessions()
    start = threading.Barrier(len(ids))
    results, errors = [], []

    def write(rid):
        start.wait()
        try:
            results.extend(client.update([{"attributes": {"type": "Contact"}, "id": rid, "LastName": "x"}]))
        except Exception as exc:  # pragma: no cover - shown by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(rid,)) for rid in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(results) == len(ids) and all(r.success for r in results)
    assert len(org.token_requests()) == 2 and client.logins == 2
    assert client.api_requests == len(org.requests)  # the counters saw every request, retries included


def test_the_local_target_is_written_one_request_at_a_time(tmp_path):
    ids = [cid(i) for i in range(1000)]
    with LocalCrmTarget(tmp_path / "local.sqlite") as local:
        local.ensure_object("Contact", status_fields=STATUS_FIELDS)
        local.seed("Contact", [{"Id": rid, "LastName": "x"} for rid in ids])
        out = run(local, tmp_path, members(ids), profiles(ids))
    assert out.succeeded == 1000 and out.max_in_flight == 1 and out.concurrency == 1
    assert out.requests == out.min_requests == 5


def test_an_unchanged_rerun_needs_no_write_request(orgs, connect, tmp_path):
    ids = [cid(i) for i in range(450)]
    org = orgs()
    seed(org, ids)
    first = run(connect(org), tmp_path, members(ids), profiles(ids))
    assert (first.requests, first.min_requests) == (3, 3)
    again = run(connect(org), tmp_path, members(ids), profiles(ids), run_id="run-2")
    assert (again.to_send, again.requests, again.min_requests, again.max_in_flight) == (0, 0, 0, 0)
