"""Benchmark validating and landing a large Contacts extract: the page-by-page, vectorised
validation against the previous implementation, measured in the same run.

    python scripts/benchmark_validate.py                  # quick: 200,000 rows
    python scripts/benchmark_validate.py --rows 1000000   # the figures in docs/performance.md

What it does:

1. **Raw rows** (timed separately, not measured). ``--rows`` Contacts-like rows with the columns
   of the shipped ``pipeline.yaml`` Contacts extension, every value a string as SFMC serves it
   (``M/D/YYYY h:mm:ss AM`` dates, ``""`` for null, 18-character Ids), generated with numpy and
   arrow kernels (``--seed``). Mixed in: 5 % of the Ids in their 15-character form and 1 % ISO
   dates (both valid), and about 0.5 % of rows with an invalid value (bad Id checksum, duplicate
   key, a too-long name, a missing last name, a malformed email, an unknown stage, ``-3``,
   ``１２``, ``1.5``, ``18446744073709551615``, ``12.345``, ``1e3``, ``yesterday``, ...). The rows
   are written to a temporary Arrow IPC file as record batches of ``--page-size`` rows (2,500:
   an SFMC rowset page), which plays the SFMC server: a page is read from it only when the
   consumer asks for the next one, as a frame of ``string`` columns (what the sources'
   ``read_pages`` yields; no HTTP or JSON here: ``scripts/benchmark_extract.py`` measures the
   REST client).

2. **Measured, each in its own fresh Python process** (so one does not inherit the other's
   memory): the rows are validated and landed as the dataset asset lands a full read, into a
   temporary storage directory: ``merge.land``, then the quarantine and the dataset written to
   parquet (``DatasetStore``). Twice: the 1st full read (no previous dataset) and the 2nd full
   read over the same storage (``--no-second-read`` skips it), which also reads what it needs of
   the previous dataset (``rows_changed``), as every full read after the first does.

   - ``new``: ``validate_pages(pages, extension)`` over the page iterator; the 2nd read takes the
     previous dataset's row hashes (``merge.previous_for_full_read``), as the asset does.
   - ``previous impl.``: the previous implementation, the tests' reference
     (``sfmc_pipeline_testing/validation_reference.py``: the per-column conversion with pandas
     ``to_datetime`` for dates and regex ``extract_regex`` for numbers, pandera's lazy validation of
     the whole typed frame, the quarantine built with ``groupby``) with the vectorised Salesforce Id
     rules that implementation had (kept below, ``old_*``); for the 2nd read ``load_previous`` and ``count_changed`` with ``hash_pandas_object``), fed as
     before: every page collected and concatenated into one frame first. ``--baseline-rows`` runs
     it on the first N rows only and extrapolates its time linearly (memory as measured).

   The stand-in source alone (pages read and dropped) is timed in a process of its own, and shown
   apart: "rows/s without the stand-in source" subtracts its share.

   Time: wall clock (``time.perf_counter``) from asking for the first page to the dataset file
   written, and the process's CPU time (``time.process_time``, all threads). Memory: peak
   resident set size of the process (``VmHWM`` of ``/proc/self/status``, Linux), reset with
   ``/proc/self/clear_refs`` after the imports (falling back to ``getrusage`` ``ru_maxrss``, which
   then includes the imports), shown as the whole process's peak and as the peak above the
   process's RSS just before the read (interpreter, pandas, pyarrow, pandera, dagster).
   The ratio the targets speak of is peak / the final dataset's in-memory arrow size
   (``pyarrow.parquet.read_table(dataset).nbytes``); both ratios are shown.

3. **Checks**: the two implementations must land the same dataset and the same quarantine, on
   each read (compared with ``pandas.testing``; not when ``--baseline-rows`` is smaller than
   ``--rows``). Exit status 1 when they differ.

The machine's load average is printed: on a shared machine the wall times move with it (the CPU
times less so).

Targets (from the issue): >= 300,000 rows/s and peak RSS <= 3x the final dataset's arrow size.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_memory import current_rss_mib, reset_peak_rss, total_memory  # noqa: E402  (scripts/)

CHECKSUM_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
FIRST_NAMES = ["Anna", "Ben", "Chloé", "David", "Emma", "Farid", "Grace", "Hugo", "Ines", "Jonas", "Kai", "Léa",
               "Mary-Kate", "Zoë", "Jean-Luc", "Ngozi"]
LAST_NAMES = ["Smith", "Müller", "García", "O'Brien", "Nguyen", "Rossi", "Kowalski", "Dubois", "Khan", "Jensen",
              "Østergaard", "Núñez"]
COMPANIES = ["", "", "", "Acme Corp", "Globex", "Initech Ltd", "Umbrella, Inc.", "Stark Industries", "Tyrell & Co."]
STAGES = ["new", "repeat", "loyal", "inactive", ""]
DOMAINS = ["example.com", "mail.example.com", "shop.example", "example.org", "example.net"]
ALNUM = np.frombuffer(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", dtype=np.uint8)
# (column, value, share of rows): invalid values (and a few valid odd shapes) mixed into the rows
ODD_VALUES = [
    ("FirstName", "x" * 41, 0.0003),  # longer than 40
    ("LastName", "", 0.0003),  # required
    ("Email", "no-at-sign.example.com", 0.0006),
    ("LifecycleStage", "vip", 0.0003),
    ("OrderCount", "-3", 0.0002), ("OrderCount", "１２", 0.0002), ("OrderCount", "1.5", 0.0002),
    ("OrderCount", "18446744073709551615", 0.0002), ("OrderCount", "n/a", 0.0002),
    ("OrderCount", " 7", 0.0005), ("OrderCount", "12.0", 0.0005),  # valid
    ("TotalSpend", "12.345", 0.0002), ("TotalSpend", "1e3", 0.0002), ("TotalSpend", "-5.5", 0.0002),
    ("TotalSpend", "12345678901234567", 0.0002), ("TotalSpend", "0001.50", 0.0005), ("TotalSpend", "5.", 0.0005),
    ("LastPurchaseDate", "2026-05-01", 0.01),  # valid ISO date
    ("CreatedDate", "yesterday", 0.0003), ("CreatedDate", "2/30/2026 12:00:00 AM", 0.0002),
]


# ----------------------------------------------------------------------------------------------
# Raw rows as SFMC serves them
# ----------------------------------------------------------------------------------------------


def _text(values) -> pa.Array:
    return pc.cast(pa.array(values), pa.string())


def _pick(pool: list[str], index: np.ndarray) -> pa.Array:
    return pa.array(pool, pa.string()).take(pa.array(index))


def _ids(rng, n: int) -> pa.Array:
    """Valid 18-character Contact (003) and Lead (00Q) Ids."""
    head = np.array([list(b"003"), list(b"00Q")], dtype=np.uint8)[(rng.random(n) < 0.3).astype(int)]
    id15 = np.hstack([head, ALNUM[rng.integers(0, len(ALNUM), size=(n, 12))]])
    upper = ((id15 >= 65) & (id15 <= 90)).astype(np.uint8).reshape(-1, 3, 5)
    suffix = np.frombuffer(CHECKSUM_ALPHABET.encode(), dtype=np.uint8)[upper @ np.array([1, 2, 4, 8, 16], np.uint8)]
    ids = np.ascontiguousarray(np.hstack([id15, suffix])).view("S18").ravel()
    return pa.array(ids, pa.binary(18)).cast(pa.string())


def _sfmc_dates(rng, n: int, first_day: int, days: int, midnight_share: float) -> pa.Array:
    """``M/D/YYYY h:mm:ss AM|PM`` (SFMC's rendering) for random moments of ``days`` days."""
    seconds = (first_day * 86400 + rng.integers(0, days * 86400, n)).astype("datetime64[s]")
    day = seconds.astype("datetime64[D]")
    seconds = np.where(rng.random(n) < midnight_share, day.astype("datetime64[s]"), seconds)
    years = day.astype("datetime64[Y]")
    months = day.astype("datetime64[M]")
    year = years.astype(int) + 1970
    month = (months - years.astype("datetime64[M]")).astype(int) + 1
    dom = (day - months.astype("datetime64[D]")).astype(int) + 1
    time_of_day = (seconds - day.astype("datetime64[s]")).astype(np.int64)
    hour, minute, second = time_of_day // 3600, time_of_day // 60 % 60, time_of_day % 60
    two = lambda v: pc.utf8_lpad(_text(v), 2, "0")  # noqa: E731
    return pc.binary_join_element_wise(
        _text(month), "/", _text(dom), "/", _text(year), " ", _text(np.where(hour % 12 == 0, 12, hour % 12)), ":",
        two(minute), ":", two(second), " ", pa.array(np.where(hour < 12, "AM", "PM")), "")


def raw_contacts(n: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    first = _pick(FIRST_NAMES, rng.integers(0, len(FIRST_NAMES), n))
    last = _pick(LAST_NAMES, rng.integers(0, len(LAST_NAMES), n))
    local = pc.replace_substring_regex(pc.binary_join_element_wise(pc.utf8_lower(first), ".", pc.utf8_lower(last), ""),
                                       r"[^a-z.'-]", "x")
    email = pc.binary_join_element_wise(local, _text(np.arange(n)), "@", _pick(DOMAINS, rng.integers(0, 5, n)), "")
    orders = rng.integers(0, 40, n)
    cents = orders * rng.integers(1000, 20000, n)
    columns = {
        "SubscriberKey": _ids(rng, n),
        "FirstName": first,
        "LastName": last,
        "Email": email,
        "Company": _pick(COMPANIES, rng.integers(0, len(COMPANIES), n)),
        "LifecycleStage": _pick(STAGES, rng.integers(0, len(STAGES), n)),
        "OrderCount": _text(orders),
        "TotalSpend": pc.binary_join_element_wise(_text(cents // 100), ".", pc.utf8_lpad(_text(cents % 100), 2, "0"),
                                                  ""),
        "LastPurchaseDate": pc.if_else(pa.array(orders == 0), "", _sfmc_dates(rng, n, 20_200, 700, 0.3)),
        "CreatedDate": _sfmc_dates(rng, n, 18_500, 2_000, 0.7),
    }

    def replace(name: str, rows: np.ndarray, values: pa.Array) -> None:
        mask = np.zeros(n, dtype=bool)
        mask[rows] = True
        order = np.argsort(rows)
        columns[name] = pc.replace_with_mask(columns[name], pa.array(mask), values.take(pa.array(order)))

    def some(share: float) -> np.ndarray:
        return rng.choice(n, size=max(1, int(n * share)), replace=False)

    short = some(0.05)  # 15-character form (valid)
    replace("SubscriberKey", short, pc.utf8_slice_codeunits(columns["SubscriberKey"].take(pa.array(short)), 0, 15))
    bad = some(0.0005)  # wrong case-safe suffix
    replace("SubscriberKey", bad, pc.binary_join_element_wise(
        pc.utf8_slice_codeunits(columns["SubscriberKey"].take(pa.array(bad)), 0, 15), "ZZZ", ""))
    duplicate = some(0.0005)  # another row's key, anywhere in the extract
    replace("SubscriberKey", duplicate, columns["SubscriberKey"].take(pa.array(rng.integers(0, n, len(duplicate)))))
    for name, value, share in ODD_VALUES:
        rows = some(share)
        replace(name, rows, pa.array([value] * len(rows), pa.string()))
    return pa.table(columns)


def write_source(path: Path, rows: int, seed: int, page_size: int) -> None:
    table = raw_contacts(rows, seed)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        for batch in table.to_batches(max_chunksize=page_size):
            writer.write_batch(batch)


def read_source(path: Path, limit: int | None = None):
    """The rows as pages, each read from disk when asked for (the SFMC server's stand-in)."""
    import pandas as pd

    served = 0
    with pa.OSFile(str(path)) as source:
        reader = pa.ipc.open_file(source)
        for number in range(reader.num_record_batches):
            if limit is not None and served >= limit:
                return
            batch = reader.get_batch(number)
            if limit is not None:
                batch = batch.slice(0, limit - served)
            served += batch.num_rows
            yield batch.to_pandas(types_mapper=lambda _: pd.StringDtype())


# ----------------------------------------------------------------------------------------------
# The previous implementation (conversion.py, salesforce_id.py, schemas.py, validation.py as they
# were before validation went page by page), for the baseline: the tests' reference, with the
# vectorised Salesforce Id rules of that implementation
# ----------------------------------------------------------------------------------------------


def old_validate_extract(raw, extension):
    """The previous implementation (``sfmc_pipeline_testing/validation_reference.py``, which the tests
    check the new code against) with the vectorised Salesforce Id rules it had
    (``AS_IT_WAS_IDS``): ``(valid, quarantine, issues)``."""
    from sfmc_pipeline_testing.validation_reference import reference_validate

    result = reference_validate(raw, extension, ids=_as_it_was_ids())
    return result.valid, result.quarantine, result.issues


def _as_it_was_ids():
    from sfmc_pipeline_testing.validation_reference import IdRules

    return IdRules(to_18=_old_to_18, valid=_old_valid_id_mask)


def _old_to_18(text):
    import pandas as pd

    short = text.str.fullmatch(r"^[A-Za-z0-9]{15}$").fillna(False).astype(bool)
    if not short.any():
        return text
    ids15 = text[short]
    raw = np.frombuffer("".join(ids15.tolist()).encode("ascii"), dtype=np.uint8).reshape(-1, 15)
    ids18 = np.ascontiguousarray(np.hstack([raw, _old_suffix(raw)])).view("S18").ravel()
    converted = pd.Series(pd.arrays.ArrowStringArray(pa.array(ids18, type=pa.binary(18)).cast(pa.string())),
                          index=ids15.index)
    return text.where(~short, converted).astype("string")


def _old_suffix(id15):
    upper = ((id15 >= ord("A")) & (id15 <= ord("Z"))).astype(np.uint8)
    bits = (upper.reshape(-1, 3, 5) * np.array([1, 2, 4, 8, 16], dtype=np.uint8)).sum(axis=2)
    return np.frombuffer(CHECKSUM_ALPHABET.encode("ascii"), dtype=np.uint8)[bits]


def _old_valid_id_mask(values):
    import pandas as pd

    text = values.astype("string")
    result = pd.Series(True, index=values.index, dtype=bool)
    present = text.notna()
    if not present.any():
        return result
    shaped = text[present].str.fullmatch(r"^[A-Za-z0-9]{15}(?:[A-Z0-5]{3})?$").fillna(False).astype(bool)
    result.loc[shaped.index] = shaped
    long_ids = text[present][shaped & (text[present].str.len() == 18)]
    if len(long_ids):
        raw = np.frombuffer("".join(long_ids.tolist()).encode("ascii"), dtype=np.uint8).reshape(-1, 18)
        result.loc[long_ids.index] = (_old_suffix(raw[:, :15]) == raw[:, 15:]).all(axis=1)
    return result


# ----------------------------------------------------------------------------------------------
# One measured run (in a child process)
# ----------------------------------------------------------------------------------------------


def _peak_rss_mib(reset_ok: bool) -> float:
    if reset_ok:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def old_count_changed(previous, current) -> int:
    """``merge.count_changed`` as it was: ``hash_pandas_object`` of both frames."""
    import pandas as pd

    if previous is None or len(previous) == 0 or list(previous.columns) != list(current.columns):
        return len(current)
    if len(current) == 0:
        return 0
    seen = pd.Index(pd.util.hash_pandas_object(previous, index=False))
    return int((~pd.util.hash_pandas_object(current, index=False).isin(seen)).sum())


def child(args) -> None:
    import pandas as pd

    from sfmc_pipeline.config.loader import load_pipeline_config
    from sfmc_pipeline.datasets.incremental import (
        FULL,
        Previous,
        ReadPlan,
        load_previous,
    )
    from sfmc_pipeline.datasets.merge import land, previous_for_full_read
    from sfmc_pipeline.datasets.storage import DatasetStore
    from sfmc_pipeline.datasets.validation import validate_pages
    from sfmc_pipeline.settings import DEFAULT_CONFIG_PATH

    extension = load_pipeline_config(DEFAULT_CONFIG_PATH).extension("contacts")
    store = DatasetStore(args.storage)
    limit = args.baseline_rows if args.child == "baseline" else None
    if args.child == "source":  # the stand-in source alone: pages read and dropped
        started = time.perf_counter()
        rows = sum(len(page) for page in read_source(args.source))
        print(json.dumps({"rows": rows, "seconds": time.perf_counter() - started}))
        return
    before = current_rss_mib()
    reset_ok = reset_peak_rss()
    cpu_started = time.process_time()
    started = time.perf_counter()
    plan = ReadPlan(FULL, reason="periodic full refresh due" if args.previous else "first read")
    if args.child == "new":
        # as the dataset asset does for a full read: the previous dataset's row hashes only
        previous = (previous_for_full_read(store, extension) if args.previous
                    else Previous(None, None))
        result = validate_pages(read_source(args.source), extension)
        valid, quarantine, rows = result.valid, result.quarantine, result.rows_read
        top = result.top_reasons(3)
        validated = time.perf_counter()
        landing = land(plan, valid, quarantine.assign(_run_id="benchmark"), previous, extension)
        landed_valid, landed_quarantine, changed = landing.valid, landing.quarantine, landing.rows_changed
    else:
        previous = load_previous(store, extension) if args.previous else Previous(None, None)  # as it was
        frame = pd.concat(list(read_source(args.source, limit)), ignore_index=True)  # as the sources did
        valid, quarantine, issues = old_validate_extract(frame, extension)
        rows = len(frame)
        del frame
        top = Counter(issues.drop_duplicates(["row", "summary"])["summary"]).most_common(3)
        validated = time.perf_counter()
        landed_valid, landed_quarantine = valid, quarantine.assign(_run_id="benchmark")  # a full read
        changed = old_count_changed(previous.valid, valid)
    store.write_quarantine(extension.asset, landed_quarantine)
    store.write_dataset(extension.asset, landed_valid)
    finished = time.perf_counter()
    cpu = time.process_time() - cpu_started
    print(json.dumps({
        "cpu_seconds": cpu, "changed": changed,
        "rows": rows, "valid": len(landed_valid), "quarantined": len(landed_quarantine),
        "seconds": finished - started, "validate_seconds": validated - started,
        "peak_mib": _peak_rss_mib(reset_ok), "before_mib": before, "peak_reset": reset_ok, "top": top,
    }))


def run_child(mode: str, args, source: Path, storage: Path, previous: bool = False) -> dict:
    command = [sys.executable, __file__, "--child", mode, "--source", str(source), "--storage", str(storage),
               "--baseline-rows", str(args.baseline_rows or args.rows)] + (["--previous"] if previous else [])
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000, help="rows to generate (default 200,000; the "
                        "issue's figure is 1,000,000)")
    parser.add_argument("--baseline-rows", type=int, default=None, help="run the previous implementation on the "
                        "first N rows only and extrapolate its time (default: all rows; 0 skips it)")
    parser.add_argument("--no-second-read", action="store_true", help="skip the second full read (the one with "
                        "a previous dataset in place, as every full read after the first)")
    parser.add_argument("--page-size", type=int, default=2500)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--child", choices=["new", "baseline", "source"], help=argparse.SUPPRESS)
    parser.add_argument("--previous", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--source", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--storage", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return 0

    import pandas as pd
    import pyarrow.parquet as pq

    baseline_rows = args.rows if args.baseline_rows is None else min(args.baseline_rows, args.rows)
    runs: dict[str, dict] = {}
    same: list[str] = []
    with tempfile.TemporaryDirectory(prefix="benchmark-validate-") as tmp:
        tmp = Path(tmp)
        source = tmp / "contacts.arrow"
        started = time.perf_counter()
        write_source(source, args.rows, args.seed, args.page_size)
        generated = time.perf_counter() - started
        stand_in = run_child("source", args, source, tmp / "source")
        runs["new: 1st full read"] = run_child("new", args, source, tmp / "new")
        arrow_mib = pq.read_table(tmp / "new" / "datasets" / "contacts.parquet").nbytes / 2**20
        if baseline_rows:
            runs["previous impl.: 1st full read"] = run_child("baseline", args, source, tmp / "old")
        if baseline_rows == args.rows:
            same.append(_compare(tmp / "new", tmp / "old", "1st full read"))
        if not args.no_second_read:
            runs["new: 2nd full read"] = run_child("new", args, source, tmp / "new", previous=True)
            if baseline_rows:
                runs["previous impl.: 2nd full read"] = run_child("baseline", args, source, tmp / "old", previous=True)
            if baseline_rows == args.rows:
                same.append(_compare(tmp / "new", tmp / "old", "2nd full read"))

    def rate(run, seconds=None):
        return run["rows"] / (seconds if seconds is not None else run["seconds"])

    labels = ["wall time, first page to dataset written", "  of which reading + validating", "CPU time (user + system)",
              "rows/s", "rows/s without the stand-in source's own time", "peak RSS of the process",
              "RSS before the read (interpreter + libraries)", "peak RSS above that", "peak RSS / dataset arrow size",
              "peak above before / dataset arrow size", "rows valid / quarantined / changed"]
    columns = {}
    for name, run in runs.items():
        factor = args.rows / run["rows"]
        scaled = factor != 1
        source_share = stand_in["seconds"] * run["rows"] / stand_in["rows"]
        above = run["peak_mib"] - run["before_mib"]
        columns[name] = [
            f"{run['seconds'] * factor:.2f} s" + (" (extrapolated)" if scaled else ""),
            f"{run['validate_seconds'] * factor:.2f} s",
            f"{run['cpu_seconds'] * factor:.2f} s",
            f"{rate(run):,.0f}",
            f"{rate(run, run['seconds'] - source_share):,.0f}",
            f"{run['peak_mib']:,.0f} MiB",
            f"{run['before_mib']:,.0f} MiB",
            f"{above:,.0f} MiB" + (f" ({run['rows']:,} rows)" if scaled else ""),
            f"{run['peak_mib'] / arrow_mib:.2f}x" if not scaled else "-",
            f"{above / arrow_mib:.2f}x" if not scaled else "-",
            f"{run['valid']:,} / {run['quarantined']:,} / {run['changed']:,}",
        ]
    print(f"Contacts-like rows: {args.rows:,} (pipeline.yaml Contacts columns), pages of {args.page_size:,} rows; "
          f"generated in {generated:.1f} s (not measured)")
    print(f"final dataset: {runs['new: 1st full read']['valid']:,} rows, in-memory arrow size {arrow_mib:,.1f} MiB")
    print(f"stand-in source alone (pages read from the Arrow IPC file as string frames, in a process of its own): "
          f"{stand_in['seconds']:.2f} s for {stand_in['rows']:,} rows")
    widths = [max(map(len, labels))] + [max(len(name), *map(len, col)) for name, col in columns.items()]
    print("  ".join(h.ljust(w) for h, w in zip(["", *columns], widths)))
    for i, label in enumerate(labels):
        print("  ".join([label.ljust(widths[0])] + [col[i].ljust(w) for col, w in zip(columns.values(), widths[1:])]))
    for read in ("1st full read", "2nd full read"):
        new, old = runs.get(f"new: {read}"), runs.get(f"previous impl.: {read}")
        if new and old:
            print(f"{read}: {rate(new) / rate(old):.1f}x the rows/s of the previous implementation")
    print(f"top reasons (new): {runs['new: 1st full read']['top']}")
    first = runs["new: 1st full read"]
    if not first["peak_reset"]:
        print("note: the RSS high-water mark could not be reset; peaks include the imports (ru_maxrss)")
    else:
        print("memory: VmHWM of each child process, reset after its imports (/proc/self/clear_refs)")
    if args.rows < 1_000_000:
        print(f"note: the targets are for 1,000,000 rows; at {args.rows:,} the fixed costs (the interpreter's "
              f"{first['before_mib']:,.0f} MiB, first calls) weigh more: run with --rows 1000000")
    for name, run in runs.items():
        if name.startswith("new"):
            ok_rate, ratio = rate(run) >= 300_000, run["peak_mib"] / arrow_mib
            print(f"targets, {name}: rows/s >= 300,000: {'met' if ok_rate else 'NOT met'} ({rate(run):,.0f}); "
                  f"peak RSS <= 3x arrow size: {'met' if ratio <= 3 else 'NOT met'} (process {ratio:.2f}x, above "
                  f"the pre-read RSS {(run['peak_mib'] - run['before_mib']) / arrow_mib:.2f}x)")
    for line in same:
        print(line)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {total_memory()}, "
          f"load average {os.getloadavg()[0]:.1f}, Python {platform.python_version()}, pandas {pd.__version__}, "
          f"pyarrow {pa.__version__}")
    return 0 if all(line.endswith("yes") for line in same) else 1


def _compare(new: Path, old: Path, read: str) -> str:
    import pandas as pd

    try:
        for kind in ("datasets", "quarantine"):
            pd.testing.assert_frame_equal(pd.read_parquet(new / kind / "contacts.parquet"),
                                          pd.read_parquet(old / kind / "contacts.parquet"))
    except AssertionError as exc:
        return f"{read}: new and previous implementation land the same dataset and quarantine: NO ({exc})"
    return f"{read}: new and previous implementation land the same dataset and quarantine: yes"


if __name__ == "__main__":
    sys.exit(main())
