"""Builders for small typed frames shaped like the shipped datasets (via the real conversion)."""

import datetime as dt

import pandas as pd

from sfmc_pipeline.config.loader import load_pipeline_config
from sfmc_pipeline.datasets.validation import validate_extract
from sfmc_pipeline.salesforce.ids import to_18
from sfmc_pipeline.segments.engine import SegmentEngine, evaluate_frames
from sfmc_pipeline.segments.memberships import profile_keys, unknown_keys
from sfmc_pipeline.settings import DEFAULT_CONFIG_PATH

CONFIG = load_pipeline_config(DEFAULT_CONFIG_PATH)
AS_OF = dt.date(2026, 11, 20)


def key(n: int, prefix: str = "003") -> str:
    return to_18(f"{prefix}5e0000{n:06d}")


def day(offset: int, time: str = "12:00:00 PM") -> str:
    """An SFMC date string ``offset`` days before AS_OF (noon CST = 18:00 UTC, same UTC day)."""
    d = AS_OF - dt.timedelta(days=offset)
    return f"{d.month}/{d.day}/{d.year} {time}"


def typed(asset: str, rows: list[dict]) -> pd.DataFrame:
    ext = CONFIG.extension(asset)
    raw = pd.DataFrame([{c.name: "" for c in ext.columns} | r for r in rows], dtype="string")
    result = validate_extract(raw, ext)
    assert result.rows_quarantined == 0, result.quarantine["_reasons"].tolist()
    return result.valid


def contact(n: int, **fields) -> dict:
    row = {"SubscriberKey": key(n), "LastName": f"Last{n}", "Email": f"p{n}@example.com", "OrderCount": "0",
           "TotalSpend": "0", "CreatedDate": day(400)}
    row.update({k: str(v) for k, v in fields.items()})
    return row


def engagement(n: int, campaign: str, **fields) -> dict:
    row = {"SubscriberKey": key(n), "CampaignId": campaign, "SendDate": day(10), "Opens": "1", "Clicks": "1",
           "OfferClicks": "0"}
    row.update({k: str(v) for k, v in fields.items()})
    return row


def activity(n: int, activity_id: int, activity_type: str, offset: int, time: str = "12:00:00 PM") -> dict:
    return {"ActivityId": f"00000000-0000-4000-8000-{activity_id:012d}", "SubscriberKey": key(n),
            "ActivityType": activity_type, "OccurredAt": day(offset, time)}


class Evaluated:
    """The product's segment engine over small frames, as the rule tests ask it: which profile keys a rule
    selects, and how many related rows are orphans."""

    def __init__(self, profiles: pd.DataFrame, related: dict[str, pd.DataFrame], *, key: str, as_of: dt.date,
                 timezone: str = "UTC"):
        self.profiles, self.related, self.key, self.as_of, self.timezone = profiles, related, key, as_of, timezone

    def selected(self, rule) -> set[str]:
        members = evaluate_frames(self.profiles, self.related, [("s", rule)], key=self.key, as_of=self.as_of,
                                  timezone=self.timezone)
        return set(members["profile_key"])

    def orphans(self, dataset: str) -> int:
        with SegmentEngine.in_memory() as engine:
            valid = profile_keys(engine.frame(self.profiles), self.key)
            rows = profile_keys(engine.frame(self.related[dataset]), self.key)
            return int(engine.value(unknown_keys(rows, valid, set()).count()))
