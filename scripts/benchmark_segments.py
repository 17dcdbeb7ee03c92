"""Benchmark the vectorised segment evaluation against a naive per-profile implementation.

    python scripts/benchmark_segments.py \
        [--contacts 1000000 --engagement 5000000 --activities 10000000 --naive-sample 2000 --seed 7]

What it does, in one process:

1. **Synthetic data** (timed separately, not part of the measurement). The configured columns
   of ``contacts``, ``campaign_engagement`` and ``activities`` (``pipeline.yaml``) are generated
   directly with numpy (``np.random.default_rng(seed)``, vectorised) and pyarrow string
   kernels, with exactly the dtypes the validated datasets have
   (``sfmc_pipeline.datasets.conversion.pandas_dtype``): no CSV, no conversion, no validation.
   Keys are 18-character ids (``003``/``00Q`` + 12-digit number + ``xYz``; checksums are not
   valid, the evaluator does not check them). Related rows take the key of a random profile,
   about 0.5 % are orphans (keys of no profile). Values are spread so that every shipped
   segment is non-empty: the sample data's lifecycle stages and order counts; purchase,
   engagement and activity dates over the last ~400 days before ``as_of`` = 2026-11-20
   (purchases weighted towards the last 30 days, activities towards the last 60 days);
   responses, activity types, ``OfferClicks <= Clicks``, campaign ids unique per subscriber.
   About 1 % of buyers have no LastPurchaseDate (exercises ``is_null``). A configured column
   this script does not know gets a constant/null filler of the right dtype (printed as a note).

2. **Measured: vectorised evaluation.** ``SegmentEvaluator(...)`` + ``.members(catalogue)`` for
   the whole shipped catalogue (``config.segments``) at ``as_of`` -- this is the headline
   figure, measured cold (first evaluation in the process). Then a second evaluation at
   ``as_of - 1 day`` (the "previous" members; timed and shown, not in the headline) and
   ``compute_statuses(members, previous)``, so that realized / existing / exited are all
   non-trivial. Wall times with ``time.perf_counter``; input rows/s = (contacts + engagement +
   activities) / evaluation seconds. Peak memory is ``resource.getrusage(RUSAGE_SELF).ru_maxrss``
   (KiB on Linux); the script first tries to reset the process's RSS high-water mark
   (``/proc/self/clear_refs``) after generating the data so the peak belongs to the measured
   phase; if that is not possible the output says the peak includes generation.

3. **Naive baseline.** The obvious per-profile way: for each of ``--naive-sample`` random
   profiles, filter each related DataFrame with boolean indexing
   (``df[df.SubscriberKey == key]``, once per profile and dataset), turn the rows into plain
   Python values and interpret the rule tree (Compare / AllOf / AnyOf / Not / HasRelated) with
   the semantics of ``sfmc_pipeline/segments/evaluate.py`` (null comparisons are false, UTC
   calendar days, ``within_last_days``: ``as_of - N <= day <= as_of``, ``older_than_days``:
   ``day < as_of - N``, ``latest_is_after``). Its time is extrapolated linearly to all
   profiles and compared with the vectorised evaluation time (membership only, statuses
   excluded, as the naive code computes membership only). The naive memberships of the sampled
   profiles must equal the vectorised ones: the script prints OK, or the mismatches and exits
   with status 1.

4. **Report**: one line per figure, a per-segment markdown table, and the machine facts.

The defaults (1M contacts, 5M engagement rows, 10M activities) are the size of the figures in
docs/performance.md; the peak RSS line of the output says the memory they need.
"""

from __future__ import annotations

import argparse
import datetime as dt
import operator
import os
import platform
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_memory import current_rss_mib, peak_rss_mib, reset_peak_rss, total_memory  # noqa: E402  (scripts/)

from sfmc_pipeline.config.data_extensions import (  # noqa: E402
    ColumnConfig,
    DataExtensionConfig,
    SfmcType,
)
from sfmc_pipeline.config.loader import load_pipeline_config  # noqa: E402
from sfmc_pipeline.datasets.conversion import pandas_dtype  # noqa: E402
from sfmc_pipeline.segments.evaluate import PROFILE_KEY, SegmentEvaluator  # noqa: E402
from sfmc_pipeline.segments.rules import (  # noqa: E402
    AllOf,
    AnyOf,
    Compare,
    HasRelated,
    Not,
    Rule,
    related_datasets,
)
from sfmc_pipeline.segments.statuses import compute_statuses, status_counts  # noqa: E402
from sfmc_pipeline.settings import DEFAULT_CONFIG_PATH  # noqa: E402

AS_OF = dt.date(2026, 11, 20)
ORPHAN_SHARE = 0.005
DAY_US = 86_400 * 1_000_000
# Microseconds since the epoch of as_of 00:00 UTC: day offset d = UTC calendar day as_of - d.
AS_OF_US = (AS_OF - dt.date(1970, 1, 1)).days * DAY_US

STAGES = ["new", "repeat", "loyal", "inactive"]
STAGE_SHARES = [0.30, 0.35, 0.15, 0.20]
ORDER_RANGES = {"new": (0, 1), "repeat": (2, 9), "loyal": (10, 40), "inactive": (1, 6)}
RESPONSES = ["positive", "negative", "none"]
RESPONSE_SHARES = [0.06, 0.04, 0.30]  # the remaining 60 % are empty
ACTIVITY_TYPES = ["web_visit", "form_submit", "email_open", "email_click"]
ACTIVITY_SHARES = [0.50, 0.12, 0.26, 0.12]
FIRST_NAMES = ["Anna", "Ben", "Chloé", "David", "Emma", "Farid", "Grace", "Hugo", "Ines", "Jonas", "Kai", "Léa"]
LAST_NAMES = ["Smith", "Müller", "García", "O'Brien", "Nguyen", "Rossi", "Kowalski", "Dubois", "Khan", "Jensen"]
COMPANIES = ["Acme Corp", "Globex", "Initech", "Umbrella, Inc.", "Stark Industries", "Wayne Enterprises"]
PAGES = ["/", "/pricing", "/products/a", "/products/b", "/blog/launch", "/cart", "/contact", "/docs"]
FORMS = ["newsletter_signup", "demo_request", "contact_us", "webinar_registration"]


# ----------------------------------------------------------------------------------------------
# Typed column builders (exact dtypes of conversion.pandas_dtype)
# ----------------------------------------------------------------------------------------------


def text(values: pa.Array) -> pd.Series:
    return pd.Series(pd.array(values, dtype=pd.StringDtype()))


def pick(pool: list[str], index: np.ndarray, null: np.ndarray | None = None) -> pd.Series:
    """Text column: ``pool[index]``, null where ``null``."""
    return text(pick_arrow(pool, index, null))


def pick_arrow(pool: list[str], index: np.ndarray, null: np.ndarray | None = None) -> pa.Array:
    return pa.array(pool, pa.string()).take(pa.array(index, mask=null))


def numbered(prefix: str, numbers: np.ndarray, width: int, suffix: str = "") -> pa.Array:
    """``prefix + zero-padded number + suffix`` for every number (vectorised in Arrow)."""
    digits = pc.utf8_lpad(pc.cast(pa.array(numbers), pa.string()), width, "0")
    return pc.binary_join_element_wise(prefix, digits, suffix, "")


def whole(values: np.ndarray) -> pd.Series:
    return pd.Series(pd.array(values.astype(np.int64), dtype="Int64"))


def decimal(cents: np.ndarray, column: ColumnConfig) -> pd.Series:
    """Decimal column from non-negative integers in units of 10**-scale (decimal128 buffers)."""
    raw = np.zeros((len(cents), 2), dtype=np.int64)  # little-endian 128-bit: low word, high word
    raw[:, 0] = cents
    arr = pa.Array.from_buffers(pa.decimal128(column.precision, column.scale), len(cents), [None, pa.py_buffer(raw)])
    return pd.Series(pd.arrays.ArrowExtensionArray(arr))


def timestamps(micros: np.ndarray, null: np.ndarray | None = None) -> pd.Series:
    """Date column (datetime64[us, UTC]) from microseconds since the epoch."""
    values = micros.astype("datetime64[us]")
    if null is not None:
        values[null] = np.datetime64("NaT")
    return pd.Series(values).dt.tz_localize("UTC")


def days_ago(rng: np.random.Generator, days: np.ndarray) -> np.ndarray:
    """Microseconds of a random time on UTC day ``as_of - days``."""
    return AS_OF_US - days.astype(np.int64) * DAY_US + rng.integers(0, DAY_US, len(days))


def filler(column: ColumnConfig, n: int) -> pd.Series:
    """A column the generator does not know: null when nullable, else a constant."""
    dtype = pandas_dtype(column)
    if column.nullable:
        return pd.Series(pd.array([None] * n, dtype=dtype)) if n else pd.Series([], dtype=dtype)
    constant: Any = {
        SfmcType.NUMBER: 0, SfmcType.DECIMAL: Decimal(0), SfmcType.BOOLEAN: False,
        SfmcType.DATE: pd.Timestamp(AS_OF, tz="UTC"),
    }.get(column.type, (column.allowed_values or ["x"])[0])
    return pd.Series([constant] * n).astype(dtype)


def assemble(ext: DataExtensionConfig, columns: dict[str, pd.Series], n: int, notes: list[str]) -> pd.DataFrame:
    """The configured columns in configured order; dtypes checked against ``pandas_dtype``."""
    out = {}
    for column in ext.columns:
        if column.name in columns:
            series = columns[column.name]
        else:
            notes.append(f"{ext.asset}.{column.name}: not generated by this script, filled with a constant/null")
            series = filler(column, n)
        expected = pandas_dtype(column)
        if series.dtype != expected:
            raise AssertionError(f"{ext.asset}.{column.name}: generated {series.dtype}, datasets have {expected}")
        out[column.name] = series.reset_index(drop=True)
    return pd.DataFrame(out)


# ----------------------------------------------------------------------------------------------
# Synthetic datasets
# ----------------------------------------------------------------------------------------------


def owners_with_orphans(rng: np.random.Generator, n_profiles: int, n_rows: int) -> np.ndarray:
    """Profile position of each related row; orphans get ids >= n_profiles (keys of no profile)."""
    owners = rng.integers(0, n_profiles, n_rows)
    orphan = rng.random(n_rows) < ORPHAN_SHARE
    owners[orphan] = n_profiles + rng.integers(0, max(1, n_profiles // 100), int(orphan.sum()))
    return owners


def related_keys(profile_keys: pa.Array, owners: np.ndarray, n_profiles: int) -> pd.Series:
    orphan = owners >= n_profiles
    taken = profile_keys.take(pa.array(np.where(orphan, 0, owners)))
    orphan_keys = numbered("003", (1_000_000_000_000 - 1) - (owners - n_profiles), 12, "xYz")  # top of the number space
    return text(pc.if_else(pa.array(orphan), orphan_keys, taken))


def rank_within_owner(owners: np.ndarray) -> np.ndarray:
    """0, 1, 2, ... for the rows of each owner (in row order)."""
    order = np.argsort(owners, kind="stable")
    sorted_owners = owners[order]
    starts = np.r_[True, sorted_owners[1:] != sorted_owners[:-1]]
    positions = np.arange(len(owners))
    rank_sorted = positions - np.maximum.accumulate(np.where(starts, positions, 0))
    rank = np.empty_like(rank_sorted)
    rank[order] = rank_sorted
    return rank


def make_contacts(rng: np.random.Generator, n: int, ext: DataExtensionConfig) -> tuple[dict[str, pd.Series], pa.Array]:
    numbers = rng.permutation(n)  # unique key numbers, profiles not in key order
    prefix = pick_arrow(["003", "00Q"], (rng.random(n) < 0.2).astype(np.int64))
    keys = pc.binary_join_element_wise(prefix, pc.utf8_lpad(pc.cast(pa.array(numbers), pa.string()), 12, "0"), "xYz", "")

    stage = rng.choice(len(STAGES), n, p=STAGE_SHARES)
    orders = np.zeros(n, dtype=np.int64)
    for i, name in enumerate(STAGES):
        lo, hi = ORDER_RANGES[name]
        hit = stage == i
        orders[hit] = rng.integers(lo, hi + 1, int(hit.sum()))
    inactive = stage == STAGES.index("inactive")
    # Buyers' last purchases: ~45 % within 30 days, the rest over the last 400 days; inactive
    # customers ~90 % more than 180 days ago (up to 720).
    purchase_days = np.where(rng.random(n) < 0.45, rng.integers(0, 31, n), rng.integers(0, 401, n))
    long_ago = inactive & (rng.random(n) < 0.9)
    purchase_days[long_ago] = rng.integers(181, 721, int(long_ago.sum()))
    no_purchase_date = (orders == 0) | (rng.random(n) < 0.01)
    created_days = np.where(orders == 0, rng.integers(0, 181, n), purchase_days + rng.integers(1, 1000, n))

    spend_cents = orders * rng.integers(1_500, 25_001, n)
    columns = {
        "SubscriberKey": text(keys),
        "FirstName": pick(FIRST_NAMES, rng.integers(0, len(FIRST_NAMES), n), rng.random(n) < 0.03),
        "LastName": pick(LAST_NAMES, rng.integers(0, len(LAST_NAMES), n)),
        "Email": text(numbered("user", numbers, 1, "@example.com")),
        "Company": pick(COMPANIES, rng.integers(0, len(COMPANIES), n), rng.random(n) < 0.5),
        "LifecycleStage": pick(STAGES, stage, rng.random(n) < 0.05),
        "OrderCount": whole(orders),
        "TotalSpend": decimal(spend_cents, ext.column("TotalSpend")),
        "LastPurchaseDate": timestamps(days_ago(rng, purchase_days), no_purchase_date),
        "CreatedDate": timestamps(days_ago(rng, created_days)),
    }
    return columns, keys


def make_engagement(rng: np.random.Generator, rows: int, profile_keys: pa.Array, n_profiles: int) -> dict[str, pd.Series]:
    owners = owners_with_orphans(rng, n_profiles, rows)
    rank = rank_within_owner(owners)
    n_campaigns = max(200, int(rank.max()) + 1 if rows else 0)
    campaign_days = np.sort(rng.choice(401, n_campaigns, replace=n_campaigns > 401))[::-1]  # oldest first
    campaign_send = days_ago(rng, campaign_days)
    campaign_ids = [f"CMP-{i + 1:04d}" for i in range(n_campaigns)]
    campaign = (rng.integers(0, n_campaigns, n_profiles + n_profiles // 100 + 1)[owners] + rank) % n_campaigns

    opened = rng.random(rows) < 0.35
    opens = np.where(opened, rng.integers(1, 9, rows), 0)
    clicks = np.where(opened & (rng.random(rows) < 0.5), rng.integers(1, 11, rows), 0)
    offer_clicks = np.floor(rng.random(rows) * (clicks + 1)).astype(np.int64)  # 0 <= offer <= clicks
    response_draw = rng.choice(len(RESPONSES) + 1, rows, p=RESPONSE_SHARES + [1 - sum(RESPONSE_SHARES)])
    send = campaign_send[campaign]
    lag = (rng.exponential(2.0, rows) * DAY_US).astype(np.int64)
    engaged = np.minimum(send + lag, AS_OF_US + DAY_US - 1)  # not after the end of as_of

    return {
        "SubscriberKey": related_keys(profile_keys, owners, n_profiles),
        "CampaignId": pick(campaign_ids, campaign),
        "SendDate": timestamps(send),
        "Opens": whole(opens),
        "Clicks": whole(clicks),
        "OfferClicks": whole(offer_clicks),
        "Response": pick(RESPONSES, np.minimum(response_draw, len(RESPONSES) - 1), response_draw == len(RESPONSES)),
        "LastEngagedDate": timestamps(engaged, ~opened),
    }


def make_activities(rng: np.random.Generator, rows: int, profile_keys: pa.Array, n_profiles: int) -> dict[str, pd.Series]:
    owners = owners_with_orphans(rng, n_profiles, rows)
    kind = rng.choice(len(ACTIVITY_TYPES), rows, p=ACTIVITY_SHARES)
    recent = rng.random(rows) < 0.5
    days = np.where(recent, rng.integers(0, 61, rows), rng.integers(0, 401, rows))
    # Detail: a URL for web visits, a form name for form submits, a campaign id for email events.
    urls = [f"https://www.example.com{p}" for p in PAGES]
    campaigns = [f"CMP-{i + 1:04d}" for i in range(40)]
    pools = [urls, FORMS, campaigns, campaigns]
    offsets = np.cumsum([0] + [len(p) for p in pools[:-1]])
    sizes = np.array([len(p) for p in pools])
    detail_index = offsets[kind] + (rng.random(rows) * sizes[kind]).astype(np.int64)

    return {
        "ActivityId": text(numbered("a0000000-0000-4000-8000-", np.arange(rows), 12)),  # 36 chars, unique
        "SubscriberKey": related_keys(profile_keys, owners, n_profiles),
        "ActivityType": pick(ACTIVITY_TYPES, kind),
        "OccurredAt": timestamps(days_ago(rng, days)),
        "Detail": pick(sum(pools, []), detail_index, rng.random(rows) < 0.05),
    }


def generate(config, args, rng: np.random.Generator, notes: list[str]) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    contacts_ext = config.extension(config.profiles.dataset)
    columns, keys = make_contacts(rng, args.contacts, contacts_ext)
    contacts = assemble(contacts_ext, columns, args.contacts, notes)
    related = {
        "campaign_engagement": assemble(
            config.extension("campaign_engagement"),
            make_engagement(rng, args.engagement, keys, args.contacts), args.engagement, notes,
        ),
        "activities": assemble(
            config.extension("activities"),
            make_activities(rng, args.activities, keys, args.contacts), args.activities, notes,
        ),
    }
    return contacts, related


# ----------------------------------------------------------------------------------------------
# Naive per-profile evaluator (plain Python values; semantics of segments/evaluate.py)
# ----------------------------------------------------------------------------------------------

PY_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq, "ne": operator.ne, "gt": operator.gt,
    "gte": operator.ge, "lt": operator.lt, "lte": operator.le,
}


def plain(value: Any) -> Any:
    """A pandas/numpy scalar as a plain Python value (None for any null)."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    if isinstance(value, np.generic):
        return value.item()
    return value


def utc_day(value: dt.datetime) -> dt.date:
    if value.tzinfo is not None:
        value = value.astimezone(dt.timezone.utc)
    return value.date()


def naive_compare(rule: Compare, value: Any, as_of: dt.date) -> bool:
    op = rule.op
    if op == "is_null":
        return value is None
    if op == "not_null":
        return value is not None
    if value is None:
        return False  # a comparison on a null value is false
    targets = rule.value if op in ("in", "not_in") else [rule.value]
    if isinstance(value, dt.datetime):  # Date column: compare UTC calendar days
        value = utc_day(value)
        if op == "within_last_days":
            return as_of - dt.timedelta(days=rule.value) <= value <= as_of
        if op == "older_than_days":
            return value < as_of - dt.timedelta(days=rule.value)
        targets = [dt.date.fromisoformat(str(t)) for t in targets]
    if op == "in":
        return value in targets
    if op == "not_in":
        return value not in targets
    return bool(PY_OPS[op](value, targets[0]))


def naive_matches(rule: Rule, row: dict, profile: dict, related_rows: dict[str, list[dict]], as_of: dt.date) -> bool:
    """``row``: the record the comparisons look at (the profile, or a related row inside has_related)."""
    if isinstance(rule, AllOf):
        return all(naive_matches(r, row, profile, related_rows, as_of) for r in rule.rules)
    if isinstance(rule, AnyOf):
        return any(naive_matches(r, row, profile, related_rows, as_of) for r in rule.rules)
    if isinstance(rule, Not):
        return not naive_matches(rule.rule, row, profile, related_rows, as_of)
    if isinstance(rule, HasRelated):
        matching = [
            r for r in related_rows[rule.dataset]
            if rule.where is None or naive_matches(rule.where, r, profile, related_rows, as_of)
        ]
        if rule.latest_is_after is None:
            return bool(matching)
        days = [utc_day(r[rule.latest_is_after.column]) for r in matching if r[rule.latest_is_after.column] is not None]
        if not days:
            return False
        own = profile[rule.latest_is_after.profile_column]
        return own is None or utc_day(own) < max(days)  # a null profile date counts as earlier
    return naive_compare(rule, row[rule.column], as_of)


def naive_members(
    profiles: pd.DataFrame, related: dict[str, pd.DataFrame], key: str,
    positions: np.ndarray, catalogue: list[tuple[str, Rule]], as_of: dt.date,
) -> set[tuple[str, str]]:
    """What a user would write: per profile, filter the related frames, evaluate every rule."""
    datasets = sorted(set().union(*(related_datasets(rule) for _, rule in catalogue)))
    members = set()
    for position in positions:
        profile = {c: plain(v) for c, v in profiles.iloc[int(position)].items()}
        profile_key = profile[key]
        related_rows = {}
        for name in datasets:
            frame = related[name]
            rows = frame[frame[key] == profile_key]
            related_rows[name] = [{c: plain(v) for c, v in r.items()} for r in rows.to_dict("records")]
        for segment, rule in catalogue:
            if naive_matches(rule, profile, profile, related_rows, as_of):
                members.add((profile_key, segment))
    return members


# ----------------------------------------------------------------------------------------------
# Measurement helpers and report
# ----------------------------------------------------------------------------------------------


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def evaluate(contacts, related, key, as_of, catalogue) -> tuple[pd.DataFrame, SegmentEvaluator]:
    evaluator = SegmentEvaluator(contacts, related, key=key, as_of=as_of)
    return evaluator.members(catalogue), evaluator


def markdown(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---" if i == 0 else "---:" for i in range(len(frame.columns))) + "|"
    rows = [
        "| " + " | ".join(f"{v:,}" if isinstance(v, (int, np.integer)) else str(v) for v in row) + " |"
        for row in frame.itertuples(index=False)
    ]
    return "\n".join([header, rule, *rows])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contacts", type=int, default=1_000_000, help="profiles (default 1,000,000)")
    parser.add_argument("--engagement", type=int, default=5_000_000, help="campaign_engagement rows (default 5,000,000)")
    parser.add_argument("--activities", type=int, default=10_000_000, help="activities rows (default 10,000,000)")
    parser.add_argument("--naive-sample", type=int, default=2000, help="profiles evaluated the naive way (default 2000)")
    parser.add_argument("--seed", type=int, default=7, help="numpy seed (default 7)")
    args = parser.parse_args(argv)
    if args.contacts < 1 or args.engagement < 0 or args.activities < 0 or args.naive_sample < 1:
        parser.error("need --contacts >= 1, --naive-sample >= 1 and non-negative row counts")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = load_pipeline_config(DEFAULT_CONFIG_PATH)
    key = config.profiles.key
    catalogue = [(s.name, s.rule) for s in config.segments]
    names = [name for name, _ in catalogue]
    rng = np.random.default_rng(args.seed)
    notes: list[str] = []
    input_rows = args.contacts + args.engagement + args.activities

    # 1. Synthetic data (not measured as evaluation).
    (contacts, related), generation_s = timed(lambda: generate(config, args, rng, notes))
    input_mib = sum(f.memory_usage(deep=True).sum() for f in [contacts, *related.values()]) / 2**20
    rss_before, generation_peak_mib = current_rss_mib(), peak_rss_mib()
    peak_reset = reset_peak_rss()

    # 2. Measured: evaluation at as_of (cold), previous evaluation at as_of - 1 day, statuses.
    (members, evaluator), evaluation_s = timed(lambda: evaluate(contacts, related, key, AS_OF, catalogue))
    previous_as_of = AS_OF - dt.timedelta(days=1)
    (previous, _), previous_s = timed(lambda: evaluate(contacts, related, key, previous_as_of, catalogue))
    statuses, statuses_s = timed(lambda: compute_statuses(members, previous))
    peak_mib = peak_rss_mib()
    counts = status_counts(statuses, names)
    orphans = {name: evaluator.orphans(name) for name in related}

    # 3. Naive baseline on a random sample of profiles, and the correctness check.
    sample = np.sort(rng.choice(args.contacts, min(args.naive_sample, args.contacts), replace=False))
    naive, naive_s = timed(lambda: naive_members(contacts, related, key, sample, catalogue, AS_OF))
    naive_extrapolated_s = naive_s / len(sample) * args.contacts
    sample_keys = contacts[key].iloc[sample].astype("string")
    in_sample = members[members[PROFILE_KEY].isin(sample_keys)]
    vectorised = set(zip(in_sample[PROFILE_KEY].astype(str), in_sample["segment"].astype(str)))
    only_naive, only_vectorised = sorted(naive - vectorised), sorted(vectorised - naive)

    # 4. Report.
    sizes = f"{args.contacts:,} contacts, {args.engagement:,} campaign_engagement rows, {args.activities:,} activities rows"
    print(f"Segment evaluation benchmark: {len(catalogue)} segments, as_of {AS_OF} (previous {previous_as_of}), seed {args.seed}")
    print(f"input:                        {sizes} ({input_rows:,} rows, {input_mib:,.0f} MiB in memory)")
    print("orphan related rows:          " + ", ".join(f"{k} {v:,}" for k, v in orphans.items()))
    print(f"data generation:              {generation_s:.2f} s (numpy/pyarrow, not part of the measurement)")
    print(f"evaluation (as_of, cold):     {evaluation_s:.2f} s  (SegmentEvaluator + members, whole catalogue)")
    print(f"input rows/s:                 {input_rows / evaluation_s:,.0f}")
    print(f"member rows produced:         {len(members):,}")
    print(f"second evaluation (as_of-1):  {previous_s:.2f} s  ({len(previous):,} member rows)")
    print(f"compute_statuses:             {statuses_s:.2f} s  ({len(statuses):,} status rows)")
    print(f"evaluation + statuses:        {evaluation_s + statuses_s:.2f} s")
    peak_note = "since data generation" if peak_reset else "process peak, INCLUDES data generation"
    print(f"RSS with the data loaded:     {rss_before:,.0f} MiB (peak during generation {generation_peak_mib:,.0f} MiB)")
    print(f"peak RSS (ru_maxrss):         {peak_mib:,.0f} MiB ({peak_note}, through both evaluations and statuses)")
    print(f"naive baseline:               {naive_s:.2f} s for {len(sample):,} profiles "
          f"({naive_s / len(sample) * 1000:.1f} ms/profile, df[df.{key} == key] per profile and dataset)")
    print(f"naive extrapolated:           {naive_extrapolated_s:,.0f} s ({naive_extrapolated_s / 3600:.1f} h) for {args.contacts:,} profiles")
    print(f"speed-up:                     {naive_extrapolated_s / evaluation_s:,.0f}x (naive extrapolated / vectorised evaluation)")
    check = "OK" if not (only_naive or only_vectorised) else f"MISMATCH ({len(only_naive) + len(only_vectorised)})"
    print(f"naive == vectorised:          {check} on {len(sample):,} sampled profiles, {len(vectorised):,} memberships")
    for note in notes:
        print(f"note: {note}")

    sampled = pd.Series([segment for _, segment in vectorised], dtype=object).value_counts()
    table = counts.reset_index().rename(columns={"index": "segment"})
    table["sample members"] = [int(sampled.get(name, 0)) for name in table["segment"]]
    print()
    print(markdown(table))
    print()
    print(
        f"machine: {os.cpu_count()} cores, {total_memory()} RAM, {platform.system()} {platform.machine()}; "
        f"Python {platform.python_version()}, pandas {pd.__version__}, numpy {np.__version__}, pyarrow {pa.__version__}"
    )

    if only_naive or only_vectorised:
        print("\nMismatches (key, segment):", file=sys.stderr)
        for pair in only_naive[:20]:
            print(f"  naive only:      {pair}", file=sys.stderr)
        for pair in only_vectorised[:20]:
            print(f"  vectorised only: {pair}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
