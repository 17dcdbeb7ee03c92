"""Contract: a bad environment fails with a message naming the path and the fix, never with a raw
traceback: a storage directory whose parent is missing, a read-only storage directory, a storage
path that is a file (or lies under one), a damaged parquet dataset, a ledger that is not SQLite.
Directly (``open_store``, ``StorageResource.get_store``, ``read_parquet``, ``atomic_path``,
``SyncLedger``) and at the asset level, where the step fails with that message. Temporary files
left by a killed write are removed by the next write of the same dataset, and only those."""

import tempfile
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from sfmc_pipeline.crm.ledger import SyncLedger
from sfmc_pipeline.datasets.storage import (
    DatasetStore,
    StorageError,
    atomic_path,
    open_store,
    read_parquet,
    write_json,
    write_parquet,
)
from sfmc_pipeline.defs.assets.crm import build_crm_assets, ledger_path
from sfmc_pipeline.defs.assets.datasets import build_dataset_assets
from sfmc_pipeline.defs.assets.segments import build_segment_assets
from sfmc_pipeline.defs.resources.salesforce import SalesforceResource
from sfmc_pipeline.defs.resources.sfmc import SfmcResource
from sfmc_pipeline.defs.resources.storage import StorageResource
from sfmc_pipeline_tests.flow_fixtures import materialize
from sfmc_pipeline_tests.segment_fixtures import CONFIG, contact, typed

SETTING = "SFMC_PIPELINE_STORAGE"


def _permission_bits_apply() -> bool:
    """False for root (or any process with CAP_DAC_OVERRIDE): it writes into read-only directories."""
    with tempfile.TemporaryDirectory() as tmp:
        locked = Path(tmp) / "locked"
        locked.mkdir(mode=0o555)
        try:
            (locked / "probe").write_text("x")
        except PermissionError:
            return True
        finally:
            locked.chmod(0o755)
        return False


READ_ONLY_IS_ENFORCED = _permission_bits_apply()
NEEDS_PERMISSIONS = pytest.mark.skipif(
    not READ_ONLY_IS_ENFORCED,
    reason="running as root (or with CAP_DAC_OVERRIDE): permission bits are ignored; the storage-under-a-file "
    "cases cover an unusable directory here",
)


def _store_error(base) -> str:
    with pytest.raises(StorageError) as info:
        open_store(base, setting=SETTING)
    return str(info.value)


# --- the storage directory -------------------------------------------------------------------------


def test_missing_parent_is_not_created(tmp_path):
    base = tmp_path / "no-such-dir" / "storage"
    message = _store_error(base)
    assert f"Storage directory {base} does not exist, nor does its parent {base.parent}" in message
    assert "Create it, or point SFMC_PIPELINE_STORAGE at an existing directory" in message
    assert not base.parent.exists()  # a typo in the path does not grow a directory tree
    with pytest.raises(StorageError) as info:
        StorageResource(base_dir=str(base)).get_store()
    assert str(info.value) == message


def test_missing_directory_with_an_existing_parent_is_created(tmp_path):
    store = StorageResource(base_dir=str(tmp_path / "storage")).get_store()
    assert store.base_dir == tmp_path / "storage" and store.base_dir.is_dir()
    assert list(store.base_dir.iterdir()) == []  # the write check leaves nothing behind


def test_storage_path_that_is_a_file(tmp_path):
    base = tmp_path / "storage"
    base.write_text("not a directory")
    assert _store_error(base) == (
        f"Storage path {base} is not a directory; point SFMC_PIPELINE_STORAGE at a directory."
    )


def test_storage_path_under_a_regular_file(tmp_path):
    # Works as root too: no permission bits are involved.
    (tmp_path / "file").write_text("x")
    base = tmp_path / "file" / "storage"
    message = _store_error(base)
    assert f"its parent {base.parent} is a file, not a directory" in message
    assert "Point SFMC_PIPELINE_STORAGE at a directory" in message
    assert "does not exist" not in message  # the parent does exist: it is just not a directory


@NEEDS_PERMISSIONS
def test_read_only_storage_directory(tmp_path):
    base = tmp_path / "storage"
    base.mkdir()
    base.chmod(0o555)
    try:
        message = _store_error(base)
        missing_child = _store_error(base / "sub")  # cannot be created inside a read-only parent
    finally:
        base.chmod(0o755)
    assert f"Cannot write to the storage directory {base} (Permission denied)" in message
    assert "Make it writable for this user, or point SFMC_PIPELINE_STORAGE at a writable directory" in message
    assert f"Cannot write to the storage directory {base / 'sub'}" in missing_child


def test_a_file_where_a_dataset_directory_should_be(tmp_path):
    (tmp_path / "datasets").write_text("not a directory")
    with pytest.raises(StorageError) as info:
        write_parquet(pd.DataFrame({"a": [1]}), tmp_path / "datasets" / "x.parquet")
    message = str(info.value)
    assert f"Cannot write {tmp_path / 'datasets' / 'x.parquet'}" in message
    assert f"Make sure {tmp_path / 'datasets'} is a writable directory" in message and SETTING in message


# --- files in it -----------------------------------------------------------------------------------


def _parquet_bytes(tmp_path) -> bytes:
    path = write_parquet(pd.DataFrame({"a": range(1000), "b": ["x" * 10] * 1000}), tmp_path / "good.parquet")
    return path.read_bytes()


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: b"",  # emptied
        lambda data: b"this is not parquet\n" * 5,  # something else written there
        lambda data: data[: len(data) // 2],  # truncated (killed copy)
        lambda data: data[:200] + bytes(b ^ 0xFF for b in data[200:600]) + data[600:],  # corrupt pages
    ],
    ids=["empty", "garbage", "truncated", "corrupt-pages"],
)
def test_damaged_parquet_names_the_file_and_the_fix(tmp_path, damage):
    path = tmp_path / "datasets" / "contacts.parquet"
    path.parent.mkdir()
    path.write_bytes(damage(_parquet_bytes(tmp_path)))
    with pytest.raises(StorageError) as info:
        read_parquet(path)
    message = str(info.value)
    assert message.startswith(f"{path} cannot be read as parquet (")
    assert "Delete it and materialize the asset that writes it again." in message
    with pytest.raises(StorageError, match="cannot be read as parquet"):
        DatasetStore(tmp_path).read_dataset("contacts")


def test_a_directory_in_place_of_a_dataset_is_not_read_as_empty(tmp_path):
    path = tmp_path / "contacts.parquet"
    path.mkdir()
    with pytest.raises(StorageError, match=r"is a directory, not a parquet file .* Delete it and materialize"):
        read_parquet(path)


def test_ledger_that_is_not_sqlite(tmp_path):
    path = tmp_path / "state" / "crm" / "ledger.sqlite"
    path.parent.mkdir(parents=True)
    path.write_text("definitely not a database\n" * 100)
    with pytest.raises(StorageError) as info:
        SyncLedger(path, "local:x")
    message = str(info.value)
    assert f"The sync ledger {path} cannot be opened" in message
    assert "move it away: the next sync is then a first sync" in message


# --- temporary files of a killed write -------------------------------------------------------------


def test_next_write_removes_temporaries_of_a_killed_write_of_that_dataset_only(tmp_path):
    datasets = tmp_path / "datasets"
    datasets.mkdir()
    stale = [datasets / ".contacts.parquet.k1ll3d_a.tmp", datasets / ".contacts.parquet.x9.tmp"]
    others = [
        datasets / ".activities.parquet.k1ll3d_b.tmp",  # another dataset's
        datasets / ".contacts.parquet.bak.k1ll3d_c.tmp",  # another target's (contacts.parquet.bak)
        datasets / "contacts.parquet.notes.tmp",  # not a temporary of ours at all
    ]
    for path in stale + others:
        path.write_bytes(b"half a dataset")
    DatasetStore(tmp_path).write_dataset("contacts", pd.DataFrame({"a": [1, 2]}))
    assert sorted(p.name for p in datasets.iterdir()) == sorted(["contacts.parquet", *(p.name for p in others)])
    assert len(read_parquet(datasets / "contacts.parquet")) == 2

    meta = datasets / "segment_memberships.json"
    (datasets / ".segment_memberships.json.abcdefgh.tmp").write_text("{")
    write_json({"as_of": "2026-11-20"}, meta)
    assert not list(datasets.glob(".segment_memberships.json.*.tmp"))


def test_a_failed_write_leaves_no_temporary_and_says_why(tmp_path):
    target = tmp_path / "datasets" / "x.parquet"
    with pytest.raises(StorageError, match=r"Cannot write .*x\.parquet \(No space left on device\)"):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise OSError(28, "No space left on device")
    assert list(target.parent.iterdir()) == []


# --- at the asset level ----------------------------------------------------------------------------


@pytest.fixture()
def header_only_sample(tmp_path):
    """Extracts with no rows: the dataset steps reach the storage directory at once."""
    sample = tmp_path / "sample"
    sample.mkdir()
    for ext in CONFIG.data_extensions:
        (sample / f"{ext.key}.csv").write_text(",".join(c.name for c in ext.columns) + "\n", encoding="utf-8")
    return sample


def _failures(result) -> dict[str, dg.DagsterEvent]:
    return {e.step_key: e for e in result.all_events if e.event_type_value == "STEP_FAILURE"}


def _assert_clean_failure(event: dg.DagsterEvent, expected: str) -> None:
    """The step failed with ``expected`` as its description, and nothing but it."""
    assert event.step_failure_data.user_failure_data.description == expected
    error = event.step_failure_data.error
    assert error.cls_name == "Failure" and error.cause is None and error.context is None
    assert "Traceback" not in error.message and 'File "' not in error.message


@pytest.mark.parametrize("where", ["missing-parent", "a-file", "under-a-file"])
def test_dataset_steps_fail_with_the_storage_message(tmp_path, header_only_sample, where):
    if where == "missing-parent":
        base = tmp_path / "missing" / "storage"
    elif where == "a-file":
        base = tmp_path / "storage"
        base.write_text("x")
    else:
        (tmp_path / "file").write_text("x")
        base = tmp_path / "file" / "storage"
    expected = _store_error(base)
    result = materialize(build_dataset_assets(CONFIG), {
        "sfmc": SfmcResource(sample_dir=str(header_only_sample)), "storage": StorageResource(base_dir=str(base))})
    assert not result.success
    failures = _failures(result)
    assert set(failures) == {e.asset for e in CONFIG.data_extensions}
    for event in failures.values():
        _assert_clean_failure(event, expected)


@NEEDS_PERMISSIONS
def test_dataset_steps_fail_on_a_read_only_storage_directory(tmp_path, header_only_sample):
    base = tmp_path / "storage"
    base.mkdir()
    base.chmod(0o555)
    try:
        expected = _store_error(base)
        result = materialize(build_dataset_assets(CONFIG)[:1], {
            "sfmc": SfmcResource(sample_dir=str(header_only_sample)), "storage": StorageResource(base_dir=str(base))})
    finally:
        base.chmod(0o755)
    _assert_clean_failure(_failures(result)["contacts"], expected)


def test_segment_step_fails_on_a_damaged_profile_dataset(tmp_path, header_only_sample):
    store = DatasetStore(tmp_path / "storage")
    path = store.dataset_path("contacts")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"PAR1 this was cut short")
    result = materialize(build_segment_assets(CONFIG)[:1], {
        "sfmc": SfmcResource(sample_dir=str(header_only_sample)),
        "storage": StorageResource(base_dir=str(store.base_dir))})
    assert not result.success
    event = _failures(result)["segment_memberships"]
    description = event.step_failure_data.user_failure_data.description
    assert description.startswith(f"{path} cannot be read as parquet (")
    assert description.endswith("Delete it and materialize the asset that writes it again.")
    _assert_clean_failure(event, description)


def test_sync_step_fails_on_a_ledger_that_is_not_sqlite(tmp_path):
    store = DatasetStore(tmp_path / "storage")
    store.write_dataset("contacts", typed("contacts", [contact(1)]))
    store.write_dataset("segment_statuses", pd.DataFrame(
        {"profile_key": pd.Series(dtype="string"), "segment": pd.Series(dtype="string"),
         "status": pd.Series(dtype="string"), "held": pd.Series(dtype=bool)}))
    ledger = ledger_path(store)
    ledger.parent.mkdir(parents=True)
    ledger.write_text("not a database\n" * 100)
    result = materialize(build_crm_assets(CONFIG)[:1], {
        "salesforce": SalesforceResource(), "storage": StorageResource(base_dir=str(store.base_dir))})
    assert not result.success
    event = _failures(result)["salesforce__contacts"]
    description = event.step_failure_data.user_failure_data.description
    assert description.startswith(f"The sync ledger {ledger} cannot be opened (DatabaseError: file is not a database)")
    assert "move it away" in description
    _assert_clean_failure(event, description)
    assert ledger.read_text().startswith("not a database")  # the evidence is left in place


def test_dataset_step_with_a_damaged_previous_dataset_and_no_volume_state(tmp_path, header_only_sample):
    store = DatasetStore(tmp_path / "storage")
    path = store.dataset_path("contacts")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not parquet")
    result = materialize(build_dataset_assets(CONFIG)[:1], {
        "sfmc": SfmcResource(sample_dir=str(header_only_sample)),
        "storage": StorageResource(base_dir=str(store.base_dir))})
    event = _failures(result)["contacts"]
    description = event.step_failure_data.user_failure_data.description
    assert description.startswith(f"{path} cannot be read as parquet")
    _assert_clean_failure(event, description)


def test_a_dataset_step_removes_temporaries_of_its_killed_write(tmp_path, header_only_sample):
    store = DatasetStore(tmp_path / "storage")
    rejected = store.rejected_quarantine_path("contacts")
    rejected.parent.mkdir(parents=True)
    stale = rejected.parent / ".contacts.parquet.k1ll3d00.tmp"  # what a killed write leaves behind
    other = rejected.parent / ".activities.parquet.k1ll3d00.tmp"
    stale.write_bytes(b"half")
    other.write_bytes(b"half")
    # the empty extract fails the volume guard, after the quarantine it would have landed was written apart
    materialize(build_dataset_assets(CONFIG)[:1], {
        "sfmc": SfmcResource(sample_dir=str(header_only_sample)),
        "storage": StorageResource(base_dir=str(store.base_dir))})
    assert rejected.exists() and not stale.exists()
    assert other.exists()  # another dataset's write is that write's business
    assert not store.quarantine_path("contacts").exists()  # a failed run lands no quarantine
