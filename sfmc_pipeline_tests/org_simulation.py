"""A marketing org that changes day after day, on the fake servers: the three Data Extensions of the
shipped config on the fake SFMC tenant, and the Contacts and Leads they describe in the fake Salesforce
org. ``SimulatedOrg.next_day()`` moves it one day on, the way real tenants change:

* new profiles (with their CRM records), changed profiles (stage moves, a purchase, an email change);
* today's activities, and *late-arriving* ones dated three days back (an event log's timestamps);
* activities deleted in SFMC, and a few bad rows re-imported every day (yesterday's bad rows go away);
* now and then a campaign send with offer clicks and responses;
* a profile whose email is broken for two days (its row is quarantined, the profile held).

It keeps the truth as plain Python rows, so a test can compare what the pipeline landed and wrote with
what SFMC holds. Every value is in SFMC system time (UTC-6), as the rowset serves it.
"""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal

from sfmc_pipeline_testing.salesforce_server import FakeSalesforceServer
from sfmc_pipeline_testing.sfmc_server import FakeSfmcServer
from sfmc_pipeline_tests.segment_fixtures import CONFIG, key

FIRST_DAY = dt.date(2026, 11, 20)
DATE_FIELDS = {
    "Contacts": {"LastPurchaseDate": "Date", "CreatedDate": "Date"},
    "CampaignEngagement": {"SendDate": "Date", "LastEngagedDate": "Date"},
    "Activities": {"OccurredAt": "Date"},
}
STAGES = ["new", "repeat", "loyal", "inactive"]


def _at(day: dt.date, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, hour, minute)


class SimulatedOrg:
    def __init__(self, sfmc: FakeSfmcServer, org: FakeSalesforceServer, *, profiles: int = 200, seed: int = 15):
        self.sfmc, self.org, self.rng = sfmc, org, random.Random(seed)
        self.scale = max(1, profiles // 40)  # daily changes grow with the org
        self.day_number, self.today = 0, FIRST_DAY
        self.contacts: dict[str, dict] = {}
        self.engagement: dict[tuple[str, str], dict] = {}
        self.activities: dict[str, dict] = {}
        self.bad_activities: set[str] = set()
        self.broken_email: str | None = None
        self.deleted_in_crm: set[str] = set()
        self._next_profile = self._next_activity = 0
        for dest in CONFIG.destinations:
            for name in dest.status_fields:
                org.add_field(dest.object, name)
        for _ in range(profiles):
            self._new_profile(created=FIRST_DAY - dt.timedelta(days=self.rng.randint(30, 700)))
        for profile in list(self.contacts):
            for days_ago in sorted(self.rng.sample(range(0, 20), 3)):
                self._activity(profile, FIRST_DAY - dt.timedelta(days=days_ago))
        self._campaign("CMP-0", FIRST_DAY - dt.timedelta(days=12), share=0.6)
        for _ in range(self.scale):
            self._bad_activity()
        self.publish()

    # ------------------------------------------------------------------ the truth

    @property
    def profiles(self) -> list[str]:
        return sorted(self.contacts)

    def sfmc_keys(self) -> dict[str, set[str]]:
        """The primary keys SFMC holds now, per dataset (composite keys joined with a unit separator, as the
        pipeline joins them)."""
        return {
            "contacts": set(self.contacts),
            "campaign_engagement": {f"{k}\x1f{c}" for k, c in self.engagement},
            "activities": set(self.activities),
        }

    def crm_records(self, sobject: str) -> dict[str, dict]:
        """The records the fake org holds and has not deleted, by Id."""
        deleted = self.org.deleted_ids[sobject]
        return {rid: dict(values) for rid, values in self.org.records[sobject].items() if rid not in deleted}

    # ------------------------------------------------------------------ one day on

    def next_day(self) -> None:
        """Move the org one day on: everything listed in the module docstring, then publish to the fakes."""
        self.day_number += 1
        self.today = FIRST_DAY + dt.timedelta(days=self.day_number)
        today, rng = self.today, self.rng
        for _ in range(2 * self.scale):
            self._new_profile(created=today, stage="new")
        changed = rng.sample([p for p in self.profiles if p != self.broken_email], 4 * self.scale)
        stage_moves = {"new": "repeat", "repeat": rng.choice(["loyal", "inactive"]), "loyal": "loyal",
                       "inactive": "repeat"}
        for profile in changed[0::4]:
            row = self.contacts[profile]
            row["LifecycleStage"] = stage_moves[row["LifecycleStage"]]
        for profile in changed[1::4]:
            buyer = self.contacts[profile]
            buyer.update(OrderCount=buyer["OrderCount"] + 1, LastPurchaseDate=_at(today, 0),
                         TotalSpend=buyer["TotalSpend"] + Decimal("49.90"))
            self._activity(profile, today, kind="web_visit", detail="https://shop.example.com/checkout")
        for profile in changed[2::4]:
            self.contacts[profile]["Email"] = f"changed{self.day_number}.{profile[-6:].lower()}@mail.example.com"
        for profile in changed[3::4]:
            self.contacts[profile]["LifecycleStage"] = stage_moves[self.contacts[profile]["LifecycleStage"]]
        for profile in rng.sample(self.profiles, 8 * self.scale):
            self._activity(profile, today)
        for profile in rng.sample(self.profiles, 3 * self.scale):  # arriving today, dated three days back
            self._activity(profile, today - dt.timedelta(days=3))
        for activity_id in rng.sample(sorted(set(self.activities) - self.bad_activities), 2 * self.scale):
            del self.activities[activity_id]
        for activity_id in self.bad_activities:  # the daily re-import replaces yesterday's bad rows
            del self.activities[activity_id]
        self.bad_activities.clear()
        for _ in range(self.scale):
            self._bad_activity()
        if self.day_number in (2, 6):
            self._campaign(f"CMP-{self.day_number}", today, share=0.3)
        if self.day_number == 3:
            self.broken_email = changed[0]
            self.contacts[self.broken_email]["Email"] = "broken-at-example.com"
        elif self.day_number == 5 and self.broken_email:
            self.contacts[self.broken_email]["Email"] = f"fixed.{self.broken_email[-6:].lower()}@mail.example.com"
            self.broken_email = None
        self.publish()

    def delete_in_crm(self, profile: str) -> None:
        """Someone deletes the profile's record in Salesforce (it goes to the recycle bin)."""
        self.org.delete_record(_sobject(profile), profile)
        self.deleted_in_crm.add(profile)

    def publish(self) -> None:
        """Serve the truth from the fake SFMC tenant (each Data Extension re-imported whole)."""
        for ext, rows in ((CONFIG.extension("contacts"), self.contacts.values()),
                          (CONFIG.extension("campaign_engagement"), self.engagement.values()),
                          (CONFIG.extension("activities"), self.activities.values())):
            self.sfmc.add_data_extension(ext.key, [dict(r) for r in rows], primary_key=ext.primary_key,
                                         field_types=DATE_FIELDS[ext.key])

    # ------------------------------------------------------------------ rows

    def _new_profile(self, *, created: dt.date, stage: str | None = None) -> str:
        n = self._next_profile
        self._next_profile += 1
        profile = key(n, "00Q" if n % 4 == 3 else "003")
        orders = 0 if stage == "new" else self.rng.randint(0, 12)
        self.contacts[profile] = {
            "SubscriberKey": profile, "FirstName": f"First{n}", "LastName": f"Last{n}",
            "Email": f"person{n}@mail.example.com", "Company": f"Company {n % 7}",
            "LifecycleStage": stage or STAGES[n % len(STAGES)], "OrderCount": orders,
            "TotalSpend": Decimal(orders * 37) + Decimal("0.50"),
            "LastPurchaseDate": _at(created, 0) if orders else None, "CreatedDate": _at(created, 0),
        }
        sobject = _sobject(profile)
        fields = {"LastName": "(from CRM)"} | ({"Company": "(from CRM)"} if sobject == "Lead" else {})
        self.org.add_record(sobject, profile, **fields)
        return profile

    def _activity(self, profile: str, day: dt.date, *, kind: str | None = None, detail: str = "") -> str:
        self._next_activity += 1
        activity_id = f"00000000-0000-4000-8000-{self._next_activity:012d}"
        self.activities[activity_id] = {
            "ActivityId": activity_id, "SubscriberKey": profile,
            "ActivityType": kind or self.rng.choice(["web_visit", "web_visit", "form_submit", "email_open"]),
            "OccurredAt": _at(day, self.rng.randint(7, 16), self.rng.randint(0, 59)),
            "Detail": detail or f"https://www.example.com/p/{self._next_activity}",
        }
        return activity_id

    def _bad_activity(self) -> None:
        activity_id = self._activity(self.rng.choice(self.profiles), self.today, kind="pageview")  # not allowed
        self.bad_activities.add(activity_id)

    def _campaign(self, campaign: str, sent: dt.date, *, share: float) -> None:
        for profile in self.rng.sample(self.profiles, int(len(self.profiles) * share)):
            clicks = self.rng.randint(0, 3)
            self.engagement[(profile, campaign)] = {
                "SubscriberKey": profile, "CampaignId": campaign, "SendDate": _at(sent, 9), "Opens": clicks + 1,
                "Clicks": clicks, "OfferClicks": self.rng.randint(0, clicks),
                "Response": self.rng.choice(["positive", "negative", "none", None]),
                "LastEngagedDate": _at(sent, 15) if clicks else None,
            }


def _sobject(profile: str) -> str:
    return "Lead" if profile.startswith("00Q") else "Contact"
