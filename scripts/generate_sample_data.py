"""Generate deterministic sample SFMC Data Extract files for local runs and tests.

Writes three CSV files, shaped like the output of a Salesforce Marketing Cloud *Data Extract*
of three Data Extensions, into ``data/sample/`` (``--out DIR``; the default is resolved from this
script's location, so it does not depend on the working directory), and the same three files one
day later into ``data/sample/next_day/`` (see *The next day* below)::

    python scripts/generate_sample_data.py          # with the project's venv active

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
the written file (header excluded; data row i + 1, file line i + 2), N = data rows in that file:

  Contacts.csv -- six extra rows inserted at index round(k * N / 7), k = 1..6, in this order:
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
  (the next row is used while the row there is an orphan):
    1. OfferClicks greater than Clicks (Opens >= 1, Clicks 1, OfferClicks 3)
    2. Response ``maybe``
    3. Opens ``n/a``
  Activities.csv -- existing non-orphan rows at index round(k * N / 4), k = 1..3, are altered:
    1. ActivityType ``phone_call`` (Detail emptied)
    2. OccurredAt ``31/31/2026 99:00:00 XM``
    3. SubscriberKey empty (missing)

There are no duplicate (SubscriberKey, CampaignId) pairs and no duplicate ActivityIds.
Everything is driven by one ``random.Random(--seed)`` (default 20261120) and by
``--anchor-date`` (default 2026-11-20, the evaluation date of the shipped config); every date is
strictly before the anchor's midnight. Same arguments and Python version -> byte-identical files.
Sizes: ``--contacts`` (default 3000, minimum 20); the other files scale with it (the printed summary
gives their rows).

The next day (``<out>/next_day/``, selected by ``sfmc-pipeline sample next_day``):
    The same three files and a ``sample.json`` with ``anchor_date`` = anchor + 1 day (2026-11-21),
    so a second run of the pipeline is a second evaluation against the first: ``existing`` for
    most memberships, ``exited`` and ``realized`` for what changed. They are a *mutation* of the
    first day's rows, not a new generation: every first-day row is kept in its place (the
    deliberately invalid rows exactly as they are, so the quarantine looks the same), changed
    rows are edited in place and new rows are added; the first day's files do not depend on it
    (its RNG is ``random.Random(f"{seed}:next_day")``). Everything new happens on the anchor
    day itself (the day that passes), and its passing moves every 7/14/30/90/180-day window by
    one day. Counts per 3,000 contacts (``NEXT_DAY_COUNTS``, scaled with ``--contacts``), each
    contact changed at most once, chosen among valid contacts with a unique key:

    Contacts.csv (edited in place; new contacts appended):
      new_to_repeat 30       new with 1 order -> a second order: LifecycleStage repeat
      first_purchase 10      new, no order, visited this week -> a first order (stays new)
      repeat_to_loyal 15     repeat with 9 orders -> a tenth order: LifecycleStage loyal
      inactive_to_repeat 10  inactive, last order > 180 days ago -> an order: repeat
      repeat_to_inactive 15  repeat, last order > 180 days ago -> LifecycleStage inactive
      purchase_after_visit 20  repeat/loyal who visited this week -> an order (stage kept)
      email_change 15, last_name_change 8, first_name_change 8 (an empty FirstName filled in),
      company_change 5 (Leads)  -- on contacts in the new/repeat/loyal stages, which stay valid
      new_contacts 12        created on the day, stage new, no order, 1-4 web visits and a
                             Newsletter Signup form submit on the day
      An order sets OrderCount + 1, TotalSpend + 15.00-250.00, LastPurchaseDate = the day, and
      adds a checkout web visit on the same day (8 AM - 5 PM), so the profile leaves
      visited_no_purchase (and inactive_customer when its previous order was > 180 days ago).
    CampaignEngagement.csv (edited in place; the day's campaign's rows inserted after each
    recipient's rows, so the file stays grouped by contact):
      offer_clicks 25        Opens, Clicks, OfferClicks + 1, LastEngagedDate on the day, on a
                             campaign of the last 4 weeks, for contacts without a recent one
      positive_responses 25, negative_responses 10  Response '' / none -> positive / negative
                             (engaged on the day) on a campaign of the last 85 days, for contacts
                             without such a response in 90 days
      new_campaign           one campaign (the next CMP-<year>-<nnn>) sent on the day at 10:00 AM
                             to ~22 % of the valid contacts, rows as on the first day
    Activities.csv (appended, in OccurredAt order): one day's activities (0.6 per contact, the
      last week's daily rate; purchasers only have their checkout visit), the purchasers' and
      the new contacts' activities.
    ``next_day/sample.json`` lists every change (``changes``: name, file, description, rows and,
    but for new_campaign and day_activities, the SubscriberKeys concerned);
    ``next_day/README.md`` shows the same as a table.

Only the standard library and ``sfmc_pipeline.salesforce.ids`` are used.
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

from sfmc_pipeline.salesforce.ids import CONTACT_PREFIX, LEAD_PREFIX, to_18  # noqa: E402

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
# The next day: the same extracts one day later, as a mutation of the first day's rows
# --------------------------------------------------------------------------------------------

NEXT_DAY_DIR = "next_day"
NEXT_DAY_SEED_SUFFIX = "next_day"  # the next day's RNG: random.Random(f"{seed}:next_day")
# Changed rows per 3,000 valid contacts (scaled with --contacts, at least 1 each when possible).
NEXT_DAY_COUNTS = {
    "new_to_repeat": 30, "first_purchase": 10, "repeat_to_loyal": 15, "inactive_to_repeat": 10,
    "repeat_to_inactive": 15, "purchase_after_visit": 20, "email_change": 15, "last_name_change": 8,
    "first_name_change": 8, "company_change": 5, "new_contacts": 12, "offer_clicks": 25,
    "positive_responses": 25, "negative_responses": 10,
}
NEXT_DAY_ACTIVITIES_PER_CONTACT = 0.6  # one day's activities (the last week's daily rate)
NEXT_DAY_CAMPAIGN_REACH = 0.22  # share of the valid contacts the day's campaign is sent to
NEXT_DAY_CAMPAIGN_TIME = (10, 0)  # 10:00 AM
IN_STAGE_SEGMENT = ("new", "repeat", "loyal")  # written stages that keep a profile in a segment


@dataclass
class DayChange:
    """One documented kind of change of the next day (written to ``next_day/sample.json``)."""
    name: str
    file: str
    description: str
    rows: int = 0
    keys: list[str] = field(default_factory=list)  # SubscriberKeys concerned, in file order

    def manifest(self, with_keys: bool = True) -> dict[str, object]:
        entry: dict[str, object] = {"name": self.name, "file": self.file,
                                    "description": self.description, "rows": self.rows}
        if with_keys:
            entry["keys"] = self.keys
        return entry


def parse_sfmc_date(text: object) -> datetime | None:
    try:
        return datetime.strptime(str(text), "%m/%d/%Y %I:%M:%S %p")
    except ValueError:
        return None


def cents(amount: object) -> int:
    whole, _, fraction = str(amount).partition(".")
    return int(whole) * 100 + int((fraction + "00")[:2])


def engagement_is_invalid(row: dict[str, object]) -> bool:
    """One of the deliberately invalid engagement rows of the first day (left exactly as they are)."""
    try:
        return int(row["OfferClicks"]) > int(row["Clicks"]) or row["Response"] not in (
            "positive", "negative", "none", "") or int(row["Opens"]) < 0
    except ValueError:
        return True


class NextDay:
    """The first day's rows (never modified) -> the next day's rows and the list of changes."""

    def __init__(self, rng: random.Random, anchor: datetime, contacts: Sequence[Contact],
                 contact_rows: Sequence[dict[str, object]], campaigns: Sequence[Campaign],
                 engagement_rows: Sequence[dict[str, object]],
                 activity_rows: Sequence[dict[str, object]], taken_ids: set[str]):
        self.rng = rng
        self.today = anchor  # the day that passes: every new date falls on it
        self.anchor = anchor + timedelta(days=1)
        self.campaigns = campaigns
        self.taken_ids = taken_ids
        self.contact_rows = [dict(r) for r in contact_rows]
        self.engagement_rows = [dict(r) for r in engagement_rows]
        self.activity_rows = [dict(r) for r in activity_rows]
        self.used_emails = {str(r["Email"]) for r in contact_rows}
        self.activity_ids = {str(r["ActivityId"]) for r in activity_rows}
        self.changes: list[DayChange] = []
        self.claimed: set[str] = set()  # contacts given a documented change (one each)
        self.purchasers: set[str] = set()

        key_count: dict[str, int] = {}
        for row in contact_rows:
            key_count[str(row["SubscriberKey"])] = key_count.get(str(row["SubscriberKey"]), 0) + 1
        position = {id(row): i for i, row in enumerate(contact_rows)}
        # Valid contacts with a unique key (the duplicated key's rows stay as they are: quarantined).
        self.valid = [c for c in contacts if key_count[c.key] == 1]
        self.row_of = {c.key: self.contact_rows[position[id(c.row)]] for c in self.valid}
        self.order = {c.key: i for i, c in enumerate(self.valid)}
        self.n = len(contacts)

        week_ago = self.today - timedelta(days=7)
        self.recent_visitors = {str(r["SubscriberKey"]) for r in activity_rows
                                if r["ActivityType"] == "web_visit"
                                and (parse_sfmc_date(r["OccurredAt"]) or week_ago) > week_ago}

    # ---- helpers

    def count(self, name: str) -> int:
        return max(1, round(NEXT_DAY_COUNTS[name] * self.n / DEFAULT_CONTACTS))

    def pick(self, name: str, eligible) -> list[Contact]:
        pool = [c for c in self.valid if c.key not in self.claimed and eligible(c, self.row_of[c.key])]
        chosen = sorted(self.rng.sample(pool, min(self.count(name), len(pool))),
                        key=lambda c: self.order[c.key])
        self.claimed.update(c.key for c in chosen)
        return chosen

    def record(self, name: str, file: str, description: str, keys: Sequence[str],
               rows: int | None = None) -> None:
        self.changes.append(DayChange(name, file, description, len(keys) if rows is None else rows,
                                      list(keys)))

    def at(self, first_hour: int = 0, last_hour: int = 24) -> datetime:
        """A time of the day that passes, in [first_hour, last_hour)."""
        return self.today + timedelta(seconds=self.rng.randint(first_hour * 3600, last_hour * 3600 - 1))

    def new_activity(self, key: str, occurred: datetime, activity_type: str,
                     detail: str) -> dict[str, object]:
        activity_id = seeded_uuid4(self.rng)
        while activity_id in self.activity_ids:
            activity_id = seeded_uuid4(self.rng)
        self.activity_ids.add(activity_id)
        return {"_at": occurred, "ActivityId": activity_id, "SubscriberKey": key,
                "ActivityType": activity_type, "OccurredAt": sfmc_date(occurred), "Detail": detail}

    # ---- Contacts

    def purchase(self, contact: Contact, stage: str | None = None) -> None:
        """An order placed on the day that passes (and the checkout visit before it, on the same
        calendar day, so the visit is not later than the purchase)."""
        row = self.row_of[contact.key]
        row["OrderCount"] = int(row["OrderCount"]) + 1
        row["TotalSpend"] = money(cents(row["TotalSpend"]) + self.rng.randint(1500, 25000))
        row["LastPurchaseDate"] = sfmc_date(self.today.date())
        if stage is not None:
            row["LifecycleStage"] = stage
        self.purchasers.add(contact.key)
        self.new_activities.append(self.new_activity(
            contact.key, self.at(8, 17), "web_visit", "https://www.example.com/checkout"))

    def contact_changes(self) -> None:
        old = self.today - timedelta(days=181)
        week = self.today - timedelta(days=8)

        def stage(*stages):
            return lambda c, row: row["LifecycleStage"] in stages

        def last_purchase(row) -> datetime | None:
            return parse_sfmc_date(row["LastPurchaseDate"])

        chosen = self.pick("new_to_repeat", lambda c, row: row["LifecycleStage"] == "new"
                           and int(row["OrderCount"]) == 1)
        for c in chosen:
            self.purchase(c, "repeat")
        self.record("new_to_repeat", "Contacts.csv", "LifecycleStage new -> repeat: a second order "
                    "on the day (OrderCount 1 -> 2, TotalSpend, LastPurchaseDate); exits new_customer, "
                    "realizes repeat_buyer", [c.key for c in chosen])

        chosen = self.pick("first_purchase", lambda c, row: row["LifecycleStage"] == "new"
                           and int(row["OrderCount"]) == 0 and c.key in self.recent_visitors)
        for c in chosen:
            self.purchase(c)
        self.record("first_purchase", "Contacts.csv", "a first order after visiting the site this "
                    "week (OrderCount 0 -> 1, LifecycleStage stays new); exits visited_no_purchase",
                    [c.key for c in chosen])

        chosen = self.pick("repeat_to_loyal", lambda c, row: row["LifecycleStage"] == "repeat"
                           and int(row["OrderCount"]) == 9)
        for c in chosen:
            self.purchase(c, "loyal")
        self.record("repeat_to_loyal", "Contacts.csv", "LifecycleStage repeat -> loyal: a tenth "
                    "order on the day; exits repeat_buyer, realizes loyal_customer",
                    [c.key for c in chosen])

        chosen = self.pick("inactive_to_repeat", lambda c, row: row["LifecycleStage"] == "inactive"
                           and (last_purchase(row) or self.today) < old)
        for c in chosen:
            self.purchase(c, "repeat")
        self.record("inactive_to_repeat", "Contacts.csv", "LifecycleStage inactive -> repeat: an "
                    "order after more than 180 days; exits inactive_customer, realizes repeat_buyer",
                    [c.key for c in chosen])

        chosen = self.pick("repeat_to_inactive", lambda c, row: row["LifecycleStage"] == "repeat"
                           and (last_purchase(row) or self.today) < old)
        for c in chosen:
            self.row_of[c.key]["LifecycleStage"] = "inactive"
        self.record("repeat_to_inactive", "Contacts.csv", "LifecycleStage repeat -> inactive (no "
                    "order for more than 180 days; already in inactive_customer); exits repeat_buyer",
                    [c.key for c in chosen])

        chosen = self.pick("purchase_after_visit", lambda c, row: (
            (row["LifecycleStage"] == "repeat" and int(row["OrderCount"]) < 9)
            or row["LifecycleStage"] == "loyal")
            and c.key in self.recent_visitors and (last_purchase(row) or self.today) < week)
        for c in chosen:
            self.purchase(c)
        self.record("purchase_after_visit", "Contacts.csv", "an order by a repeat or loyal customer "
                    "who visited the site this week (LifecycleStage unchanged); exits "
                    "visited_no_purchase", [c.key for c in chosen])

        chosen = self.pick("email_change", stage(*IN_STAGE_SEGMENT))
        for c in chosen:
            row = self.row_of[c.key]
            row["Email"] = make_email(self.rng, str(row["FirstName"]), str(row["LastName"]),
                                      self.used_emails)
        self.record("email_change", "Contacts.csv", "a new Email (LifecycleStage unchanged); the "
                    "sync sends the new address", [c.key for c in chosen])

        chosen = self.pick("last_name_change", stage(*IN_STAGE_SEGMENT))
        for c in chosen:
            row = self.row_of[c.key]
            row["LastName"] = self.rng.choice([n for n in LAST_NAMES if n != row["LastName"]])
        self.record("last_name_change", "Contacts.csv", "a new LastName (Email kept)",
                    [c.key for c in chosen])

        chosen = self.pick("first_name_change", lambda c, row: row["LifecycleStage"] in
                           IN_STAGE_SEGMENT and row["FirstName"] == "")
        for c in chosen:
            self.row_of[c.key]["FirstName"] = self.rng.choice(FIRST_NAMES)
        self.record("first_name_change", "Contacts.csv", "a FirstName filled in where it was empty",
                    [c.key for c in chosen])

        chosen = self.pick("company_change", lambda c, row: c.key.startswith(LEAD_PREFIX)
                           and row["LifecycleStage"] in IN_STAGE_SEGMENT)
        for c in chosen:
            row = self.row_of[c.key]
            company = make_company(self.rng)
            while company == row["Company"]:
                company = make_company(self.rng)
            row["Company"] = company
        self.record("company_change", "Contacts.csv", "a new Company on a Lead (mapped to the "
                    "leads destination)", [c.key for c in chosen])

        keys = []
        for _ in range(self.count("new_contacts")):
            is_lead = self.rng.random() < 0.20
            key = new_salesforce_id(self.rng, LEAD_PREFIX if is_lead else CONTACT_PREFIX,
                                    self.taken_ids)
            first = self.rng.choice(FIRST_NAMES)
            last = self.rng.choice(LAST_NAMES)
            self.contact_rows.append({
                "SubscriberKey": key, "FirstName": first, "LastName": last,
                "Email": make_email(self.rng, first, last, self.used_emails),
                "Company": make_company(self.rng) if is_lead else "",
                "LifecycleStage": "new", "OrderCount": 0, "TotalSpend": money(0),
                "LastPurchaseDate": "", "CreatedDate": sfmc_date(self.today.date()),
            })
            for _ in range(self.rng.randint(1, 4)):
                self.new_activities.append(self.new_activity(key, self.at(), "web_visit",
                                                             web_url(self.rng)))
            self.new_activities.append(self.new_activity(key, self.at(), "form_submit",
                                                         "Newsletter Signup"))
            keys.append(key)
        self.record("new_contacts", "Contacts.csv", "new contacts created on the day (appended; "
                    "LifecycleStage new, no order) with web visits and a Newsletter Signup form "
                    "submit; realize new_customer, visited_no_purchase, form_submitters", keys)

    # ---- CampaignEngagement

    def engagement_changes(self) -> None:
        valid = {c.key for c in self.valid}
        rows = self.engagement_rows
        usable = {i for i, r in enumerate(rows) if str(r["SubscriberKey"]) in valid
                  and not engagement_is_invalid(r)}  # no orphan, no deliberately invalid row
        month, quarter = self.today - timedelta(days=28), self.today - timedelta(days=85)

        def engaged_today(row: dict[str, object]) -> None:
            sent = parse_sfmc_date(row["SendDate"])
            row["Opens"] = int(row["Opens"]) + 1
            row["LastEngagedDate"] = sfmc_date(max(self.at(7, 23), sent + timedelta(minutes=1)))

        def per_contact(name, row_ok, has_already, update, description):
            already = {str(rows[i]["SubscriberKey"]) for i in usable if has_already(rows[i])}
            candidates: dict[str, list[int]] = {}
            for i in sorted(usable):
                key = str(rows[i]["SubscriberKey"])
                if key not in already and key not in self.claimed and row_ok(rows[i]):
                    candidates.setdefault(key, []).append(i)
            keys = sorted(self.rng.sample(sorted(candidates, key=self.order.__getitem__),
                                          min(self.count(name), len(candidates))),
                          key=self.order.__getitem__)
            for key in keys:
                index = self.rng.choice(candidates[key])
                update(rows[index])
            self.claimed.update(keys)
            self.record(name, "CampaignEngagement.csv", description, keys)

        def sent_after(row, day):
            return parse_sfmc_date(row["SendDate"]) >= day

        def offer_click(row):
            engaged_today(row)
            row["Clicks"] = int(row["Clicks"]) + 1
            row["OfferClicks"] = int(row["OfferClicks"]) + 1

        def responded(response):
            def update(row):
                engaged_today(row)
                row["Response"] = response
            return update

        month_ago = self.today - timedelta(days=31)
        per_contact(
            "offer_clicks", lambda r: sent_after(r, month),
            lambda r: int(r["OfferClicks"]) > 0 and (parse_sfmc_date(r["LastEngagedDate"])
                                                       or self.today) >= month_ago,
            offer_click, "an offer click on the day on a campaign of the last 4 weeks (Opens, Clicks, "
            "OfferClicks + 1, LastEngagedDate on the day) by contacts without a recent offer click; "
            "realizes offer_clickers")
        per_contact(
            "positive_responses", lambda r: sent_after(r, quarter) and r["Response"] in ("", "none"),
            lambda r: r["Response"] == "positive" and sent_after(r, self.today - timedelta(days=92)),
            responded("positive"), "Response '' or none -> positive on the day, on a campaign of the "
            "last 85 days, by contacts without a positive response in 90 days; realizes "
            "positive_responders")
        per_contact(
            "negative_responses", lambda r: sent_after(r, quarter) and r["Response"] in ("", "none"),
            lambda r: r["Response"] == "negative" and sent_after(r, self.today - timedelta(days=92)),
            responded("negative"), "Response '' or none -> negative on the day (same rule); realizes "
            "negative_responders")

        # The day's campaign, sent at 10:00 AM: one new row per recipient, after the recipient's
        # other rows (the file stays grouped by contact, campaigns in send order).
        year = self.today.year
        number = sum(1 for c in self.campaigns if c.sent.year == year) + 1
        hour, minute = NEXT_DAY_CAMPAIGN_TIME
        self.campaign = Campaign(f"CMP-{year}-{number:03d}",
                                 self.today + timedelta(hours=hour, minutes=minute))
        self.recipients = [c for c in self.valid if self.rng.random() < NEXT_DAY_CAMPAIGN_REACH]
        new_rows = {c.key: engagement_row(self.rng, self.anchor, c.key, self.campaign,
                                          OPEN_RATE[c.stage]) for c in self.recipients}
        last_row = {str(r["SubscriberKey"]): i for i, r in enumerate(rows)}
        after: dict[int, list[dict[str, object]]] = {}
        for c in self.recipients:
            after.setdefault(last_row.get(c.key, len(rows) - 1), []).append(new_rows[c.key])
        self.engagement_rows = [r for i, row in enumerate(rows) for r in [row, *after.get(i, [])]]
        self.record("new_campaign", "CampaignEngagement.csv",
                    f"campaign {self.campaign.campaign_id} sent on the day at 10:00 AM to "
                    f"{len(self.recipients)} contacts (one row each, inserted after the contact's "
                    "other rows) with same-day opens, clicks, offer clicks and responses",
                    [c.key for c in self.recipients])

    # ---- Activities

    def activity_changes(self) -> None:
        """A day's web visits, form submits and email events (purchasers only have their checkout
        visit), appended after the first day's rows in OccurredAt order."""
        received = {c.key: list(c.campaigns) for c in self.valid}
        for c in self.recipients:
            received[c.key].append(self.campaign)
        pool = [c for c in self.valid if c.key not in self.purchasers]
        weights = [sum(ACTIVITIES_PER_STAGE[c.stage]) for c in pool]
        n_day = round(NEXT_DAY_ACTIVITIES_PER_CONTACT * self.n)
        for contact in self.rng.choices(pool, weights=weights, k=n_day):
            occurred = self.at()
            activity_type = self.rng.choices(ACTIVITY_TYPES, weights=ACTIVITY_TYPE_WEIGHTS)[0]
            detail = ""
            if activity_type.startswith("email_"):
                sent_before = [c for c in received[contact.key] if c.sent <= occurred]
                if sent_before:
                    detail = sent_before[-1 - min(len(sent_before) - 1,
                                                  int(self.rng.expovariate(1.0)))].campaign_id
                else:
                    activity_type = "web_visit"
            if activity_type == "web_visit":
                detail = "" if self.rng.random() < 0.04 else web_url(self.rng)
            elif activity_type == "form_submit":
                detail = "" if self.rng.random() < 0.05 else self.rng.choice(FORM_NAMES)
            self.new_activities.append(self.new_activity(contact.key, occurred, activity_type,
                                                         detail))
        self.new_activities.sort(key=lambda r: (r["_at"], str(r["ActivityId"])))
        counts: dict[str, int] = {}
        for row in self.new_activities:
            counts[str(row["ActivityType"])] = counts.get(str(row["ActivityType"]), 0) + 1
            del row["_at"]
        self.activity_rows.extend(self.new_activities)
        self.record("day_activities", "Activities.csv",
                    f"{len(self.new_activities)} activities on the day, appended ("
                    + ", ".join(f"{counts.get(t, 0)} {t}" for t in ACTIVITY_TYPES)
                    + "), the checkout visits of the purchasers and the new contacts' visits and "
                    "form submits included", [], rows=len(self.new_activities))

    def build(self) -> "NextDay":
        self.new_activities: list[dict[str, object]] = []
        self.contact_changes()
        self.engagement_changes()
        self.activity_changes()
        return self

    def manifest(self, seed: int) -> dict[str, object]:
        return {
            "anchor_date": self.anchor.date().isoformat(),
            "seed": seed,
            "sample": "next_day",
            "previous_anchor_date": self.today.date().isoformat(),
            "description": (
                f"The first day's extracts (../) one day later: what happened on "
                f"{self.today.date().isoformat()}, evaluated as of {self.anchor.date().isoformat()}. "
                "Every first-day row is kept (the deliberately invalid rows exactly as they are); "
                "the changes below are the only differences, and the passage of the day moves the "
                "7/14/30/90/180-day windows. An order on the day sets LastPurchaseDate to the day "
                "and comes with a checkout web visit on the same day, so the profile also leaves "
                "visited_no_purchase (and inactive_customer when its previous order was more than "
                "180 days ago). Select it with `sfmc-pipeline sample next_day`."),
            "changes": [c.manifest(with_keys=c.name not in ("new_campaign", "day_activities"))
                        for c in self.changes],
        }


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

    # The next day, from the first day's rows with its own RNG (the first day does not depend on it).
    next_day = NextDay(random.Random(f"{args.seed}:{NEXT_DAY_SEED_SUFFIX}"), anchor, contacts,
                       contact_rows, campaigns, engagement_rows, activity_rows, taken_ids).build()
    out = args.out / NEXT_DAY_DIR
    for name, columns, rows in [("Contacts.csv", CONTACT_COLUMNS, next_day.contact_rows),
                                ("CampaignEngagement.csv", ENGAGEMENT_COLUMNS,
                                 next_day.engagement_rows),
                                ("Activities.csv", ACTIVITY_COLUMNS, next_day.activity_rows)]:
        path = out / name
        write_csv(path, columns, rows)
        changed = sum(c.rows for c in next_day.changes if c.file == name)
        print(f"{display_path(path)}: {len(rows)} rows written, {changed} changed or added"
              f", {path.stat().st_size:,} bytes")
    manifest = next_day.manifest(args.seed)
    (out / "sample.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    (out / "README.md").write_text(next_day_readme(manifest), encoding="utf-8")
    print(f"{display_path(out / 'sample.json')}: anchor date {manifest['anchor_date']}, "
          f"{len(next_day.changes)} kinds of change")
    return 0


def next_day_readme(manifest: dict) -> str:
    lines = [
        "# Sample data: the next day",
        "",
        "Written by `scripts/generate_sample_data.py` with the first day in `data/sample/` (do not edit",
        "by hand; regenerate). " + str(manifest["description"]),
        "",
        "```bash",
        "dg launch --job sfmc_pipeline_job                                   # the first day (the default day)",
        "sfmc-pipeline sample next_day && dg launch --job sfmc_pipeline_job  # then the next day",
        "```",
        "",
        "| change | file | rows | what |",
        "|---|---|---:|---|",
    ]
    lines += [f"| `{c['name']}` | {c['file']} | {c['rows']} | {c['description']} |"
              for c in manifest["changes"]]
    lines += ["", "`sample.json` lists the SubscriberKeys of each change (`changes[].keys`), except "
              "for `new_campaign` and `day_activities` (too many to list).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
