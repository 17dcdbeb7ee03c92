"""Contract: one run at a time writes to one storage directory (``run_lock.run_lease``, held by
``StorageResource.writing``), from its first writing step to its end. While run A holds the lease
(a step of it writing, or A between its steps and not finished in the Dagster instance), a step of
run B fails at once with ``StorageBusy`` naming run A, its job and its step, and (at the asset
level) reads, sends and writes nothing, whichever job either run belongs to (``__ASSET_JOB``
included); steps of the same run share the lease; a holder killed with SIGKILL holds no lock once
its run is marked finished; and two syncs started together on the same storage never send a
record twice. The runs read the tiny sample (``tiny_sample.py``)."""

import collections
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import pytest

from sfmc_pipeline.datasets.storage import DatasetStore
from sfmc_pipeline.defs.assets.crm import ledger_path, local_db_path
from sfmc_pipeline.defs.jobs import PIPELINE_JOB_NAME, STORAGE_TAG
from sfmc_pipeline.defs.resources.salesforce import SalesforceResource
from sfmc_pipeline.defs.resources.sfmc import SfmcResource
from sfmc_pipeline.defs.resources.storage import run_in_progress
from sfmc_pipeline.runs.lease import ASSET_JOB, StorageBusy, run_lease
from sfmc_pipeline.settings import REPO_ROOT
from sfmc_pipeline_tests.flow_fixtures import (
    ASSETS,
    CONFIG,
    asset_metadata,
    local_resources,
    materialize,
    seed_sample_org,
    step_failures,
)
from sfmc_pipeline_tests.tiny_sample import write_tiny_sample
from sfmc_pipeline_tests.ui_location import ui_location_name

UPSTREAM = dg.AssetSelection.groups("sfmc_datasets", "segments")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """The tiny sample, read (never changed) by the runs of this module."""
    return write_tiny_sample(tmp_path_factory.mktemp("tiny") / "sample")
SYNC_CONTACTS = [dg.AssetKey(["salesforce", "contacts"])]
HOLDER = (
    "import sys\n"
    "from pathlib import Path\n"
    "from sfmc_pipeline.runs.lease import run_lease\n"
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


def _enter(base_dir: Path, run_id: str, step: str = "contacts", **lease) -> None:
    with run_lease(base_dir, run_id, step, **lease):
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


def test_a_run_holds_the_storage_between_its_steps_until_it_ends(tmp_path):
    in_progress = {"run-A": True}  # what the Dagster instance says of each run
    _enter(tmp_path, "run-A", "contacts", job=PIPELINE_JOB_NAME, run_in_progress=in_progress.get)  # step 1 ended
    with pytest.raises(StorageBusy) as refused:
        _enter(tmp_path, "run-B", "campaign_engagement", job=ASSET_JOB, run_in_progress=in_progress.get)
    message = str(refused.value)
    assert f"run run-A (job {PIPELINE_JOB_NAME}), which has not finished" in message
    assert "its last writing step, contacts, ended" in message and "run run-B did not start writing" in message
    _enter(tmp_path, "run-A", "segment_statuses", run_in_progress=in_progress.get)  # its own next step goes on
    in_progress["run-A"] = False  # the run ended
    _enter(tmp_path, "run-B", "campaign_engagement", run_in_progress=in_progress.get)


def test_a_dead_run_holds_the_storage_until_it_is_marked_finished(tmp_path):
    in_progress = {"run-A": True}
    with held_by_process(tmp_path, "run-A", "salesforce__contacts") as holder:
        os.kill(holder.pid, signal.SIGKILL)  # the run's process died: its flock is gone, its run still STARTED
        holder.wait(timeout=10)
    with pytest.raises(StorageBusy) as refused:
        _enter(tmp_path, "run-B", run_in_progress=in_progress.get)
    assert "run run-A, which has not finished" in str(refused.value)
    assert "run monitoring marks it failed, or terminate it in the UI" in str(refused.value)  # the way out
    in_progress["run-A"] = False  # run monitoring marked it failed
    _enter(tmp_path, "run-B", run_in_progress=in_progress.get)
    assert not (tmp_path / "state" / "locks" / "run-run-A.lock").exists()


def test_the_lease_asks_the_dagster_instance_whether_the_holder_run_has_finished():
    with dg.instance_for_test() as instance:
        run = instance.add_run(dg.DagsterRun(job_name=PIPELINE_JOB_NAME, run_id="a" * 36,
                                             status=dg.DagsterRunStatus.STARTED))
        assert run_in_progress(instance, run.run_id) is True
        instance.report_run_failed(run)  # what run monitoring does to a run whose process died
        assert run_in_progress(instance, run.run_id) is False
        assert run_in_progress(instance, "b" * 36) is None  # not a run of this instance: only live steps count


HOLDER_JOB = "hold_job"


@pytest.mark.parametrize("holder, intruder", [(HOLDER_JOB, ASSET_JOB), (ASSET_JOB, HOLDER_JOB)])
def test_another_run_is_refused_while_the_holder_is_between_its_steps_whichever_job(tmp_path, tiny, holder,
                                                                                     intruder):
    resources = local_resources(tmp_path, tiny)
    between, release, seen = threading.Event(), threading.Event(), {}

    @dg.asset(deps=[dg.AssetKey("contacts")])
    def between_steps(context: dg.AssetExecutionContext):  # run A after its first writing step, before its next
        seen.setdefault("run_id", context.run.run_id)  # run A's id (a later run of the job runs this step too)
        between.set()
        assert release.wait(timeout=60)

    own_steps = [dg.AssetKey("contacts"), between_steps.key]
    defs = dg.Definitions(assets=[*ASSETS, between_steps], resources=resources,
                          jobs=[dg.define_asset_job(HOLDER_JOB, selection=own_steps, tags=STORAGE_TAG)])

    def execute(job, selection, instance):
        if job == ASSET_JOB:  # a hand-picked UI materialization: the implicit asset job with a selection
            return defs.resolve_implicit_global_asset_job_def().execute_in_process(
                instance=instance, asset_selection=selection, raise_on_error=False)
        return defs.resolve_job_def(job).execute_in_process(instance=instance, raise_on_error=False)

    intruding = [dg.AssetKey("contacts")] if intruder == ASSET_JOB else None  # the job: its own steps
    results = {}
    with dg.instance_for_test() as instance:
        thread = threading.Thread(target=lambda: results.update(a=execute(holder, own_steps, instance)))
        thread.start()
        try:
            assert between.wait(timeout=60)
            refused = execute(intruder, intruding, instance)
        finally:
            release.set()
            thread.join(timeout=60)
        assert results["a"].success
        after = execute(intruder, intruding, instance)  # run A ended: the storage is free
    assert not refused.success and after.success
    message = step_failures(refused)["contacts"]
    holder_text = f"(job {HOLDER_JOB})" if holder == HOLDER_JOB else f"(assets materialized from the UI, {ASSET_JOB})"
    assert f"is held by run {seen['run_id']} {holder_text}, which has not finished" in message
    assert "its last writing step, contacts, ended" in message


def test_the_run_queue_holds_a_hand_picked_materialization_while_a_pipeline_run_is_in_progress(tmp_path):
    # Dagster's run queue applies the instance's tag limits with this counter; no public API evaluates them.
    from dagster._utils.tags import TagConcurrencyLimitsCounter

    shutil.copy(REPO_ROOT / ".dagster_home" / "dagster.yaml", tmp_path / "dagster.yaml")  # the project's instance
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        limits = instance.get_concurrency_config().run_queue_config.tag_concurrency_limits
    location = {"dagster/code_location": ui_location_name()}  # the tag Dagster gives every run launched for it
    pipeline_run = dg.DagsterRun(job_name=PIPELINE_JOB_NAME, tags={**STORAGE_TAG, **location})
    ui_run = dg.DagsterRun(job_name=ASSET_JOB, tags=location)  # the UI's Materialize: no job tag
    assert TagConcurrencyLimitsCounter(limits, [pipeline_run]).is_blocked(ui_run)
    assert TagConcurrencyLimitsCounter(limits, [ui_run]).is_blocked(pipeline_run)
    assert not TagConcurrencyLimitsCounter(limits, []).is_blocked(ui_run)


def _materialize(resources, selection):
    with dg.DagsterInstance.ephemeral() as instance:  # disposed in the thread that used it
        return materialize(ASSETS, resources, selection=selection, instance=instance)


def _sent(result) -> int:
    return asset_metadata(result, SYNC_CONTACTS[0].to_user_string())["records_sent"]


def test_a_sync_or_dataset_step_of_another_run_writes_nothing_while_the_lease_is_held(tmp_path, tiny):
    resources = local_resources(tmp_path, tiny)
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


def test_a_refused_dataset_step_reads_nothing_from_sfmc(tmp_path, fake_sfmc):
    contacts = CONFIG.extension("contacts")
    fake_sfmc.add_data_extension(contacts.key, [{"SubscriberKey": "003000000000001AAA"}],
                                 primary_key=contacts.primary_key)
    sfmc = SfmcResource(client_id=fake_sfmc.client_id, client_secret=fake_sfmc.client_secret,
                        auth_base_uri=fake_sfmc.auth_base_uri, max_retries=0, backoff_seconds=0.0)
    resources = {**local_resources(tmp_path), "sfmc": sfmc}
    with held_by_process(tmp_path, "run-A", "segment_statuses"):
        refused = _materialize(resources, [dg.AssetKey("contacts")])
    assert "is being written by run run-A" in step_failures(refused)["contacts"]
    assert fake_sfmc.rowset_requests() == []  # refused before reading, not after a full read


@pytest.fixture()
def sample_org(fake_salesforce, tiny):
    """The fake org holding the tiny sample's Contacts and the shipped status fields."""
    return seed_sample_org(fake_salesforce, objects=("Contact",), sample=tiny)


def test_two_concurrent_syncs_never_send_a_record_twice(sample_org, tiny, tmp_path):
    salesforce = SalesforceResource(login_url=sample_org.base_url, client_id=sample_org.client_id,
                                    client_secret=sample_org.client_secret, username=sample_org.username,
                                    password=sample_org.password, security_token=sample_org.security_token)
    resources = {**local_resources(tmp_path, tiny), "salesforce": salesforce}
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
