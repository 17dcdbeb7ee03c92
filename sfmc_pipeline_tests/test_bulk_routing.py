"""The sync routes large change sets through Bulk API 2.0 (fake org, real HTTP): by threshold, into the
same ledger and error rows as sObject Collections, and a job an earlier run left is settled, never
duplicated."""

from sfmc_pipeline.crm.bulk.job_store import BulkJobStore
from sfmc_pipeline.crm.bulk.writer import BulkWriter
from sfmc_pipeline.crm.ledger import SyncLedger
from sfmc_pipeline.crm.sync import DestinationSync
from sfmc_pipeline_tests.crm_fixtures import (  # noqa: F401 - org and client are fixtures
    CONTACTS,
    cid,
    client,
    collection_requests,
    members,
    org,
    profiles,
    seed,
    writes_per_id,
)
from sfmc_pipeline_tests.segment_fixtures import CONFIG

THRESHOLD = 50


class _Clock:
    """Monotonic time that only moves when the writer sleeps (polls never wait for real)."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def _run(client, tmp_path, ids, *, run_id="run-1", timeout=60):
    pipeline = CONFIG.model_copy(update={"sync": CONFIG.sync.model_copy(update={"bulk_threshold": THRESHOLD})})
    ledger = SyncLedger(tmp_path / "ledger.sqlite", client.target_id)
    clock = _Clock()
    writer = BulkWriter(client, "Contact", state=BulkJobStore.beside(tmp_path / "ledger.sqlite", client.target_id),
                        destination=CONTACTS.name, poll_timeout_seconds=timeout, sleep=clock.sleep, clock=clock,
                        confirm=lambda rows: ledger.record("Contact", CONTACTS.name, run_id, rows))
    try:
        sync = DestinationSync.for_pipeline(pipeline, CONTACTS, client, ledger, run_id=run_id, bulk=writer)
        return sync.run(members(ids), profiles(ids))
    finally:
        ledger.close()


def _bulk_requests(org):
    return [r for r in org.requests if "/jobs/ingest" in r.path]


def test_below_the_threshold_collections_at_it_one_bulk_job(org, client, tmp_path):
    small = [cid(i) for i in range(THRESHOLD - 1)]
    seed(org, small)
    out = _run(client(), tmp_path / "small", small)
    assert out.requests == out.min_requests == 1 and not out.bulk_jobs and not _bulk_requests(org)

    large = [cid(i) for i in range(1000, 1000 + 3 * THRESHOLD)]
    seed(org, large)
    before = len(collection_requests(org))
    out = _run(client(), tmp_path / "large", large)
    assert len(out.bulk_jobs) == 1 and out.requests == 0 and len(collection_requests(org)) == before
    assert out.succeeded == len(large) and out.bulk_requests == out.min_requests == 5  # create, upload, close, poll, results
    assert all(org.records["Contact"][rid]["new_customer__c"] == "new_customer:realized" for rid in large)

    again = _run(client(), tmp_path / "large", large, run_id="run-2")  # the ledger holds what the job confirmed
    assert again.to_send == 0 and not again.bulk_jobs


def test_bulk_failures_are_reported_like_collections_failures(org, client, tmp_path):
    ids = [cid(i) for i in range(THRESHOLD)]
    seed(org, ids)
    org.reject_bulk_records({ids[3]: ("FIELD_CUSTOM_VALIDATION_EXCEPTION", "Email must be corporate", ["Email"])})
    out = _run(client(), tmp_path, ids)
    assert out.succeeded == THRESHOLD - 1 and out.failed == {"FIELD_CUSTOM_VALIDATION_EXCEPTION": 1}
    [error] = out.errors
    assert (error["record_id"], error["stage"], error["message"], error["fields"]) == (
        ids[3], "failed", "Email must be corporate", "Email")
    assert ids[3] in out.unsettled


def test_a_bare_lock_code_from_bulk_is_resent_through_collections(org, client, tmp_path):
    ids = [cid(i) for i in range(THRESHOLD)]
    seed(org, ids)
    org.reject_bulk_records({ids[5]: "UNABLE_TO_LOCK_ROW"})  # sf__Error as some orgs serve it: the code alone
    out = _run(client(), tmp_path, ids)
    assert (out.succeeded, out.failed_total, out.errors) == (THRESHOLD, 0, [])
    assert out.requests == 1 and writes_per_id(org)[ids[5]] == 1  # one Collections request, after the Bulk job
    assert org.records["Contact"][ids[5]]["new_customer__c"] == "new_customer:realized"


def test_a_job_left_processing_is_settled_by_the_next_run_and_never_sent_twice(org, client, tmp_path):
    ids = [cid(i) for i in range(THRESHOLD)]
    seed(org, ids)
    org.stall_bulk_jobs(True)  # the job stays InProgress: the first run's poll times out
    first = _run(client(), tmp_path, ids, timeout=10)
    assert first.pending == THRESHOLD and first.succeeded == 0 and len(first.bulk_jobs) == 1

    org.stall_bulk_jobs(False)
    org.process_bulk_jobs()  # Salesforce finishes it between the runs
    second = _run(client(), tmp_path, ids, run_id="run-2")
    assert second.bulk_recovered == THRESHOLD and second.to_send == 0 and not second.bulk_jobs
    assert set(writes_per_id(org).values()) == {1}  # every record written exactly once
