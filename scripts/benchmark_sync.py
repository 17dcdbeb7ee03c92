"""Benchmark the CRM sink: concurrent sObject Collections writes, Bulk API 2.0 jobs and the ledger diff, against
baselines.

    python scripts/benchmark_sync.py                    # quick smoke run: 5,000 contacts (+ 50,000 for the Bulk phase)
    python scripts/benchmark_sync.py --records 200000   # the figures in docs/performance.md
    python scripts/benchmark_sync.py --bulk-records 2000  # a faster smoke run (the smallest Bulk change set)

What is measured, and why. Salesforce limits API calls (a daily allocation per org, counted over a
rolling 24 hours; a Developer Edition org gets 15,000, production orgs start at 100,000), and a sync
waits on the network. The sink keeps the calls low by diffing against its SQLite ledger (only changed
fields are sent) and writing 200 records per sObject Collections request, and keeps the waiting low by
having several requests in flight at once (``sync.concurrent_requests``, default 4). A change set of at
least ``sync.bulk_threshold`` records (default 2,000) goes through one Bulk API 2.0 job instead (create,
upload, close, poll, results: about five requests whatever the size).

Setup. The test suite's fake org (``FakeSalesforceServer``: real HTTP on 127.0.0.1) runs in a child
process, so it neither shares this process's interpreter lock nor counts in its memory, and it holds
every request for ``--latency`` seconds (default 0.05) before answering, like a network round trip plus
Salesforce's own processing; concurrent requests wait together. Each sync uses a fresh
``SalesforceClient`` and its own ledger; ``DestinationSync.run`` and closing the ledger are what is
timed, split into *login + describe* (network), *change set* (ledger read, desired state, diff,
client-side checks, exit guard, Bulk recovery check: the sync's own code), *send* (write requests in
flight plus the ledger commit of each batch; for Bulk: the job's calls, the writer's poll waits and its
client-side work) and *ledger close*.

Bulk API 2.0 in the fake. The fake processes a closed job at its first poll (its
``bulk_polls_before_complete`` is left at the default 0), inside that poll's request, so a Bulk sync here
needs the fewest requests and its wall time holds no queueing: a real org queues and processes the job in
the background, which takes longer. What this measures is the client's cost (CSV, upload, result
matching, ledger) and the request count, the robust figure. The ``BulkWriter`` is built as the sync asset
builds it (``sfmc_pipeline/crm/sink.py`` ``_bulk_writer``), with its default poll schedule (first poll
after 1 s, doubling up to 30 s) and real sleeps; the sleeps are timed and reported separately, so the
wall time is shown with and without them.

Series, each ``--records`` contacts in ``--segments`` segments (all ``realized`` at first), with
FirstName/LastName/Email, run through the phases

1. **first sync**: every record is sent;
2. **unchanged re-run**: nothing to send (two API requests: login and describe);
3. **1 % changed**: 1 % of the records go ``realized`` -> ``existing`` in their segments.

The series: **composite** (Collections only, ``bulk=None``, default concurrency: what the figures showed
before Bulk existed), **sequential** (Collections only, ``concurrent_requests: 1``) and **as deployed**
(the ``BulkWriter`` and the default ``bulk_threshold``: a first sync of more than 2,000 records goes
through Bulk, so does a 1 % change of 200,000 records, exactly 2,000). The **naive** baseline sends one
record per request (``batch_size: 1``) for ``--naive-records`` fresh records and is extrapolated linearly
to ``--records``.

4. **N changed: composite vs Bulk API 2.0** (``--bulk-records``, default 50,000): a new evaluation
   changes the status of N records (``realized`` <-> ``existing``, every segment). The as-deployed
   series' ledger (or, when N > ``--records``, the ledger of a set-up series of N contacts synced first)
   is copied twice, and the same change set is synced from each copy: once with ``bulk=None``
   (concurrent Collections) and once with the ``BulkWriter``. Both must leave the same ledger content.

Reported per phase: wall time, records/s, API requests next to the fewest requests the change set
needs (``SyncOutcome.min_requests``) and next to sending everything (no diff), requests in flight at once,
and the peak RSS of this process during the phase (``getrusage`` after resetting the high-water mark; the
inputs of all series are in memory, so the RSS before the phases is shown too). API requests are the
client's count (token request and retries included) and are checked against what the fake received.
Figures are printed, not asserted; the script stops with an error only when a sync does not finish
(failed, rejected or pending records), the org does not hold what was sent, or the two runs of phase 4
confirm different things, since the figures would then describe something else.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import os
import platform
import shutil
import sqlite3
import sys
import tempfile
import time
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_memory import current_rss_mib, peak_rss_mib, reset_peak_rss, total_memory  # noqa: E402  (scripts/)

from sfmc_pipeline.config.destinations import DestinationConfig, SyncSettings  # noqa: E402
from sfmc_pipeline.config.loader import load_pipeline_config  # noqa: E402
from sfmc_pipeline.crm.bulk.job_store import BulkJobStore  # noqa: E402
from sfmc_pipeline.crm.bulk.writer import BulkWriter  # noqa: E402
from sfmc_pipeline.crm.ledger import SyncLedger  # noqa: E402
from sfmc_pipeline.crm.ledger_hashing import key_path  # noqa: E402
from sfmc_pipeline.crm.outcome import SyncOutcome  # noqa: E402
from sfmc_pipeline.crm.sync import DestinationSync  # noqa: E402
from sfmc_pipeline.salesforce.ids import to_18  # noqa: E402
from sfmc_pipeline.salesforce.records import MAX_RECORDS_PER_REQUEST  # noqa: E402
from sfmc_pipeline.salesforce.rest import SalesforceClient  # noqa: E402
from sfmc_pipeline.settings import DEFAULT_CONFIG_PATH  # noqa: E402

DEVELOPER_EDITION_DAILY = 15_000  # a Developer Edition org, per rolling 24 h
PRODUCTION_BASE_DAILY = 100_000  # production orgs: 100,000 + per-licence adders
FAKE_DAILY_LIMIT = 1_000_000_000  # far above any workload here: the usage guard never stops a phase
CHANGED_SHARE = 0.01
TARGETS = {"unchanged re-run": 3.0, "1% changed": 5.0}  # seconds, for 200,000 records (the targets)
PHASES = ("first sync", "unchanged re-run", "1% changed")
CONFIG = load_pipeline_config(DEFAULT_CONFIG_PATH)
# BulkIngestClient calls, timed and counted per phase (``job`` is a poll: the fake processes the job in it)
BULK_CALLS = ("create_job", "upload", "close", "job", "successful_results", "failed_results", "unprocessed_records",
              "jobs", "abort")
RESULT_CALLS = ("successful_results", "failed_results", "unprocessed_records")


# ----------------------------------------------------------------------------------------------
# The fake org, in a child process
# ----------------------------------------------------------------------------------------------


def _fake_org_main(conn, latency: float) -> None:
    """Child process: serve a fake org and answer the parent's set-up and check commands. Only the fake's
    constructor options and public methods/state are used (its HTTP scaffolding is not this script's business);
    ``bulk_polls_before_complete`` keeps its default (0: a closed job is processed at its first poll)."""
    from sfmc_pipeline_testing.salesforce_server import FakeSalesforceServer

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
            # between phases nothing is in flight (the client is closed), so no lock is needed here
            org.requests.clear()
            org.write_log.clear()
            org.max_in_flight = 0
            conn.send(None)
        elif command == "phase_counts":  # what the fake received since start_phase
            conn.send({"max_in_flight": org.max_in_flight, "token": len(org.token_requests()),
                       "api": len(org.api_requests()), "bulk": len(org.bulk_requests())})
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


def flipped(status: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """A new evaluation: ``n`` records chosen at random go ``realized`` <-> ``existing`` (every segment)."""
    out = status.copy()
    chosen = rng.permutation(len(status))[:n]
    out[chosen] = np.where(status[chosen] == "realized", "existing", "realized")
    return out


# ----------------------------------------------------------------------------------------------
# Measurement
# ----------------------------------------------------------------------------------------------


@dataclass
class Phase:
    outcome: SyncOutcome
    seconds: float  # DestinationSync.run
    network_setup: float  # login + describe
    change_set: float  # the sync's own code before sending
    send: float  # write requests in flight + ledger commits (+ the whole Bulk write)
    ledger_close: float  # closing the ledger
    composite: float  # of send: sObject Collections batches (requests + ledger commits)
    api_requests: int  # client.api_requests: token call and retries included
    logins: int
    retries: int  # transport retries (in api_requests, not in the write/Bulk counts)
    peak_rss: float
    fake: dict  # what the fake received: max_in_flight, token, api, bulk
    bulk_calls: dict[str, tuple[int, float]] = field(default_factory=dict)  # BulkIngestClient call -> (n, seconds)
    poll_wait: float = 0.0  # the BulkWriter's sleeps before polls (real, timed)
    bulk_parts: dict[str, float] = field(default_factory=dict)  # partition, job state, ledger: seconds
    messages: list[str] = field(default_factory=list)

    @property
    def sent(self) -> int:
        return self.outcome.sent

    @property
    def fixed(self) -> int:
        """Requests that are neither writes nor Bulk calls: login (token) and describe, plus any retries."""
        return self.api_requests - self.outcome.requests - self.outcome.bulk_requests

    @property
    def minimum(self) -> int:
        """The fewest API requests for this run: the write minimum plus login and describe."""
        return self.outcome.min_requests + self.logins + 1

    @property
    def polls(self) -> int:
        return self.bulk_calls.get("job", (0, 0.0))[0]

    @property
    def bulk_call_seconds(self) -> float:
        return sum(seconds for _, seconds in self.bulk_calls.values())

    @property
    def bulk_client(self) -> float:
        """Of send: the Bulk write's own work in this process (partition, job state, CSV, result matching,
        ledger), i.e. neither a Bulk call, a poll wait nor a Collections batch."""
        return self.send - self.composite - self.bulk_call_seconds - self.poll_wait if self.outcome.bulk_jobs else 0.0

    @property
    def csv_and_results(self) -> float:
        """Of ``bulk_client``: what is not partition, job state or ledger: building the CSV, reading and
        matching the result rows."""
        return self.bulk_client - sum(self.bulk_parts.values())

    @property
    def without_waits(self) -> float:
        return self.seconds - self.poll_wait

    @property
    def path(self) -> str:
        out = self.outcome
        if out.bulk_jobs:
            jobs = f"Bulk API 2.0 ({len(out.bulk_jobs)} job{'s' if len(out.bulk_jobs) > 1 else ''})"
            return jobs + (f" + Collections ({out.requests})" if out.requests else "")
        return "sObject Collections" if out.requests else "nothing sent"


def _timed(function, totals: dict, key: str, counts: dict | None = None):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            totals[key] = totals.get(key, 0.0) + time.perf_counter() - start
            if counts is not None:
                counts[key] = counts.get(key, 0) + 1
    return wrapper


def bulk_writer(client: SalesforceClient, dest: DestinationConfig, settings: SyncSettings, ledger: SyncLedger,
                ledger_path: Path, run_id: str, sleep, log) -> BulkWriter:
    """The writer as ``sfmc_pipeline/crm/sink.py`` ``_bulk_writer`` builds it (store beside the ledger, the
    config's poll timeout and usage threshold, default poll schedule), with a timed real ``sleep``."""
    return BulkWriter(
        client, dest.object, dest.operation, dest.external_id.field if dest.external_id else None,
        state=BulkJobStore.beside(ledger_path, client.target_id), destination=dest.name,
        poll_timeout_seconds=settings.bulk_poll_timeout_seconds, usage_threshold=settings.usage_threshold,
        confirm=lambda rows: ledger.record(dest.object, dest.name, run_id, rows), log=log, sleep=sleep,
    )


def sync_once(org: FakeOrg, dest: DestinationConfig, settings: SyncSettings, ledger_path: Path, run_id: str,
              statuses: pd.DataFrame, profiles: pd.DataFrame, *, bulk: bool = False) -> Phase:
    """One sync with a fresh client and ledger connection (and, with ``bulk``, a ``BulkWriter`` with its job
    store beside the ledger); ``DestinationSync.run`` is timed."""
    org.call("start_phase")
    client = SalesforceClient(base_url=org.base_url, client_id=org.client_id, client_secret=org.client_secret)
    totals: dict[str, float] = {}
    calls: dict[str, float] = {}
    parts: dict[str, float] = {}
    counts: dict[str, int] = {}
    messages: list[str] = []
    client.session.login = _timed(client.session.login, totals, "network")
    client.describe = _timed(client.describe, totals, "network")
    ledger = writer = None
    try:
        pipeline = CONFIG.model_copy(update={"sync": settings})
        reset_peak_rss()
        start = time.perf_counter()
        target_id = client.target_id  # the login (timed as network)
        ledger = SyncLedger(ledger_path, target_id)
        if bulk:
            writer = bulk_writer(client, dest, settings, ledger, ledger_path, run_id,
                                 _timed(time.sleep, totals, "poll wait"), messages.append)
            for name in BULK_CALLS:
                setattr(writer.ingest, name, _timed(getattr(writer.ingest, name), calls, name, counts))
            for name in ("begin", "attach", "advance", "forget"):  # the job store (SQLite beside the ledger)
                setattr(writer.state, name, _timed(getattr(writer.state, name), parts, "job state"))
            writer.partition = _timed(writer.partition, parts, "partition")
            writer.confirm = _timed(writer.confirm, parts, "ledger")
        syncer = DestinationSync.for_pipeline(pipeline, dest, client, ledger, run_id=run_id, bulk=writer,
                                              log=messages.append)
        syncer.sender.send = _timed(syncer.sender.send, totals, "send")
        syncer.sender.send_collections = _timed(syncer.sender.send_collections, totals, "composite")
        outcome = syncer.run(statuses, profiles)
        closing_at = time.perf_counter()
        ledger.close()
        ledger = None
        seconds = time.perf_counter() - start
        totals["ledger close"] = time.perf_counter() - closing_at
        peak = peak_rss_mib()
    finally:
        if writer is not None:
            writer.state.close()
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
    fake = org.call("phase_counts")
    saving = totals["ledger close"]
    phase = Phase(outcome, seconds, network, seconds - network - send - saving, send, saving, totals.get("composite", 0.0),
                  client.api_requests, client.logins, client.transport.stats.retries, peak, fake,
                  {name: (counts[name], calls[name]) for name in calls}, totals.get("poll wait", 0.0), parts,
                  messages)
    received = fake["token"] + fake["api"]
    if received != phase.api_requests or fake["bulk"] != outcome.bulk_requests + _bulk_retries(phase):
        raise RuntimeError(f"{run_id}: the client counted {phase.api_requests} requests ({outcome.bulk_requests} "
                           f"Bulk), the fake received {received} ({fake['bulk']} Bulk); the counts would be wrong")
    return phase


def _bulk_retries(phase: Phase) -> int:
    """Transport retries that were Bulk calls: all of them when the run made Bulk calls only (rare; 0 normally)."""
    return phase.retries if phase.outcome.bulk_requests and not phase.outcome.requests else 0


def ledger_bytes(path: Path) -> int:
    """The ledger's database file plus any WAL/shared-memory files next to it."""
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*") if p.is_file())


def ledger_rows(path: Path) -> int:
    with closing(sqlite3.connect(path)) as db:
        return db.execute("SELECT COUNT(*) FROM confirmed_fields").fetchone()[0]


def copy_ledger(source: Path, target: Path) -> None:
    """A consistent copy of a closed ledger (SQLite's backup API, WAL content included) with its key beside it
    (``<stem>.key``), as a deployment has it after its last sync."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with closing(sqlite3.connect(source)) as a, closing(sqlite3.connect(target)) as b:
        a.backup(b)
    if key_path(source).exists():  # the hashed names and emails are only equal under the same key
        shutil.copy2(key_path(source), key_path(target))


def ledger_differences(a: Path, b: Path) -> int:
    """(record, field, value) rows in one ledger and not in the other, both ways."""
    columns = "target, object, record_id, field, kind, destination, value"
    with closing(sqlite3.connect(a)) as db:
        db.execute("ATTACH DATABASE ? AS other", (str(b),))
        return sum(db.execute(f"SELECT COUNT(*) FROM (SELECT {columns} FROM {x}.confirmed_fields EXCEPT "
                              f"SELECT {columns} FROM {y}.confirmed_fields)").fetchone()[0]
                   for x, y in (("main", "other"), ("other", "main")))


def polls_for(seconds: float, first: float, cap: float) -> int:
    """Polls the BulkWriter's backoff (first, x2, ... capped) makes before it sees a job that takes ``seconds``."""
    waited, delay, polls = 0.0, first, 0
    while True:
        waited += delay
        polls += 1
        if waited >= seconds:
            return polls
        delay = min(delay * 2, cap)


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------


def per_second(n: float, seconds: float) -> str:
    return f"{n / seconds:,.0f}" if seconds > 0 and n else "-"


def share(calls: float, allocation: int) -> str:
    return f"{calls / allocation:.2%}"


def ratio(a: float, b: float) -> str:
    return (f"{a / b:,.1f}x" if a >= b else f"{a / b:.2f}x") if b > 0 else "-"


def faster(composite: float, bulk: float) -> str:
    """``composite / bulk`` for times, with which one was faster."""
    return f"{ratio(composite, bulk)}: Bulk {'faster' if bulk < composite else 'slower'}"


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(header) - 2)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def requests_text(p: Phase) -> str:
    """``API requests T = login+describe F + writes W + Bulk B (...)``, and the minimum."""
    out = p.outcome
    parts = [f"login+describe {p.logins + 1}"]
    if out.requests or not out.bulk_requests:
        parts.append(f"Collections {out.requests:,}")
    if out.bulk_requests:
        results = sum(p.bulk_calls.get(name, (0, 0.0))[0] for name in RESULT_CALLS)
        other = out.bulk_requests - sum(n for n, _ in p.bulk_calls.values())
        detail = (f"create {p.bulk_calls.get('create_job', (0,))[0]}, upload {p.bulk_calls.get('upload', (0,))[0]}, "
                  f"close {p.bulk_calls.get('close', (0,))[0]}, poll {p.polls}, results {results}"
                  + (f", other {other}" if other else ""))
        parts.append(f"Bulk {out.bulk_requests:,} ({detail})")
    if p.retries:
        parts.append(f"retries {p.retries}")
    return f"API requests {p.api_requests:,} = {' + '.join(parts)}; minimum {p.minimum:,}"


def phase_line(label: str, p: Phase, everything: int, *, moved: int | None = None) -> str:
    """One run: wall time and its split, records/s, requests, concurrency, memory."""
    out = p.outcome
    moved = out.considered if moved is None else moved
    split = (f"wall {p.seconds:7.2f} s = login+describe {p.network_setup:5.2f} + change set {p.change_set:5.2f} + "
             f"send {p.send:6.2f} + ledger close {p.ledger_close:4.2f}")
    if out.bulk_jobs:
        create_close = sum(p.bulk_calls.get(name, (0, 0.0))[1] for name in ("create_job", "close"))
        results = sum(p.bulk_calls.get(name, (0, 0.0))[1] for name in RESULT_CALLS)
        split += (f" [Bulk calls {p.bulk_call_seconds:.2f} (create+close {create_close:.2f}, upload "
                  f"{p.bulk_calls.get('upload', (0, 0.0))[1]:.2f}, poll {p.bulk_calls.get('job', (0, 0.0))[1]:.2f} "
                  f"incl. the fake processing the job, results {results:.2f}) + poll waits {p.poll_wait:.2f} + "
                  f"client side {p.bulk_client:.2f} (partition {p.bulk_parts.get('partition', 0.0):.2f}, job state "
                  f"{p.bulk_parts.get('job state', 0.0):.2f}, CSV + result matching {p.csv_and_results:.2f}, ledger "
                  f"{p.bulk_parts.get('ledger', 0.0):.2f}) + Collections {p.composite:.2f}]")
    return (f"  {label:12s} {split} | {per_second(moved, p.seconds):>8} records/s | {requests_text(p)} "
            f"(writes without diff {everything:,}) | {p.path} | in flight {out.max_in_flight} "
            f"(fake saw {p.fake['max_in_flight']}) | peak RSS {p.peak_rss:,.0f} MiB")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=5000, help="contacts per series (default 5,000: a smoke run; "
                        "the figures in docs/performance.md use 200,000)")
    parser.add_argument("--bulk-records", type=int, default=50_000,
                        help="records changed in the composite-vs-Bulk phase (default 50,000; when more than "
                        "--records, a set-up series of this many contacts is synced first)")
    parser.add_argument("--naive-records", type=int, default=100,
                        help="contacts synced one request per record, then extrapolated (default 100)")
    parser.add_argument("--segments", type=int, default=3, help="segments per contact (default 3)")
    parser.add_argument("--latency", type=float, default=0.05, help="seconds the fake org holds each request "
                        "(default 0.05)")
    parser.add_argument("--seed", type=int, default=7, help="numpy seed choosing the changed records (default 7)")
    args = parser.parse_args(argv)
    if args.records < 1 or args.naive_records < 1 or args.segments < 1 or args.latency < 0:
        parser.error("--records, --naive-records and --segments must be >= 1, --latency >= 0")
    if args.bulk_records < CONFIG.sync.bulk_threshold:
        parser.error(f"--bulk-records must be at least sync.bulk_threshold ({CONFIG.sync.bulk_threshold:,}), or "
                     "the Bulk run would write through Collections too")
    if max(args.records, args.naive_records, args.bulk_records) >= 10**9:
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
    load_at_start = os.getloadavg()
    dest = CONFIG.destination("contacts")
    if args.segments > len(dest.segments):
        raise SystemExit(f"--segments {args.segments}: the contacts destination maps only {len(dest.segments)}")
    segments = list(dest.segments)[: args.segments]
    concurrent = CONFIG.sync
    sequential = concurrent.model_copy(update={"concurrent_requests": 1})
    naive = sequential.model_copy(update={"batch_size": 1})
    n, n_naive, n_bulk = args.records, args.naive_records, args.bulk_records
    # name -> (settings, BulkWriter or not, ids)
    series = {"composite": (concurrent, False, contact_ids(0, n)), "sequential": (sequential, False, contact_ids(1, n)),
              "as deployed": (concurrent, True, contact_ids(3, n))}
    naive_ids = contact_ids(2, n_naive)
    own_population = n_bulk > n  # phase 4 needs more records than a series has: a set-up series of n_bulk
    population_ids = contact_ids(4, n_bulk) if own_population else series["as deployed"][2]

    rng = np.random.default_rng(args.seed)
    n_changed = max(1, round(n * CHANGED_SHARE))
    second = np.full(n, "realized", dtype=object)
    second[rng.permutation(n)[:n_changed]] = "existing"
    inputs = {name: (profiles_frame(ids), statuses_frame(ids, segments), statuses_frame(ids, segments, second))
              for name, (_, _, ids) in series.items()}
    population_before = np.full(n_bulk, "realized", dtype=object) if own_population else second
    third = flipped(population_before, n_bulk, np.random.default_rng(args.seed + 1))
    population_profiles = profiles_frame(population_ids) if own_population else inputs["as deployed"][0]
    population_statuses = statuses_frame(population_ids, segments, third)

    org.call("add_fields", list(dest.status_fields))
    org.call("add_records", [rid for _, _, ids in series.values() for rid in ids] + naive_ids
             + (population_ids if own_population else []))
    workdir = tempfile.TemporaryDirectory(prefix="benchmark_sync-")
    root = Path(workdir.name)
    try:
        rss_before = current_rss_mib()
        results: dict[str, dict[str, Phase]] = {name: {} for name in series}
        ledgers = {name: root / name.replace(" ", "-") / "ledger.sqlite" for name in series}  # Bulk state beside
        for phase, frame_at in zip(PHASES, (1, 1, 2)):
            for name, (settings, bulk, ids) in series.items():
                results[name][phase] = sync_once(org, dest, settings, ledgers[name], f"{name}-{phase}",
                                                 inputs[name][frame_at], inputs[name][0], bulk=bulk)
        first_ledger = (ledger_bytes(ledgers["composite"]), ledger_rows(ledgers["composite"]))
        problems = {name: org.call("state_problems", (ids, segments, list(second)))
                    for name, (_, _, ids) in series.items()}
        if any(problems.values()):
            raise RuntimeError(f"the fake org does not hold what was sent: {problems}")
        baseline = sync_once(org, dest, naive, root / "naive" / "ledger.sqlite", "naive",
                             statuses_frame(naive_ids, segments), profiles_frame(naive_ids))

        # phase 4: the same change set from the same starting ledger, Collections only and through Bulk
        setup = None
        start_ledger = ledgers["as deployed"]
        if own_population:
            start_ledger = root / "population" / "ledger.sqlite"
            setup = sync_once(org, dest, concurrent, start_ledger, "population-setup",
                              statuses_frame(population_ids, segments, population_before), population_profiles,
                              bulk=True)
        big: dict[str, Phase] = {}
        big_ledgers = {kind: root / f"changed-{kind}" / "ledger.sqlite" for kind in ("composite", "bulk")}
        for kind, ledger_copy in big_ledgers.items():
            copy_ledger(start_ledger, ledger_copy)
        for kind in ("composite", "bulk"):
            big[kind] = sync_once(org, dest, concurrent, big_ledgers[kind], f"{n_bulk}-changed-{kind}",
                                  population_statuses, population_profiles, bulk=kind == "bulk")
        big_problems = org.call("state_problems", (population_ids, segments, list(third)))
        if big_problems:
            raise RuntimeError(f"the fake org does not hold what phase 4 sent: {big_problems} records")
        differences = ledger_differences(big_ledgers["composite"], big_ledgers["bulk"])
        if differences:
            raise RuntimeError(f"phase 4: the composite and the Bulk run confirmed different things ({differences} "
                               "ledger rows differ)")
        big_ledger_rows = ledger_rows(big_ledgers["bulk"])
        handler_errors = org.call("handler_errors")
    finally:
        workdir.cleanup()

    scale = n / n_naive
    naive_writes = round(baseline.outcome.requests * scale)
    naive_requests = naive_writes + baseline.api_requests - baseline.outcome.requests
    naive_seconds = baseline.seconds * scale
    everything = math.ceil(n / MAX_RECORDS_PER_REQUEST)  # write requests when every record is sent (no diff)
    probe = BulkWriter.__init__.__kwdefaults__  # the writer's default poll schedule (what the asset uses)
    first_poll, max_poll = probe["first_poll_seconds"], probe["max_poll_seconds"]

    print(f"CRM sync benchmark: {n:,} contacts x {len(segments)} segments ({', '.join(segments)}), destination "
          f"{dest.name!r} -> {dest.object}, batch size {concurrent.batch_size}, concurrent requests "
          f"{concurrent.concurrent_requests}, bulk_threshold {concurrent.bulk_threshold:,}; fake org in a child "
          f"process on 127.0.0.1, {args.latency * 1000:.0f} ms per request")
    print(f"Load average at the start: {', '.join(f'{x:.2f}' for x in load_at_start)}; RSS before the phases "
          f"(inputs of all series): {rss_before:,.0f} MiB")
    print("Series: composite = sObject Collections only (bulk=None), sequential = the same with "
          "concurrent_requests 1, as deployed = with the BulkWriter (change sets >= bulk_threshold go through Bulk "
          "API 2.0)")
    print(f"Bulk API 2.0 here: the fake processes a closed job at its first poll (bulk_polls_before_complete = 0, the "
          f"default, inside that poll's request); a real org queues and processes it in the background, which takes "
          f"longer. The BulkWriter keeps its default poll schedule (first poll after {first_poll:g} s, doubling up to "
          f"{max_poll:g} s, as the sync asset builds it) and really sleeps; those waits are timed and shown "
          f"separately ('poll waits', 'without poll waits'), so the client's own cost is visible. The request count "
          f"is the robust figure: against a real org each further poll is one more request (a job that takes 60 s: "
          f"{polls_for(60, first_poll, max_poll)} polls, 10 min: {polls_for(600, first_poll, max_poll)}).")
    print()
    rows = []
    for phase in PHASES:
        fast, slow, deployed = (results[name][phase] for name in ("composite", "sequential", "as deployed"))
        out = fast.outcome
        print(f"{phase} ({out.to_send:,} of {out.considered:,} records to send)")
        for label, p in (("composite", fast), ("sequential", slow), ("as deployed", deployed)):
            print(phase_line(label, p, everything))
        target = TARGETS.get(phase)
        if target is not None:
            verdicts = ", ".join(f"{label} {p.seconds:.2f} s {'met' if p.seconds <= target else 'NOT met'}"
                                 for label, p in (("composite", fast), ("as deployed", deployed)))
            print(f"  target for 200,000 records: <= {target:.0f} s (at {n:,} records: {verdicts})")
        print(f"  composite vs sequential: {slow.seconds / fast.seconds:.1f}x faster; API requests "
              f"{fast.api_requests:,} = minimum {fast.minimum:,} + {fast.api_requests - fast.minimum} extra")
        if deployed.outcome.bulk_jobs:
            print(f"  as deployed (Bulk) vs composite: wall {deployed.seconds:.2f} s vs {fast.seconds:.2f} s "
                  f"(composite / Bulk {faster(fast.seconds, deployed.seconds)}; without poll waits "
                  f"{deployed.without_waits:.2f} s, {faster(fast.seconds, deployed.without_waits)}); API requests "
                  f"{deployed.api_requests:,} vs {fast.api_requests:,} "
                  f"({ratio(fast.api_requests, deployed.api_requests)} fewer)")
        for label, p in (("composite", fast), ("sequential", slow), ("as deployed", deployed)):
            for message in p.messages:
                print(f"  ({label} logged: {message})")
        for label, p in (("composite", fast), ("as deployed", deployed)):
            if label == "as deployed" and not p.outcome.bulk_jobs:
                continue  # the same path as composite: one row is enough
            rows.append([phase, f"{label}: {p.path}", f"{p.outcome.to_send:,}", f"{p.seconds:.2f}",
                         f"{p.change_set:.2f}", f"{p.poll_wait:.2f}" if p.outcome.bulk_jobs else "",
                         f"{slow.seconds:.2f}" if label == "composite" else "",
                         per_second(p.outcome.considered, p.seconds), f"{p.api_requests:,}", f"{p.minimum:,}",
                         f"{everything + 2:,}", f"{p.peak_rss:,.0f}"])

    print(f"naive baseline: one record per request, {n_naive:,} fresh records: {baseline.seconds:.2f} s, "
          f"{baseline.api_requests:,} API requests; extrapolated to {n:,} records: {naive_seconds:,.0f} s "
          f"({naive_seconds / 3600:.1f} h), {naive_requests:,} API requests")
    first, first_bulk = results["composite"]["first sync"], results["as deployed"]["first sync"]
    print(f"first sync vs naive: composite {naive_seconds / first.seconds:,.0f}x faster, "
          f"{naive_requests / first.api_requests:,.0f}x fewer API requests; as deployed "
          f"{naive_seconds / first_bulk.seconds:,.0f}x faster, {naive_requests / first_bulk.api_requests:,.0f}x fewer; "
          f"ledger {first_ledger[0] / 2**20:,.1f} MiB ({first_ledger[1]:,} rows)")
    print("daily allocation used by the first sync: " + "; ".join(
        f"{label} {p.api_requests:,} calls = {share(p.api_requests, DEVELOPER_EDITION_DAILY)} of a Developer Edition "
        f"org's {DEVELOPER_EDITION_DAILY:,}, {share(p.api_requests, PRODUCTION_BASE_DAILY)} of a production org's "
        f"base {PRODUCTION_BASE_DAILY:,}" for label, p in (("composite", first), ("as deployed", first_bulk)))
        + f"; one request per record: {naive_requests:,} calls = {share(naive_requests, DEVELOPER_EDITION_DAILY)} / "
          f"{share(naive_requests, PRODUCTION_BASE_DAILY)}")
    print()

    comp, bulk = big["composite"], big["bulk"]
    considered = comp.outcome.considered
    big_everything = math.ceil(considered / MAX_RECORDS_PER_REQUEST)
    origin = (f"a set-up series of {n_bulk:,} contacts (--bulk-records > --records), synced first through Bulk in "
              f"{setup.seconds:.2f} s with {setup.api_requests:,} requests" if own_population
              else "the as-deployed series after the 1% phase")
    print(f"{n_bulk:,} changed: composite vs Bulk API 2.0 ({comp.outcome.to_send:,} of {considered:,} records to "
          f"send, {len(segments)} status fields each; starting ledger: {origin}, copied for each run; the composite "
          "run first, then the Bulk run, against the same org)")
    for label, p in (("composite", comp), ("Bulk API 2.0", bulk)):
        print(phase_line(label, p, big_everything, moved=p.outcome.to_send).replace("records/s", "records sent/s"))
    print(f"  Bulk without its poll waits: {bulk.without_waits:.2f} s, "
          f"{per_second(bulk.outcome.to_send, bulk.without_waits)} records sent/s (still including the "
          f"{bulk.bulk_calls.get('job', (0, 0.0))[1]:.2f} s of the poll in which the fake processes the job, which a "
          "real org does in the background)")
    print(f"  composite / Bulk: wall {faster(comp.seconds, bulk.seconds)} (without poll waits "
          f"{faster(comp.seconds, bulk.without_waits)}), API requests {comp.api_requests:,} / {bulk.api_requests:,} = "
          f"{ratio(comp.api_requests, bulk.api_requests)} (minimum {comp.minimum:,} / {bulk.minimum:,}); daily "
          f"allocation {share(comp.api_requests, DEVELOPER_EDITION_DAILY)} vs "
          f"{share(bulk.api_requests, DEVELOPER_EDITION_DAILY)} of a Developer Edition org's, "
          f"{share(comp.api_requests, PRODUCTION_BASE_DAILY)} vs {share(bulk.api_requests, PRODUCTION_BASE_DAILY)} "
          f"of a production org's base")
    print(f"  both runs left the same ledger content ({big_ledger_rows:,} rows) and the org holds the new statuses")
    for label, p in (("composite", comp), ("Bulk", bulk)):
        for message in p.messages:
            print(f"  ({label} logged: {message})")
    if handler_errors:
        print(f"WARNING: the fake org logged {len(handler_errors)} handler error(s); first:\n{handler_errors[0]}")
    print()
    rows.append([f"naive, one record per request (extrapolated from {n_naive:,})", "one record per request", f"{n:,}",
                 f"{naive_seconds:,.0f}", "", "", "", per_second(n, naive_seconds), f"{naive_requests:,}",
                 f"{everything + 2:,}", f"{everything + 2:,}", ""])
    for label, p in (("composite", comp), ("Bulk", bulk)):
        rows.append([f"{n_bulk:,} changed of {considered:,}", f"{label} run: {p.path}", f"{p.outcome.to_send:,}",
                     f"{p.seconds:.2f}", f"{p.change_set:.2f}", f"{p.poll_wait:.2f}" if p.outcome.bulk_jobs else "",
                     "", per_second(considered, p.seconds), f"{p.api_requests:,}", f"{p.minimum:,}",
                     f"{big_everything + 2:,}", f"{p.peak_rss:,.0f}"])
    print(markdown(["phase", "series (write path)", "records sent", "time (s)", "of which change set (s)",
                    "of which Bulk poll waits (s)", "sequential (s)", "records considered/s", "API requests",
                    "minimum API requests", "API requests without diff", "peak RSS (MiB)"], rows))
    print()
    cores = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    print(f"Machine: {cores} cores ({usable} usable), {total_memory()} RAM, {platform.platform()}; "
          f"Python {platform.python_version()}, pandas {pd.__version__}, numpy {np.__version__}, "
          f"requests {requests.__version__}, SQLite {sqlite3.sqlite_version}; load average "
          f"{', '.join(f'{x:.2f}' for x in os.getloadavg())} "
          f"(at the start {', '.join(f'{x:.2f}' for x in load_at_start)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
