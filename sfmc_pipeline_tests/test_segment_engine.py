"""Contract: the compiled segment plan (``segments/compile.py``) run on DuckDB over the stored parquet
datasets gives exactly the memberships of the pandas evaluator the product used before (``sfmc_pipeline_testing/segment_reference.py``), in the same
order: on the tiny sample, on the edge cases of ``test_segment_rules.py`` (date boundaries, nulls,
``not``, decimals, lists, calendar days in several time zones) and on a generated dataset with nulls,
orphans and timestamps around day boundaries and daylight-saving changes."""

import datetime as dt
from decimal import Decimal

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from sfmc_pipeline.datasets.storage import DatasetStore
from sfmc_pipeline.datasets.validation import validate_extract
from sfmc_pipeline.segments.compile import local_midnight
from sfmc_pipeline.segments.engine import evaluate_members
from sfmc_pipeline_testing.segment_reference import SegmentEvaluator
from sfmc_pipeline.segments.rules import parse_rule
from sfmc_pipeline_tests.segment_fixtures import AS_OF, CONFIG, activity, contact, engagement, typed
from sfmc_pipeline_tests.test_segment_rules import ZONE_RULES, _sfmc_time
from sfmc_pipeline_tests.tiny_sample import ANCHOR, write_tiny_sample

KEY = "SubscriberKey"
RELATED = ("campaign_engagement", "activities")
ZONES = ("UTC", "America/Los_Angeles", "Asia/Tokyo", "Pacific/Kiritimati")
SHIPPED = [(s.name, s.rule) for s in CONFIG.segments]

# rules beyond the shipped ones: every operator, `not` over nulls and over has_related, lists of dates
EXTRA = [(f"extra_{i}", parse_rule(raw)) for i, raw in enumerate([
    {"column": "LifecycleStage", "op": "ne", "value": "new"},
    {"not": {"column": "LifecycleStage", "op": "eq", "value": "loyal"}},
    {"column": "LifecycleStage", "op": "in", "value": ["new", "loyal"]},
    {"column": "LifecycleStage", "op": "not_in", "value": ["new"]},
    {"not": {"column": "LifecycleStage", "op": "in", "value": ["repeat"]}},
    {"column": "TotalSpend", "op": "in", "value": [0, 15, 15.5]},
    {"column": "TotalSpend", "op": "gt", "value": 15.25},
    {"column": "TotalSpend", "op": "lte", "value": 15},
    {"column": "OrderCount", "op": "in", "value": [1, 2.5, 3]},
    {"column": "OrderCount", "op": "ne", "value": 3},
    {"not": {"column": "OrderCount", "op": "lt", "value": 5}},
    {"column": "LastPurchaseDate", "op": "eq", "value": "2026-11-19"},
    {"column": "LastPurchaseDate", "op": "ne", "value": "2026-11-19"},
    {"column": "LastPurchaseDate", "op": "gt", "value": "2026-11-10"},
    {"column": "LastPurchaseDate", "op": "gte", "value": "2026-11-10"},
    {"column": "LastPurchaseDate", "op": "lt", "value": "2026-03-08"},
    {"column": "LastPurchaseDate", "op": "lte", "value": "2026-03-08"},
    {"column": "LastPurchaseDate", "op": "in", "value": ["2026-11-19", "2026-11-01", "2026-03-08"]},
    {"column": "LastPurchaseDate", "op": "not_in", "value": ["2026-11-19"]},
    {"not": {"column": "LastPurchaseDate", "op": "within_last_days", "value": 3}},
    {"column": "LastPurchaseDate", "op": "within_last_days", "value": 0},
    {"column": "LastPurchaseDate", "op": "older_than_days", "value": 0},
    {"column": "LastPurchaseDate", "op": "not_null"},
    {"not": {"has_related": {"dataset": "activities"}}},
    {"not": {"has_related": {"dataset": "activities", "where": {"column": "ActivityType", "op": "eq",
                                                                    "value": "web_visit"}}}},
    {"has_related": {"dataset": "activities",
                     "where": {"not": {"column": "OccurredAt", "op": "within_last_days", "value": 1}}}},
    {"has_related": {"dataset": "activities", "latest_is_after": {"column": "OccurredAt",
                                                                 "profile_column": "LastPurchaseDate"}}},
    {"not": {"has_related": {"dataset": "campaign_engagement",
                             "where": {"column": "LastEngagedDate", "op": "is_null"},
                             "latest_is_after": {"column": "SendDate", "profile_column": "CreatedDate"}}}},
    {"any": [{"all": [{"column": "OrderCount", "op": "gte", "value": 1},
                      {"not": {"column": "Email", "op": "is_null"}}]},
             {"has_related": {"dataset": "campaign_engagement",
                              "where": {"any": [{"column": "Response", "op": "ne", "value": "none"},
                                                {"column": "Opens", "op": "gt", "value": 2}]}}}]},
    *ZONE_RULES.values(),
])]
ALL_RULES = SHIPPED + EXTRA


def _store(tmp_path, frames: dict[str, pd.DataFrame]) -> DatasetStore:
    store = DatasetStore(tmp_path / "storage")
    for name, frame in frames.items():
        store.write_dataset(name, frame)
    return store


def _assert_same(store: DatasetStore, segments, *, as_of: dt.date, timezone: str) -> pd.DataFrame:
    """Both evaluators on the stored datasets (the pandas one reads them back as the asset does)."""
    evaluator = SegmentEvaluator(store.read_dataset("contacts"), {n: store.read_dataset(n) for n in RELATED},
                                 key=KEY, as_of=as_of, timezone=timezone)
    expected = evaluator.members(segments)
    actual = evaluate_members(store, "contacts", segments, key=KEY, as_of=as_of, timezone=timezone)
    pd.testing.assert_frame_equal(actual, expected)
    return expected


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory) -> DatasetStore:
    folder = write_tiny_sample(tmp_path_factory.mktemp("tiny") / "sample")
    frames = {}
    for asset in ("contacts", *RELATED):
        extension = CONFIG.extension(asset)
        raw = pd.read_csv(folder / f"{extension.key}.csv", dtype="string", keep_default_na=False)
        frames[asset] = validate_extract(raw, extension).valid
    return _store(tmp_path_factory.mktemp("tiny_storage"), frames)


@pytest.mark.parametrize("timezone", ZONES[:2])
def test_tiny_sample_memberships_match(tiny_store, timezone):
    members = _assert_same(tiny_store, ALL_RULES, as_of=ANCHOR, timezone=timezone)
    assert set(members["segment"]) >= {name for name, _ in SHIPPED}  # every shipped segment has members


def _edge_frames() -> dict[str, pd.DataFrame]:
    """The edge cases of test_segment_rules.py in one dataset: stages (and none), order counts, decimals,
    purchases and activities at exactly N and N+1 days, around midnight in several zones, orphans."""
    contacts, engagements, activities = [], [], []
    stages = ["new", "repeat", "loyal", "inactive", ""]
    purchases = ["", "2026-11-20T03:00", "2026-11-19T18:00", "2026-11-19T07:59", "2026-11-19T08:00",
                 "2026-05-24T18:00", "2026-05-23T18:00", "2026-03-08T09:59", "2026-03-08T10:00", "2026-11-10T23:30"]
    spends = ["0", "15.00", "15.50", "15.25", "14.99"]
    activity_times = ["2026-11-20T03:00", "2026-11-19T16:00", "2026-11-13T07:59", "2026-11-13T08:00",
                      "2026-11-06T18:00", "2026-11-05T18:00", "2026-11-21T00:30", "2026-11-19T23:59"]
    n_activity = 0
    for n in range(60):
        fields = {"LifecycleStage": stages[n % 5], "OrderCount": n % 13, "TotalSpend": spends[n % 5]}
        if purchases[n % 10]:
            fields["LastPurchaseDate"] = _sfmc_time(purchases[n % 10])
        contacts.append(contact(n, **fields))
        for offset in ([], [10], [90, 91], [30])[n % 4]:
            sent = _sfmc_time((dt.datetime(2026, 11, 20, 18) - dt.timedelta(days=offset)).isoformat())
            engagements.append(engagement(n, f"C{offset}", SendDate=sent,
                                          Response=["positive", "negative", "none", ""][n % 4],
                                          OfferClicks=n % 2, Clicks=1, LastEngagedDate=sent if n % 5 else "",
                                          Opens=n % 6))
        for i in range(n % 3):
            occurred = activity_times[(n + i) % len(activity_times)]
            activities.append(activity(n, n_activity, ["web_visit", "form_submit"][(n + i) % 2], 0)
                              | {"OccurredAt": _sfmc_time(occurred)})
            n_activity += 1
    engagements.append(engagement(77, "C1", Response="negative"))  # orphans: no such profile
    activities.append(activity(78, 9999, "web_visit", 1))
    return {"contacts": typed("contacts", contacts), "campaign_engagement": typed("campaign_engagement", engagements),
            "activities": typed("activities", activities)}


@pytest.fixture(scope="module")
def edge_store(tmp_path_factory) -> DatasetStore:
    return _store(tmp_path_factory.mktemp("edges"), _edge_frames())


@pytest.mark.parametrize("timezone", ZONES)
@pytest.mark.parametrize("as_of", [AS_OF, dt.date(2026, 11, 21)], ids=str)
def test_edge_case_memberships_match(edge_store, as_of, timezone):
    _assert_same(edge_store, ALL_RULES, as_of=as_of, timezone=timezone)


def _generated_frames(profiles: int, related_per_profile: int, seed: int = 17) -> dict[str, pd.DataFrame]:
    """Typed frames as the datasets hold them, with nulls everywhere a rule reads, orphan and null keys,
    and timestamps spread over whole hours around AS_OF and the 2026 daylight-saving changes."""
    rng = np.random.default_rng(seed)
    keys = np.array([f"003{n:015d}" for n in range(profiles)], dtype=object)

    def times(count: int) -> pd.Series:
        centres = np.array(["2026-11-20", "2026-11-13", "2026-11-01", "2026-03-08", "2026-05-24", "2026-08-22"],
                           dtype="datetime64[us]")
        hours = rng.integers(-60, 60, count).astype("timedelta64[h]").astype("timedelta64[us]")
        values = pd.Series(centres[rng.integers(0, len(centres), count)] + hours).dt.tz_localize("UTC")
        return values.mask(rng.random(count) < 0.1)

    def strings(values, count: int, nulls: float = 0.1) -> pd.Series:
        return pd.Series(rng.choice(values, count), dtype="string").mask(rng.random(count) < nulls)

    def integers(high: int, count: int) -> pd.Series:
        return pd.Series(rng.integers(0, high, count), dtype="Int64").mask(rng.random(count) < 0.1)

    spend = [Decimal(v) for v in ("0", "15", "15.5", "15.25", "14.99", "120.10")]
    contacts = pd.DataFrame({
        KEY: pd.Series(keys, dtype="string"),
        "Email": strings(["a@example.com"], profiles),
        "LifecycleStage": strings(["new", "repeat", "loyal", "inactive"], profiles),
        "OrderCount": integers(15, profiles),
        "TotalSpend": pd.Series(pd.array(list(rng.choice(np.array(spend, dtype=object), profiles)),
                                         dtype=pd.ArrowDtype(pa.decimal128(18, 2)))),
        "LastPurchaseDate": times(profiles),
        "CreatedDate": times(profiles),
    })
    contacts.loc[rng.random(profiles) < 0.1, "TotalSpend"] = pd.NA

    def related_keys(count: int) -> pd.Series:
        picked = pd.Series(keys[rng.integers(0, profiles, count)], dtype="string")
        picked[rng.random(count) < 0.02] = "003999999999999999"  # orphans
        return picked.mask(rng.random(count) < 0.01)

    count = profiles * related_per_profile
    engagements = pd.DataFrame({
        KEY: related_keys(count), "SendDate": times(count), "Opens": integers(5, count),
        "OfferClicks": integers(3, count), "Response": strings(["positive", "negative", "none"], count),
        "LastEngagedDate": times(count),
    })
    activities = pd.DataFrame({
        KEY: related_keys(count), "ActivityType": strings(["web_visit", "form_submit"], count),
        "OccurredAt": times(count),
    })
    return {"contacts": contacts, "campaign_engagement": engagements, "activities": activities}


@pytest.fixture(scope="module")
def generated_store(tmp_path_factory) -> DatasetStore:
    return _store(tmp_path_factory.mktemp("generated"), _generated_frames(4000, 3))


@pytest.mark.parametrize("timezone", ZONES)
@pytest.mark.parametrize("as_of", [AS_OF, dt.date(2026, 11, 1)], ids=str)  # 1 Nov: daylight saving ends in the US
def test_generated_dataset_memberships_match(generated_store, as_of, timezone):
    members = _assert_same(generated_store, ALL_RULES, as_of=as_of, timezone=timezone)
    assert len(members) > 1000


@pytest.mark.parametrize(
    "day, timezone, expected",
    [
        (dt.date(2026, 11, 20), "UTC", "2026-11-20T00:00:00+00:00"),
        (dt.date(2026, 11, 20), "America/Los_Angeles", "2026-11-20T08:00:00+00:00"),
        (dt.date(2026, 7, 1), "America/Los_Angeles", "2026-07-01T07:00:00+00:00"),  # daylight saving
        (dt.date(2026, 11, 20), "Asia/Tokyo", "2026-11-19T15:00:00+00:00"),
    ],
)
def test_local_midnight_is_the_utc_instant_the_day_begins(day, timezone, expected):
    assert local_midnight(day, timezone).isoformat() == expected
