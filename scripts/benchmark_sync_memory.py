"""Memory of the CRM sync at scale: a first sync and an unchanged re-run of N records, each in a fresh process.

    python scripts/benchmark_sync_memory.py --records 1000000
    python scripts/benchmark_sync_memory.py --records 1000000 --records 5000000 --stages --max-rss-gib 8

What is measured. The sync asset's own call (``crm.sink.sync_destination``) against the local target (the
SQLite CRM a newcomer writes to, ``crm/local/``), with the contacts destination of ``pipeline.yaml`` (three
attributes, nine status fields). The inputs are written once per size as the datasets the asset reads: the
profiles (every column of the contacts dataset) and the segment statuses (``profile_key, segment, status, held,
as_of``; ``--segments`` segments per profile, all ``realized``). Each phase runs in a child process of its own
(``--phase``), so its peak RSS (``ru_maxrss``) is the phase's alone:

1. **first sync**: empty ledger and local CRM; every record is seeded in the local CRM and sent;
2. **unchanged re-run**: the same inputs again; nothing is sent.

Per phase: wall time, RSS after the imports (the baseline), peak RSS, and bytes per record = (peak - baseline) /
records: everything the phase holds for the sync, the datasets it reads included. The issue's target: under
1 KB per record at 1M records. With ``--stages`` the child also prints, for each step of the sync, the peak RSS
reached during it and the RSS held after it (above the baseline), Arrow's allocated bytes, and the size of the
input frames (``memory_usage(deep=True)``): where the memory goes. ``--max-rss-gib`` stops a phase whose RSS
passes a ceiling (on a shared machine), and says so.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_memory import current_rss_mib, reset_peak_rss, total_memory  # noqa: E402  (scripts/)

PHASES = ("first sync", "unchanged re-run")
DESTINATION = "contacts"
MIB = 2**20


# ----------------------------------------------------------------------------------------------
# Inputs, written once per size (in a child process: the parent stays small)
# ----------------------------------------------------------------------------------------------


def write_inputs(directory: Path, records: int, segments: int) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from sfmc_pipeline.config.loader import load_pipeline_config
    from sfmc_pipeline.salesforce.ids import to_18
    from sfmc_pipeline.settings import DEFAULT_CONFIG_PATH

    config = load_pipeline_config(DEFAULT_CONFIG_PATH)
    names = list(config.destination(DESTINATION).segments)[:segments]
    directory.mkdir(parents=True, exist_ok=True)
    chunk = 500_000
    profiles_writer = statuses_writer = None
    for start in range(0, records, chunk):
        n = min(chunk, records - start)
        i = np.arange(start, start + n)
        ids = pa.array([to_18(f"0035e{k:010d}") for k in i.tolist()], pa.string())
        text = lambda prefix: pa.array(np.char.add(prefix, i.astype(str)).astype(object), pa.string())  # noqa: E731
        profiles = pa.table({
            "SubscriberKey": ids, "FirstName": text("First"), "LastName": text("Last"),
            "Email": pa.array(np.char.add(np.char.add("p", i.astype(str)), "@example.com").astype(object), pa.string()),
            "Company": text("Co"),
            "LifecycleStage": pa.array(np.array(["new", "repeat", "loyal", "inactive"], dtype=object)[i % 4], pa.string()),
            "OrderCount": pa.array(i % 17, pa.int64()),
            "TotalSpend": pa.array(i % 100_000, pa.int32()).cast(pa.decimal128(18, 2)),
            "LastPurchaseDate": pa.array(np.datetime64("2026-01-01", "us") - (i % 700).astype("timedelta64[D]"),
                                         pa.timestamp("us", tz="UTC")),
            "CreatedDate": pa.array(np.datetime64("2024-01-01", "us") - (i % 900).astype("timedelta64[D]"),
                                    pa.timestamp("us", tz="UTC")),
        })
        statuses = pa.table({
            "profile_key": pa.array(np.repeat(np.asarray(ids.to_pylist(), dtype=object), len(names)), pa.string()),
            "segment": pa.array(np.tile(np.asarray(names, dtype=object), n), pa.string()),
            "status": pa.array(["realized"] * (n * len(names)), pa.string()),
            "held": pa.array(np.zeros(n * len(names), dtype=bool)),
            "as_of": pa.array(np.full(n * len(names), np.datetime64("2026-06-01", "D")), pa.date32()),
        })
        if profiles_writer is None:
            profiles_writer = pq.ParquetWriter(directory / "profiles.parquet", profiles.schema)
            statuses_writer = pq.ParquetWriter(directory / "segment_statuses.parquet", statuses.schema)
        profiles_writer.write_table(profiles)
        statuses_writer.write_table(statuses)
    profiles_writer.close()
    statuses_writer.close()


# ----------------------------------------------------------------------------------------------
# One phase, in a child process
# ----------------------------------------------------------------------------------------------


class Stages:
    """Peak RSS during, and RSS held after, each wrapped step (MiB above the baseline), with Arrow's bytes."""

    def __init__(self, baseline: float):
        self.baseline, self.rows = baseline, []

    def wrap(self, owner, name: str, label: str) -> None:
        function = getattr(owner, name, None)
        if function is None:
            return

        def wrapper(*args, **kwargs):
            import pyarrow as pa

            before = current_rss_mib()
            reset_peak_rss()
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.rows.append((label, time.perf_counter() - start, before - self.baseline,
                                  _hwm_mib() - self.baseline, current_rss_mib() - self.baseline,
                                  pa.total_allocated_bytes() / MIB))
                reset_peak_rss()
        setattr(owner, name, wrapper)


def _hwm_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_phase(directory: Path, phase: str, stages: bool) -> dict:
    import pandas as pd

    from sfmc_pipeline.config.loader import load_pipeline_config
    from sfmc_pipeline.crm import diff, ledger, payloads, plan, ranged_plan, reconciliation, record_ranges, send, sink
    from sfmc_pipeline.crm.local.target import LocalCrmTarget
    from sfmc_pipeline.datasets.storage import read_parquet
    from sfmc_pipeline.settings import DEFAULT_CONFIG_PATH

    pipeline = load_pipeline_config(DEFAULT_CONFIG_PATH)
    dest = pipeline.destination(DESTINATION)
    baseline = current_rss_mib()
    probe = Stages(baseline)
    if stages:
        for owner, name, label in [
            (sink, "prepare_local_target", "local target: fields and seeded records"),
            (record_ranges.RecordRanges, "split", "record ranges (ledger keys, profile -> record)"),
            (ledger.SyncLedger, "confirmed", "ledger read of a range (confirmed)"),
            (ranged_plan, "build_desired_state", "desired state of a range (payloads)"),
            (ranged_plan, "run_preflight", "preflight"),
            (plan, "written_values", "written values (diff.written_values)"),
            (plan, "diff", "diff against the ledger"),
            (plan.Planner, "_checked", "client-side checks"),
            (plan.Planner, "_guard_counts", "exit guard counts"),
            (ranged_plan.RangedPlanner, "plan", "the whole plan (every range; spilled)"),
            (send.Sender, "send", "send (Collections batches + ledger commits)"),
            (sink, "reconcile", "reconciliation (read back)"),
        ]:
            probe.wrap(owner, name, label)
    del diff, payloads, reconciliation
    start = time.perf_counter()
    reset_peak_rss()
    statuses = read_parquet(directory / "segment_statuses.parquet",  # what the asset reads (store.read_dataset)
                            sink.SYNCED_STATUS_COLUMNS, sink.SYNCED_STATUS_CATEGORIES)
    columns = sink.profile_columns(pipeline, dest) if hasattr(sink, "profile_columns") else None  # as the asset
    profiles = read_parquet(directory / "profiles.parquet", columns) if columns else read_parquet(
        directory / "profiles.parquet")
    frames = {"statuses frame": statuses.memory_usage(deep=True).sum() / MIB,
              f"profiles frame ({len(profiles.columns)} columns)": profiles.memory_usage(deep=True).sum() / MIB}
    after_read = current_rss_mib() - baseline
    target = LocalCrmTarget(directory / "local_crm.sqlite")
    result = sink.sync_destination(
        target, pipeline, dest, statuses, profiles, ledger_file=directory / "ledger.sqlite", run_id=phase,
        options=sink.SyncOptions(), policy_exceptions=[], log=lambda m: None, info=lambda m: None)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if stages:  # the wrappers reset the high-water mark: the phase's peak is the largest seen
        peak = max([peak] + [baseline + row[3] for row in probe.rows])
    out = result.outcome
    if out.failed_total or out.rejected_total or out.pending or out.stopped:
        raise SystemExit(f"{phase}: the sync did not finish cleanly: {out.failed_total} failed, "
                         f"{out.rejected_total} rejected, {out.pending} pending, stopped={out.stopped!r}")
    return {"phase": phase, "seconds": seconds, "baseline_mib": baseline, "peak_mib": peak, "after_read_mib": after_read,
            "considered": out.considered, "sent": out.sent, "unchanged": out.unchanged, "requests": out.requests,
            "reconciled": result.check.passed, "frames": frames, "stages": probe.rows,
            "pandas": pd.__version__}


# ----------------------------------------------------------------------------------------------
# The parent: inputs once per size, then each phase in a child
# ----------------------------------------------------------------------------------------------


class TooLarge(Exception):
    """A phase's RSS passed ``--max-rss-gib``: it was stopped (the machine is shared)."""


def child(args: list[str], max_rss_gib: float | None = None) -> dict:
    """Run this script with ``args`` in a child process; with ``max_rss_gib``, stop it when its RSS passes that."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen([sys.executable, __file__, *args], stdout=out, stderr=err, text=True)
        largest = 0.0
        while process.poll() is None:
            try:
                largest = max(largest, _rss_gib(process.pid))
            except OSError:
                pass
            if max_rss_gib is not None and largest > max_rss_gib:
                process.kill()
                process.wait()
                raise TooLarge(f"stopped at {largest:.1f} GiB RSS (--max-rss-gib {max_rss_gib:g})")
            time.sleep(0.2)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if process.returncode:
        raise SystemExit(f"child {' '.join(args)} failed ({process.returncode}):\n{stderr[-4000:]}")
    return json.loads(stdout.strip().splitlines()[-1]) if stdout.strip() else {}


def _rss_gib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 2**20
    return 0.0


def report(records: int, result: dict, stages: bool) -> None:
    above = result["peak_mib"] - result["baseline_mib"]
    per_record = above * MIB / records
    print(f"  {result['phase']:17s} wall {result['seconds']:7.1f} s | {result['considered']:,} considered, "
          f"{result['sent']:,} sent, {result['unchanged']:,} unchanged, {result['requests']:,} write requests, "
          f"reconciliation {'passed' if result['reconciled'] else 'FAILED'} | RSS after imports "
          f"{result['baseline_mib']:,.0f} MiB, peak {result['peak_mib']:,.0f} MiB | "
          f"{per_record:,.0f} bytes/record {'(target < 1 KB: met)' if per_record < 1024 else '(target < 1 KB: NOT met)'}")
    if stages:
        print(f"    inputs read: RSS +{result['after_read_mib']:,.0f} MiB; "
              + ", ".join(f"{k} {v:,.0f} MiB" for k, v in result["frames"].items()))
        print("    step (MiB above the baseline; a step run per range: its calls,   calls seconds  before    peak   after  "
              "arrow\n    total seconds, highest peak, last RSS held)")
        steps: dict[str, list] = {}
        for label, seconds, before, peak, after, arrow in result["stages"]:
            if label not in steps:
                steps[label] = [0, 0.0, before, peak, after, arrow]
            step = steps[label]
            step[0] += 1
            step[1] += seconds
            step[3], step[4], step[5] = max(step[3], peak), after, arrow
        for label, (calls, seconds, before, peak, after, arrow) in steps.items():
            print(f"    {label:58s} {calls:5d} {seconds:7.1f} {before:7.0f} {peak:7.0f} {after:7.0f} {arrow:6.0f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, action="append", help="records per run (repeatable; default 1,000,000)")
    parser.add_argument("--segments", type=int, default=3, help="segments per profile (default 3)")
    parser.add_argument("--stages", action="store_true", help="print where the memory goes, step by step")
    parser.add_argument("--max-rss-gib", type=float, help="stop a phase whose RSS passes this (a shared machine)")
    parser.add_argument("--workdir", type=Path, help="keep the inputs, ledger and local CRM here (default: a temp dir)")
    parser.add_argument("--phase", help=argparse.SUPPRESS)  # child: run one phase in --workdir
    parser.add_argument("--write-inputs", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.write_inputs:
        write_inputs(args.workdir, args.records[0], args.segments)
        return 0
    if args.phase:
        print(json.dumps(run_phase(args.workdir, args.phase, args.stages)))
        return 0

    sizes = args.records or [1_000_000]
    root = args.workdir or Path(tempfile.mkdtemp(prefix="benchmark_sync_memory-"))
    print(f"CRM sync memory: destination {DESTINATION!r} to the local target, {args.segments} segments per profile; "
          f"each phase in a fresh process")
    try:
        for records in sizes:
            directory = root / f"{records}"
            shutil.rmtree(directory, ignore_errors=True)
            start = time.perf_counter()
            child(["--write-inputs", "--workdir", str(directory), "--records", str(records),
                   "--segments", str(args.segments)])
            print(f"{records:,} records (inputs written in {time.perf_counter() - start:.0f} s)")
            for phase in PHASES:
                extra = ["--stages"] if args.stages else []
                try:
                    result = child(["--phase", phase, "--workdir", str(directory), *extra], args.max_rss_gib)
                except TooLarge as exc:
                    print(f"  {phase:17s} {exc}; the phases after it are not run")
                    break
                report(records, result, args.stages)
            shutil.rmtree(directory, ignore_errors=True)
    finally:
        if args.workdir is None:
            shutil.rmtree(root, ignore_errors=True)
    cores = os.cpu_count()
    print(f"Machine: {cores} cores, {total_memory()} RAM, {platform.platform()}; Python {platform.python_version()}; "
          f"load average {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
