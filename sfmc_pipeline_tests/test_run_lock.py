"""Contract: one run at a time writes to one storage directory (``run_lock.run_lease``, held by
``StorageResource.writing``). While a step of run A holds the lease, a step of run B fails at once
with ``StorageBusy`` naming run A and its step, and (at the asset level) sends and writes nothing;
steps of the same run share the lease; a holder killed with SIGKILL leaves no lock behind; and two
syncs started together on the same storage never send a record twice."""

import collections
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import pytest

from sfmc_pipeline.assets.crm import ledger_path, local_db_path
from sfmc_pipeline.datasets.storage import DatasetStore
from sfmc_pipeline.resources.salesforce import SalesforceResource
from sfmc_pipeline.run_lock import StorageBusy, run_lease
from sfmc_pipeline_tests.flow_fixtures import (
    ASSETS,
    asset_metadata,
    local_resources,
    materialize,
    seed_sample_org,
    step_failures,
)

UPSTREAM = dg.AssetSelection.groups("sfmc_datasets", "segments")
SYNC_CONTACTS = [dg.AssetKey(["salesforce", "contacts"])]
REPO_ROOT = Path(__file__).resolve().parent.parent
HOLDER = (
    "import sys\n"
    "from pathlib import Path\n"
    "from sfmc_pipeline.run_lock import run_lease\n"
    "with run_lease(Path(sys.argv[1]), sys.argv[2], sys.argv[3]):\n"
    "    print('held', flush=True)\n"
    "    sys.stdin.read()\n"
)


@contextmanager
def held_by_process(base_dir: Path, run_id: str = "run-A", step: str = "salesforce/contacts"):
    """Another process holding the lease for ``run_id`` / ``step`` until the block ends (then killed)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(base_dir), run_id, step], cwd=REPO_ROOT,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        proc.stdin.close()
        proc.stdout.close()


@contextmanager
def held_by_thread(base_dir: Path, run_id: str, step: str = "contacts"):
    """A thread of this process holding the lease (its own open file, so its own flock) until the block ends."""
    entered, release, errors = threading.Event(), threading.Event(), []

    def hold():
        try:
            with run_lease(base_dir, run_id, step):
                entered.set()
                release.wait(timeout=30)
        except BaseException as exc:  # surfaced below
            errors.append(exc)
            entered.set()

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert entered.wait(timeout=10) and not errors, errors
        yield
    finally:
        release.set()
        thread.join(timeout=10)
    assert not errors, errors


def _enter(base_dir: Path, run_id: str, step: str = "contacts") -> None:
    with run_lease(base_dir, run_id, step):
        pass


def test_another_run_fails_at_once_naming_the_holder_and_its_step(tmp_path):
    with held_by_process(tmp_path, "run-A", "salesforce/contacts"):
        started = time.monotonic()
        with pytest.raises(StorageBusy) as refused:
            _enter(tmp_path, "run-B")
        assert time.monotonic() - started < 5  # refused, not queued
        message = str(refused.value)
        assert "run run-A" in message and "salesforce/contacts" in message and "run-B" in message


def test_a_thread_of_another_run_is_refused_until_the_holder_leaves(tmp_path):
    with held_by_thread(tmp_path, "run-A", "segment_statuses"):
        with pytest.raises(StorageBusy, match=r"run run-A \(step segment_statuses"):
            _enter(tmp_path, "run-B")
    _enter(tmp_path, "run-B")  # released: the next run proceeds


def test_steps_of_the_same_run_share_the_lease(tmp_path):
    with held_by_process(tmp_path, "run-A", "contacts"):
        _enter(tmp_path, "run-A", "activities")  # another step of run A, in another process
        inside = threading.Barrier(3, timeout=10)
        errors = []

        def step(name):
            try:
                with run_lease(tmp_path, "run-A", name):
                    inside.wait()  # both threads inside the lease at once, with the other process
            except BaseException as exc:
                errors.append(exc)

        names = ("campaign_engagement", "segment_memberships")
        threads = [threading.Thread(target=step, args=(name,)) for name in names]
        for thread in threads:
            thread.start()
        inside.wait()
        for thread in threads:
            thread.join(timeout=10)
        assert not errors
        with pytest.raises(StorageBusy, match="run-A"):
            _enter(tmp_path, "run-B")


def test_a_refusal_names_the_holders_live_steps_not_finished_ones(tmp_path):
    with held_by_process(tmp_path, "run-A", "salesforce__contacts"):
        _enter(tmp_path, "run-A", "segment_statuses")  # entered after the live step, and finished
        with held_by_thread(tmp_path, "run-A", "salesforce__leads"):
            with pytest.raises(StorageBusy) as both:
                _enter(tmp_path, "run-B")
        with pytest.raises(StorageBusy) as one:
            _enter(tmp_path, "run-B")
    assert "step salesforce__contacts" in str(both.value) and "step salesforce__leads" in str(both.value)
    assert "salesforce__contacts" in str(one.value)
    for refusal in (both, one):
        assert "segment_statuses" not in str(refusal.value)
    assert "salesforce__leads" not in str(one.value)


def test_a_killed_holder_leaves_no_lock_behind(tmp_path):
    with held_by_process(tmp_path, "run-A") as holder:
        with pytest.raises(StorageBusy):
            _enter(tmp_path, "run-B")
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=10)
        _enter(tmp_path, "run-B")
    assert not (tmp_path / "state" / "locks" / "run-run-A.lock").exists()


def _materialize(resources, selection):
    with dg.DagsterInstance.ephemeral() as instance:  # disposed in the thread that used it
        return materialize(ASSETS, resources, selection=selection, instance=instance)


def _sent(result) -> int:
    return asset_metadata(result, SYNC_CONTACTS[0].to_user_string())["records_sent"]


def test_a_sync_or_dataset_step_of_another_run_writes_nothing_while_the_lease_is_held(tmp_path):
    resources = local_resources(tmp_path)
    assert _materialize(resources, UPSTREAM).success
    store = DatasetStore(tmp_path)
    dataset = store.dataset_path("contacts")
    landed = dataset.read_bytes()

    with held_by_process(tmp_path, "run-A", "salesforce__leads"):
        sync = _materialize(resources, SYNC_CONTACTS)
        contacts = _materialize(resources, [dg.AssetKey("contacts")])
    for result, step in ((sync, "salesforce__contacts"), (contacts, "contacts")):
        assert not result.success
        message = step_failures(result)[step]
        assert "StorageBusy" in message or "is being written by run run-A" in message
        assert "run run-A (step salesforce__leads" in message
    assert not ledger_path(store).exists() and not local_db_path(store).exists()  # nothing sent, nothing recorded
    assert dataset.read_bytes() == landed

    released = _materialize(resources, SYNC_CONTACTS)  # the holder was killed: the lease is free
    assert released.success and _sent(released) > 0


@pytest.fixture()
def sample_org(fake_salesforce):
    """The fake org holding the sample's Contacts and the shipped status fields."""
    return seed_sample_org(fake_salesforce, objects=("Contact",))


def test_two_concurrent_syncs_never_send_a_record_twice(sample_org, tmp_path):
    salesforce = SalesforceResource(login_url=sample_org.base_url, client_id=sample_org.client_id,
                                    client_secret=sample_org.client_secret, username=sample_org.username,
                                    password=sample_org.password, security_token=sample_org.security_token)
    resources = {**local_resources(tmp_path), "salesforce": salesforce}
    assert _materialize(resources, UPSTREAM).success
    start, results = threading.Barrier(2, timeout=30), {}

    def sync(name):
        start.wait()
        results[name] = _materialize(resources, SYNC_CONTACTS)

    threads = [threading.Thread(target=sync, args=(name,)) for name in ("one", "two")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    writes = collections.Counter(record_id for _, record_id, _ in sample_org.write_log)
    assert writes and max(writes.values()) == 1  # each record written once
    succeeded = [r for r in results.values() if r.success]
    assert succeeded and sum(_sent(r) for r in succeeded) == len(writes)
    for failed in (r for r in results.values() if not r.success):
        assert "is being written by run" in step_failures(failed)["salesforce__contacts"]
