"""Contract: each shipped segment rule selects exactly the right profiles at its date boundaries
(exactly N days, N+1, same-day purchase), related rows join on SubscriberKey with orphans ignored
and counted, calendar-day rules count days in the evaluation time zone (``evaluation.timezone``,
default UTC), and a bad rule is rejected at load with the segment, the path and the fix."""

import copy
import datetime as dt

import pytest
import yaml

from sfmc_pipeline.config.loader import PipelineConfigError, parse_pipeline_config
from sfmc_pipeline.segments.rules import parse_rule
from sfmc_pipeline.settings import DEFAULT_CONFIG_PATH
from sfmc_pipeline_tests.segment_fixtures import (
    AS_OF,
    CONFIG,
    Evaluated,
    activity,
    contact,
    day,
    engagement,
    key,
    typed,
)


def _c(n, **fields):
    return {**contact(n, **fields), "n": n}


def _run(segment, contacts, **related):
    clean = [{k: v for k, v in c.items() if k != "n"} for c in contacts]
    evaluator = Evaluated(
        typed("contacts", clean),
        {"campaign_engagement": typed("campaign_engagement", related.get("engagements", [])),
         "activities": typed("activities", related.get("activities", []))},
        key="SubscriberKey",
        as_of=AS_OF,
    )
    by_key = {key(c["n"]): c["n"] for c in contacts}
    return {by_key[k] for k in evaluator.selected(CONFIG.segment(segment).rule)}, evaluator


@pytest.mark.parametrize(
    "segment, stage, expected",
    [
        ("new_customer", "new", True),
        ("new_customer", "repeat", False),
        ("new_customer", "", False),  # no stage is not "new"
        ("repeat_buyer", "repeat", True),
        ("repeat_buyer", "loyal", False),
    ],
)
def test_stage_segments(segment, stage, expected):
    members, _ = _run(segment, [_c(1, LifecycleStage=stage)])
    assert (1 in members) is expected


@pytest.mark.parametrize(
    "fields, expected",
    [
        ({"LifecycleStage": "loyal", "OrderCount": 2}, True),  # by stage
        ({"LifecycleStage": "repeat", "OrderCount": 10}, True),  # exactly 10 orders
        ({"LifecycleStage": "repeat", "OrderCount": 9}, False),  # one short
        ({"OrderCount": 12}, True),  # no stage, many orders
    ],
)
def test_loyal_customer(fields, expected):
    members, _ = _run("loyal_customer", [_c(1, **fields)])
    assert (1 in members) is expected


@pytest.mark.parametrize(
    "fields, expected",
    [
        ({"OrderCount": 1, "LastPurchaseDate": day(181)}, True),  # 181 days ago: older than 180
        ({"OrderCount": 1, "LastPurchaseDate": day(180)}, False),  # exactly 180 days: not older
        ({"OrderCount": 3}, True),  # bought, but no purchase date recorded
        ({"OrderCount": 0}, False),  # never bought
        ({"OrderCount": 2, "LastPurchaseDate": day(5)}, False),  # recent buyer
    ],
)
def test_inactive_customer(fields, expected):
    members, _ = _run("inactive_customer", [_c(1, **fields)])
    assert (1 in members) is expected


@pytest.mark.parametrize(
    "fields, expected",
    [
        ({"OfferClicks": 1, "Clicks": 2, "LastEngagedDate": day(30)}, True),  # exactly 30 days: within
        ({"OfferClicks": 1, "Clicks": 2, "LastEngagedDate": day(31)}, False),  # 31 days: outside
        ({"OfferClicks": 1, "Clicks": 2, "LastEngagedDate": day(0)}, True),  # today
        ({"OfferClicks": 0, "Clicks": 2, "LastEngagedDate": day(3)}, False),  # clicked, but no offer
        ({"OfferClicks": 1, "Clicks": 2}, False),  # no engagement date
        ({"OfferClicks": 1, "Clicks": 2, "LastEngagedDate": day(-1)}, False),  # after as_of: not "last 30 days"
    ],
)
def test_offer_clickers(fields, expected):
    members, _ = _run("offer_clickers", [_c(1)], engagements=[engagement(1, "C1", **fields)])
    assert (1 in members) is expected


@pytest.mark.parametrize(
    "segment, response, send_offset, expected",
    [
        ("positive_responders", "positive", 90, True),  # exactly 90 days
        ("positive_responders", "positive", 91, False),  # 91 days
        ("positive_responders", "negative", 10, False),
        ("negative_responders", "negative", 90, True),
        ("negative_responders", "", 10, False),  # empty response means none
    ],
)
def test_responders(segment, response, send_offset, expected):
    row = engagement(1, "C1", Response=response, SendDate=day(send_offset))
    members, _ = _run(segment, [_c(1)], engagements=[row])
    assert (1 in members) is expected


def test_responders_need_one_matching_row_not_all():
    rows = [engagement(1, "C1", Response="negative", SendDate=day(5)),
            engagement(1, "C2", Response="positive", SendDate=day(200))]
    assert _run("negative_responders", [_c(1)], engagements=rows)[0] == {1}
    assert _run("positive_responders", [_c(1)], engagements=rows)[0] == set()  # the positive one is too old


@pytest.mark.parametrize(
    "purchase, visits, expected",
    [
        (None, [7], True),  # never purchased, visited exactly 7 days ago
        (None, [8], False),  # visit 8 days ago is outside the window
        (day(10), [3], True),  # purchase before the visit
        (day(3), [3], False),  # purchase the same UTC day as the visit counts as after it
        (day(2), [3], False),  # purchase after the visit
        (day(2), [5, 1], True),  # purchase after one visit but before the latest one
        (None, [], False),  # no visit
    ],
)
def test_visited_no_purchase(purchase, visits, expected):
    fields = {"OrderCount": 1, "LastPurchaseDate": purchase} if purchase else {}
    acts = [activity(1, i, "web_visit", offset) for i, offset in enumerate(visits)]
    acts.append(activity(1, 99, "form_submit", 0))  # other activity types do not count
    members, _ = _run("visited_no_purchase", [_c(1, **fields)], activities=acts)
    assert (1 in members) is expected


def test_visited_no_purchase_compares_utc_days():
    # Visit 6 days ago at 7:00 PM CST = 01:00 UTC the next day (5 days ago, UTC);
    # purchase 5 days ago at noon CST (UTC same day): the purchase is on the visit's UTC day.
    acts = [activity(1, 1, "web_visit", 6, time="7:00:00 PM")]
    members, _ = _run("visited_no_purchase", [_c(1, OrderCount=1, LastPurchaseDate=day(5))], activities=acts)
    assert members == set()


@pytest.mark.parametrize(
    "offset, expected",
    [(14, True), (15, False), (0, True)],  # exactly 14 days, 15 days, today
)
def test_form_submitters(offset, expected):
    members, _ = _run("form_submitters", [_c(1)], activities=[activity(1, 1, "form_submit", offset)])
    assert (1 in members) is expected


def test_orphan_related_rows_are_ignored_and_counted():
    rows = [engagement(1, "C1", Response="negative"), engagement(7, "C1", Response="negative")]  # 7 is not a profile
    members, evaluator = _run("negative_responders", [_c(1), _c(2)], engagements=rows)
    assert members == {1}
    assert evaluator.orphans("campaign_engagement") == 1
    assert evaluator.orphans("activities") == 0


@pytest.fixture()
def shipped() -> dict:
    return yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())


@pytest.mark.parametrize(
    "rule, expected",
    [
        # unknown column, with the columns that exist
        ({"column": "Stage", "op": "eq", "value": "new"}, "rule > column: dataset 'contacts' has no column 'Stage'"),
        # ordering on text
        ({"column": "LifecycleStage", "op": "gt", "value": "new"}, "rule > op: 'gt' compares numbers or dates"),
        # a value the column can never hold
        ({"column": "LifecycleStage", "op": "eq", "value": "vip"}, "'vip' can never match"),
        # wrong value type
        ({"column": "OrderCount", "op": "gte", "value": "ten"}, "rule > value: 'OrderCount' is Number: compare with a number"),
        # day operators need a date column and whole days
        ({"column": "OrderCount", "op": "within_last_days", "value": 3}, "applies to Date columns"),
        ({"column": "CreatedDate", "op": "older_than_days", "value": -1}, "whole number of days >= 0"),
        # nested path and unknown related dataset
        ({"all": [{"column": "OrderCount", "op": "gte", "value": 1},
                  {"has_related": {"dataset": "orders", "where": {"column": "X", "op": "is_null"}}}]},
         "rule > all[1] > has_related > dataset: unknown dataset 'orders'"),
        # related column checked against the related dataset
        ({"has_related": {"dataset": "activities", "where": {"column": "Response", "op": "is_null"}}},
         "has_related > where > column: dataset 'activities' has no column 'Response'"),
        # operator typo
        ({"column": "OrderCount", "op": "greater", "value": 1}, "unknown operator 'greater'"),
        # in needs a list
        ({"column": "LifecycleStage", "op": "in", "value": "new"}, "'in' needs a non-empty list"),
        # arbitrary code is not a rule
        ({"python": "lambda df: df"}, "unknown rule shape"),
    ],
)
def test_bad_rules_name_segment_path_and_fix(shipped, rule, expected):
    raw = copy.deepcopy(shipped)
    raw["segments"][2]["rule"] = rule
    with pytest.raises(PipelineConfigError) as info:
        parse_pipeline_config(raw, source="pipeline.yaml")
    message = str(info.value)
    assert "segments[2] (loyal_customer)" in message
    assert expected in message


def test_duplicate_segment_names_are_rejected(shipped):
    raw = copy.deepcopy(shipped)
    raw["segments"][1]["name"] = "new_customer"
    with pytest.raises(PipelineConfigError, match="segment name 'new_customer' is used twice"):
        parse_pipeline_config(raw)


def test_decimal_and_list_operators():
    from sfmc_pipeline.segments.rules import parse_rule

    frame = typed("contacts", [contact(1, TotalSpend="15.00"), contact(2, TotalSpend="15.50"),
                               contact(3, LifecycleStage="loyal")])
    evaluator = Evaluated(frame, {}, key="SubscriberKey", as_of=AS_OF)

    def picked(rule):
        return evaluator.selected(parse_rule(rule))

    assert picked({"column": "TotalSpend", "op": "in", "value": [0, 15]}) == {key(1), key(3)}  # exact decimals
    assert picked({"column": "TotalSpend", "op": "gt", "value": 15.25}) == {key(2)}
    # not_in and ne leave nulls out; `not` of a comparison on a null is true
    assert picked({"column": "LifecycleStage", "op": "not_in", "value": ["new"]}) == {key(3)}
    assert picked({"not": {"column": "LifecycleStage", "op": "eq", "value": "loyal"}}) == {key(1), key(2)}


# --- calendar days in the evaluation time zone -------------------------------------------------------

WITHIN_0 = "within_last_days 0"  # on the as_of day itself
OLDER_1 = "older_than_days 1"  # before the day before as_of
ON_19TH = "eq 2026-11-19"
VISIT_AFTER_PURCHASE = "latest_is_after"  # a visit in the last 7 days, on a later day than LastPurchaseDate
ZONE_RULES = {
    WITHIN_0: {"has_related": {"dataset": "activities",
                               "where": {"column": "OccurredAt", "op": "within_last_days", "value": 0}}},
    OLDER_1: {"has_related": {"dataset": "activities",
                              "where": {"column": "OccurredAt", "op": "older_than_days", "value": 1}}},
    ON_19TH: {"has_related": {"dataset": "activities",
                              "where": {"column": "OccurredAt", "op": "eq", "value": "2026-11-19"}}},
    VISIT_AFTER_PURCHASE: {"has_related": {
        "dataset": "activities", "where": {"column": "OccurredAt", "op": "within_last_days", "value": 7},
        "latest_is_after": {"column": "OccurredAt", "profile_column": "LastPurchaseDate"}}},
}


def _sfmc_time(utc: str) -> str:
    """The SFMC extract text (US Central Standard Time, UTC-6 all year) of a UTC instant."""
    t = dt.datetime.fromisoformat(utc) - dt.timedelta(hours=6)
    return f"{t.month}/{t.day}/{t.year} {t.strftime('%I:%M:%S %p').lstrip('0')}"


def _in_zone(where, occurred_utc, as_of, timezone: dict, purchase_utc=None):
    rule = ZONE_RULES[where]
    fields = {"OrderCount": 1, "LastPurchaseDate": _sfmc_time(purchase_utc)} if purchase_utc else {}
    visit = {"ActivityId": "00000000-0000-4000-8000-000000000001", "SubscriberKey": key(1),
             "ActivityType": "web_visit", "OccurredAt": _sfmc_time(occurred_utc)}
    profiles, related = typed("contacts", [contact(1, **fields)]), {"activities": typed("activities", [visit])}
    evaluator = Evaluated(profiles, related, key="SubscriberKey", as_of=dt.date.fromisoformat(as_of), **timezone)
    return key(1) in evaluator.selected(parse_rule(rule))


@pytest.mark.parametrize(
    "where, occurred_utc, purchase_utc, as_of, timezone, expected",
    [
        # 03:00Z on the 20th is 19:00 on the 19th in Los Angeles (UTC-8 in November): today there
        (WITHIN_0, "2026-11-20T03:00", None, "2026-11-19", "America/Los_Angeles", True),
        # ... but already the 20th in UTC: after as_of, so not "within the last 0 days"
        (WITHIN_0, "2026-11-20T03:00", None, "2026-11-19", "UTC", False),
        (WITHIN_0, "2026-11-20T03:00", None, "2026-11-20", "UTC", True),
        # as of the 20th, Los Angeles saw it yesterday
        (WITHIN_0, "2026-11-20T03:00", None, "2026-11-20", "America/Los_Angeles", False),
        # 16:00Z on the 19th is 01:00 on the 20th in Tokyo (UTC+9): zones east of UTC move the other way
        (WITHIN_0, "2026-11-19T16:00", None, "2026-11-20", "Asia/Tokyo", True),
        (WITHIN_0, "2026-11-19T16:00", None, "2026-11-20", "UTC", False),
        # daylight saving: 07:30Z on 1 July is 00:30 PDT (UTC-7) on the 1st, not 23:30 on 30 June
        (WITHIN_0, "2026-07-01T07:30", None, "2026-07-01", "America/Los_Angeles", True),
        # ... and 06:30Z is 23:30 PDT on 30 June
        (WITHIN_0, "2026-07-01T06:30", None, "2026-07-01", "America/Los_Angeles", False),
        # older than 1 day as of the 21st means before the 20th: the 19th in Los Angeles is
        (OLDER_1, "2026-11-20T03:00", None, "2026-11-21", "America/Los_Angeles", True),
        # ... the 20th in UTC is not
        (OLDER_1, "2026-11-20T03:00", None, "2026-11-21", "UTC", False),
        # a date comparison compares the day in the zone
        (ON_19TH, "2026-11-20T03:00", None, "2026-11-20", "America/Los_Angeles", True),
        (ON_19TH, "2026-11-20T03:00", None, "2026-11-20", "UTC", False),
        # latest_is_after: visit on the 20th (UTC), purchase at 18:00Z on the 19th: the visit is a later day
        (VISIT_AFTER_PURCHASE, "2026-11-20T03:00", "2026-11-19T18:00", "2026-11-20", "UTC", True),
        # ... in Los Angeles both are on the 19th (19:00 and 10:00): same day, so the purchase counts as after
        (VISIT_AFTER_PURCHASE, "2026-11-20T03:00", "2026-11-19T18:00", "2026-11-20", "America/Los_Angeles", False),
        # ... and in Tokyo both are on the 20th (12:00 and 03:00)
        (VISIT_AFTER_PURCHASE, "2026-11-20T03:00", "2026-11-19T18:00", "2026-11-20", "Asia/Tokyo", False),
    ],
    ids=lambda v: str(v).replace(" ", "_") if v is not None else "-",
)
def test_calendar_day_rules_count_days_in_the_evaluation_timezone(
    where, occurred_utc, purchase_utc, as_of, timezone, expected
):
    assert _in_zone(where, occurred_utc, as_of, {"timezone": timezone}, purchase_utc) is expected
    if timezone == "UTC":  # and UTC is the default
        assert _in_zone(where, occurred_utc, as_of, {}, purchase_utc) is expected
