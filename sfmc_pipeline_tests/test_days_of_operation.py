"""Contract: a green run means the CRM is right, day after day. Ten daily evaluations of a changing org
(``org_simulation``: new, changed, late-arriving, deleted and bad rows every day, a broken then fixed
profile, a record deleted in the CRM, one sync killed mid-way) through the whole flow over real HTTP
against the fake SFMC tenant and the fake Salesforce org. After every day: each run is green, the
datasets hold exactly what SFMC holds (valid rows plus quarantine), the memberships are what the
segment rules give on SFMC's rows, and every record the CRM has holds what the statuses say."""

from __future__ import annotations

import datetime as dt
import os
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import dagster as dg
import pandas as pd

from sfmc_pipeline.crm.standing_failures import listing
from sfmc_pipeline.datasets.merge import raw_keys, typed_keys
from sfmc_pipeline.datasets.storage import DatasetStore
from sfmc_pipeline.datasets.validation import validate_extract
from sfmc_pipeline.defs.assets.crm import build_crm_assets, ledger_path
from sfmc_pipeline.defs.assets.datasets import build_dataset_assets
from sfmc_pipeline.defs.assets.segments import build_segment_assets
from sfmc_pipeline.defs.resources.salesforce import SalesforceResource
from sfmc_pipeline.defs.resources.sfmc import SfmcResource
from sfmc_pipeline.defs.resources.storage import StorageResource
from sfmc_pipeline.sfmc.source import align_columns
from sfmc_pipeline_testing.salesforce_server import FakeSalesforceServer
from sfmc_pipeline_testing.segment_reference import SegmentEvaluator
from sfmc_pipeline_testing.sfmc_server import format_sfmc_value
from sfmc_pipeline_tests.flow_fixtures import edited_config, step_failures
from sfmc_pipeline_tests.org_simulation import SimulatedOrg

DAYS = 10
KILLED_DAY = 6
CRM_DELETION_DAY = 4


def _settings(raw: dict) -> None:
    raw["sync"].update(batch_size=10, concurrent_requests=1)  # several write requests a day: one to kill mid-way


class Pipeline:
    """The whole flow of one config against the fakes, one storage directory, one Dagster instance."""

    def __init__(self, config, sim: SimulatedOrg, storage: Path):
        self.config, self.sim, self.storage = config, sim, storage
        self.instance = dg.DagsterInstance.ephemeral()
        self.managed: set[str] = set()  # profiles that have had a status: the sync writes their records
        self.now = dt.datetime(2026, 11, 20, 23, tzinfo=dt.timezone.utc)
        self.resources = {
            "sfmc": SfmcResource(client_id=sim.sfmc.client_id, client_secret=sim.sfmc.client_secret,
                                 auth_base_uri=sim.sfmc.auth_base_uri, backoff_seconds=0.01),
            "salesforce": SalesforceResource(login_url=sim.org.base_url, client_id=sim.org.client_id,
                                             client_secret=sim.org.client_secret),
            "storage": StorageResource(base_dir=str(storage)),
        }
        self.assets = [*build_dataset_assets(config, clock=lambda: self.now), *build_segment_assets(config),
                       *build_crm_assets(config, clock=lambda: self.now)]

    def run(self, selection=None, *, evaluates: bool = True):
        """One run of ``selection`` (all by default) on the simulated day (``evaluates``: it has the segments)."""
        self.now = dt.datetime.combine(self.sim.today, dt.time(23), tzinfo=dt.timezone.utc)
        as_of = {"ops": {"segment_memberships": {"config": {"as_of": self.sim.today.isoformat()}}}} if evaluates else {}
        return dg.materialize(self.assets, resources=self.resources, run_config=as_of, instance=self.instance,
                              selection=selection, raise_on_error=False)


def test_ten_days_of_a_changing_org(tmp_path, fake_sfmc):
    config = edited_config(tmp_path, _settings)
    with FakeSalesforceServer() as org:
        sim = SimulatedOrg(fake_sfmc, org)
        pipeline = Pipeline(config, sim, tmp_path / "storage")
        for day in range(DAYS):
            if day:
                sim.next_day()
            if day == CRM_DELETION_DAY:
                sim.delete_in_crm(_a_member_that_will_change(pipeline))
            if day == KILLED_DAY:
                run_with_the_sync_killed_mid_way(pipeline, tmp_path / "pipeline.yaml")
            else:
                result = pipeline.run()
                assert result.success, (sim.today, step_failures(result))
            check_datasets_hold_what_sfmc_holds(pipeline)
            check_memberships_follow_sfmc(pipeline)
            check_the_crm_holds_what_the_statuses_say(pipeline)
        # the record deleted in the CRM stands failed (gone), and nothing else does
        with closing(sqlite3.connect(ledger_path(DatasetStore(pipeline.storage)))) as db:
            assert [(row[2], row[3]) for row in listing(db)] == [(rid, "record_gone") for rid in sim.deleted_in_crm]


KILLED_SYNC = """
import datetime as dt, os, sys
import dagster as dg
from sfmc_pipeline.defs.assets.crm import build_crm_assets
from sfmc_pipeline.config.loader import load_pipeline_config
from sfmc_pipeline.defs.resources.salesforce import SalesforceResource
from sfmc_pipeline.defs.resources.storage import StorageResource

config_path, storage, login_url, client_id, now = sys.argv[1:6]
at = dt.datetime.fromisoformat(now)
dg.materialize(build_crm_assets(load_pipeline_config(config_path), clock=lambda: at),
               instance=dg.DagsterInstance.ephemeral(),
               resources={"salesforce": SalesforceResource(login_url=login_url, client_id=client_id,
                                                           client_secret=os.environ["TEST_SF_SECRET"]),
                          "storage": StorageResource(base_dir=storage)})
"""


def run_with_the_sync_killed_mid_way(pipeline: Pipeline, config_path: Path) -> None:
    """The day's datasets and segments, then its sync in a process killed (SIGKILL) once Salesforce has
    applied its first write (the fake records a request once it has served it, so the next batch may be in
    flight); the re-run finishes the day and sends again only the batch in flight at the kill."""
    sim, org = pipeline.sim, pipeline.sim.org
    upstream = dg.AssetSelection.all() - dg.AssetSelection.groups("salesforce")
    result = pipeline.run(selection=upstream)
    assert result.success, (sim.today, step_failures(result))
    writes = lambda: org.api_requests("composite/sobjects", method="PATCH")  # noqa: E731
    before = len(writes())
    org.latency = 0.3
    process = subprocess.Popen(
        [sys.executable, "-c", KILLED_SYNC, str(config_path), str(pipeline.storage), org.base_url, org.client_id,
         pipeline.now.isoformat()],
        env={**os.environ, "TEST_SF_SECRET": org.client_secret}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while len(writes()) == before and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert process.poll() is None, f"the sync ended before it could be killed: {process.stderr.read()[-2000:]}"
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=30)
    settle = time.monotonic() + 10
    while org.in_flight and time.monotonic() < settle:  # a request the killed process had sent is still served
        time.sleep(0.02)
    org.latency = 0.0
    killed_writes = writes()[before:]
    result = pipeline.run(selection=dg.AssetSelection.groups("salesforce"), evaluates=False)
    assert result.success, (sim.today, step_failures(result))
    rerun = writes()[before + len(killed_writes):]
    applied = [request for request in killed_writes if request.json]  # a body cut off by the kill applies nothing
    sent = [rec["id"] for request in [*applied, *rerun] for rec in request.json["records"]]
    twice = {rid for rid in sent if sent.count(rid) > 1}
    in_flight = {rec["id"] for request in applied[-1:] for rec in request.json["records"]}
    assert twice <= in_flight, sorted(twice - in_flight)[:5]  # only the batch in flight at the kill is re-sent


def _a_member_that_will_change(pipeline: Pipeline) -> str:
    statuses = DatasetStore(pipeline.storage).read_dataset("segment_statuses")
    members = statuses.loc[statuses["status"] != "exited", "profile_key"]
    return sorted(set(members) - {pipeline.sim.broken_email})[0]


# ------------------------------------------------------------------ what SFMC holds, as strings


def _raw(rows, asset: str, config) -> pd.DataFrame:
    ext = config.extension(asset)
    frame = pd.DataFrame([{name: format_sfmc_value(value) for name, value in row.items()} for row in rows])
    return align_columns(frame, ext)[0]


def _truth(pipeline: Pipeline) -> dict[str, object]:
    sim, config = pipeline.sim, pipeline.config
    rows = {"contacts": sim.contacts.values(), "campaign_engagement": sim.engagement.values(),
            "activities": sim.activities.values()}
    return {asset: validate_extract(_raw(list(r), asset, config), config.extension(asset)) for asset, r in rows.items()}


def check_datasets_hold_what_sfmc_holds(pipeline: Pipeline) -> None:
    store, config, sim = DatasetStore(pipeline.storage), pipeline.config, pipeline.sim
    truth = _truth(pipeline)
    for asset, keys in sim.sfmc_keys().items():
        ext = config.extension(asset)
        valid = store.read_dataset(asset)
        quarantine = pd.read_parquet(store.quarantine_path(asset))
        landed = set(typed_keys(valid, ext)) | set(raw_keys(quarantine, ext))
        assert landed == keys, (sim.today, asset, sorted(landed - keys)[:5], sorted(keys - landed)[:5])
        expected = truth[asset].valid.sort_values(ext.primary_key, ignore_index=True)
        got = valid.sort_values(ext.primary_key, ignore_index=True)[list(expected.columns)]
        pd.testing.assert_frame_equal(got, expected, check_dtype=False, obj=f"{asset} on {sim.today}")
        assert set(raw_keys(quarantine, ext)) == set(raw_keys(truth[asset].quarantine, ext)), (sim.today, asset)


def check_memberships_follow_sfmc(pipeline: Pipeline) -> None:
    config, truth = pipeline.config, _truth(pipeline)
    profiles = truth["contacts"].valid
    held = set(raw_keys(truth["contacts"].quarantine, config.extension("contacts")))
    evaluator = SegmentEvaluator(profiles, {a: truth[a].valid for a in ("campaign_engagement", "activities")},
                                 key=config.profile_key, as_of=pipeline.sim.today, timezone="UTC", held_keys=held)
    expected = evaluator.members((s.name, s.rule) for s in config.segments)
    got = DatasetStore(pipeline.storage).read_dataset("segment_memberships")
    pairs = lambda frame: set(zip(frame["profile_key"], frame["segment"]))  # noqa: E731
    assert pairs(got) == pairs(expected), (pipeline.sim.today, sorted(pairs(got) ^ pairs(expected))[:5])


def check_the_crm_holds_what_the_statuses_say(pipeline: Pipeline) -> None:
    sim, config = pipeline.sim, pipeline.config
    statuses = DatasetStore(pipeline.storage).read_dataset("segment_statuses")
    listed = {(r.profile_key, r.segment): r for r in statuses.itertuples()}
    contacts = {k: r for k, r in sim.contacts.items()}
    wrong = []
    for dest in config.destinations:
        for rid, record in sim.crm_records(dest.object).items():
            if rid not in contacts:
                continue
            for segment, field in dest.segments.items():
                row = listed.get((rid, segment))
                if row is not None and row.held:
                    continue
                value = record.get(field)
                expected = {f"{segment}:{row.status}"} if row is not None else {None, f"{segment}:exited"}
                if value not in expected:
                    wrong.append((rid, field, value, sorted(expected, key=str)))
            pipeline.managed |= {key for key, _ in listed}
            if rid != sim.broken_email and rid in pipeline.managed:  # a record the sync writes: once in a segment
                for column, field in dest.attribute_map.items():
                    if record.get(field) != contacts[rid][column]:
                        wrong.append((rid, field, record.get(field), contacts[rid][column]))
    assert not wrong, (sim.today, len(wrong), wrong[:5])
