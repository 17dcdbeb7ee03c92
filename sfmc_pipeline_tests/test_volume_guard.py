"""Contract: the volume guard (check ``row_volume_stable``). A dataset whose valid rows are 0, or
fell by more than ``settings.max_row_drop`` (default 20%) below the most valid rows of the
successful materializations in the last ``settings.guard_window_days`` (default 7; the last success
when none is that recent), fails its step before anything downstream runs: the message gives both
counts and names both overrides (run config ``accept_volume_change`` and the extension's
``max_row_drop`` / ``allow_empty``), the previous dataset and its count stay in place, segments and
the CRM sync do not run and the CRM is untouched. Two steps within the limit that add up beyond it
fail like one; an accepted drop starts a new window; a state file of the old single-count form keeps
working. An empty first extract fails unless the extension allows it; ``accept_volume_change`` lets a
drop through with a WARN check; a per-extension ``max_row_drop`` raises the limit. The runs read a sample of
120 valid profiles built like the tiny sample (``tiny_sample.py``)."""

import csv
import datetime as dt
import json
import logging
from pathlib import Path

import dagster as dg
import pytest
import yaml

from sfmc_pipeline.config.loader import parse_pipeline_config
from sfmc_pipeline.datasets.storage import DatasetStore
from sfmc_pipeline.defs.assets.datasets import build_dataset_asset
from sfmc_pipeline.settings import DEFAULT_CONFIG_PATH
from sfmc_pipeline_tests.flow_fixtures import (
    ASSETS as FULL_FLOW,
)
from sfmc_pipeline_tests.flow_fixtures import (
    asset_metadata,
    check_evaluations,
    ledger_rows,
    local_crm_records,
    local_resources,
    materialize,
    plain_values,
    step_failures,
)
from sfmc_pipeline_tests.segment_fixtures import CONFIG
from sfmc_pipeline_tests.tiny_sample import tiny_profiles, write_tiny_sample

ACCEPT = {"ops": {"contacts": {"config": {"accept_volume_change": True}}}}
ACCEPT_HINT = "`ops: {contacts: {config: {accept_volume_change: true}}}`"


def _config_with_contacts(**overrides):
    """The shipped config with ``overrides`` set on the Contacts extension."""
    raw = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text(encoding="utf-8"))
    (contacts,) = [ext for ext in raw["data_extensions"] if ext["asset"] == "contacts"]
    contacts.update(overrides)
    return parse_pipeline_config(raw, source="test config")


def _contacts_asset(config=CONFIG, clock=None):
    return [build_dataset_asset(config.extension("contacts"), config, **({"clock": clock} if clock else {}))]


PROFILES = 120  # all valid: the shares kept below give whole row counts (e.g. 0.72 -> 86, a drop of 28%)


def _write_sample(folder: Path) -> Path:
    """The sample of PROFILES profiles at ``folder``, written afresh (its Contacts.csv complete again)."""
    return write_tiny_sample(folder, contacts=tiny_profiles(PROFILES))


@pytest.fixture()
def sample(tmp_path) -> Path:
    return _write_sample(tmp_path / "sample")


@pytest.fixture()
def storage(tmp_path) -> Path:
    path = tmp_path / "storage"
    path.mkdir()
    return path


def _run(assets, sample: Path, storage: Path, run_config=None, instance=None):
    return materialize(assets, local_resources(storage, sample), run_config=run_config, instance=instance)


def _keep_contacts(sample: Path, share: float) -> None:
    """Rewrite Contacts.csv with its header and the first ``share`` of its rows (0: header only)."""
    path = sample / "Contacts.csv"
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        header, rows = reader.fieldnames, list(reader)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, header)
        writer.writeheader()
        writer.writerows(rows[: round(len(rows) * share)])


def _failure(result, step: str) -> str:
    failures = step_failures(result)
    assert step in failures, f"step {step} did not fail"
    return failures[step]


def _volume_check(result) -> dg.AssetCheckEvaluation:
    (check,) = [c for c in check_evaluations(result)
                if c.asset_key == dg.AssetKey("contacts") and c.check_name == "row_volume_stable"]
    return check


def _rows_valid(result) -> int:
    return asset_metadata(result, "contacts")["rows_valid"]


def _count_file(storage: Path) -> Path:
    return storage / "state" / "datasets" / "contacts.json"


def _contents(*paths: Path) -> dict[Path, bytes]:
    return {path: path.read_bytes() for path in paths if path.exists()}


def test_header_only_contacts_fails_before_segments_and_leaves_the_crm_untouched(sample, storage):
    first = _run(FULL_FLOW, sample, storage)
    assert first.success
    previous = _rows_valid(first)
    store = DatasetStore(storage)
    crm, ledger = local_crm_records(storage), ledger_rows(storage)
    assert ledger and any(ledger.values())
    kept = _contents(store.dataset_path("contacts"), store.dataset_path("segment_statuses"), _count_file(storage),
                     storage / "state" / "segments" / "evaluations.json")

    _keep_contacts(sample, 0)
    second = _run(FULL_FLOW, sample, storage)

    assert not second.success
    message = _failure(second, "contacts")
    assert "no valid rows" in message and f"{previous:,}" in message
    assert ACCEPT_HINT in message and "`allow_empty: true`" in message
    check = _volume_check(second)
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
    meta = plain_values(check.metadata)
    assert meta["rows_valid"] == 0 and meta["previous_rows_valid"] == previous
    materialized = {e.asset_key.to_user_string() for e in second.get_asset_materialization_events()}
    assert materialized == {"campaign_engagement", "activities"}  # nothing downstream of contacts ran
    assert _contents(*kept) == kept  # dataset, count, statuses, baseline as they were
    assert local_crm_records(storage) == crm and ledger_rows(storage) == ledger
    assert len(kept) == 4


def test_an_empty_first_extract_fails_unless_the_extension_allows_it(sample, storage):
    _keep_contacts(sample, 0)
    refused = _run(_contacts_asset(), sample, storage)
    assert not refused.success
    message = _failure(refused, "contacts")
    assert "no valid rows" in message and "no earlier materialization" in message and "`allow_empty: true`" in message
    assert not DatasetStore(storage).dataset_path("contacts").exists() and not _count_file(storage).exists()

    allowed = _run(_contacts_asset(_config_with_contacts(allow_empty=True)), sample, storage)
    assert allowed.success
    assert _volume_check(allowed).passed and _rows_valid(allowed) == 0
    assert len(DatasetStore(storage).read_dataset("contacts")) == 0


def test_a_drop_beyond_the_limit_fails_and_one_within_it_passes(sample, storage):
    first = _run(_contacts_asset(), sample, storage)
    assert first.success
    previous = _rows_valid(first)
    dataset = DatasetStore(storage).dataset_path("contacts")
    kept = _contents(dataset, _count_file(storage))

    _keep_contacts(sample, 0.75)
    dropped = _run(_contacts_asset(), sample, storage)
    assert not dropped.success
    check = _volume_check(dropped)
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
    now = plain_values(check.metadata)["rows_valid"]
    assert 0.7 * previous < now < 0.8 * previous and plain_values(check.metadata)["max_drop"] == 0.2
    message = _failure(dropped, "contacts")
    assert f"{now:,} valid rows" in message and f"{previous:,} at the last successful materialization" in message
    assert ACCEPT_HINT in message and "`max_row_drop`" in message
    assert _contents(*kept) == kept and len(kept) == 2

    _write_sample(sample)
    _keep_contacts(sample, 0.85)
    within = _run(_contacts_asset(), sample, storage)
    assert within.success
    assert _volume_check(within).passed
    assert len(DatasetStore(storage).read_dataset("contacts")) == _rows_valid(within) < 0.9 * previous
    assert f'"rows_valid": {_rows_valid(within)}' in _count_file(storage).read_text()  # the new count is the baseline


def test_accept_volume_change_lets_a_drop_through_with_a_warning(sample, storage):
    previous = _rows_valid(_run(_contacts_asset(), sample, storage))
    _keep_contacts(sample, 0.75)
    instance = dg.DagsterInstance.ephemeral()
    accepted = _run(_contacts_asset(), sample, storage, run_config=ACCEPT, instance=instance)
    assert accepted.success
    (warning,) = [e.user_message for e in instance.all_logs(accepted.run_id)
                  if e.level == logging.WARNING and "valid rows against" in (e.user_message or "")]
    assert f"{previous:,} at the last successful materialization" in warning and "accepted for this run" in warning
    assert "not updated" not in warning and "new baseline" in warning
    check = _volume_check(accepted)
    assert check.passed and check.severity == dg.AssetCheckSeverity.WARN
    meta = plain_values(check.metadata)
    assert meta["accepted_by_run_config"] is True and meta["previous_rows_valid"] == previous
    assert len(DatasetStore(storage).read_dataset("contacts")) == _rows_valid(accepted) < 0.8 * previous
    assert f'"rows_valid": {_rows_valid(accepted)}' in _count_file(storage).read_text()


def test_a_per_extension_max_row_drop_raises_the_limit(sample, storage):
    lenient = _contacts_asset(_config_with_contacts(max_row_drop=0.5))
    previous = _rows_valid(_run(lenient, sample, storage))
    _keep_contacts(sample, 0.75)
    passed = _run(lenient, sample, storage)
    assert passed.success
    check = _volume_check(passed)
    assert check.passed and plain_values(check.metadata)["max_drop"] == 0.5
    assert plain_values(check.metadata)["accepted_by_run_config"] is False
    assert _rows_valid(passed) < 0.8 * previous

    _keep_contacts(sample, 0.4)  # 40% of the 75% kept: a 70% drop, beyond even this limit
    assert not _run(lenient, sample, storage).success


@pytest.mark.parametrize("damaged", ["count", "dataset"])
def test_a_damaged_count_or_previous_dataset_fails_with_the_file_and_the_fix(sample, storage, damaged):
    """The guard's previous count comes from its state file, or (landed before counts were kept) from the
    dataset itself; either one damaged fails the step naming the file, not with a raw parser error."""
    path = _count_file(storage) if damaged == "count" else DatasetStore(storage).dataset_path("contacts")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not what it should be")
    result = _run(_contacts_asset(), sample, storage)
    assert not result.success
    (event,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    description = event.step_failure_data.user_failure_data.description
    assert description.startswith(f"{path} cannot be read as ")
    assert "Delete it" in description and "Traceback" not in event.step_failure_data.error.message
    assert path.read_bytes() == b"not what it should be"  # the evidence is left in place


class Clock:
    def __init__(self):
        self.now = dt.datetime(2026, 11, 20, 8, tzinfo=dt.timezone.utc)

    def __call__(self) -> dt.datetime:
        return self.now


def test_two_steps_within_the_limit_are_caught_like_one_against_the_window(sample, storage):
    clock = Clock()
    assets = _contacts_asset(clock=clock)
    full = _rows_valid(_run(assets, sample, storage))
    clock.now += dt.timedelta(days=1)
    _keep_contacts(sample, 0.85)
    first_step = _run(assets, sample, storage)  # about 15% fewer: within 20% of the window's most
    assert first_step.success
    step = _rows_valid(first_step)

    _write_sample(sample)
    _keep_contacts(sample, 0.72)  # another 15% fewer than the last run, 28% fewer than two days ago
    clock.now += dt.timedelta(days=1)
    second_step = _run(assets, sample, storage)
    assert not second_step.success
    message = _failure(second_step, "contacts")
    assert (f"against {full:,}, the most valid rows of a successful materialization in the last 7 day(s) "
            "(on 2026-11-20 08:00 UTC") in message
    meta = plain_values(_volume_check(second_step).metadata)
    assert (meta["reference_rows_valid"], meta["previous_rows_valid"]) == (full, step)
    assert meta["reference_materialized_at"] == "2026-11-20T08:00:00+00:00" and meta["guard_window_days"] == 7
    assert 0.27 < meta["drop"] < 0.29

    accepted = _run(assets, sample, storage, run_config=ACCEPT)  # a real change: accepted, a new window starts
    assert accepted.success and _volume_check(accepted).severity == dg.AssetCheckSeverity.WARN
    clock.now += dt.timedelta(hours=4)
    assert _run(assets, sample, storage).success  # the same rows again do not trip over the accepted drop


def test_counts_older_than_the_window_no_longer_count(sample, storage):
    clock = Clock()
    assets = _contacts_asset(clock=clock)
    _run(assets, sample, storage)
    clock.now += dt.timedelta(days=1)
    _keep_contacts(sample, 0.85)
    step = _rows_valid(_run(assets, sample, storage))
    _write_sample(sample)
    _keep_contacts(sample, 0.72)
    clock.now += dt.timedelta(days=7, hours=1)  # the full count is 8 days old: the last success is the reference
    passed = _run(assets, sample, storage)
    assert passed.success
    meta = plain_values(_volume_check(passed).metadata)
    assert meta["reference_rows_valid"] == meta["previous_rows_valid"] == step


def test_a_state_file_of_the_old_single_count_form_keeps_working(sample, storage):
    _count_file(storage).parent.mkdir(parents=True)
    _count_file(storage).write_text(json.dumps({"rows_valid": 160, "run_id": "an-older-run",
                                                "materialized_at": "2026-11-19T08:00:00+00:00"}))
    refused = _run(_contacts_asset(), sample, storage)  # 120 valid rows: 25% below 160
    assert "against 160 at the last successful materialization, a drop of 25%" in _failure(refused, "contacts")
    accepted = _run(_contacts_asset(), sample, storage, run_config=ACCEPT)
    assert accepted.success
    state = json.loads(_count_file(storage).read_text())
    assert state["rows_valid"] == _rows_valid(accepted) and [e["rows_valid"] for e in state["history"]] == [
        _rows_valid(accepted)]
