"""Shared helpers for the CRM sink tests: the fake org with the shipped status fields, a client
factory, frames shaped like the profiles and statuses datasets, and a one-call sync."""

from collections import Counter

import pandas as pd
import pytest

from sfmc_pipeline.crm.ledger import SyncLedger
from sfmc_pipeline.crm.sync import DestinationSync
from sfmc_pipeline.http import RetrySettings
from sfmc_pipeline.salesforce.ids import to_18
from sfmc_pipeline.salesforce.rest import SalesforceClient
from sfmc_pipeline_tests.segment_fixtures import CONFIG

CONTACTS = CONFIG.destination("contacts")
LEADS = CONFIG.destination("leads")
STATUS_FIELDS = sorted(CONTACTS.status_fields)


def cid(n: int, prefix: str = "003") -> str:
    return to_18(f"{prefix}5e0000{n:06d}")


def profiles(ids, overrides: dict | None = None) -> pd.DataFrame:
    rows = [{"SubscriberKey": rid, "FirstName": f"First{i}", "LastName": f"Last{i}", "Email": f"p{i}@example.com",
             "Company": f"Co{i}"} for i, rid in enumerate(ids)]
    frame = pd.DataFrame(rows, dtype="string")
    for (rid, column), value in (overrides or {}).items():
        frame.loc[frame["SubscriberKey"] == rid, column] = value
    return frame


def statuses(*rows) -> pd.DataFrame:
    return pd.DataFrame(list(rows), columns=["profile_key", "segment", "status"], dtype="string")


def members(ids, segment="new_customer", status="realized") -> pd.DataFrame:
    return statuses(*((rid, segment, status) for rid in ids))


@pytest.fixture()
def org(fake_salesforce):
    """The fake org with the shipped status fields on Contact and Lead."""
    for sobject in ("Contact", "Lead"):
        for name in STATUS_FIELDS:
            fake_salesforce.add_field(sobject, name)
    return fake_salesforce


def seed(org, ids, sobject="Contact"):
    for i, rid in enumerate(ids):
        org.add_record(sobject, rid, LastName=f"Old{i}", **({"Company": "Old"} if sobject == "Lead" else {}))


@pytest.fixture()
def client(org, sleeps):
    made = []

    def make(**kw):
        c = SalesforceClient(base_url=org.base_url, client_id=org.client_id, client_secret=org.client_secret,
                             retry=RetrySettings(max_retries=3, backoff_seconds=0.5), sleep=sleeps, **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


def sync(target, tmp_path, dest=CONTACTS, run_id="run-1", settings=None, pipeline=None):
    ledger = SyncLedger(tmp_path / "ledger.sqlite", target.target_id)
    pipeline = pipeline or CONFIG
    if settings:
        pipeline = pipeline.model_copy(update={"sync": settings})
    return DestinationSync.for_pipeline(pipeline, dest, target, ledger, run_id=run_id), ledger


def run(target, tmp_path, status_frame, profile_frame, dest=CONTACTS, dry_run=False, settings=None, run_id="run-1",
        pipeline=None, accept_exits=False):
    syncer, ledger = sync(target, tmp_path, dest, run_id, settings, pipeline)
    try:
        return syncer.run(status_frame, profile_frame, dry_run=dry_run, accept_exits=accept_exits)
    finally:
        ledger.close()


def collection_requests(org):
    return [r for r in org.requests if "/composite/sobjects" in r.path]


def writes_per_id(org) -> Counter:
    return Counter(rid for _, rid, _ in org.write_log)
