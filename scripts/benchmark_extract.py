"""Benchmark the SFMC rowset extraction: concurrent pages against sequential pages and a plain loop.

    python scripts/benchmark_extract.py [--rows 50000 --latency-ms 50 --concurrency 4 --page-size 2500]

The default is a quick run (50,000 rows: 20 pages); ``--rows 500000`` is the figure the
extraction is judged by (200 pages of 2,500 rows).

What is measured, and why. A rowset read is a chain of HTTP round trips of 2,500 rows each, so
what a real tenant makes it cost is the per-request latency (network plus SFMC's own time), not
the client's CPU. The fake SFMC server of the test suite (real HTTP on 127.0.0.1) is started in a
process of its own with ``--latency-ms`` added to every request, serving a Contacts-like Data
Extension (the ``contacts`` extension of ``pipeline.yaml``: 10 columns, a unique SubscriberKey)
of ``--rows`` rows. Its pages are serialised once before anything is timed
(``FakeSfmcServer.warm_page_cache``), so the fake's JSON encoding does not count against the
client, and it runs in its own process, so it does not compete for the client's GIL.

Each mode runs in a fresh process of its own, so its peak memory is its own (``getrusage``
high-water mark, shown above the process's RSS just before the read):

1. **concurrent paging**: ``SfmcRestSource.read_pages`` with ``--concurrency`` (default 4, the
   pipeline's ``concurrent_page_reads``); the consumer takes each page frame and drops it, as a
   consumer that converts and writes pages as they arrive would.
2. **sequential paging**: the same code with concurrency 1 (one page at a time).
3. **plain requests loop**: what a user would write: one token, the first page, then follow
   ``links.next`` with ``requests`` until it is absent, parsing each page's JSON and dropping it
   (no frames, no completeness or primary-key checks).
4. **concurrent read()**: ``SfmcRestSource.read``, every row in one frame (what a consumer that
   wants the whole extract gets); its memory is the whole extract's.

Printed per mode: wall time, rows/s, API calls (HTTP requests sent, the token request included)
and peak memory; then the bound ``pages x latency / concurrency`` (pages requested
``concurrency`` at a time, nothing else costing anything; the first page and the token request
cannot overlap anything, so even a perfect client is a little above it) and the ratios. The
targets: concurrent paging at least 3x faster than sequential paging, and within 1.3x of the
bound. Figures are printed, not asserted; the script stops with an error only if a mode does not
return every row.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

KEY = "Contacts"
CLIENT_ID, CLIENT_SECRET = "bench-client-id", "bench-client-secret"
FIRST = ["Thomas", "Mei", "Aisha", "Lukas", "Sofia", "Kenji", "Amara", "Diego", "Priya", "Noah"]
LAST = ["Flores", "Mitchell", "Okafor", "Schmidt", "Rossi", "Tanaka", "Mensah", "Garcia", "Iyer", "Smith"]
COMPANIES = ["Contoso Ltd", "Fabrikam", "", "Northwind Traders", "Adventure Works"]
STAGES = ["new", "repeat", "loyal", "inactive", ""]


def contact_rows(n: int) -> list[dict[str, str]]:
    """``n`` Contacts rows as SFMC stores them (strings), each with its own SubscriberKey."""
    rows = []
    for i in range(n):
        first, last = FIRST[i % 10], LAST[(i // 10) % 10]
        rows.append({
            "SubscriberKey": f"003{i:015d}",
            "FirstName": first,
            "LastName": last,
            "Email": f"{first.lower()}.{last.lower()}.{i}@mail.example.com",
            "Company": COMPANIES[i % 5],
            "LifecycleStage": STAGES[i % 5],
            "OrderCount": str(i % 23),
            "TotalSpend": f"{(i * 37) % 5000}.{i % 100:02d}",
            "LastPurchaseDate": f"{i % 12 + 1}/{i % 28 + 1}/2026 12:00:00 AM" if i % 7 else "",
            "CreatedDate": f"{i % 12 + 1}/{i % 28 + 1}/2025 12:00:00 AM",
        })
    return rows


# -- the fake SFMC server, in a process of its own -------------------------------------------------


def serve(rows: int, latency: float, page_size: int, conn) -> None:
    from sfmc_pipeline_testing.sfmc_server import FakeSfmcServer

    server = FakeSfmcServer(client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    server.add_data_extension(KEY, contact_rows(rows), primary_key=["SubscriberKey"],
                              field_types={"LastPurchaseDate": "Date", "CreatedDate": "Date"})
    pages = server.warm_page_cache(KEY, page_size)
    server.latency = latency
    server.start()
    conn.send({"auth_base_uri": server.auth_base_uri, "pages": pages})
    try:
        while True:
            command = conn.recv()
            if command == "reset":
                server.clear_requests()
                server.reset_max_in_flight()
                conn.send(None)
            elif command == "stats":
                conn.send({"rowset_requests": len(server.rowset_requests()), "max_in_flight": server.max_in_flight,
                           "errors": [repr(e) for e in server.errors]})
            else:
                break
    finally:
        server.stop()


# -- one measured mode, in a process of its own ------------------------------------------------------


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # not Linux: the high-water mark so far stands in for "now"
        return _peak_rss_bytes()


def _peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux


def measure(mode: str, auth_base_uri: str, concurrency: int, page_size: int, conn) -> None:
    import requests

    from sfmc_pipeline.config.loader import load_pipeline_config
    from sfmc_pipeline.settings import DEFAULT_CONFIG_PATH
    from sfmc_pipeline.sfmc.rest_source import SfmcRestSource

    contacts = load_pipeline_config(DEFAULT_CONFIG_PATH).extension("contacts")

    def source(c: int) -> SfmcRestSource:
        return SfmcRestSource(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, auth_base_uri=auth_base_uri,
                              page_size=page_size, concurrency=c)

    def paged(c: int) -> tuple[int, int]:
        stream, rows = source(c).read_pages(contacts), 0
        for frame in stream:
            rows += len(frame)
        return rows, stream.api_calls

    def whole(c: int) -> tuple[int, int]:
        extract = source(c).read(contacts)
        return len(extract.frame), extract.api_calls

    def plain() -> tuple[int, int]:
        with requests.Session() as session:
            token = session.post(auth_base_uri + "v2/token", json={
                "grant_type": "client_credentials", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET},
                timeout=30).json()
            rest, calls, rows = token["rest_instance_url"], 1, 0
            session.headers["Authorization"] = f"Bearer {token['access_token']}"
            url = f"{rest}data/v1/customobjectdata/key/{KEY}/rowset?$page=1&$pageSize={page_size}"
            while url:
                response = session.get(url, timeout=30)
                response.raise_for_status()
                page, calls = response.json(), calls + 1
                rows += len(page["items"])
                link = page.get("links", {}).get("next")
                url = rest + "data" + link if link else None
            return rows, calls

    run = {"concurrent paging": lambda: paged(concurrency), "sequential paging": lambda: paged(1),
           "plain requests loop": plain, "concurrent read()": lambda: whole(concurrency)}[mode]
    before = _rss_bytes()
    started = time.perf_counter()
    rows, calls = run()
    seconds = time.perf_counter() - started
    conn.send({"rows": rows, "seconds": seconds, "api_calls": calls,
               "peak_mb": (_peak_rss_bytes() - before) / 2**20, "rss_before_mb": before / 2**20})


def run_mode(ctx, mode: str, args: argparse.Namespace, server_conn, auth_base_uri: str) -> dict:
    server_conn.send("reset")
    server_conn.recv()
    parent, child = ctx.Pipe()
    process = ctx.Process(target=measure, args=(mode, auth_base_uri, args.concurrency, args.page_size, child))
    process.start()
    result = parent.recv()
    process.join()
    server_conn.send("stats")
    return {**result, **server_conn.recv()}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=50_000, help="rows of the Data Extension (default 50,000)")
    parser.add_argument("--latency-ms", type=float, default=50.0, help="added to every request (default 50)")
    parser.add_argument("--concurrency", type=int, default=4, help="pages fetched at once (default 4)")
    parser.add_argument("--page-size", type=int, default=2500, help="rows per page (default 2,500, the maximum)")
    args = parser.parse_args(argv)
    if args.rows < 1 or args.latency_ms < 0 or not 1 <= args.concurrency <= 16 or not 1 <= args.page_size <= 2500:
        parser.error("need --rows >= 1, --latency-ms >= 0, --concurrency 1..16 and --page-size 1..2500")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    latency = args.latency_ms / 1000
    ctx = mp.get_context("spawn")
    server_conn, child = ctx.Pipe()
    server = ctx.Process(target=serve, args=(args.rows, latency, args.page_size, child), daemon=True)
    print(f"Starting the fake SFMC server: {args.rows:,} rows, {args.latency_ms:g} ms per request ...", flush=True)
    setup = time.perf_counter()
    server.start()
    info = server_conn.recv()
    pages = info["pages"]
    print(f"ready in {time.perf_counter() - setup:.1f} s: {pages} page(s) of {args.page_size:,} rows, serialised "
          "ahead (cached)\n", flush=True)
    modes = ["concurrent paging", "sequential paging", "plain requests loop", "concurrent read()"]
    results = {}
    try:
        for mode in modes:
            results[mode] = result = run_mode(ctx, mode, args, server_conn, info["auth_base_uri"])
            if result["rows"] != args.rows:
                print(f"{mode}: read {result['rows']:,} rows, not {args.rows:,}", file=sys.stderr)
                return 1
            if result["errors"]:
                print(f"the fake SFMC server failed: {result['errors']}", file=sys.stderr)
                return 1
    finally:
        server_conn.send("stop")
        server.join(timeout=30)

    bound = pages * latency / args.concurrency
    label = {"concurrent paging": f"concurrent paging (concurrency {args.concurrency})",
             "sequential paging": "sequential paging (concurrency 1, same code)",
             "plain requests loop": "plain requests loop (links.next)",
             "concurrent read()": f"concurrent read() into one frame (concurrency {args.concurrency})"}
    width = max(map(len, label.values()))
    print(f"{'mode':<{width}}  {'wall s':>7}  {'rows/s':>9}  {'API calls':>9}  {'peak MB':>8}  "
          f"{'rowset reqs':>11}  {'max in flight':>13}")
    for mode in modes:
        r = results[mode]
        print(f"{label[mode]:<{width}}  {r['seconds']:>7.2f}  {args.rows / r['seconds']:>9,.0f}  {r['api_calls']:>9}  "
              f"{r['peak_mb']:>+8.1f}  {r['rowset_requests']:>11}  {r['max_in_flight']:>13}")
    concurrent, sequential = results["concurrent paging"]["seconds"], results["sequential paging"]["seconds"]
    baseline = results["plain requests loop"]["seconds"]
    floor = 2 * latency + (pages - 1) * latency / args.concurrency
    print()
    print(f"bound pages x latency / concurrency: {pages} x {args.latency_ms:g} ms / {args.concurrency} = {bound:.2f} s "
          f"(with the token request and the first page, which overlap nothing: {floor:.2f} s)")
    print(f"concurrent paging vs sequential paging: {sequential / concurrent:.2f}x faster (target >= 3x)")
    print(f"concurrent paging vs the bound:         {concurrent / bound:.2f}x the bound (target <= 1.3x)")
    print(f"concurrent paging vs the plain loop:    {baseline / concurrent:.2f}x faster")
    print(f"sequential paging vs the plain loop:    {sequential / baseline:.2f}x the plain loop's time")
    if pages < 100:
        print(f"(only {pages} pages: the token request and the first page, which overlap nothing, weigh on the "
              "ratios; the targets are for --rows 500000, 200 pages)")
    print(f"peak memory is above the RSS just before the read ({results['concurrent paging']['rss_before_mb']:.0f} MB "
          "after imports); each mode runs in a fresh process")
    print(f"\nmachine: {platform.platform()}, Python {platform.python_version()}, {os.cpu_count()} CPU(s); "
          "the fake server runs in a separate process")
    return 0


if __name__ == "__main__":
    sys.exit(main())
