"""Benchmark the segment step on a synthetic org: the product's compiled plan next to a hand-written query.

    python scripts/benchmark_segments.py --profiles 10000000 --related-per-profile 5 [--spark] [--repeat 2]

1. **Synthetic org** (``scripts/bench_segment_org.py``): ``--profiles`` contacts and about
   ``--related-per-profile`` related rows each (one third ``campaign_engagement``, two thirds
   ``activities``), written under ``--storage`` (default ``/tmp/sfmc-pipeline-bench/<size>-seed<seed>``)
   as ``datasets/<name>.parquet`` exactly as the landing writes a validated dataset (columns, arrow
   types, pandas metadata: checked after writing). DuckDB generates the rows with SQL and streams them
   into the parquet writer, so generation stays in bounded memory at 10M / 100M. A folder that already
   holds the same size and seed (``bench-org.json``) is reused. Not part of any measurement.

2. **Measured, each step in a fresh child process** (its peak RSS, ``ru_maxrss`` of the child, belongs
   to that step alone), each writing the memberships (``profile_key, segment``) to a parquet file:
   - ``baseline``: a hand-written DuckDB query of the 9 shipped rules (``BASELINE_SQL``, written once by
     hand from ``pipeline.yaml``; calendar days in the configured timezone), same memory limit, threads
     and spill directory as the product, ``COPY ... TO`` parquet;
   - ``product``: what the ``segment_memberships`` asset does (``segments.memberships.write_memberships``
     on ``SegmentEngine``): the compiled plan on DuckDB written as parquet, then the member counts and the
     orphan counts of the asset's metadata;
   - ``plan``: the compiled plan alone, written as parquet (the like-for-like comparison with the query);
   - ``spark`` (``--spark``): the compiled plan on PySpark in local mode (``segments.spark.connect_spark``;
     time reported, no target; the peak RSS of the JVM is read from ``/proc``: a separate process).
   Wall time is the step's own (connect, plan, run, parquet written), not the interpreter's start.
   Memberships of every engine must be identical (DuckDB ``EXCEPT ALL`` in both directions): the script
   prints OK, or the differences and exits with status 1.

3. **Report**: per engine wall time, peak RSS, input rows/s, the ratio product / baseline, the issue's
   targets (10M profiles / 60M rows: at most 1.5x the baseline's time and under 2 GiB; 10M / 110M:
   under 4 GiB) as met / not met, per-segment member counts, the parquet scans of both plans
   (``EXPLAIN``: the columns each scan projects and the filters pushed into it), machine facts.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bench_segment_org as org  # noqa: E402  (scripts/)
from bench_memory import total_memory  # noqa: E402  (scripts/)

from sfmc_pipeline.config.loader import load_pipeline_config  # noqa: E402
from sfmc_pipeline.datasets.storage import DatasetStore  # noqa: E402
from sfmc_pipeline.segments.engine import (  # noqa: E402
    DEFAULT_MEMORY_LIMIT,
    SegmentEngine,
    compiler_for,
    connect_duckdb,
)
from sfmc_pipeline.segments.memberships import write_memberships  # noqa: E402
from sfmc_pipeline.settings import DEFAULT_CONFIG_PATH  # noqa: E402

AS_OF = dt.date(2026, 11, 20)
DEFAULT_STORAGE_ROOT = Path("/tmp/sfmc-pipeline-bench")
RESULT_PREFIX = "STEP-RESULT "
GIB = 2**30
TARGETS = {  # (profiles, related per profile) -> (max time ratio to the baseline, max peak RSS in GiB)
    (10_000_000, 5.0): (1.5, 2.0),
    (10_000_000, 10.0): (None, 4.0),
}


# ----------------------------------------------------------------------------------------------
# The measured steps (each runs in its own child process)
# ----------------------------------------------------------------------------------------------


def segments_of(config) -> list[tuple[str, object]]:
    return [(s.name, s.rule) for s in config.segments]


def product_members(store: DatasetStore, config, as_of: dt.date, out: Path, *, memory_limit: str,
                    threads: int | None, plan_only: bool = False) -> None:
    """The ``segment_memberships`` asset's work on DuckDB: the memberships written to ``out``, then (unless
    ``plan_only``) the member and orphan counts of its metadata."""
    engine = SegmentEngine(connect_duckdb(store, memory_limit=memory_limit, threads=threads), store)
    if plan_only:
        segments = segments_of(config)
        compiler = compiler_for(engine.con, store, config.profiles.dataset, segments, key=config.profiles.key,
                                as_of=as_of, timezone=config.evaluation.timezone)
        engine.write(compiler.members(segments), out)
    else:
        write_memberships(engine, config, as_of, set(), out)
    engine.close()


def spark_members(store: DatasetStore, config, as_of: dt.date, out: Path, *, driver_memory: str) -> dict:
    """The compiled plan on PySpark in local mode (the product's ``connect_spark``), written to ``out``."""
    from sfmc_pipeline.segments.spark import connect_spark

    start = time.perf_counter()
    con = connect_spark(store, master=f"local[{os.cpu_count()}]", driver_memory=driver_memory)
    session_s = time.perf_counter() - start
    segments = segments_of(config)
    compiler = compiler_for(con, store, config.profiles.dataset, segments, key=config.profiles.key, as_of=as_of,
                            timezone=config.evaluation.timezone)
    SegmentEngine(con, store).write(compiler.members(segments), out)
    jvm_peak = sum(_peak_rss_kib(pid) for pid in _descendants(os.getpid())) / 1024
    con.disconnect()
    return {"session_s": session_s, "jvm_peak_mib": jvm_peak}


# Hand-written, once, from pipeline.yaml's 9 segments (read the rules there). The session runs in the
# configured timezone, so DATE -> TIMESTAMPTZ is a local midnight and TIMESTAMPTZ -> DATE a local day.
# NOT MATERIALIZED: DuckDB would otherwise materialize a CTE read several times (every column, unfiltered).
BASELINE_SEGMENTS = ["new_customer", "repeat_buyer", "loyal_customer", "inactive_customer", "offer_clickers",
                     "positive_responders", "negative_responders", "visited_no_purchase", "form_submitters"]
BASELINE_SQL = """
WITH contacts AS NOT MATERIALIZED (SELECT * FROM read_parquet('{contacts}')),
     engagement AS NOT MATERIALIZED (SELECT * FROM read_parquet('{campaign_engagement}')),
     activities AS NOT MATERIALIZED (SELECT * FROM read_parquet('{activities}'))
SELECT SubscriberKey AS profile_key, 'new_customer' AS segment FROM contacts WHERE LifecycleStage = 'new'
UNION ALL
SELECT SubscriberKey, 'repeat_buyer' FROM contacts WHERE LifecycleStage = 'repeat'
UNION ALL
SELECT SubscriberKey, 'loyal_customer' FROM contacts WHERE LifecycleStage = 'loyal' OR OrderCount >= 10
UNION ALL
SELECT SubscriberKey, 'inactive_customer' FROM contacts
WHERE OrderCount >= 1 AND (LastPurchaseDate IS NULL OR LastPurchaseDate < (DATE '{as_of}' - 180)::TIMESTAMPTZ)
UNION ALL
SELECT SubscriberKey, 'offer_clickers' FROM contacts WHERE SubscriberKey IN (
    SELECT SubscriberKey FROM engagement WHERE OfferClicks > 0
    AND LastEngagedDate >= (DATE '{as_of}' - 30)::TIMESTAMPTZ AND LastEngagedDate < (DATE '{as_of}' + 1)::TIMESTAMPTZ)
UNION ALL
SELECT SubscriberKey, 'positive_responders' FROM contacts WHERE SubscriberKey IN (
    SELECT SubscriberKey FROM engagement WHERE Response = 'positive'
    AND SendDate >= (DATE '{as_of}' - 90)::TIMESTAMPTZ AND SendDate < (DATE '{as_of}' + 1)::TIMESTAMPTZ)
UNION ALL
SELECT SubscriberKey, 'negative_responders' FROM contacts WHERE SubscriberKey IN (
    SELECT SubscriberKey FROM engagement WHERE Response = 'negative'
    AND SendDate >= (DATE '{as_of}' - 90)::TIMESTAMPTZ AND SendDate < (DATE '{as_of}' + 1)::TIMESTAMPTZ)
UNION ALL
SELECT c.SubscriberKey, 'visited_no_purchase' FROM contacts c JOIN (
    SELECT SubscriberKey, max(OccurredAt) AS latest FROM activities WHERE ActivityType = 'web_visit'
    AND OccurredAt >= (DATE '{as_of}' - 7)::TIMESTAMPTZ AND OccurredAt < (DATE '{as_of}' + 1)::TIMESTAMPTZ
    GROUP BY SubscriberKey) v ON v.SubscriberKey = c.SubscriberKey
WHERE c.LastPurchaseDate IS NULL OR c.LastPurchaseDate::DATE < v.latest::DATE
UNION ALL
SELECT SubscriberKey, 'form_submitters' FROM contacts WHERE SubscriberKey IN (
    SELECT SubscriberKey FROM activities WHERE ActivityType = 'form_submit'
    AND OccurredAt >= (DATE '{as_of}' - 14)::TIMESTAMPTZ AND OccurredAt < (DATE '{as_of}' + 1)::TIMESTAMPTZ)
"""


def baseline_connection(store: DatasetStore, config, *, memory_limit: str, threads: int | None):
    import duckdb

    spill = store.state_path("engine-spill")
    spill.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    con.execute(f"SET TimeZone = '{config.evaluation.timezone}'")
    con.execute(f"SET memory_limit = '{memory_limit}'")
    con.execute(f"SET temp_directory = '{spill}'")
    con.execute("SET preserve_insertion_order = false")
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    return con


def baseline_query(store: DatasetStore, as_of: dt.date) -> str:
    paths = {name: store.dataset_path(name) for name in org.DATASETS}
    return BASELINE_SQL.format(as_of=as_of.isoformat(), **paths)


def baseline_members(store: DatasetStore, config, as_of: dt.date, out: Path, *, memory_limit: str,
                     threads: int | None) -> None:
    con = baseline_connection(store, config, memory_limit=memory_limit, threads=threads)
    con.execute(f"COPY ({baseline_query(store, as_of)}) TO '{out}' (FORMAT parquet)")


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], list(children.get(pid, []))
    while todo:
        child = todo.pop()
        found.append(child)
        todo.extend(children.get(child, []))
    return found


def _peak_rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def run_step(args: argparse.Namespace) -> int:
    """Child process: run one step, print its figures as one JSON line."""
    config = load_pipeline_config(DEFAULT_CONFIG_PATH)
    store = DatasetStore(args.storage)
    out = Path(args.out)
    rss_start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    cpu_start = _cpu_s()
    start = time.perf_counter()
    extra: dict = {}
    if args.step in ("product", "plan"):
        product_members(store, config, AS_OF, out, memory_limit=args.memory_limit, threads=args.threads,
                        plan_only=args.step == "plan")
    elif args.step == "baseline":
        baseline_members(store, config, AS_OF, out, memory_limit=args.memory_limit, threads=args.threads)
    else:
        extra = spark_members(store, config, AS_OF, out, driver_memory=args.spark_memory)
    wall = time.perf_counter() - start
    cpu = _cpu_s() - cpu_start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(RESULT_PREFIX + json.dumps({"wall_s": wall, "cpu_s": cpu, "peak_mib": peak, "start_peak_mib": rss_start, **extra}))
    return 0


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# ----------------------------------------------------------------------------------------------
# The parent: data, child processes, checks, report
# ----------------------------------------------------------------------------------------------


def spawn(step: str, args: argparse.Namespace, out: Path) -> dict:
    if out.is_dir():
        shutil.rmtree(out)
    out.unlink(missing_ok=True)
    command = [sys.executable, __file__, "--step", step, "--storage", str(args.storage), "--out", str(out),
               "--memory-limit", args.memory_limit, "--spark-memory", args.spark_memory]
    if args.threads:
        command += ["--threads", str(args.threads)]
    log = out.parent / f"{step}.log"
    with open(log, "w") as errors:
        child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors, text=True)
        output = child.stdout.read()
        _, status, usage = os.wait4(child.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    results = [line for line in output.splitlines() if line.startswith(RESULT_PREFIX)]
    if code != 0 or not results:  # reported as a failed run (e.g. DuckDB's out of memory), the others still run
        errors = [line for line in log.read_text().splitlines() if "Error" in line or "Exception" in line]
        return {"failed": (errors or [f"exit status {code}, see {log}"])[-1][:300], "peak_mib": usage.ru_maxrss / 1024}
    figures = json.loads(results[-1][len(RESULT_PREFIX):])
    figures["wait4_peak_mib"] = usage.ru_maxrss / 1024  # the child and the descendants it waited for
    return figures


def output_glob(out: Path) -> str:
    return str(out / "*.parquet") if out.is_dir() else str(out)


def compare(con, outputs: dict[str, Path], reference: str) -> list[str]:
    """Differences of every engine's memberships with ``reference``'s (EXCEPT ALL both ways)."""
    problems = []
    base = f"SELECT profile_key::VARCHAR AS k, segment::VARCHAR AS s FROM read_parquet('{output_glob(outputs[reference])}')"
    for engine, out in outputs.items():
        if engine == reference:
            continue
        other = f"SELECT profile_key::VARCHAR AS k, segment::VARCHAR AS s FROM read_parquet('{output_glob(out)}')"
        for label, query in ((f"{engine} only", f"{other} EXCEPT ALL {base}"), (f"{reference} only", f"{base} EXCEPT ALL {other}")):
            missing = con.execute(f"SELECT count(*) FROM ({query})").fetchone()[0]
            if missing:
                sample = con.execute(f"SELECT * FROM ({query}) LIMIT 5").fetchall()
                problems.append(f"{label} ({engine} vs {reference}): {missing:,} rows, e.g. {sample}")
    return problems


def member_counts(con, out: Path) -> dict[str, int]:
    rows = con.execute(f"SELECT segment, count(*) FROM read_parquet('{output_glob(out)}') GROUP BY segment").fetchall()
    return dict(rows)


def explain_scans(raw_con, sql: str, columns_by_dataset: dict[str, list[str]], rows: dict[str, int]) -> list[str]:
    """One line per parquet scan of ``sql``'s physical plan: the dataset (by the columns it reads, else
    by an unfiltered scan's estimated cardinality: the file's rows), projected columns, filters."""
    plan = json.loads(raw_con.execute(f"EXPLAIN (FORMAT json) {sql}").fetchall()[0][1])
    lines, root = [], plan[0]["name"] if plan else "?"

    def walk(node):
        info = node.get("extra_info", {})
        if "PARQUET" in node.get("name", "") or info.get("Function") == "READ_PARQUET":
            projected = _as_list(info.get("Projections"))
            filters = _as_list(info.get("Filters"))
            referenced = set(projected) | {c for f in filters for cs in columns_by_dataset.values() for c in cs if c in f}
            owners = [n for n, cs in columns_by_dataset.items() if referenced <= set(cs)] or ["?"]
            if len(owners) > 1 and not filters:
                owners = [n for n in owners if str(rows[n]) == str(info.get("Estimated Cardinality"))] or owners
            lines.append(f"  scan {'|'.join(owners):<40} projects {', '.join(projected) or '-'}; "
                         f"filters: {' AND '.join(filters) if filters else 'none'}")
        for child in node.get("children", []):
            walk(child)

    for node in plan:
        walk(node)
    return [f"  plan root: {root.strip()}", *lines]


def _as_list(value) -> list[str]:
    if not value:
        return []
    return [v.strip() for v in (value if isinstance(value, list) else value.split("\n")) if v.strip()]


def machine_facts(with_spark: bool) -> str:
    import duckdb
    import ibis
    import pandas as pd
    import pyarrow as pa

    versions = [f"Python {platform.python_version()}", f"duckdb {duckdb.__version__}", f"ibis {ibis.__version__}",
                f"pyarrow {pa.__version__}", f"pandas {pd.__version__}"]
    if with_spark:
        import pyspark

        java = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr.splitlines()
        versions += [f"pyspark {pyspark.__version__}", java[0] if java else "java ?"]
    return f"{os.cpu_count()} cores, {total_memory()} RAM, {platform.system()} {platform.machine()}; " + ", ".join(versions)


def default_storage(args: argparse.Namespace) -> Path:
    related = f"{args.related_per_profile:g}"
    return DEFAULT_STORAGE_ROOT / f"p{args.profiles}-r{related}-seed{args.seed}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.step:
        return run_step(args)
    config = load_pipeline_config(DEFAULT_CONFIG_PATH)
    names = [name for name, _ in segments_of(config)]
    if names != BASELINE_SEGMENTS:
        raise SystemExit(f"pipeline.yaml's segments {names} are not the 9 the hand-written baseline knows "
                         f"({BASELINE_SEGMENTS}): update BASELINE_SQL in {__file__} or use the shipped pipeline.yaml.")
    args.storage = Path(args.storage or default_storage(args))
    args.storage.mkdir(parents=True, exist_ok=True)
    size = org.OrgSize.of(args.profiles, args.related_per_profile, args.seed, AS_OF)
    reused, generation_s = org.ensure_org(args.storage, size, config)
    schema_problems = org.check_schemas(args.storage, config)
    if args.generate_only:
        print(f"{'reused' if reused else f'generated in {generation_s:.0f} s'}: {args.storage}; schemas: "
              f"{'OK' if not schema_problems else '; '.join(schema_problems)}")
        return 1 if schema_problems else 0
    store = DatasetStore(args.storage)
    results_dir = args.storage / "bench-out"
    results_dir.mkdir(exist_ok=True)
    load_before = os.getloadavg()

    engines = ["baseline", "product", "plan"] + (["spark"] if args.spark else [])
    outputs = {e: results_dir / (f"{e}-members" if e == "spark" else f"{e}-members.parquet") for e in engines}
    runs: dict[str, list[dict]] = {e: [] for e in engines}
    for _ in range(args.repeat):
        for engine in engines:
            run = spawn(engine, args, outputs[engine])
            runs[engine].append(run)
            done = f"FAILED: {run['failed']}" if "failed" in run else f"{run['wall_s']:.2f} s"
            print(f"  ran {engine}: {done}, peak RSS {run['peak_mib']:,.0f} MiB", flush=True)
    load_after = os.getloadavg()

    import duckdb

    failed = {e: next(r["failed"] for r in runs[e] if "failed" in r) for e in engines if any("failed" in r for r in runs[e])}
    ok = [e for e in engines if e not in failed]
    runs = {e: [r for r in runs[e] if "failed" not in r] for e in ok}
    check = duckdb.connect()
    differences = compare(check, {e: outputs[e] for e in ok}, "baseline") if "baseline" in ok else []
    counts = {e: member_counts(check, outputs[e]) for e in ok}
    columns = {name: [c.name for c in config.extension(name).columns] for name in org.DATASETS}
    explain_con = connect_duckdb(store)
    segments = segments_of(config)
    plan = compiler_for(explain_con, store, config.profiles.dataset, segments, key=config.profiles.key, as_of=AS_OF,
                        timezone=config.evaluation.timezone).members(segments)
    rows = {"contacts": size.profiles, "campaign_engagement": size.engagement, "activities": size.activities}
    product_scans = explain_scans(explain_con.con, str(explain_con.compile(plan)), columns, rows)
    baseline_con = baseline_connection(store, config, memory_limit=args.memory_limit, threads=args.threads)
    baseline_scans = explain_scans(baseline_con, baseline_query(store, AS_OF), columns, rows)

    # Report
    print(f"Segment step benchmark: {len(names)} segments of pipeline.yaml, as_of {AS_OF}, timezone "
          f"{config.evaluation.timezone}, seed {args.seed}, {args.repeat} run(s) per engine, each in a fresh process")
    print(f"org: {size.profiles:,} profiles, {size.engagement:,} campaign_engagement rows, {size.activities:,} activities "
          f"rows = {size.input_rows:,} input rows ({_gib(_folder_bytes(args.storage / 'datasets')):.2f} GiB of parquet) "
          f"in {args.storage}")
    print(f"data: {'reused (bench-org.json)' if reused else f'generated in {generation_s:.0f} s'}; schemas as the landing "
          f"writes them: {'OK' if not schema_problems else '; '.join(schema_problems)}")
    print(f"memory limit {args.memory_limit}, threads {args.threads or 'DuckDB default (all cores)'}; "
          f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after (the machine is shared)")
    print()
    best = {e: min(r["wall_s"] for r in runs[e]) for e in ok}
    peak = {e: max(r["peak_mib"] for r in runs[e]) for e in ok}
    cpu = {e: min(r["cpu_s"] for r in runs[e]) for e in ok}
    base_wall, base_cpu = best.get("baseline", float("nan")), cpu.get("baseline", float("nan"))
    print("| engine | wall (best) | all runs | CPU (best) | peak RSS | input rows/s | vs baseline (wall, CPU) |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for e in failed:
        print(f"| {e} | failed | {failed[e]} | | | | |")
    for e in ok:
        rss = f"{peak[e]:,.0f} MiB"
        if e == "spark":
            rss = f"{peak[e]:,.0f} MiB Python + {max(r['jvm_peak_mib'] for r in runs[e]):,.0f} MiB JVM"
        print(f"| {e} | {best[e]:.2f} s | {', '.join(format(r['wall_s'], '.2f') for r in runs[e])} | {cpu[e]:.1f} s | "
              f"{rss} | {size.input_rows / best[e]:,.0f} | {best[e] / base_wall:.2f}x, {cpu[e] / base_cpu:.2f}x |")
    print("(CPU: user + system time of the step's process; Spark's JVM is not in it. Wall times vary with the"
          " machine's other work, CPU times much less.)")
    if "spark" in ok:
        print(f"(spark: session start {min(r['session_s'] for r in runs['spark']):.1f} s included in its wall time)")
    print()
    target = TARGETS.get((size.profiles, float(args.related_per_profile)))
    for e in (e for e in engines if e.startswith("product")):
        if e in failed:
            print(f"target: {e} completes: NOT MET ({failed[e]})")
            continue
        ratio, rss_gib = best[e] / base_wall, peak[e] * 2**20 / GIB
        if target:
            max_ratio, max_gib = target
            if max_ratio:
                print(f"target: {e} <= {max_ratio}x baseline time: {ratio:.2f}x -> {'met' if ratio <= max_ratio else 'NOT MET'}")
            print(f"target: {e} peak RSS < {max_gib:g} GiB: {rss_gib:.2f} GiB -> {'met' if rss_gib < max_gib else 'NOT MET'}")
        else:
            print(f"{e}: {ratio:.2f}x the baseline's time, peak RSS {rss_gib:.2f} GiB (issue 17's targets are set at "
                  f"10M profiles / 60M rows: <= 1.5x, < 2 GiB, and 10M / 110M: < 4 GiB)")
    print()
    print("| segment | " + " | ".join(ok) + " |")
    print("|---|" + "---:|" * len(ok))
    for name in names:
        print(f"| {name} | " + " | ".join(f"{counts[e].get(name, 0):,}" for e in ok) + " |")
    print("| total | " + " | ".join(f"{sum(counts[e].values()):,}" for e in ok) + " |")
    print()
    print("parquet scans of the product's plan (DuckDB EXPLAIN: projected columns, filters pushed into the scan):")
    print("\n".join(product_scans))
    print("parquet scans of the baseline query:")
    print("\n".join(baseline_scans))
    print()
    print(f"machine: {machine_facts(args.spark)}")
    print(f"date: {dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}; command: python scripts/benchmark_segments.py "
          + " ".join(argv if argv is not None else sys.argv[1:]))
    verdict = "OK" if not differences else "DIFFERENT"
    print(f"memberships identical across {', '.join(ok)}: {verdict}" + (f" ({', '.join(failed)} failed)" if failed else ""))
    for line in differences:
        print(f"  {line}")
    return 1 if differences or schema_problems or failed else 0


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.glob("*.parquet"))


def _gib(n: float) -> float:
    return n / GIB


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profiles", type=int, default=1_000_000, help="profiles (contacts) (default 1,000,000)")
    parser.add_argument("--related-per-profile", type=float, default=5.0,
                        help="related rows per profile, 1/3 campaign_engagement, 2/3 activities (default 5)")
    parser.add_argument("--seed", type=int, default=7, help="data seed (default 7)")
    parser.add_argument("--storage", help=f"folder of the synthetic org (default {DEFAULT_STORAGE_ROOT}/<size>-seed<seed>)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per engine, alternating (default 1; best time shown)")
    parser.add_argument("--spark", action="store_true", help="also run the plan on PySpark local mode (needs .[spark], Java)")
    parser.add_argument("--spark-memory", default="2g", help="spark.driver.memory (default 2g)")
    parser.add_argument("--memory-limit", default=DEFAULT_MEMORY_LIMIT,
                        help=f"DuckDB memory_limit of both DuckDB steps (default the product's, {DEFAULT_MEMORY_LIMIT})")
    parser.add_argument("--threads", type=int, help="DuckDB threads of both DuckDB steps (default all cores)")
    parser.add_argument("--generate-only", action="store_true", help="generate (or reuse) the org, measure nothing")
    parser.add_argument("--step", choices=["product", "plan", "baseline", "spark"], help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.profiles < 1 or args.related_per_profile < 0 or args.repeat < 1:
        parser.error("need --profiles >= 1, --related-per-profile >= 0 and --repeat >= 1")
    return args


if __name__ == "__main__":
    sys.exit(main())
