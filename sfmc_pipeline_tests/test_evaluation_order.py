"""Contract: evaluations only move forward. An evaluation date earlier than the last successful
evaluation's is refused before anything is written (memberships, statuses, the segment baseline, the
CRM and its ledger stay as they were), with a message naming both dates and how to evaluate the earlier
date on purpose (run config ``accept_earlier_as_of``); the same date again stays a repeat; an accepted
earlier date becomes the new baseline."""

from pathlib import Path

import dagster as dg

from sfmc_pipeline.datasets.storage import DatasetStore
from sfmc_pipeline_tests.flow_fixtures import (
    ASSETS,
    asset_metadata,
    ledger_rows,
    local_crm_records,
    local_resources,
    materialize,
    step_failures,
)
from sfmc_pipeline_tests.tiny_sample import write_tiny_sample


def _as_of(date: str, **extra) -> dict:
    return {"ops": {"segment_memberships": {"config": {"as_of": date, **extra}}}}


def _state(storage: Path) -> dict:
    store = DatasetStore(storage)
    return {
        "memberships": store.dataset_path("segment_memberships").read_bytes(),
        "statuses": store.dataset_path("segment_statuses").read_bytes(),
        "baseline": (store.state_path("segments") / "evaluations.json").read_text(),
        "crm": local_crm_records(storage),
        "ledger": ledger_rows(storage),
    }


def test_an_earlier_evaluation_date_is_refused_before_anything_is_written(tmp_path):
    sample, storage = write_tiny_sample(tmp_path / "sample"), tmp_path / "storage"
    resources = local_resources(storage, sample)
    first = materialize(ASSETS, resources, run_config=_as_of("2026-11-21"))
    assert first.success, step_failures(first)
    before = _state(storage)

    older = materialize(ASSETS, resources, run_config=_as_of("2026-11-20"))
    assert not older.success
    message = step_failures(older)["segment_memberships"]
    assert "2026-11-20 (run config as_of)" in message and "2026-11-21" in message
    assert "accept_earlier_as_of: true" in message
    assert _state(storage) == before  # nothing written: not the memberships, statuses, baseline, CRM or ledger

    again = materialize(ASSETS, resources, run_config=_as_of("2026-11-21"))
    assert again.success, step_failures(again)
    assert asset_metadata(again, "segment_statuses")["repeat_of_latest_evaluation"] is True
    assert _state(storage)["crm"] == before["crm"]

    accepted = materialize(ASSETS, resources, run_config=_as_of("2026-11-20", accept_earlier_as_of=True))
    assert accepted.success, step_failures(accepted)
    meta = asset_metadata(accepted, "segment_statuses")
    assert (meta["as_of"], meta["baseline_as_of"]) == ("2026-11-20", "2026-11-21")
    assert asset_metadata(accepted, "segment_memberships")["accepted_earlier_as_of"] is True
    # from now on 2026-11-20 is the latest evaluation: evaluating it again is a repeat, not a refusal
    assert materialize(ASSETS, resources, run_config=_as_of("2026-11-20")).success


def test_statuses_refuse_memberships_older_than_the_baseline(tmp_path):
    """The guard holds on the statuses step too: memberships evaluated for an earlier date by an older
    version of the pipeline (no acceptance recorded) are not turned into statuses."""
    sample, storage = write_tiny_sample(tmp_path / "sample"), tmp_path / "storage"
    resources = local_resources(storage, sample)
    assert materialize(ASSETS, resources, run_config=_as_of("2026-11-20")).success
    store = DatasetStore(storage)
    memberships_meta = store.dataset_path("segment_memberships").with_suffix(".json")
    earlier = memberships_meta.read_text()
    assert materialize(ASSETS, resources, run_config=_as_of("2026-11-21")).success
    memberships_meta.write_text(earlier)  # as an older run left it, without accepted_earlier_as_of
    result = materialize(ASSETS, resources, selection=dg.AssetSelection.assets("segment_statuses"))
    assert not result.success
    assert "2026-11-20" in step_failures(result)["segment_statuses"]
