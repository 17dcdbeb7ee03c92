"""A small sample folder in the embedded default's layout (``<external key>.csv`` per Data Extension and a
``sample.json`` with the anchor date), for tests that run the whole flow without the 72,000-row shipped
sample: 24 profiles (Contacts and Leads) spread over every shipped segment, with their engagement and
activity rows, all dated relative to the anchor date like the shipped sample."""

from __future__ import annotations

import csv
import datetime as dt
import json
from pathlib import Path

from sfmc_pipeline_tests.segment_fixtures import (
    CONFIG,
    activity,
    contact,
    engagement,
    key,
)

ANCHOR = dt.date(2026, 11, 20)
STAGES = ["new", "repeat", "loyal", "inactive"]


def tiny_profiles(count: int = 24) -> list[dict]:
    """Raw Contacts rows: every fourth profile a Lead (00Q), stages in turn, some with orders."""
    rows = []
    for n in range(count):
        prefix = "00Q" if n % 4 == 3 else "003"
        row = contact(n, LifecycleStage=STAGES[n % len(STAGES)], OrderCount=n % 12, FirstName=f"First{n}",
                      Company=f"Company {n}")
        row["SubscriberKey"] = key(n, prefix)
        rows.append(row)
    return rows


def write_tiny_sample(folder: Path, *, contacts: list[dict] | None = None, anchor: dt.date = ANCHOR) -> Path:
    """Write the tiny sample to ``folder`` (created); ``contacts`` replaces the profiles."""
    folder.mkdir(parents=True, exist_ok=True)
    profiles = contacts if contacts is not None else tiny_profiles()
    keys = [row["SubscriberKey"] for row in profiles]
    engagements, activities = [], []
    for n, profile in enumerate(keys):
        row = engagement(n, f"CMP-{n % 3}", OfferClicks=1 if n % 2 else 0, LastEngagedDate="",
                         Response=["positive", "negative", "none"][n % 3])
        row["SubscriberKey"] = profile
        if n % 2:
            row["LastEngagedDate"] = row["SendDate"]
        engagements.append(row)
        for i, kind in enumerate(("web_visit", "form_submit")):
            act = activity(n, 100 * n + i, kind, offset=(n % 5) + i)
            act["SubscriberKey"] = profile
            activities.append(act)
    for asset, rows in (("contacts", profiles), ("campaign_engagement", engagements), ("activities", activities)):
        ext = CONFIG.extension(asset)
        names = [c.name for c in ext.columns]
        with (folder / f"{ext.key}.csv").open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, names)
            writer.writeheader()
            writer.writerows({name: row.get(name, "") for name in names} for row in rows)
    (folder / "sample.json").write_text(json.dumps({"anchor_date": anchor.isoformat()}), encoding="utf-8")
    return folder
