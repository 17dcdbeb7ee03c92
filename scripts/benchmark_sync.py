"""Benchmark the CRM sink: concurrent sObject Collections writes and the ledger diff, against baselines.

    python scripts/benchmark_sync.py                    # quick smoke run: 5,000 contacts
    python scripts/benchmark_sync.py --records 200000   # the figures in the README

What is measured, and why. Salesforce limits API calls (a daily allocation per org, counted over a
rolling 24 hours; a Developer Edition org gets 15,000, production orgs start at 100,000), and a sync
waits on the network. The sink keeps the calls low by diffing against its SQLite ledger (only changed
fields are sent) and writing 200 records per sObject Collections request, and keeps the waiting low by
having several requests in flight at once (``sync.concurrent_requests``, default 4).

Setup. The test suite's fake org (``FakeSalesforceServer``: real HTTP on 127.0.0.1) runs in a child
process, so it neither shares this process's interpreter lock nor counts in its memory, and it holds
every request for ``--latency`` seconds (default 0.05) before answering, like a network round trip plus
Salesforce's own processing; concurrent requests wait together. Each sync uses a fresh
``SalesforceClient`` and its own ledger; ``DestinationSync.run`` is what is timed, split into
*login + describe* (network), *change set* (ledger read, desired state, diff, client-side checks, exit
guard: the sync's own code) and *send* (write requests in flight plus the ledger commit of each batch).

Phases, each for ``--records`` contacts in ``--segments`` segments (all ``realized`` at first), with
FirstName/LastName/Email:

1. **first sync**: every record is sent;
2. **unchanged re-run**: nothing to send (two API requests: login and describe);
3. **1 % changed**: 1 % of the records go ``realized`` -> ``existing`` in their segments.

Each phase runs twice on separate records and ledgers: with the default concurrency, and as the
**sequential** baseline (``concurrent_requests: 1``). The **naive** baseline sends one record per request
(``batch_size: 1``) for ``--naive-records`` fresh records and is extrapolated linearly to ``--records``.
Reported per phase: wall time, records/s, API requests next to the fewest write requests the change set
needs (``SyncOutcome.min_requests``) and next to sending everything (no diff), requests in flight at once,
and the peak RSS of this process during the phase (``getrusage`` after resetting the high-water mark; the
inputs of all series are in memory, so the RSS before the phases is shown too). Figures are printed, not
asserted; the script stops with an error only when a sync does not finish (failed, rejected or pending
records) or the org does not hold what was sent, since the figures would then describe something else.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
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
from sfmc_pipeline.config import load_pipeline_config  # noqa: E402
from sfmc_pipeline.config.models import DestinationConfig, SyncSettings  # noqa: E402
from sfmc_pipeline.crm.ledger import SyncLedger  # noqa: E402
from sfmc_pipeline.crm.records import MAX_RECORDS_PER_REQUEST  # noqa: E402
from sfmc_pipeline.crm.salesforce_client import SalesforceClient  # noqa: E402
from sfmc_pipeline.crm.sync import DestinationSync, SyncOutcome  # noqa: E402
from sfmc_pipeline.datasets.salesforce_id import to_18  # noqa: E402
from sfmc_pipeline.settings import DEFAULT_CONFIG_PATH  # noqa: E402

DEVELOPER_EDITION_DAILY = 15_000  # a Developer Edition org, per rolling 24 h
PRODUCTION_BASE_DAILY = 100_000  # production orgs: 100,000 + per-licence adders
FAKE_DAILY_LIMIT = 1_000_000_000  # far above any workload here: the usage guard never stops a phase
CHANGED_SHARE = 0.01
TARGETS = {"unchanged re-run": 3.0, "1% changed": 5.0}  # seconds, for 200,000 records (the targets)
CONFIG = load_pipeline_config(DEFAULT_CONFIG_PATH)


# ----------------------------------------------------------------------------------------------
# The fake org, in a child process
# ----------------------------------------------------------------------------------------------


def _fake_org_main(conn, latency: float) -> None:
    """Child process: serve a fake org and answer the parent's set-up and check commands."""
    from sfmc_pipeline_tests.fakes.salesforce_server import FakeSalesforceServer

    org = FakeSalesforceServer(daily_api_limit=FAKE_DAILY_LIMIT, latency_seconds=latency).start()
    conn.send((org.base_url, org.client_id, org.client_secret))
    while True:
        command, args = conn.recv()
        if command == "stop":
            org.stop()
            conn.send(None)
            return
        if command == "add_fields":
            for name in args:
                org.add_field("Contact", name)
            conn.send(None)
        elif command == "add_records":
            for i, rid in enumerate(args):
                org.add_record("Contact", rid, LastName=f"Old{i}")
            conn.send(None)
        elif command == "state_problems":  # records whose status fields do not hold segment:<expected>
            ids, segments, expected = args
            records = org.records["Contact"]
            conn.send(sum(any(records[rid].get(f"{seg}__c") != f"{seg}:{status}" for seg in segments)
                          for rid, status in zip(ids, expected)))
        elif command == "start_phase":  # forget the request log (memory) and the in-flight peak
            with org._lock:
                org.requests.clear()
                org.write_log.clear()
                org.max_in_flight = 0
            conn.send(None)
        elif command == "max_in_flight":
            conn.send(org.max_in_flight)
        elif command == "handler_errors":
            conn.send(org.handler_errors)


class FakeOrg:
    """The parent's handle on the child process's fake org."""

    def __init__(self, latency: float):
        context = mp.get_context("fork")  # before any thread or large frame exists in this process
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_fake_org_main, args=(child, latency), daemon=True)
        self._process.start()
        self.base_url, self.client_id, self.client_secret = self._conn.recv()

    def call(self, command: str, args=None):
        self._conn.send((command, args))
        return self._conn.recv()

    def stop(self) -> None:
        if self._process.is_alive():
            self.call("stop")
            self._process.join(timeout=10)


# ----------------------------------------------------------------------------------------------
# Inputs (shaped like the profiles and segment_statuses datasets)
# ----------------------------------------------------------------------------------------------


def contact_ids(series: int, n: int) -> list[str]:
    """``n`` valid 18-character Contact Ids; ``series`` keeps the record sets apart."""
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
    seconds: float  # DestinationSync.run
    network_setup: float  # login + describe
    change_set: float  # the sync's own code before sending
    send: float  # write requests in flight + ledger commits
    api_requests: int  # client.api_requests: token call and retries included
    logins: int
    peak_rss: float
    fake_in_flight: int

    @property
    def sent(self) -> int:
        return self.outcome.sent


def _timed(function, totals: dict, key: str):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            totals[key] = totals.get(key, 0.0) + time.perf_counter() - start
    return wrapper


def sync_once(org: FakeOrg, dest: DestinationConfig, settings: SyncSettings, ledger_path: Path, run_id: str,
              statuses: pd.DataFrame, profiles: pd.DataFrame) -> Phase:
    """One sync with a fresh client and ledger connection; ``DestinationSync.run`` is timed."""
    org.call("start_phase")
    client = SalesforceClient(base_url=org.base_url, client_id=org.client_id, client_secret=org.client_secret)
    totals: dict[str, float] = {}
    client._login = _timed(client._login, totals, "network")
    client.describe = _timed(client.describe, totals, "network")
    ledger = None
    try:
        pipeline = CONFIG.model_copy(update={"sync": settings})
        reset_peak_rss()
        start = time.perf_counter()
        target_id = client.target_id  # the login (timed as network)
        ledger = SyncLedger(ledger_path, target_id)
        syncer = DestinationSync.for_pipeline(pipeline, dest, client, ledger, run_id=run_id)
        syncer._send = _timed(syncer._send, totals, "send")
        outcome = syncer.run(statuses, profiles)
        seconds = time.perf_counter() - start
        peak = peak_rss_mib()
    finally:
        if ledger is not None:
            ledger.close()
        client.close()
    incomplete = outcome.stopped or outcome.pending or outcome.failed_total or outcome.rejected_total
    if incomplete:
        raise RuntimeError(
            f"{run_id}: the sync did not finish (stopped={outcome.stopped!r}, pending={outcome.pending}, "
            f"failed={dict(outcome.failed)}, rejected={dict(outcome.rejected)}); the figures would be meaningless"
        )
    network, send = totals.get("network", 0.0), totals.get("send", 0.0)
    outcome.desired = None  # the desired-state frames: not kept across phases (memory)
    return Phase(outcome, seconds, network, seconds - network - send, send, client.api_requests, client.logins,
                 peak, org.call("max_in_flight"))


def ledger_bytes(path: Path) -> int:
    """The ledger's database file plus any WAL/shared-memory files next to it."""
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*") if p.is_file())


def ledger_rows(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT COUNT(*) FROM confirmed_fields").fetchone()[0]


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
    parser.add_argument("--records", type=int, default=5000, help="contacts per series (default 5,000: a smoke run; "
                        "the README's figures use 200,000)")
    parser.add_argument("--naive-records", type=int, default=100,
                        help="contacts synced one request per record, then extrapolated (default 100)")
    parser.add_argument("--segments", type=int, default=3, help="segments per contact (default 3)")
    parser.add_argument("--latency", type=float, default=0.05, help="seconds the fake org holds each request "
                        "(default 0.05)")
    parser.add_argument("--seed", type=int, default=7, help="numpy seed choosing the changed records (default 7)")
    args = parser.parse_args(argv)
    if args.records < 1 or args.naive_records < 1 or args.segments < 1 or args.latency < 0:
        parser.error("--records, --naive-records and --segments must be >= 1, --latency >= 0")
    if max(args.records, args.naive_records) >= 10**9:
        parser.error("at most 999,999,999 records per series")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    org = FakeOrg(args.latency)  # forked first: the child gets a small copy of this process
    try:
        return _run(args, org)
    finally:
        org.stop()


def _run(args: argparse.Namespace, org: FakeOrg) -> int:
    dest = CONFIG.destination("contacts")
    if args.segments > len(dest.segments):
        raise SystemExit(f"--segments {args.segments}: the contacts destination maps only {len(dest.segments)}")
    segments = list(dest.segments)[: args.segments]
    concurrent = CONFIG.sync
    sequential = concurrent.model_copy(update={"concurrent_requests": 1})
    naive = sequential.model_copy(update={"batch_size": 1})
    n, n_naive = args.records, args.naive_records
    series = {"concurrent": (concurrent, contact_ids(0, n)), "sequential": (sequential, contact_ids(1, n))}
    naive_ids = contact_ids(2, n_naive)

    rng = np.random.default_rng(args.seed)
    n_changed = max(1, round(n * CHANGED_SHARE))
    second = np.full(n, "realized", dtype=object)
    second[rng.permutation(n)[:n_changed]] = "existing"
    inputs = {name: (profiles_frame(ids), statuses_frame(ids, segments), statuses_frame(ids, segments, second))
              for name, (_, ids) in series.items()}

    org.call("add_fields", list(dest.status_fields))
    org.call("add_records", series["concurrent"][1] + series["sequential"][1] + naive_ids)
    workdir = tempfile.TemporaryDirectory(prefix="benchmark_sync-")
    try:
        rss_before = current_rss_mib()
        results: dict[str, dict[str, Phase]] = {name: {} for name in series}
        ledgers = {name: Path(workdir.name) / f"{name}.sqlite" for name in series}
        for phase, frame_at in (("first sync", 1), ("unchanged re-run", 1), ("1% changed", 2)):
            for name, (settings, ids) in series.items():
                profiles = inputs[name][0]
                results[name][phase] = sync_once(org, dest, settings, ledgers[name], f"{name}-{phase}",
                                                 inputs[name][frame_at], profiles)
        first_ledger = (ledger_bytes(ledgers["concurrent"]), ledger_rows(ledgers["concurrent"]))
        problems = {name: org.call("state_problems", (ids, segments, list(second))) for name, (_, ids) in series.items()}
        baseline = sync_once(org, dest, naive, Path(workdir.name) / "naive.sqlite", "naive",
                             statuses_frame(naive_ids, segments), profiles_frame(naive_ids))
        handler_errors = org.call("handler_errors")
    finally:
        workdir.cleanup()
    if any(problems.values()):
        raise RuntimeError(f"the fake org does not hold what was sent: {problems}")

    scale = n / n_naive
    naive_writes = round(baseline.outcome.requests * scale)
    naive_requests = naive_writes + baseline.api_requests - baseline.outcome.requests
    naive_seconds = baseline.seconds * scale
    everything = math.ceil(n / MAX_RECORDS_PER_REQUEST)  # write requests when every record is sent (no diff)

    print(f"CRM sync benchmark: {n:,} contacts x {len(segments)} segments ({', '.join(segments)}), destination "
          f"{dest.name!r} -> {dest.object}, batch size {concurrent.batch_size}, concurrent requests "
          f"{concurrent.concurrent_requests}; fake org in a child process on 127.0.0.1, {args.latency * 1000:.0f} ms "
          "per request")
    print(f"RSS before the phases (inputs of both series): {rss_before:,.0f} MiB")
    print()
    rows = []
    for phase in ("first sync", "unchanged re-run", "1% changed"):
        fast, slow = results["concurrent"][phase], results["sequential"][phase]
        out = fast.outcome
        fixed = fast.api_requests - out.requests  # login + describe
        print(f"{phase} ({out.to_send:,} of {out.considered:,} records to send)")
        for label, p in (("concurrent", fast), ("sequential", slow)):
            moved = p.outcome.considered
            print(f"  {label:10s} wall {p.seconds:7.2f} s = login+describe {p.network_setup:5.2f} + change set "
                  f"{p.change_set:5.2f} + send {p.send:6.2f} | {per_second(moved, p.seconds):>8} records/s | "
                  f"API requests {p.api_requests:,} (writes {p.outcome.requests:,}, minimum {p.outcome.min_requests:,}, "
                  f"everything {everything:,}) | in flight {p.outcome.max_in_flight} (fake saw {p.fake_in_flight}) | "
                  f"peak RSS {p.peak_rss:,.0f} MiB")
        target = TARGETS.get(phase)
        if target is not None:
            verdict = "met" if fast.seconds <= target else "NOT met"
            print(f"  target for 200,000 records: <= {target:.0f} s ({verdict} at {n:,} records: {fast.seconds:.2f} s)")
        print(f"  concurrent vs sequential: {slow.seconds / fast.seconds:.1f}x faster; API requests "
              f"{fast.api_requests:,} = minimum {out.min_requests:,} + {fixed} (login, describe) + "
              f"{out.requests - out.min_requests} extra")
        rows.append([phase, f"{out.to_send:,}", f"{fast.seconds:.2f}", f"{fast.change_set:.2f}",
                     f"{slow.seconds:.2f}", per_second(out.considered, fast.seconds),
                     f"{fast.api_requests:,}", f"{out.min_requests:,}", f"{everything:,}", f"{fast.peak_rss:,.0f}"])
    print(f"naive baseline: one record per request, {n_naive:,} fresh records: {baseline.seconds:.2f} s, "
          f"{baseline.api_requests:,} API requests; extrapolated to {n:,} records: {naive_seconds:,.0f} s "
          f"({naive_seconds / 3600:.1f} h), {naive_requests:,} API requests")
    first = results["concurrent"]["first sync"]
    print(f"first sync vs naive: {naive_seconds / first.seconds:,.0f}x faster, {naive_requests / first.api_requests:,.0f}x "
          f"fewer API requests; ledger {first_ledger[0] / 2**20:,.1f} MiB ({first_ledger[1]:,} rows)")
    print(f"daily allocation used by the first sync: {first.api_requests:,} calls = "
          f"{share(first.api_requests, DEVELOPER_EDITION_DAILY)} of a Developer Edition org's "
          f"{DEVELOPER_EDITION_DAILY:,}, {share(first.api_requests, PRODUCTION_BASE_DAILY)} of a production org's base "
          f"{PRODUCTION_BASE_DAILY:,}; one request per record: {naive_requests:,} calls = "
          f"{share(naive_requests, DEVELOPER_EDITION_DAILY)} / {share(naive_requests, PRODUCTION_BASE_DAILY)}")
    if handler_errors:
        print(f"WARNING: the fake org logged {len(handler_errors)} handler error(s); first:\n{handler_errors[0]}")
    print()
    rows.append([f"naive, one record per request (extrapolated from {n_naive:,})", f"{n:,}", f"{naive_seconds:,.0f}",
                 "", "", per_second(n, naive_seconds), f"{naive_requests:,}", f"{everything:,}", f"{everything:,}", ""])
    print(markdown(["phase", "records sent", "time (s)", "of which change set (s)", "sequential (s)",
                    "records considered/s",
                    "API requests", "minimum writes", "writes without diff", "peak RSS (MiB)"], rows))
    print()
    cores = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    print(f"Machine: {cores} cores ({usable} usable), {total_memory()} RAM, {platform.platform()}; "
          f"Python {platform.python_version()}, pandas {pd.__version__}, numpy {np.__version__}, "
          f"requests {requests.__version__}, SQLite {sqlite3.sqlite_version}; load average "
          f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
