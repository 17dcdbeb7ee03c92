"""Contract: the profile key is whatever the config says it is. ``profiles.key`` defaults to the
profile dataset's one-column primary key and a destination's ``identity_column`` defaults to the
profile key; nothing assumes a column named ``SubscriberKey``. A pipeline whose profiles are keyed
by ``ContactKey`` (not a Salesforce Id) and whose records are named by a separate ``CrmId`` column
runs the whole flow (datasets -> segments -> CRM sync on the local target, with the config's
evaluation date and time zone), a second run sends nothing, and an update destination whose
identity column does not hold Salesforce Ids is refused at load."""

import copy
import textwrap

import dagster as dg
import pytest
import yaml

from sfmc_pipeline.config.loader import PipelineConfigError, parse_pipeline_config
from sfmc_pipeline.crm.ledger import SyncLedger
from sfmc_pipeline.crm.local.target import LocalCrmTarget
from sfmc_pipeline.datasets.storage import DatasetStore
from sfmc_pipeline.defs.assets.crm import ledger_path, local_db_path
from sfmc_pipeline.salesforce.ids import to_18
from sfmc_pipeline_tests.flow_fixtures import (
    flow_assets,
    local_resources,
    sync_metadata,
)

PIPELINE = textwrap.dedent("""\
    settings:
      quarantine_threshold: 0.5  # M-005 is quarantined on purpose
    data_extensions:
      - key: Members
        asset: members
        primary_key: [ContactKey]
        columns:
          - {name: ContactKey, type: Text, length: 20}
          - {name: CrmId, type: Text, length: 18, format: salesforce_id}
          - {name: LastName, type: Text, length: 80}
          - {name: Email, type: EmailAddress, length: 254}
          - {name: Company, type: Text, length: 80, nullable: true}
          - {name: Tier, type: Text, allowed_values: [gold, silver]}
      - key: Visits
        asset: visits
        primary_key: [VisitId]
        columns:
          - {name: VisitId, type: Text, length: 10}
          - {name: ContactKey, type: Text, length: 20}
          - {name: VisitedAt, type: Date}
    profiles:
      dataset: members          # no key: the primary key ContactKey
    evaluation:
      as_of: 2026-11-20         # unquoted: a YAML date
      timezone: America/Los_Angeles
    segments:
      - name: gold_tier
        rule: {column: Tier, op: eq, value: gold}
      - name: recent_visitor
        rule:
          has_related:
            dataset: visits
            where: {column: VisitedAt, op: within_last_days, value: 7}
    destinations:
      - name: crm_contacts
        object: Contact
        identity_column: CrmId
        attributes: {LastName: LastName, Email: Email}
        segments: {gold_tier: gold_tier, recent_visitor: recent_visitor__c}
      - name: crm_leads
        object: Lead
        identity_column: CrmId
        attributes: {LastName: LastName, Company: Company, Email: Email}
        segments: {gold_tier: gold_tier, recent_visitor: recent_visitor__c}
    """)

CONTACT_1, CONTACT_2, CONTACT_3, CONTACT_5 = (to_18(f"0035e0000{n:06d}") for n in (1, 2, 3, 5))
LEAD_1 = to_18("00Q5e0000000004")

MEMBERS_CSV = textwrap.dedent(f"""\
    ContactKey,CrmId,LastName,Email,Company,Tier
    M-001,{CONTACT_1},One,one@example.com,,gold
    M-002,{CONTACT_2},Two,two@example.com,,silver
    M-003,{CONTACT_3},Three,three@example.com,,silver
    M-004,{LEAD_1},Four,four@example.com,Acme,gold
    M-005,{CONTACT_5},Five,not-an-email,,gold
    """)

VISITS_CSV = textwrap.dedent("""\
    VisitId,ContactKey,VisitedAt
    V1,M-002,11/18/2026 12:00:00 PM
    V2,M-003,10/01/2026 12:00:00 PM
    V3,M-004,11/20/2026 8:00:00 AM
    V4,M-999,11/19/2026 8:00:00 AM
    V5,M-005,11/19/2026 8:00:00 AM
    V6,M-003,11/20/2026 8:00:00 PM
    """)


def _config(text: str = PIPELINE):
    return parse_pipeline_config(yaml.safe_load(text), source="profile_key.yaml")


def test_key_and_identity_default_from_the_profile_dataset():
    config = _config()
    assert config.profile_key == "ContactKey"  # the primary key of `members`
    assert config.destination("crm_contacts").identity_column == "CrmId"
    # without identity_column, a destination takes the profile key (here made a Salesforce Id column)
    raw = yaml.safe_load(PIPELINE)
    raw["data_extensions"][0]["columns"][0].update(length=18, format="salesforce_id")
    for dest in raw["destinations"]:
        del dest["identity_column"]
    assert {d.identity_column for d in parse_pipeline_config(raw).destinations} == {"ContactKey"}
    # an explicit profiles.key is kept
    raw["profiles"]["key"] = "ContactKey"
    assert parse_pipeline_config(raw).profile_key == "ContactKey"


def test_update_identity_column_without_salesforce_id_format_is_a_load_error():
    raw = yaml.safe_load(PIPELINE)
    raw["destinations"][0]["identity_column"] = "ContactKey"
    with pytest.raises(PipelineConfigError) as info:
        parse_pipeline_config(raw, source="profile_key.yaml")
    message = str(info.value)
    assert "destinations[0] (crm_contacts) > identity_column: 'ContactKey' must hold Salesforce record Ids" in message
    assert "format: salesforce_id" in message
    # the default identity column (the profile key) is held to the same rule
    raw = yaml.safe_load(PIPELINE)
    for dest in raw["destinations"]:
        del dest["identity_column"]
    message = str(pytest.raises(PipelineConfigError, parse_pipeline_config, copy.deepcopy(raw)).value)
    assert "destinations[0] (crm_contacts) > identity_column: 'ContactKey'" in message
    assert "destinations[1] (crm_leads) > identity_column: 'ContactKey'" in message


def test_profile_dataset_without_a_one_column_primary_key_needs_profiles_key():
    raw = yaml.safe_load(PIPELINE)
    raw["data_extensions"][0]["primary_key"] = ["ContactKey", "CrmId"]
    with pytest.raises(PipelineConfigError, match=r"profiles > key: 'members' needs a one-column primary_key"):
        parse_pipeline_config(raw)


def test_whole_flow_with_a_renamed_profile_key(tmp_path):
    config = _config()
    sample = tmp_path / "sample"
    sample.mkdir()
    (sample / "Members.csv").write_text(MEMBERS_CSV, encoding="utf-8")
    (sample / "Visits.csv").write_text(VISITS_CSV, encoding="utf-8")
    storage = tmp_path / "storage"
    assets = flow_assets(config)
    resources = local_resources(storage, sample)

    first = dg.materialize(assets, resources=resources, instance=dg.DagsterInstance.ephemeral())
    assert first.success

    store = DatasetStore(storage)
    statuses = store.read_dataset("segment_statuses")
    assert "profile_key" in statuses.columns and "SubscriberKey" not in statuses.columns
    got = set(statuses[["profile_key", "segment", "status"]].itertuples(index=False, name=None))
    assert got == {
        ("M-001", "gold_tier", "realized"),
        ("M-004", "gold_tier", "realized"),
        ("M-002", "recent_visitor", "realized"),  # 2 days ago
        ("M-003", "recent_visitor", "realized"),  # V6: 02:00Z on the 21st is still the 20th in Los Angeles
        ("M-004", "recent_visitor", "realized"),  # V4's M-999 is no profile: an orphan
    }

    with LocalCrmTarget(local_db_path(store)) as crm:
        contacts = {r["Id"]: r for r in crm.read("Contact")}
        leads = {r["Id"]: r for r in crm.read("Lead")}
        target_id = crm.target_id
    # `gold_tier` (no __c) and `recent_visitor__c` both land on their custom fields, on the records named by CrmId
    assert contacts[CONTACT_1]["gold_tier__c"] == "gold_tier:realized"
    assert contacts[CONTACT_1]["recent_visitor__c"] is None
    assert contacts[CONTACT_2]["recent_visitor__c"] == "recent_visitor:realized"
    assert contacts[CONTACT_2]["gold_tier__c"] is None
    assert contacts[CONTACT_3]["recent_visitor__c"] == "recent_visitor:realized"
    assert contacts[CONTACT_3]["gold_tier__c"] is None
    assert leads[LEAD_1]["gold_tier__c"] == "gold_tier:realized"
    assert leads[LEAD_1]["recent_visitor__c"] == "recent_visitor:realized"
    assert not {"M-001", "M-002", "M-003", "M-004"} & (set(contacts) | set(leads))  # no record named by ContactKey
    assert CONTACT_5 not in contacts  # quarantined: never seeded, never written
    ledger = SyncLedger(ledger_path(store), target_id)
    try:
        confirmed = ledger.confirmed("Contact")
    finally:
        ledger.close()
    statuses_confirmed = confirmed[confirmed["kind"] == "status"]
    assert set(zip(statuses_confirmed["record_id"], statuses_confirmed["profile_key"])) == {
        (CONTACT_1, "M-001"), (CONTACT_2, "M-002"), (CONTACT_3, "M-003")}  # records by CrmId, profiles by ContactKey

    memberships = next(e.materialization.metadata for e in first.get_asset_materialization_events()
                       if e.asset_key.path == ["segment_memberships"])
    assert memberships["orphans.visits"].value == 1  # M-999; M-005 is held (its row quarantined), not an orphan
    assert memberships["held_profiles"].value == 1
    assert memberships["timezone"].value == "America/Los_Angeles"
    assert (memberships["as_of"].value, memberships["as_of_source"].value) == (
        "2026-11-20", "pipeline config evaluation.as_of")

    meta = sync_metadata(first)
    assert meta["crm_contacts"]["records_succeeded"] == 3 and meta["crm_contacts"]["records_failed"] == 0
    assert meta["crm_leads"]["records_succeeded"] == 1

    second = dg.materialize(assets, resources=resources, instance=dg.DagsterInstance.ephemeral())
    assert second.success
    again = sync_metadata(second)
    assert again["crm_contacts"]["records_sent"] == 0 and again["crm_leads"]["records_sent"] == 0
