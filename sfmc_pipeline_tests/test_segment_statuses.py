"""Contract: statuses are computed against the last successful evaluation (realized / existing /
exited; exited once; re-entry is realized again), persisted with the datasets so they survive
restarts; a failed run does not advance the baseline; re-running an evaluation on unchanged
data yields the same statuses; the segment assets wire it up end to end with metadata."""

import datetime as dt

import dagster as dg
import pandas as pd

from sfmc_pipeline.datasets.storage import DatasetStore
from sfmc_pipeline.defs.assets.datasets import build_dataset_assets
from sfmc_pipeline.defs.assets.segments import build_segment_assets
from sfmc_pipeline.defs.resources.sfmc import SfmcResource
from sfmc_pipeline.defs.resources.storage import StorageResource
from sfmc_pipeline.segments.state import SegmentStateStore
from sfmc_pipeline.segments.engine import SegmentEngine
from sfmc_pipeline.segments.statuses import status_plan
from sfmc_pipeline_tests.segment_fixtures import CONFIG
from sfmc_pipeline_tests.tiny_sample import write_tiny_sample

D1, D2, D3, D4 = (dt.date(2026, 11, d) for d in (1, 2, 3, 4))


def _members(*pairs: tuple[str, str]) -> pd.DataFrame:
    return pd.DataFrame(pairs or [], columns=["profile_key", "segment"], dtype="string")


def _statuses(frame: pd.DataFrame) -> dict[tuple[str, str], str]:
    return {(k, s): st for k, s, st in frame[["profile_key", "segment", "status"]].itertuples(index=False)}


def _evaluate(state: SegmentStateStore, as_of: dt.date, members: pd.DataFrame, run_id: str, commit=True):
    with SegmentEngine.in_memory() as engine:
        current = engine.frame(members)
        baseline, is_repeat = state.baseline_for(engine, as_of, current)
        statuses = engine.to_pandas(status_plan(current, state.members(engine, baseline), None, as_of))
        if commit:
            state.commit(engine, as_of, run_id, current, is_repeat=is_repeat)
    return _statuses(statuses)


def test_transitions_over_evaluations(tmp_path):
    state = SegmentStateStore(DatasetStore(tmp_path))
    # 1st: a and b enter (first evaluation: everything is realized)
    assert _evaluate(state, D1, _members(("a", "s"), ("b", "s")), "r1") == {("a", "s"): "realized", ("b", "s"): "realized"}
    # 2nd: a stays, b exits, c enters
    assert _evaluate(state, D2, _members(("a", "s"), ("c", "s")), "r2") == {
        ("a", "s"): "existing", ("b", "s"): "exited", ("c", "s"): "realized"}
    # 3rd: b stays out (no row), a exits, c stays
    assert _evaluate(state, D3, _members(("c", "s")), "r3") == {("a", "s"): "exited", ("c", "s"): "existing"}
    # 4th: a re-enters: realized again
    assert _evaluate(state, D4, _members(("a", "s"), ("c", "s")), "r4") == {
        ("a", "s"): "realized", ("c", "s"): "existing"}


def test_segments_are_tracked_independently():
    with SegmentEngine.in_memory() as engine:
        plan = status_plan(engine.frame(_members(("a", "s1"), ("a", "s2"))),
                           engine.frame(_members(("a", "s1"), ("a", "s3"))), None, D1)
        statuses = engine.to_pandas(plan)
    assert _statuses(statuses) == {("a", "s1"): "existing", ("a", "s2"): "realized", ("a", "s3"): "exited"}


def test_a_failed_run_does_not_advance_the_baseline(tmp_path):
    state = SegmentStateStore(DatasetStore(tmp_path))
    _evaluate(state, D1, _members(("a", "s")), "r1")
    # a run that computed statuses but failed before committing
    assert _evaluate(state, D2, _members(("b", "s")), "r2-failed", commit=False) == {
        ("a", "s"): "exited", ("b", "s"): "realized"}
    # the retry is compared with the last *successful* evaluation, so it sees the same changes
    assert _evaluate(state, D2, _members(("b", "s")), "r2") == {("a", "s"): "exited", ("b", "s"): "realized"}


def test_rerun_of_the_same_evaluation_yields_the_same_statuses_and_survives_restarts(tmp_path):
    first = _evaluate(SegmentStateStore(DatasetStore(tmp_path)), D1, _members(("a", "s")), "r1")
    second = _evaluate(SegmentStateStore(DatasetStore(tmp_path)), D2, _members(("a", "s"), ("b", "s")), "r2")
    again = _evaluate(SegmentStateStore(DatasetStore(tmp_path)), D2, _members(("a", "s"), ("b", "s")), "r2-again")
    assert first == {("a", "s"): "realized"}
    assert second == again == {("a", "s"): "existing", ("b", "s"): "realized"}
    latest, previous = SegmentStateStore(DatasetStore(tmp_path)).load()
    assert (latest.run_id, previous.run_id) == ("r2", "r1")  # the repeat did not become a new baseline
    # same date, changed data: compared with the latest evaluation (intra-day runs)
    assert _evaluate(SegmentStateStore(DatasetStore(tmp_path)), D2, _members(("b", "s")), "r3") == {
        ("a", "s"): "exited", ("b", "s"): "existing"}
    assert len(list((tmp_path / "state" / "segments").glob("members-*.parquet"))) == 2  # old files cleaned up


def _materialize(tmp_path, as_of=None, sample_dir=None):
    assets = [*build_dataset_assets(CONFIG), *build_segment_assets(CONFIG)]
    run_config = {"ops": {"segment_memberships": {"config": {"as_of": as_of}}}} if as_of else None
    return dg.materialize(
        assets,
        resources={"sfmc": SfmcResource(**({"sample_dir": sample_dir} if sample_dir else {})),
                   "storage": StorageResource(base_dir=str(tmp_path))},
        run_config=run_config,
        raise_on_error=False,
    )


def _metadata(result, asset):
    event = next(e for e in result.get_asset_materialization_events() if e.asset_key.path == [asset])
    return {k: getattr(v, "value", v) for k, v in event.materialization.metadata.items()}


def test_end_to_end_on_the_embedded_default(tmp_path):
    first = _materialize(tmp_path)
    assert first.success
    members = _metadata(first, "segment_memberships")
    assert members["as_of"] == "2026-11-20" and "anchor" in members["as_of_source"]
    for segment in CONFIG.segments:
        assert members[f"members.{segment.name}"] > 0, segment.name  # the sample exercises every segment
    assert members["orphans.campaign_engagement"] > 0 and members["orphans.activities"] > 0
    statuses = _metadata(first, "segment_statuses")
    assert statuses["realized.total"] == members["memberships"] and statuses["existing.total"] == 0
    assert "| segment | members | realized | existing | exited |" in statuses["summary"]
    checks = [e.event_specific_data for e in first.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"
              and e.event_specific_data.asset_key.path == ["segment_statuses"]]
    assert {c.check_name for c in checks} == {"statuses_consistent", "members_are_valid_profiles"}
    assert all(c.passed for c in checks)

    # a later evaluation date: windows move, so some members exit and others stay
    later = _materialize(tmp_path, as_of="2026-12-05")
    assert later.success
    statuses = _metadata(later, "segment_statuses")
    assert statuses["baseline_as_of"] == "2026-11-20"
    assert statuses["existing.total"] > 0 and statuses["exited.total"] > 0
    assert statuses["exited.visited_no_purchase"] > 0  # nobody visited in the 7 days before 2026-12-05
    stored = DatasetStore(tmp_path).read_dataset("segment_statuses")
    assert {"existing", "exited"} <= set(stored["status"])


def test_bad_as_of_fails_clearly(tmp_path, monkeypatch):
    monkeypatch.setenv("SFMC_PIPELINE_AS_OF", "20/11/2026")
    result = _materialize(tmp_path / "storage", sample_dir=str(write_tiny_sample(tmp_path / "sample")))
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "SFMC_PIPELINE_AS_OF '20/11/2026' is not a date; use YYYY-MM-DD" in failure.event_specific_data.error.message


def test_evaluation_date_precedence(monkeypatch):
    from sfmc_pipeline.segments.evaluation_date import resolve_as_of

    configured, anchor, today = dt.date(2026, 1, 1), dt.date(2026, 2, 2), dt.date(2026, 3, 3)
    monkeypatch.delenv("SFMC_PIPELINE_AS_OF", raising=False)
    kwargs = dict(configured=configured, sample_anchor=anchor, today=today)
    assert resolve_as_of(run_config="2026-04-04", **kwargs) == (dt.date(2026, 4, 4), "run config as_of")
    monkeypatch.setenv("SFMC_PIPELINE_AS_OF", "2026-05-05")
    assert resolve_as_of(run_config="2026-04-04", **kwargs)[0] == dt.date(2026, 4, 4)  # run config wins
    assert resolve_as_of(run_config=None, **kwargs) == (dt.date(2026, 5, 5), "SFMC_PIPELINE_AS_OF")
    monkeypatch.delenv("SFMC_PIPELINE_AS_OF")
    assert resolve_as_of(run_config=None, **kwargs)[0] == configured
    assert resolve_as_of(run_config=None, configured=None, sample_anchor=anchor, today=today)[0] == anchor
    assert resolve_as_of(run_config=None, configured=None, sample_anchor=None, today=today) == (today, "today (UTC)")


def test_a_membership_listed_twice_fails_the_blocking_check_and_commits_nothing(tmp_path):
    """A memberships file that lists a (profile, segment) twice (written by something else, or a bug) would give
    that profile two statuses: the blocking check fails, the statuses dataset and the baseline stay as they were."""
    sample = str(write_tiny_sample(tmp_path / "sample"))
    assert _materialize(tmp_path / "storage", sample_dir=sample).success
    store = DatasetStore(tmp_path / "storage")
    before_statuses = store.dataset_path("segment_statuses").read_bytes()
    before_state = SegmentStateStore(store).load()
    members = store.read_dataset("segment_memberships")
    store.write_dataset("segment_memberships", pd.concat([members, members.head(1)], ignore_index=True))
    assets = [*build_dataset_assets(CONFIG), *build_segment_assets(CONFIG)]
    result = dg.materialize(assets, selection=["segment_statuses"], raise_on_error=False, resources={
        "sfmc": SfmcResource(sample_dir=sample), "storage": StorageResource(base_dir=str(store.base_dir))})
    assert not result.success
    check = next(e.event_specific_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"
                 and e.event_specific_data.check_name == "statuses_consistent")
    assert not check.passed
    assert check.metadata["current memberships minus realized and existing rows"].value == 1
    assert store.dataset_path("segment_statuses").read_bytes() == before_statuses
    assert SegmentStateStore(store).load() == before_state
