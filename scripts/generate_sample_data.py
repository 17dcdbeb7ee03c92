"""Generate deterministic sample SFMC Data Extract files for local runs and tests.

Writes three CSV files, shaped like the output of a Salesforce Marketing Cloud *Data Extract*
of three Data Extensions, into ``data/sample/`` (``--out DIR``; the default is resolved from this
script's location, so it does not depend on the working directory)::

    cd /work/main && /tmp/venv/bin/python scripts/generate_sample_data.py

File format (what an SFMC Data Extract produces):

* UTF-8 (no BOM), comma-separated, one header row with the column names, values quoted only
  when needed (``csv`` module defaults, so also ``\\r\\n`` line endings), the empty string for
  null.
* Dates and date-times as ``M/D/YYYY h:mm:ss AM|PM`` without zero padding of month, day or hour
  (``6/23/2024 12:00:00 AM``, ``11/3/2026 1:05:09 PM``); pure dates are written at midnight.
* Decimals with two places (``1234.50``); no booleans in these files.

Files and columns:

``Contacts.csv`` (primary key SubscriberKey), one row per contact plus the invalid rows below:
    SubscriberKey     18-character Salesforce id: ~80 % Contacts (prefix ``003``), ~20 % Leads
                      (prefix ``00Q``); 12 random mixed-case alphanumerics complete the
                      15-character id and ``to_18`` appends the case-safe checksum.
    FirstName         <= 40 chars, ~3 % empty. Includes a few non-ASCII names and apostrophes.
    LastName          <= 80 chars, required.
    Email             lower-case ``first.last@example.com`` style address built from the names
                      (accents stripped) on reserved example domains; unique.
    Company           <= 255 chars; always set for Leads, ~50 % empty for Contacts. Some
                      contain commas so that quoting is exercised.
    LifecycleStage    new / repeat / loyal / inactive (30/35/15/20 %), ~5 % empty.
    OrderCount        integer consistent with the stage: new 0-1, repeat 2-9, loyal 10-40,
                      inactive 1-6 (a blank stage still has an underlying stage).
    TotalSpend        2-decimal amount, sum of 15.00-250.00 per order, ``0.00`` with no orders.
    LastPurchaseDate  empty when OrderCount = 0; inactive contacts ~90 % more than 180 days before
                      the anchor (up to 720), everybody else spread over the last 400 days with
                      ~15 % within 7, ~27 % within 14 and ~45 % within 30 days.
    CreatedDate       required, strictly before LastPurchaseDate (or within the last 180 days
                      for contacts without orders).

``CampaignEngagement.csv`` (primary key SubscriberKey + CampaignId):
    A pool of 40 campaigns ``CMP-<year>-<nnn>`` numbered chronologically per year, sent on
    distinct days over the last 180 days (8 within 30 days, 20 within 90 days) at typical send
    times. Each contact receives a stage-dependent number of distinct campaigns sent after its
    CreatedDate (~8 per contact on average), sorted by send date; rows are grouped by contact in
    Contacts order.
    SubscriberKey, CampaignId, SendDate (the campaign's send date-time),
    Opens             0 for non-openers (open rate 12-55 % by stage), else 1-8,
    Clicks            0-10, only for openers,
    OfferClicks       0 <= OfferClicks <= Clicks,
    Response          positive / negative / none / empty, mostly empty or none,
    LastEngagedDate   on/after SendDate and before the anchor, empty when Opens = 0.
    Orphans: ~1 key per 300 contacts (10 by default), each a valid id absent from Contacts with 3
    campaign rows (30 rows by default), spliced in between contacts at evenly spaced positions.

``Activities.csv`` (primary key ActivityId), sorted by OccurredAt:
    ActivityId        UUID4 string built from the seeded RNG (36 chars), unique.
    SubscriberKey     a contact's key (stage-dependent count, ~15 per contact on average).
    ActivityType      web_visit / form_submit / email_open / email_click (~50/12/26/12 %).
    OccurredAt        date-time within the last 60 days and after the contact's CreatedDate,
                      ~28 % within 7 days and ~48 % within 14 days.
    Detail            <= 500 chars, nullable: a ``https://www.example.com/...`` URL for web visits,
                      a form name for form submits, the CampaignId of a campaign the contact
                      received (and that was sent before OccurredAt) for email events.
    Orphans: ~1 key per 600 contacts (5 by default) with 4 rows each (20 rows by default).

Deliberately invalid rows (one per case, each breaking exactly one rule; placed at deterministic
positions; counted in the printed summary). Positions are 0-based indexes into the data rows of
the written file (header excluded; data row i + 1, file line i + 2), N = data rows in that file;
the data rows quoted in brackets are those of the default run:

  Contacts.csv -- six extra rows inserted at index round(k * N / 7), k = 1..6, in this order
  [data rows 430, 860, 1289, 1719, 2148, 2578]:
    1. SubscriberKey with the right length but a wrong checksum (one letter's case flipped in a
       valid 18-character id, so the stored suffix no longer matches)
    2. Email ``no-at-sign.example.com``
    3. OrderCount ``-3``
    4. LifecycleStage ``vip``
    5. duplicate SubscriberKey: reuses the key of a contact written earlier, with different names,
       email and figures (the second occurrence is the invalid one)
    6. empty (missing) LastName
    The keys of cases 1-4 and 6 are fresh and used in no other file.
  CampaignEngagement.csv -- existing rows at index round(k * N / 4), k = 1..3, are altered
  (the next row is used while the row there is an orphan) [data rows 5909, 11816, 17723]:
    1. OfferClicks greater than Clicks (Opens >= 1, Clicks 1, OfferClicks 3)
    2. Response ``maybe``
    3. Opens ``n/a``
  Activities.csv -- existing non-orphan rows at index round(k * N / 4), k = 1..3, are altered
  [data rows 11406, 22811, 34215]:
    1. ActivityType ``phone_call`` (Detail emptied)
    2. OccurredAt ``31/31/2026 99:00:00 XM``
    3. SubscriberKey empty (missing)

There are no duplicate (SubscriberKey, CampaignId) pairs and no duplicate ActivityIds.
Everything is driven by one ``random.Random(--seed)`` (default 20261120) and by
``--anchor-date`` (default 2026-11-20, the evaluation date of the shipped config); every date is
strictly before the anchor's midnight. Same arguments and Python version -> byte-identical files.
Sizes: ``--contacts`` (default 3000, minimum 20) -> ~24,000 engagement and ~45,000 activity rows.

Only the standard library and ``sfmc_pipeline.datasets.salesforce_id`` are used.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
import unicodedata
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Sequence

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from sfmc_pipeline.datasets.salesforce_id import CONTACT_PREFIX, LEAD_PREFIX, to_18  # noqa: E402

DEFAULT_OUT = REPO_ROOT / "data" / "sample"
DEFAULT_SEED = 20261120
DEFAULT_ANCHOR = "2026-11-20"
DEFAULT_CONTACTS = 3000
MIN_CONTACTS = 20

CONTACT_COLUMNS = [
    "SubscriberKey", "FirstName", "LastName", "Email", "Company", "LifecycleStage",
    "OrderCount", "TotalSpend", "LastPurchaseDate", "CreatedDate",
]
ENGAGEMENT_COLUMNS = [
    "SubscriberKey", "CampaignId", "SendDate", "Opens", "Clicks", "OfferClicks", "Response",
    "LastEngagedDate",
]
ACTIVITY_COLUMNS = ["ActivityId", "SubscriberKey", "ActivityType", "OccurredAt", "Detail"]

ID_BODY_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

FIRST_NAMES = [
    "James", "Mary", "Robert", "Patricia", "John", "Jennifer", "Michael", "Linda", "David",
    "Elizabeth", "William", "Barbara", "Richard", "Susan", "Joseph", "Jessica", "Thomas", "Sarah",
    "Charles", "Karen", "Daniel", "Lisa", "Matthew", "Nancy", "Anthony", "Sandra", "Mark",
    "Ashley", "Steven", "Emily", "Andrew", "Michelle", "Joshua", "Amanda", "Kevin", "Melissa",
    "Brian", "Stephanie", "Olivia", "Liam", "Emma", "Noah", "Ava", "Lucas", "Mia", "Ethan",
    "Chloe", "Aiden", "Grace", "Mateo", "Priya", "Arjun", "Wei", "Mei", "Hiroshi", "Yuki",
    "Fatima", "Omar", "Aisha", "Kwame", "Ngozi", "Sven", "Ingrid", "Pierre", "Amélie", "José",
    "Zoë", "Björn", "Renée", "François", "Siobhán", "Mary-Kate", "Jean-Luc",
]
LAST_NAMES = [
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez",
    "Martinez", "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas", "Taylor",
    "Moore", "Jackson", "Martin", "Lee", "Perez", "Thompson", "White", "Harris", "Sanchez",
    "Clark", "Ramirez", "Lewis", "Robinson", "Walker", "Young", "Allen", "King", "Wright",
    "Scott", "Torres", "Nguyen", "Hill", "Flores", "Green", "Adams", "Nelson", "Baker", "Hall",
    "Rivera", "Campbell", "Mitchell", "Carter", "Roberts", "Patel", "Kim", "Chen", "Wang",
    "Tanaka", "Sato", "Okafor", "Mensah", "Larsen", "Johansson", "Dubois", "O'Connor",
    "O'Brien", "Müller", "Schäfer", "Østergaard", "Núñez", "Smith-Jones", "van der Berg",
    "McAllister", "Fitzgerald-Hughes",
]
COMPANY_WORDS = [
    "Acme", "Globex", "Initech", "Umbrella", "Stark", "Wayne", "Wonka", "Soylent", "Hooli",
    "Vandelay", "Contoso", "Fabrikam", "Northwind", "Tailspin", "Litware", "Adatum", "Blue Yonder",
    "Pied Piper", "Cyberdyne", "Tyrell", "Gringotts", "Monarch", "Oscorp", "Dunder Mifflin",
]
COMPANY_SUFFIXES = [
    "Inc.", "LLC", "Ltd", "GmbH", "Group", "Holdings", "Industries", "Labs", "Partners",
    "& Co.", "Solutions", "Corporation",
]
EMAIL_DOMAINS = ["example.com", "example.org", "example.net", "mail.example.com", "shop.example"]

STAGES = ["new", "repeat", "loyal", "inactive"]
STAGE_WEIGHTS = [30, 35, 15, 20]
ORDER_RANGE = {"new": (0, 1), "repeat": (2, 9), "loyal": (10, 40), "inactive": (1, 6)}
# (min, max) number of campaigns received / activities, and the probability of opening an email.
CAMPAIGNS_PER_STAGE = {"new": (2, 10), "repeat": (5, 13), "loyal": (9, 19), "inactive": (2, 8)}
ACTIVITIES_PER_STAGE = {"new": (5, 20), "repeat": (10, 24), "loyal": (20, 38), "inactive": (0, 8)}
OPEN_RATE = {"new": 0.35, "repeat": 0.40, "loyal": 0.55, "inactive": 0.12}

# (weight, min days ago, max days ago) buckets.
RECENT_PURCHASE_BUCKETS = [(15, 1, 7), (12, 8, 14), (18, 15, 30), (30, 31, 180), (25, 181, 400)]
INACTIVE_PURCHASE_BUCKETS = [(90, 181, 720), (10, 91, 180)]
NO_ORDER_CREATED_BUCKETS = [(50, 1, 30), (50, 31, 180)]
ACTIVITY_BUCKETS = [(28, 0, 7), (20, 7, 14), (52, 14, 60)]

N_CAMPAIGNS = 40
CAMPAIGN_DAY_BUCKETS = [(8, 1, 30), (12, 31, 90), (20, 91, 180)]  # (count, min, max days ago)
SEND_TIMES = [(6, 0), (7, 30), (9, 0), (10, 0), (10, 30), (11, 15), (13, 0), (14, 0), (16, 45),
              (18, 0)]

ACTIVITY_TYPES = ["web_visit", "form_submit", "email_open", "email_click"]
ACTIVITY_TYPE_WEIGHTS = [50, 12, 26, 12]
PRODUCT_CATEGORIES = ["shoes", "apparel", "accessories", "outdoor", "home", "electronics", "kids"]
PRODUCT_WORDS = ["trail", "runner", "classic", "linen", "wool", "ultra", "lite", "pro", "cotton",
                 "travel", "everyday", "rain", "canvas", "leather", "smart", "mini"]
BLOG_SLUGS = ["spring-lookbook", "how-to-choose-running-shoes", "care-guide-wool",
              "gift-ideas-under-50", "behind-the-seams", "sustainability-report-2026"]
SEARCH_TERMS = ["boots", "rain+jacket", "gift+card", "socks", "backpack", "sale"]
FORM_NAMES = ["Newsletter Signup", "Contact Us", "Request a Quote", "Event Registration",
              "Product Review", "Preference Center", "Warranty Claim", "Back in Stock Alert"]

CONTACT_INVALID_CASES = ["bad_checksum", "malformed_email", "negative_order_count",
                         "unknown_stage", "duplicate_key", "missing_last_name"]
ENGAGEMENT_INVALID_CASES = ["offer_clicks_gt_clicks", "unknown_response", "non_numeric_opens"]
ACTIVITY_INVALID_CASES = ["unknown_activity_type", "unparseable_occurred_at",
                          "missing_subscriber_key"]


# --------------------------------------------------------------------------------------------
# Helpers: dates, ids, CSV
# --------------------------------------------------------------------------------------------


def sfmc_date(value: datetime | date | None) -> str:
    """Format a date/date-time the way an SFMC Data Extract does: ``M/D/YYYY h:mm:ss AM|PM``.

    No zero padding of month, day or hour; a ``date`` is written at midnight; ``None`` -> "".
    """
    if value is None:
        return ""
    if not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    hour12 = value.hour % 12 or 12
    meridiem = "AM" if value.hour < 12 else "PM"
    return (f"{value.month}/{value.day}/{value.year} "
            f"{hour12}:{value.minute:02d}:{value.second:02d} {meridiem}")


def new_salesforce_id(rng: random.Random, prefix: str, taken: set[str]) -> str:
    """A new, unique 18-character Salesforce id: ``prefix`` + random mixed-case alphanumerics,
    then the case-safe checksum. Uniqueness is checked case-insensitively against ``taken``."""
    while True:
        body = "".join(rng.choice(ID_BODY_CHARS) for _ in range(15 - len(prefix)))
        sf_id = to_18(prefix + body)
        if sf_id.lower() not in taken:
            taken.add(sf_id.lower())
            return sf_id


def break_checksum(sf_id: str, rng: random.Random) -> str:
    """The same 18-character id with one letter of the 15-character body in the other case, so
    that the length and character set are right but the stored checksum no longer matches."""
    letters = [i for i, ch in enumerate(sf_id[3:15], start=3) if ch.isalpha()]
    i = rng.choice(letters)
    return sf_id[:i] + sf_id[i].swapcase() + sf_id[i + 1:]


def seeded_uuid4(rng: random.Random) -> str:
    """A UUID4 string whose random bits come from the seeded RNG."""
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def write_csv(path: Path, columns: Sequence[str], rows: Sequence[dict[str, object]]) -> None:
    """Write ``rows`` (dicts keyed by column name) as an SFMC-style extract: UTF-8, header row,
    csv-module default quoting/line endings, ``None`` written as the empty string."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for row in rows:
            writer.writerow(["" if row.get(c) is None else row[c] for c in columns])


def days_ago_from_buckets(rng: random.Random, buckets: Sequence[tuple[int, int, int]]) -> int:
    """Pick a bucket by weight, then a whole number of days uniformly inside it."""
    _, lo, hi = rng.choices(buckets, weights=[b[0] for b in buckets])[0]
    return rng.randint(lo, hi)


def money(cents: int) -> str:
    """Cents -> ``1234.50``."""
    sign = "-" if cents < 0 else ""
    cents = abs(cents)
    return f"{sign}{cents // 100}.{cents % 100:02d}"


def spread_positions(n_rows: int, n_cases: int, parts: int) -> list[int]:
    """0-based insertion/alteration indexes round(k * n_rows / parts), k = 1..n_cases."""
    return [round(k * n_rows / parts) for k in range(1, n_cases + 1)]


# --------------------------------------------------------------------------------------------
# Contacts
# --------------------------------------------------------------------------------------------


@dataclass
class Contact:
    key: str
    stage: str  # underlying stage, even when the written LifecycleStage is blank
    created: datetime
    row: dict[str, object]
    campaigns: list["Campaign"] = field(default_factory=list)


def ascii_slug(text: str) -> str:
    """Lower-case ASCII letters and digits only (accents stripped)."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed.lower() if ch.isascii() and ch.isalnum())


def make_email(rng: random.Random, first: str, last: str, used: set[str]) -> str:
    first_part, last_part = ascii_slug(first), ascii_slug(last)
    separator = rng.choice([".", ".", "_", ""])
    local = f"{first_part}{separator}{last_part}" if first_part else last_part
    domain = rng.choice(EMAIL_DOMAINS)
    email = f"{local}@{domain}"
    n = 1
    while email in used:
        n += 1
        email = f"{local}{n}@{domain}"
    used.add(email)
    return email


def make_company(rng: random.Random) -> str:
    word = rng.choice(COMPANY_WORDS)
    suffix = rng.choice(COMPANY_SUFFIXES)
    if suffix in ("Inc.", "Ltd", "LLC") and rng.random() < 0.5:
        return f"{word}, {suffix}"  # exercises quoting
    return f"{word} {suffix}"


def make_contact(rng: random.Random, anchor: datetime, taken_ids: set[str],
                 used_emails: set[str], stage: str | None = None) -> Contact:
    is_lead = rng.random() < 0.20
    key = new_salesforce_id(rng, LEAD_PREFIX if is_lead else CONTACT_PREFIX, taken_ids)
    first = "" if rng.random() < 0.03 else rng.choice(FIRST_NAMES)
    last = rng.choice(LAST_NAMES)
    email = make_email(rng, first, last, used_emails)
    company = make_company(rng) if is_lead or rng.random() < 0.5 else ""

    stage = stage or rng.choices(STAGES, weights=STAGE_WEIGHTS)[0]
    written_stage = "" if rng.random() < 0.05 else stage
    orders = rng.randint(*ORDER_RANGE[stage])
    spend_cents = sum(rng.randint(1500, 25000) for _ in range(orders))

    if orders == 0:
        last_purchase = None
        created = anchor - timedelta(days=days_ago_from_buckets(rng, NO_ORDER_CREATED_BUCKETS))
    else:
        buckets = INACTIVE_PURCHASE_BUCKETS if stage == "inactive" else RECENT_PURCHASE_BUCKETS
        last_purchase = anchor - timedelta(days=days_ago_from_buckets(rng, buckets))
        if orders == 1:
            gap = rng.randint(1, 60)
        elif stage == "loyal":
            gap = rng.randint(200, 1800)
        else:
            gap = rng.randint(30, 700)
        created = last_purchase - timedelta(days=gap)

    row: dict[str, object] = {
        "SubscriberKey": key,
        "FirstName": first,
        "LastName": last,
        "Email": email,
        "Company": company,
        "LifecycleStage": written_stage,
        "OrderCount": orders,
        "TotalSpend": money(spend_cents),
        "LastPurchaseDate": sfmc_date(last_purchase),
        "CreatedDate": sfmc_date(created),
    }
    return Contact(key=key, stage=stage, created=created, row=row)


def invalid_contact_row(case: str, rng: random.Random, anchor: datetime, taken_ids: set[str],
                        used_emails: set[str], earlier: Sequence[Contact]) -> dict[str, object]:
    """A fresh, otherwise valid contact row that breaks exactly one rule."""
    if case == "duplicate_key":
        original = earlier[max(0, len(earlier) - 10)]
        row = make_contact(rng, anchor, taken_ids, used_emails, stage=original.stage).row
        if row["FirstName"] == original.row["FirstName"]:
            row["FirstName"] = "Duplicate"
        row["SubscriberKey"] = original.key
        return row
    stage = "loyal" if case == "unknown_stage" else "repeat"
    row = make_contact(rng, anchor, taken_ids, used_emails, stage=stage).row
    if case == "bad_checksum":
        row["SubscriberKey"] = break_checksum(str(row["SubscriberKey"]), rng)
    elif case == "malformed_email":
        row["Email"] = "no-at-sign.example.com"
    elif case == "negative_order_count":
        row["OrderCount"] = -3
    elif case == "unknown_stage":
        row["LifecycleStage"] = "vip"
    elif case == "missing_last_name":
        row["LastName"] = ""
    else:
        raise ValueError(case)
    return row


def build_contacts(rng: random.Random, anchor: datetime, n_contacts: int,
                   taken_ids: set[str]) -> tuple[list[Contact], list[dict[str, object]]]:
    used_emails: set[str] = set()
    contacts = [make_contact(rng, anchor, taken_ids, used_emails) for _ in range(n_contacts)]
    rows = [c.row for c in contacts]
    total = n_contacts + len(CONTACT_INVALID_CASES)
    # Insert in increasing order so that each index is the final 0-based position of the row.
    for case, index in zip(CONTACT_INVALID_CASES,
                           spread_positions(total, len(CONTACT_INVALID_CASES), 7)):
        earlier_valid = contacts[: index - CONTACT_INVALID_CASES.index(case)]
        rows.insert(index, invalid_contact_row(case, rng, anchor, taken_ids, used_emails,
                                               earlier_valid or contacts[:1]))
    return contacts, rows


# --------------------------------------------------------------------------------------------
# Campaigns and engagement
# --------------------------------------------------------------------------------------------


@dataclass
class Campaign:
    campaign_id: str
    sent: datetime


def build_campaigns(rng: random.Random, anchor: datetime) -> list[Campaign]:
    days: list[int] = []
    for count, lo, hi in CAMPAIGN_DAY_BUCKETS:
        days.extend(rng.sample(range(lo, hi + 1), count))
    assert len(days) == N_CAMPAIGNS
    sends = []
    for d in days:
        hour, minute = rng.choice(SEND_TIMES)
        sends.append(anchor - timedelta(days=d) + timedelta(hours=hour, minutes=minute))
    sends.sort()
    campaigns, per_year = [], {}
    for sent in sends:
        per_year[sent.year] = per_year.get(sent.year, 0) + 1
        campaigns.append(Campaign(f"CMP-{sent.year}-{per_year[sent.year]:03d}", sent))
    return campaigns


def engagement_row(rng: random.Random, anchor: datetime, key: str, campaign: Campaign,
                   open_rate: float) -> dict[str, object]:
    opens = clicks = offer_clicks = 0
    last_engaged = None
    if rng.random() < open_rate:
        opens = rng.choices([1, 2, 3, 4, 5, 6, 7, 8], weights=[50, 22, 12, 7, 4, 2, 2, 1])[0]
        if rng.random() < 0.35:
            clicks = rng.choices(range(1, 11), weights=[45, 22, 12, 7, 5, 3, 2, 2, 1, 1])[0]
            if rng.random() < 0.4:
                offer_clicks = rng.randint(1, clicks)
        minutes = rng.choices([(1, 24 * 60), (24 * 60, 3 * 24 * 60), (3 * 24 * 60, 14 * 24 * 60)],
                              weights=[60, 30, 10])[0]
        delay = rng.randint(minutes[0] * 60, minutes[1] * 60)
        latest = int((anchor - campaign.sent).total_seconds()) - 1
        if delay > latest:
            delay = rng.randint(60, latest)
        last_engaged = campaign.sent + timedelta(seconds=delay)
    if clicks:
        response_weights = [30, 5, 30, 35]
    elif opens:
        response_weights = [5, 3, 40, 52]
    else:
        response_weights = [0, 0, 30, 70]
    response = rng.choices(["positive", "negative", "none", ""], weights=response_weights)[0]
    return {
        "SubscriberKey": key,
        "CampaignId": campaign.campaign_id,
        "SendDate": sfmc_date(campaign.sent),
        "Opens": opens,
        "Clicks": clicks,
        "OfferClicks": offer_clicks,
        "Response": response,
        "LastEngagedDate": sfmc_date(last_engaged),
    }


def build_engagement(rng: random.Random, anchor: datetime, contacts: Sequence[Contact],
                     campaigns: Sequence[Campaign], taken_ids: set[str]
                     ) -> tuple[list[dict[str, object]], int]:
    n_orphan_keys = max(1, round(len(contacts) / 300))
    orphan_slots = set(spread_positions(len(contacts), n_orphan_keys, n_orphan_keys + 1))
    rows: list[dict[str, object]] = []
    orphan_flags: list[bool] = []
    for i, contact in enumerate(contacts):
        if i in orphan_slots:
            key = new_salesforce_id(rng, CONTACT_PREFIX, taken_ids)
            for campaign in sorted(rng.sample(list(campaigns), 3), key=lambda c: c.sent):
                rows.append(engagement_row(rng, anchor, key, campaign, 0.3))
                orphan_flags.append(True)
        eligible = [c for c in campaigns if c.sent > contact.created]
        k = min(len(eligible), rng.randint(*CAMPAIGNS_PER_STAGE[contact.stage]))
        contact.campaigns = sorted(rng.sample(eligible, k), key=lambda c: c.sent)
        for campaign in contact.campaigns:
            rows.append(engagement_row(rng, anchor, contact.key, campaign,
                                       OPEN_RATE[contact.stage]))
            orphan_flags.append(False)

    for case, index in zip(ENGAGEMENT_INVALID_CASES,
                           spread_positions(len(rows), len(ENGAGEMENT_INVALID_CASES), 4)):
        while orphan_flags[index]:
            index += 1
        row = rows[index]
        if case == "offer_clicks_gt_clicks":
            if not row["Opens"]:
                row["Opens"] = 1
                row["LastEngagedDate"] = sfmc_date(
                    datetime.strptime(str(row["SendDate"]), "%m/%d/%Y %I:%M:%S %p")
                    + timedelta(hours=2))
            row["Clicks"], row["OfferClicks"] = 1, 3
        elif case == "unknown_response":
            row["Response"] = "maybe"
        elif case == "non_numeric_opens":
            row["Opens"] = "n/a"
    return rows, sum(orphan_flags)


# --------------------------------------------------------------------------------------------
# Activities
# --------------------------------------------------------------------------------------------


def web_url(rng: random.Random) -> str:
    kind = rng.choices(["product", "home", "cart", "checkout", "blog", "search", "offer"],
                       weights=[55, 10, 8, 4, 10, 8, 5])[0]
    base = "https://www.example.com"
    if kind == "product":
        slug = "-".join(rng.sample(PRODUCT_WORDS, 2))
        return f"{base}/products/{rng.choice(PRODUCT_CATEGORIES)}/{slug}-{rng.randint(1000, 9999)}"
    if kind == "home":
        return f"{base}/"
    if kind == "cart":
        return f"{base}/cart"
    if kind == "checkout":
        return f"{base}/checkout"
    if kind == "blog":
        return f"{base}/blog/{rng.choice(BLOG_SLUGS)}"
    if kind == "search":
        return f"{base}/search?q={rng.choice(SEARCH_TERMS)}"
    return f"{base}/offers/{rng.choice(['winter-sale', 'free-shipping', 'members-20-off'])}"


def activity_row(rng: random.Random, anchor: datetime, key: str, created: datetime | None,
                 received: Sequence[Campaign]) -> tuple[datetime, dict[str, object]]:
    _, lo, hi = rng.choices(ACTIVITY_BUCKETS, weights=[b[0] for b in ACTIVITY_BUCKETS])[0]
    occurred = anchor - timedelta(seconds=rng.randint(lo * 86400 + 1, hi * 86400))
    if created is not None and occurred < created:
        window = int((anchor - created).total_seconds())
        occurred = anchor - timedelta(seconds=rng.randint(1, window))
    activity_type = rng.choices(ACTIVITY_TYPES, weights=ACTIVITY_TYPE_WEIGHTS)[0]
    detail: str = ""
    if activity_type.startswith("email_"):
        sent_before = [c for c in received if c.sent <= occurred]
        if sent_before:
            # Most email events relate to one of the latest campaigns.
            detail = sent_before[-1 - min(len(sent_before) - 1, int(rng.expovariate(1.0)))]\
                .campaign_id
            if activity_type == "email_click" and rng.random() < 0.03:
                detail = ""
        else:
            activity_type = "web_visit"
    if activity_type == "web_visit":
        detail = "" if rng.random() < 0.04 else web_url(rng)
    elif activity_type == "form_submit":
        detail = "" if rng.random() < 0.05 else rng.choice(FORM_NAMES)
    return occurred, {
        "ActivityId": seeded_uuid4(rng),
        "SubscriberKey": key,
        "ActivityType": activity_type,
        "OccurredAt": sfmc_date(occurred),
        "Detail": detail,
    }


def build_activities(rng: random.Random, anchor: datetime, contacts: Sequence[Contact],
                     campaigns: Sequence[Campaign], taken_ids: set[str]
                     ) -> tuple[list[dict[str, object]], int]:
    entries: list[tuple[datetime, bool, dict[str, object]]] = []
    for contact in contacts:
        for _ in range(rng.randint(*ACTIVITIES_PER_STAGE[contact.stage])):
            occurred, row = activity_row(rng, anchor, contact.key, contact.created,
                                         contact.campaigns)
            entries.append((occurred, False, row))
    for _ in range(max(1, round(len(contacts) / 600))):
        key = new_salesforce_id(rng, rng.choice([CONTACT_PREFIX, LEAD_PREFIX]), taken_ids)
        for _ in range(4):
            occurred, row = activity_row(rng, anchor, key, None, campaigns)
            entries.append((occurred, True, row))

    seen_ids: set[str] = set()
    for _, _, row in entries:  # a 122-bit collision is practically impossible; make sure anyway
        while row["ActivityId"] in seen_ids:
            row["ActivityId"] = seeded_uuid4(rng)
        seen_ids.add(str(row["ActivityId"]))

    entries.sort(key=lambda e: (e[0], str(e[2]["ActivityId"])))
    rows = [e[2] for e in entries]
    orphan_flags = [e[1] for e in entries]
    for case, index in zip(ACTIVITY_INVALID_CASES,
                           spread_positions(len(rows), len(ACTIVITY_INVALID_CASES), 4)):
        while orphan_flags[index]:
            index += 1
        row = rows[index]
        if case == "unknown_activity_type":
            row["ActivityType"], row["Detail"] = "phone_call", ""
        elif case == "unparseable_occurred_at":
            row["OccurredAt"] = "31/31/2026 99:00:00 XM"
        elif case == "missing_subscriber_key":
            row["SubscriberKey"] = ""
    return rows, sum(orphan_flags)


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def display_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Write deterministic sample SFMC Data Extract CSVs "
                    "(Contacts, CampaignEngagement, Activities).")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"output directory (default: {display_path(DEFAULT_OUT)} "
                             "under the repo root)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED,
                        help=f"random seed (default: {DEFAULT_SEED})")
    parser.add_argument("--anchor-date", type=date.fromisoformat, default=DEFAULT_ANCHOR,
                        help=f"evaluation date all dates are relative to, YYYY-MM-DD "
                             f"(default: {DEFAULT_ANCHOR}); every date is before it")
    parser.add_argument("--contacts", type=int, default=DEFAULT_CONTACTS,
                        help=f"number of valid contacts (default: {DEFAULT_CONTACTS}, "
                             f"minimum {MIN_CONTACTS})")
    args = parser.parse_args(argv)
    if args.contacts < MIN_CONTACTS:
        parser.error(f"--contacts must be at least {MIN_CONTACTS}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    rng = random.Random(args.seed)
    anchor = datetime(args.anchor_date.year, args.anchor_date.month, args.anchor_date.day)
    taken_ids: set[str] = set()

    contacts, contact_rows = build_contacts(rng, anchor, args.contacts, taken_ids)
    campaigns = build_campaigns(rng, anchor)
    engagement_rows, engagement_orphans = build_engagement(rng, anchor, contacts, campaigns,
                                                           taken_ids)
    activity_rows, activity_orphans = build_activities(rng, anchor, contacts, campaigns,
                                                       taken_ids)

    outputs = [
        ("Contacts.csv", CONTACT_COLUMNS, contact_rows, len(CONTACT_INVALID_CASES), 0),
        ("CampaignEngagement.csv", ENGAGEMENT_COLUMNS, engagement_rows,
         len(ENGAGEMENT_INVALID_CASES), engagement_orphans),
        ("Activities.csv", ACTIVITY_COLUMNS, activity_rows, len(ACTIVITY_INVALID_CASES),
         activity_orphans),
    ]
    for name, columns, rows, n_invalid, n_orphans in outputs:
        path = args.out / name
        write_csv(path, columns, rows)
        print(f"{display_path(path)}: {len(rows)} rows written, {n_invalid} deliberately invalid"
              f", {n_orphans} orphan rows, {path.stat().st_size:,} bytes")
    # The evaluation date the embedded default uses, so the sample's relative dates stay meaningful.
    manifest = args.out / "sample.json"
    manifest.write_text(json.dumps({"anchor_date": args.anchor_date.isoformat(), "seed": args.seed}, indent=2) + "\n")
    print(f"{display_path(manifest)}: anchor date {args.anchor_date.isoformat()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
