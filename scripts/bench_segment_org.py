"""A synthetic SFMC org in the product's dataset layout, for ``benchmark_segments.py``.

``ensure_org(storage, profiles, related_per_profile, seed)`` writes ``datasets/contacts.parquet``,
``datasets/campaign_engagement.parquet`` and ``datasets/activities.parquet`` under ``storage`` as the
landing writes a validated dataset: the configured columns in configured order, the arrow types and
pandas metadata of ``datasets.storage.write_parquet`` on frames of ``datasets.conversion.pandas_dtype``
(text ``large_string``, Number ``int64``, Decimal ``decimal128``, Date ``timestamp[us, UTC]``), row
groups of ``ROW_GROUP_ROWS``, written atomically. A marker file (``bench-org.json``) records size and
seed; a folder that already holds the same org is reused.

Generation stays in bounded memory at 10M profiles / 100M related rows: DuckDB computes the rows
from ``range()`` with SQL (every random draw is a hash of the row number, a salt and the seed, so the data does not
depend on thread scheduling) and streams them as record batches into pyarrow's parquet writer.

Value spreads are those of the earlier pandas benchmark generator, so that every shipped segment of
``pipeline.yaml`` is non-empty: the sample's lifecycle stages and order counts, purchase, engagement
and activity dates over the last ~400 days before ``as_of`` (purchases weighted towards the last 30
days, activities towards the last 60), responses, activity types, ``OfferClicks <= Clicks``,
``(SubscriberKey, CampaignId)`` unique, ~1 % of buyers without LastPurchaseDate, ~3-50 % nulls in the
nullable text columns, and 0.5 % orphan related rows (keys of no profile). The related rows are split
one third ``campaign_engagement``, two thirds ``activities`` (the ratio of the earlier benchmark).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from sfmc_pipeline.datasets.conversion import pandas_dtype
from sfmc_pipeline.datasets.storage import ROW_GROUP_ROWS, DatasetStore, atomic_path

GENERATOR_VERSION = 1
MARKER = "bench-org.json"
DATASETS = ("contacts", "campaign_engagement", "activities")
DAY_US = 86_400 * 1_000_000
ORPHAN_SHARE = 0.005

STAGES = ["new", "repeat", "loyal", "inactive"]
STAGE_CUMULATIVE = [0.30, 0.65, 0.80]  # shares 30 / 35 / 15 / 20 %
ORDER_RANGES = [(0, 1), (2, 9), (10, 40), (1, 6)]  # per stage, inclusive
FIRST_NAMES = ["Anna", "Ben", "Chloé", "David", "Emma", "Farid", "Grace", "Hugo", "Ines", "Jonas", "Kai", "Léa"]
LAST_NAMES = ["Smith", "Müller", "García", "O'Brien", "Nguyen", "Rossi", "Kowalski", "Dubois", "Khan", "Jensen"]
COMPANIES = ["Acme Corp", "Globex", "Initech", "Umbrella, Inc.", "Stark Industries", "Wayne Enterprises"]
PAGES = ["/", "/pricing", "/products/a", "/products/b", "/blog/launch", "/cart", "/contact", "/docs"]
FORMS = ["newsletter_signup", "demo_request", "contact_us", "webinar_registration"]


@dataclass(frozen=True)
class OrgSize:
    profiles: int
    engagement: int
    activities: int
    seed: int
    as_of: str
    version: int = GENERATOR_VERSION

    @classmethod
    def of(cls, profiles: int, related_per_profile: float, seed: int, as_of: dt.date) -> "OrgSize":
        related = round(profiles * related_per_profile)
        engagement = round(related / 3)
        return cls(profiles, engagement, related - engagement, seed, as_of.isoformat())

    @property
    def related_rows(self) -> int:
        return self.engagement + self.activities

    @property
    def input_rows(self) -> int:
        return self.profiles + self.related_rows


def reference_schema(extension) -> pa.Schema:
    """The arrow schema (with pandas metadata) ``write_parquet`` gives a validated frame of ``extension``."""
    frame = pd.DataFrame({c.name: pd.Series([], dtype=pandas_dtype(c)) for c in extension.columns})
    return pa.Schema.from_pandas(frame, preserve_index=False)


def ensure_org(storage: Path, size: OrgSize, config) -> tuple[bool, float]:
    """Generate the org under ``storage`` unless the marker says it is already there: (reused, seconds)."""
    marker = storage / MARKER
    store = DatasetStore(storage)
    present = all(store.dataset_path(name).exists() for name in DATASETS)
    if present and marker.exists() and json.loads(marker.read_text()) == asdict(size):
        return True, 0.0
    marker.unlink(missing_ok=True)
    start = time.perf_counter()
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET preserve_insertion_order = true")
    con.execute(f"SET temp_directory = '{storage / 'state' / 'engine-spill'}'")
    con.execute("SET memory_limit = '2GB'")
    for macro in _macros(size):
        con.execute(macro)
    queries = {"contacts": _contacts_sql(size), "campaign_engagement": _engagement_sql(size),
               "activities": _activities_sql(size)}
    for name in DATASETS:
        extension = config.extension(name)
        _write(con, queries[name], reference_schema(extension), store.dataset_path(name))
    con.close()
    storage.joinpath(MARKER).write_text(json.dumps(asdict(size), indent=2))
    return False, time.perf_counter() - start


def check_schemas(storage: Path, config) -> list[str]:
    """Differences between the files' arrow schemas (with pandas metadata) and what the landing writes."""
    problems = []
    for name in DATASETS:
        written = pq.read_schema(DatasetStore(storage).dataset_path(name))
        expected = reference_schema(config.extension(name))
        if not written.equals(expected, check_metadata=False):
            problems.append(f"{name}: {written} != {expected}")
        elif written.pandas_metadata["columns"] != expected.pandas_metadata["columns"]:
            problems.append(f"{name}: pandas metadata differs")
    return problems


def _write(con, sql: str, schema: pa.Schema, target: Path) -> None:
    """Stream the query's rows into ``target`` (atomically), cast to ``schema``, a row group at a time."""
    reader = con.execute(sql).fetch_record_batch(ROW_GROUP_ROWS)
    with atomic_path(target) as tmp, pq.ParquetWriter(tmp, schema) as writer:
        for batch in reader:
            table = pa.Table.from_batches([batch]).rename_columns(schema.names).cast(schema)
            writer.write_table(table, row_group_size=ROW_GROUP_ROWS)


def _coprime_step(n: int) -> int:
    """A multiplier coprime with ``n``: ``j -> (j * step + c) % n`` is a permutation of ``range(n)``."""
    step = 1_000_003
    while math.gcd(step, n) != 1:
        step += 2
    return step % n or 1


def _list(values: list[str]) -> str:
    return "[" + ", ".join("'" + v.replace("'", "''") + "'" for v in values) + "]"


def _macros(size: OrgSize) -> list[str]:
    n, seed = size.profiles, size.seed
    as_of_us = (dt.date.fromisoformat(size.as_of) - dt.date(1970, 1, 1)).days * DAY_US
    return [
        # a uniform draw in [0, 1) for row i and a salt naming the draw (i and the salt in one hashed
        # number: DuckDB's multi-argument hash combines hashes weakly, draws of two salts would correlate)
        f"CREATE MACRO u(i, salt) AS (hash(i::BIGINT * 1048576 + (hash(salt) % 1048576)::BIGINT, {seed}) >> 11)::DOUBLE"
        " / 9007199254740992.0",
        "CREATE MACRO pick(pool, i, salt) AS pool[1 + floor(u(i, salt) * len(pool))::INTEGER]",
        # profile j's key: 003 / 00Q (20 %) + a 12-digit number (a permutation: profiles not in key order) + xYz
        f"CREATE MACRO pnum(j) AS (j * {_coprime_step(n)} + 12345) % {n}",
        "CREATE MACRO pkey(j) AS (CASE WHEN u(j, 'prefix') < 0.2 THEN '00Q' ELSE '003' END) "
        "|| lpad(pnum(j)::VARCHAR, 12, '0') || 'xYz'",
        # an orphan key (of no profile: the top of the number space), one per profile position
        "CREATE MACRO okey(j) AS '003' || lpad((999999999999 - j)::VARCHAR, 12, '0') || 'xYz'",
        f"CREATE MACRO related_key(j, i) AS CASE WHEN u(i, 'orphan') < {ORPHAN_SHARE} THEN okey(j) ELSE pkey(j) END",
        "CREATE MACRO ts(us) AS make_timestamp(us::BIGINT)::TIMESTAMPTZ",
        # microseconds of a random time on UTC day as_of - days
        f"CREATE MACRO days_ago(days, i, salt) AS {as_of_us} - days::BIGINT * {DAY_US} + floor(u(i, salt) * {DAY_US})::BIGINT",
        f"CREATE MACRO end_of_as_of() AS {as_of_us + DAY_US - 1}",
    ]


def _contacts_sql(size: OrgSize) -> str:
    stage = "CASE " + " ".join(f"WHEN u(i, 'stage') < {p} THEN {k}" for k, p in enumerate(STAGE_CUMULATIVE)) + " ELSE 3 END"
    orders = "CASE stage " + " ".join(
        f"WHEN {k} THEN {lo} + floor(u(i, 'orders') * {hi - lo + 1})::BIGINT" for k, (lo, hi) in enumerate(ORDER_RANGES)
    ) + " END"
    return f"""
    WITH staged AS (SELECT i, {stage} AS stage FROM range(0, {size.profiles}) t(i)),
    drawn AS (
        SELECT i, stage, {orders} AS orders,
               CASE WHEN stage = 3 AND u(i, 'long_ago') < 0.9 THEN 181 + floor(u(i, 'pdays') * 540)
                    WHEN u(i, 'recent') < 0.45 THEN floor(u(i, 'pdays') * 31)
                    ELSE floor(u(i, 'pdays') * 401) END::BIGINT AS pdays
        FROM staged)
    SELECT
        pkey(i) AS SubscriberKey,
        CASE WHEN u(i, 'first_null') < 0.03 THEN NULL ELSE pick({_list(FIRST_NAMES)}, i, 'first') END AS FirstName,
        pick({_list(LAST_NAMES)}, i, 'last') AS LastName,
        'user' || pnum(i)::VARCHAR || '@example.com' AS Email,
        CASE WHEN u(i, 'company_null') < 0.5 THEN NULL ELSE pick({_list(COMPANIES)}, i, 'company') END AS Company,
        CASE WHEN u(i, 'stage_null') < 0.05 THEN NULL ELSE {_list(STAGES)}[stage + 1] END AS LifecycleStage,
        orders AS OrderCount,
        ((orders * (1500 + floor(u(i, 'spend') * 23501)::BIGINT))::DECIMAL(18, 0) * 0.01)::DECIMAL(18, 2) AS TotalSpend,
        CASE WHEN orders = 0 OR u(i, 'no_purchase') < 0.01 THEN NULL ELSE ts(days_ago(pdays, i, 'ptime')) END
            AS LastPurchaseDate,
        ts(days_ago(CASE WHEN orders = 0 THEN floor(u(i, 'cdays') * 181)
                         ELSE pdays + 1 + floor(u(i, 'cdays') * 999) END, i, 'ctime')) AS CreatedDate
    FROM drawn"""


def _engagement_sql(size: OrgSize) -> str:
    """Row i belongs to the profile ``(j * step + rank) % n`` (j = i % n, rank = i // n): for each rank a
    permutation of the profiles, so a profile's rows have distinct ranks and campaign ``base + rank``."""
    n = size.profiles
    campaigns = max(200, -(-size.engagement // n))
    return f"""
    WITH owned AS (
        SELECT i, ((i % {n}) * {_coprime_step(n)} + (i // {n}) * 7919) % {n} AS owner, i // {n} AS rank
        FROM range(0, {size.engagement}) t(i)),
    sent AS (
        SELECT i, owner, (floor(u(owner, 'campaign') * {campaigns})::BIGINT + rank) % {campaigns} AS campaign,
               u(i, 'opened') < 0.35 AS opened
        FROM owned),
    clicked AS (
        SELECT *, days_ago(400 - (campaign * 401) // {campaigns}, campaign, 'send') AS send_us,
               CASE WHEN opened AND u(i, 'clicked') < 0.5 THEN 1 + floor(u(i, 'clicks') * 10)::BIGINT ELSE 0 END AS clicks
        FROM sent)
    SELECT
        related_key(owner, i) AS SubscriberKey,
        'CMP-' || lpad((campaign + 1)::VARCHAR, 4, '0') AS CampaignId,
        ts(send_us) AS SendDate,
        CASE WHEN opened THEN 1 + floor(u(i, 'opens') * 8)::BIGINT ELSE 0 END AS Opens,
        clicks AS Clicks,
        floor(u(i, 'offer') * (clicks + 1))::BIGINT AS OfferClicks,
        CASE WHEN u(i, 'response') < 0.06 THEN 'positive' WHEN u(i, 'response') < 0.10 THEN 'negative'
             WHEN u(i, 'response') < 0.40 THEN 'none' END AS Response,
        CASE WHEN opened THEN ts(least(send_us + floor(-ln(1 - u(i, 'lag')) * 2 * {DAY_US})::BIGINT, end_of_as_of()))
             END AS LastEngagedDate
    FROM clicked"""


def _activities_sql(size: OrgSize) -> str:
    urls = [f"https://www.example.com{p}" for p in PAGES]
    campaigns = [f"CMP-{i + 1:04d}" for i in range(40)]
    return f"""
    WITH typed AS (
        SELECT i, floor(u(i, 'owner') * {size.profiles})::BIGINT AS owner,
               CASE WHEN u(i, 'type') < 0.50 THEN 0 WHEN u(i, 'type') < 0.62 THEN 1
                    WHEN u(i, 'type') < 0.88 THEN 2 ELSE 3 END AS kind
        FROM range(0, {size.activities}) t(i))
    SELECT
        'a0000000-0000-4000-8000-' || lpad(i::VARCHAR, 12, '0') AS ActivityId,
        related_key(owner, i) AS SubscriberKey,
        {_list(['web_visit', 'form_submit', 'email_open', 'email_click'])}[kind + 1] AS ActivityType,
        ts(days_ago(CASE WHEN u(i, 'recent') < 0.5 THEN floor(u(i, 'days') * 61)
                         ELSE floor(u(i, 'days') * 401) END, i, 'time')) AS OccurredAt,
        CASE WHEN u(i, 'detail_null') < 0.05 THEN NULL
             WHEN kind = 0 THEN pick({_list(urls)}, i, 'detail')
             WHEN kind = 1 THEN pick({_list(FORMS)}, i, 'detail')
             ELSE pick({_list(campaigns)}, i, 'detail') END AS Detail
    FROM typed"""
