"""Benchmark the CRM sink (sObject Collections, ledger diff) against a per-record baseline.

    python scripts/benchmark_sync.py [--records 20000 --naive-records 2000 --segments 3 --seed 7]

What is measured, and why. What Salesforce limits is API calls: every org has a daily
allocation counted over a rolling 24 hours for the whole org (a Developer Edition org gets
15,000; production orgs start at 100,000), and once it is used up every
integration of the org is blocked. So the headline figure is API requests per sync, and the sink
keeps it low in two ways: it writes up to 200 records per sObject Collections request, and it
diffs against its SQLite ledger so records whose values were already confirmed written are not
sent again.

Everything runs in one process against one started ``FakeSalesforceServer`` (the test suite's
fake org: real HTTP, but in-process on 127.0.0.1). Times therefore measure the client, the sink,
the ledger and the fake together -- not Salesforce's latency, which in production adds a network
round trip plus server-side processing to every request. The fake has a latency of its own: its
``http.server`` handler writes a response's headers and body in two TCP segments without
TCP_NODELAY, so on a kept-alive connection each request waits for the client's delayed ACK
(about 40 ms on Linux). The report prints that per-request round trip (warm describe calls,
measured before phase 1) so the times can be read against it. Figures are printed, not
asserted; the script only stops with an error when a sync does not finish (records failed,
rejected or left pending), because then the figures would describe something else.

The fake org is seeded with ``--records`` Contacts (plus ``--naive-records`` more for the
baseline) and the shipped status fields of the ``contacts`` destination (``pipeline.yaml``). Its
daily allocation is raised far above the workload so the sink's usage guard (stop at 80 %) never
cuts a phase short; the report relates the call counts to real allocations instead.
Each sync uses a fresh ``SalesforceClient`` (so its API requests include its one token call) and
``DestinationSync.run`` is what is timed. Ledgers live in a temporary directory.

1. **First sync** of ``--records`` contacts, each in ``--segments`` segments (the first ones of the
   destination's mapping), all ``realized``, with FirstName/LastName/Email: wall time, records/s,
   API requests (token call included), write requests (``outcome.requests``), peak RSS of the
   process (``getrusage``; it includes the fake org's in-memory records and request log and the
   input frames, so the RSS right before the sync is shown too) and the ledger's size on disk.
2. **Re-run, unchanged input**: expected 0 records sent and 2 API requests (login + describe).
3. **Second evaluation**: 10 % of the records change status (``realized`` -> ``existing`` in all
   their segments) and 2 % exit (``exited``): time, records sent, API requests.
4. **Naive baseline**: ``batch_size=1``, i.e. one request per record the way a per-record
   integration calls the API, on ``--naive-records`` fresh records (their own Ids and their own
   ledger file), extrapolated linearly to ``--records``; ratios naive / collections for API
   requests and for time (both against the first sync). It keeps the ledger (one transaction per
   request), so the difference is the batching alone.

The output is one figure per line, a markdown table for the README, and the machine facts.
"""

from __future__ import annotations

import argparse
import os
import platform
import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_memory import current_rss_mib, peak_rss_mib, reset_peak_rss, total_memory  # noqa: E402  (scripts/)
from sfmc_pipeline.config import load_pipeline_config
from sfmc_pipeline.config.models import DestinationConfig, SyncSettings
from sfmc_pipeline.crm.ledger import SyncLedger
from sfmc_pipeline.crm.salesforce_client import SalesforceClient
from sfmc_pipeline.crm.sync import DestinationSync, SyncOutcome
from sfmc_pipeline.datasets.salesforce_id import to_18
from sfmc_pipeline.settings import DEFAULT_CONFIG_PATH
from sfmc_pipeline_tests.fakes.salesforce_server import FakeSalesforceServer

DEVELOPER_EDITION_DAILY = 15_000  # a Developer Edition org, per rolling 24 h
PRODUCTION_BASE_DAILY = 100_000  # production orgs: 100,000 + per-licence adders
FAKE_DAILY_LIMIT = 1_000_000_000  # far above any workload here: the usage guard never stops a phase
CHANGED_SHARE, EXITED_SHARE = 0.10, 0.02
CONFIG = load_pipeline_config(DEFAULT_CONFIG_PATH)


# ----------------------------------------------------------------------------------------------
# Inputs (shaped like the profiles and segment_statuses datasets)
# ----------------------------------------------------------------------------------------------


def contact_ids(series: int, n: int) -> list[str]:
    """``n`` valid 18-character Contact Ids; ``series`` keeps the main and the naive records apart."""
    return [to_18(f"0035e{series}{i:09d}") for i in range(n)]


def profiles_frame(ids: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "SubscriberKey": ids,
            "FirstName": [f"First{i}" for i in range(len(ids))],
            "LastName": [f"Last{i}" for i in range(len(ids))],
            "Email": [f"p{i}@example.com" for i in range(len(ids))],
            "Company": [f"Co{i}" for i in range(len(ids))],
        },
        dtype="string",
    )


def statuses_frame(ids: list[str], segments: list[str], status: np.ndarray | str = "realized") -> pd.DataFrame:
    """One row per (record, segment); ``status`` is one value or one value per record."""
    per_record = np.broadcast_to(np.asarray(status, dtype=object), (len(ids),))
    return pd.DataFrame(
        {
            "profile_key": np.repeat(np.asarray(ids, dtype=object), len(segments)),
            "segment": np.tile(np.asarray(segments, dtype=object), len(ids)),
            "status": np.repeat(per_record, len(segments)),
        },
        dtype="string",
    )


# ----------------------------------------------------------------------------------------------
# Measurement
# ----------------------------------------------------------------------------------------------


@dataclass
class Phase:
    outcome: SyncOutcome
    seconds: float
    api_requests: int  # client.api_requests: token call and retries included
    logins: int
    retries: int

    @property
    def sent(self) -> int:
        return self.outcome.sent

    @property
    def other_requests(self) -> int:
        """Describe (and any retried request): neither a token call nor a write."""
        return self.api_requests - self.logins - self.outcome.requests


def sync_once(org: FakeSalesforceServer, dest: DestinationConfig, settings: SyncSettings, ledger_path: Path,
              run_id: str, statuses: pd.DataFrame, profiles: pd.DataFrame) -> Phase:
    """One sync with a fresh client and ledger connection; ``DestinationSync.run`` is timed."""
    client = SalesforceClient(base_url=org.base_url, client_id=org.client_id, client_secret=org.client_secret)
    ledger = SyncLedger(ledger_path, client.target_id)
    try:
        pipeline = CONFIG.model_copy(update={"sync": settings})
        syncer = DestinationSync.for_pipeline(pipeline, dest, client, ledger, run_id=run_id)
        start = time.perf_counter()
        outcome = syncer.run(statuses, profiles)
        seconds = time.perf_counter() - start
    finally:
        ledger.close()
        client.close()
    incomplete = outcome.stopped or outcome.pending or outcome.failed_total or outcome.rejected_total
    if incomplete:
        raise RuntimeError(
            f"{run_id}: the sync did not finish (stopped={outcome.stopped!r}, pending={outcome.pending}, "
            f"failed={dict(outcome.failed)}, rejected={dict(outcome.rejected)}); the figures would be meaningless"
        )
    return Phase(outcome, seconds, client.api_requests, client.logins, client.transport.stats.retries)


def round_trip_ms(org: FakeSalesforceServer, calls: int = 20) -> float:
    """Mean time of one warm API request to the fake (describe, after login and a first call)."""
    with SalesforceClient(base_url=org.base_url, client_id=org.client_id, client_secret=org.client_secret) as client:
        client.describe("Contact")
        start = time.perf_counter()
        for _ in range(calls):
            client.describe("Contact")
        return (time.perf_counter() - start) / calls * 1000


def ledger_bytes(path: Path) -> int:
    """The ledger's database file plus any WAL/shared-memory files next to it."""
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*") if p.is_file())


def ledger_rows(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT COUNT(*) FROM confirmed_fields").fetchone()[0]


def org_state_problems(org: FakeSalesforceServer, ids: list[str], segments: list[str], expected: np.ndarray) -> int:
    """Records whose status fields in the fake org do not hold ``segment:<expected status>``."""
    records = org.records["Contact"]
    return sum(
        any(records[rid].get(f"{seg}__c") != f"{seg}:{status}" for seg in segments)
        for rid, status in zip(ids, expected)
    )


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------


def per_second(n: float, seconds: float) -> str:
    return f"{n / seconds:,.0f}" if seconds > 0 and n else "-"


def share(calls: float, allocation: int) -> str:
    return f"{calls / allocation:.1%}"


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=20_000, help="contacts synced (default 20,000)")
    parser.add_argument("--naive-records", type=int, default=2000,
                        help="contacts synced one request per record, then extrapolated (default 2000)")
    parser.add_argument("--segments", type=int, default=3, help="segments per contact (default 3)")
    parser.add_argument("--seed", type=int, default=7, help="numpy seed choosing the changed records (default 7)")
    args = parser.parse_args(argv)
    if args.records < 1 or args.naive_records < 1 or args.segments < 1:
        parser.error("--records, --naive-records and --segments must be >= 1")
    if max(args.records, args.naive_records) >= 10**9:
        parser.error("at most 999,999,999 records per series")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = CONFIG
    dest = config.destination("contacts")
    if args.segments > len(dest.segments):
        raise SystemExit(f"--segments {args.segments}: the contacts destination maps only {len(dest.segments)}")
    segments = list(dest.segments)[: args.segments]
    collections = config.sync
    naive = collections.model_copy(update={"batch_size": 1})
    n, n_naive = args.records, args.naive_records

    # Inputs (not measured).
    ids, naive_ids = contact_ids(0, n), contact_ids(1, n_naive)
    profiles, naive_profiles = profiles_frame(ids), profiles_frame(naive_ids)
    first_statuses = statuses_frame(ids, segments)
    rng = np.random.default_rng(args.seed)
    n_changed, n_exited = round(n * CHANGED_SHARE), round(n * EXITED_SHARE)
    picked = rng.permutation(n)
    second = np.full(n, "realized", dtype=object)
    second[picked[:n_changed]] = "existing"
    second[picked[n_changed:n_changed + n_exited]] = "exited"
    second_statuses = statuses_frame(ids, segments, second)
    naive_statuses = statuses_frame(naive_ids, segments)

    org = FakeSalesforceServer(daily_api_limit=FAKE_DAILY_LIMIT)
    workdir = tempfile.TemporaryDirectory(prefix="benchmark_sync-")
    try:
        org.start()
        for name in dest.status_fields:
            org.add_field("Contact", name)
        for i, rid in enumerate(ids + naive_ids):
            org.add_record("Contact", rid, LastName=f"Old{i}")
        ledger_path = Path(workdir.name) / "ledger.sqlite"
        naive_ledger_path = Path(workdir.name) / "naive-ledger.sqlite"

        round_trip = round_trip_ms(org)
        # 1. First sync, peak RSS of this phase.
        rss_before = current_rss_mib()
        peak_reset = reset_peak_rss()
        first = sync_once(org, dest, collections, ledger_path, "first", first_statuses, profiles)
        first_peak = peak_rss_mib()
        first_ledger_bytes, first_ledger_rows = ledger_bytes(ledger_path), ledger_rows(ledger_path)
        first_state_problems = org_state_problems(org, ids, segments, np.full(n, "realized", dtype=object))
        # 2. Unchanged re-run.
        rerun = sync_once(org, dest, collections, ledger_path, "rerun", first_statuses, profiles)
        # 3. Second evaluation: 10 % change status, 2 % exit.
        changed = sync_once(org, dest, collections, ledger_path, "second", second_statuses, profiles)
        second_state_problems = org_state_problems(org, ids, segments, second)
        # 4. Naive baseline: one request per record.
        baseline = sync_once(org, dest, naive, naive_ledger_path, "naive", naive_statuses, naive_profiles)
        handler_errors = org.handler_errors
    finally:
        org.stop()
        workdir.cleanup()

    # Naive, extrapolated linearly to --records (its fixed login + describe counted once).
    scale = n / n_naive
    naive_writes = round(baseline.outcome.requests * scale)
    naive_fixed = baseline.logins + baseline.other_requests
    naive_requests = naive_writes + naive_fixed
    naive_seconds = baseline.seconds * scale
    request_ratio = naive_requests / first.api_requests
    time_ratio = naive_seconds / first.seconds

    def calls(phase: Phase) -> str:
        extra = f", {phase.retries} retried" if phase.retries else ""
        return (f"{phase.api_requests:,} ({phase.logins} login + {phase.other_requests} describe + "
                f"{phase.outcome.requests:,} write{extra})")

    print(f"CRM sync benchmark: {n:,} contacts x {len(segments)} segments ({', '.join(segments)}), "
          f"destination {dest.name!r} -> {dest.object}, batch size {collections.batch_size}, "
          "fake org on loopback (in-process)")
    print(f"Fake org round trip (warm describe, mean of 20): {round_trip:.1f} ms per request")
    print()
    print("1. First sync")
    print(f"   wall time                              {first.seconds:.2f} s")
    print(f"   records/s                              {per_second(first.outcome.succeeded, first.seconds)}")
    print(f"   records sent / succeeded               {first.sent:,} / {first.outcome.succeeded:,}")
    print(f"   API requests (token call included)     {calls(first)}")
    print(f"   write requests                         {first.outcome.requests:,} "
          f"({first.sent / max(first.outcome.requests, 1):.0f} records per request)")
    print(f"   peak RSS                               {first_peak:,.0f} MiB "
          f"(RSS before the sync {rss_before:,.0f} MiB: fake org + inputs"
          f"{'' if peak_reset else '; peak not reset, includes setup'})")
    print(f"   ledger on disk                         {first_ledger_bytes / 2**20:.1f} MiB "
          f"({first_ledger_rows:,} rows, {first_ledger_bytes / n:,.0f} bytes per record)")
    print(f"   org state check                        "
          f"{'OK' if not first_state_problems else f'{first_state_problems:,} records differ'}")
    print("2. Re-run, unchanged input")
    print(f"   wall time                              {rerun.seconds:.2f} s")
    print(f"   records sent                           {rerun.sent:,} (expected 0; {rerun.outcome.unchanged:,} unchanged)")
    print(f"   API requests                           {calls(rerun)} (expected 2)")
    print(f"3. Second evaluation: {n_changed:,} records realized -> existing, {n_exited:,} exited")
    print(f"   wall time                              {changed.seconds:.2f} s")
    print(f"   records sent                           {changed.sent:,} (expected {n_changed + n_exited:,})")
    print(f"   API requests                           {calls(changed)}")
    print(f"   org state check                        "
          f"{'OK' if not second_state_problems else f'{second_state_problems:,} records differ'}")
    print(f"4. Naive baseline: batch_size=1, {n_naive:,} fresh records, own ledger")
    print(f"   wall time                              {baseline.seconds:.2f} s "
          f"({per_second(baseline.outcome.succeeded, baseline.seconds)} records/s)")
    print(f"   API requests                           {calls(baseline)}")
    print(f"   extrapolated to {n:,} records{' ' * max(0, 22 - len(f'{n:,}'))}"
          f"{naive_seconds:,.1f} s, {naive_requests:,} API requests")
    print(f"   naive / collections, API requests      {request_ratio:,.0f}x")
    print(f"   naive / collections, time              {time_ratio:,.1f}x")
    print(f"Daily allocation used by a first sync of {n:,} records: collections {first.api_requests:,} calls = "
          f"{share(first.api_requests, DEVELOPER_EDITION_DAILY)} of a Developer Edition org's "
          f"{DEVELOPER_EDITION_DAILY:,}, {share(first.api_requests, PRODUCTION_BASE_DAILY)} of a production org's "
          f"base {PRODUCTION_BASE_DAILY:,}; per record {naive_requests:,} calls = "
          f"{share(naive_requests, DEVELOPER_EDITION_DAILY)} / {share(naive_requests, PRODUCTION_BASE_DAILY)}.")
    if handler_errors:
        print(f"WARNING: the fake org logged {len(handler_errors)} handler error(s); first:\n{handler_errors[0]}")
    print()

    rows = [
        [f"first sync, collections ({n:,} records)", f"{first.sent:,}", f"{first.api_requests:,}",
         f"{first.outcome.requests:,}", f"{first.seconds:.2f}", per_second(first.sent, first.seconds)],
        ["re-run, unchanged input", f"{rerun.sent:,}", f"{rerun.api_requests:,}", f"{rerun.outcome.requests:,}",
         f"{rerun.seconds:.2f}", "-"],
        [f"second evaluation ({CHANGED_SHARE:.0%} changed, {EXITED_SHARE:.0%} exited)", f"{changed.sent:,}",
         f"{changed.api_requests:,}", f"{changed.outcome.requests:,}", f"{changed.seconds:.2f}",
         per_second(changed.sent, changed.seconds)],
        [f"naive per-record, measured ({n_naive:,} records)", f"{baseline.sent:,}", f"{baseline.api_requests:,}",
         f"{baseline.outcome.requests:,}", f"{baseline.seconds:.2f}", per_second(baseline.sent, baseline.seconds)],
        [f"naive per-record, extrapolated ({n:,} records)", f"{n:,}", f"{naive_requests:,}", f"{naive_writes:,}",
         f"{naive_seconds:,.1f}", per_second(n, naive_seconds)],
        ["naive / collections (first sync)", "", f"{request_ratio:,.0f}x", "", f"{time_ratio:,.1f}x", ""],
    ]
    print(markdown(["phase", "records sent", "API requests", "write requests", "time (s)", "records/s"], rows))
    print()
    cores = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    print(f"Machine: {cores} cores ({usable} usable), {total_memory()} RAM, {platform.platform()}; "
          f"Python {platform.python_version()}, pandas {pd.__version__}, numpy {np.__version__}, "
          f"requests {requests.__version__}, SQLite {sqlite3.sqlite_version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
