"""Data-usage labels and destination policies: a labelled column never reaches a destination whose
actions a policy forbids it for, whether it is mapped as an attribute or decides a segment (directly
or through has_related); the config does not load, and the sink refuses again before any request.
An exception with a reason allows one pairing on purpose, and shows in metadata."""

from __future__ import annotations

import dagster as dg
import pytest

from sfmc_pipeline.cli import connection_check
from sfmc_pipeline.cli.check_report import Report
from sfmc_pipeline.config.loader import PipelineConfigError
from sfmc_pipeline.crm.ledger import SyncLedger
from sfmc_pipeline.crm.sync import DestinationSync
from sfmc_pipeline.definitions import build_definitions
from sfmc_pipeline.defs.assets.crm import build_sync_asset
from sfmc_pipeline.defs.resources.salesforce import SalesforceResource
from sfmc_pipeline.defs.resources.storage import StorageResource
from sfmc_pipeline.governance.policies import PolicyViolation
from sfmc_pipeline.salesforce.rest import SalesforceClient
from sfmc_pipeline_tests.crm_fixtures import CONTACTS, members, org, profiles  # noqa: F401 (org: a fixture)
from sfmc_pipeline_tests.flow_fixtures import edited_config, materialize, step_failures
from sfmc_pipeline_tests.segment_fixtures import CONFIG

SPEND_FIELD = "Total_Spend__c"


def _load_error(tmp_path, edit) -> str:
    with pytest.raises(PipelineConfigError) as caught:
        edited_config(tmp_path, edit)
    return str(caught.value)


def _destination(raw, name="contacts") -> dict:
    return next(d for d in raw["destinations"] if d["name"] == name)


def _column(raw, dataset, name) -> dict:
    extension = next(e for e in raw["data_extensions"] if e["asset"] == dataset)
    return next(c for c in extension["columns"] if c["name"] == name)


def _map_spend(raw):
    """contacts maps TotalSpend (labelled S1, which no_sensitive_data_in_crm forbids for crm_export)."""
    _destination(raw)["attributes"] = {"LastName": "LastName", "TotalSpend": SPEND_FIELD}


def _big_spenders(raw):
    """A segment whose rule reads TotalSpend, mapped to contacts only."""
    raw["segments"].append({"name": "big_spenders", "rule": {"column": "TotalSpend", "op": "gte", "value": 1000}})
    _destination(raw)["segments"] = {**_destination(raw)["segments"], "big_spenders": "big_spenders__c"}


def _no_third_party_responses(raw):
    """campaign_engagement.Response collected under a no-third-party consent (C2)."""
    _column(raw, "campaign_engagement", "Response")["labels"] = ["C2"]


# ---------------------------------------------------------------------------------------------- at load


def test_an_unknown_label_is_a_load_error_naming_it_and_the_vocabulary(tmp_path):
    message = _load_error(tmp_path, lambda raw: _column(raw, "contacts", "Company").update(labels=["X9"]))
    assert "data_extensions[0] (Contacts) > columns > Company > labels: unknown label 'X9'" in message
    assert "declared labels: C2, I1, S1 (governance > labels)" in message


def test_unknown_labels_and_actions_in_policies_and_destinations_are_load_errors(tmp_path):
    def edit(raw):
        raw["governance"]["policies"].append({"name": "typo", "labels": ["S2"], "forbidden_actions": ["crm_exprot"]})
        raw["governance"]["policies"].append({"name": "typo", "labels": ["C2"], "forbidden_actions": ["crm_export"]})
        _destination(raw, "leads")["marketing_actions"] = ["email_targetting"]

    message = _load_error(tmp_path, edit)
    assert "governance > policies[2] (typo) > labels: unknown label 'S2'" in message
    assert "governance > policies[2] (typo) > forbidden_actions: unknown action 'crm_exprot'" in message
    assert "destinations[1] (leads) > marketing_actions: unknown action 'email_targetting'" in message
    assert "governance > policies[3] (typo): policy name 'typo' is used twice; names must be unique" in message


def test_a_forbidden_label_mapped_as_an_attribute_does_not_load(tmp_path):
    message = _load_error(tmp_path, _map_spend)
    assert ("destinations[0] (contacts) > field Total_Spend__c: fed by contacts.TotalSpend, labelled S1 (Sensitive: "
            "health or financial data); policy no_sensitive_data_in_crm forbids S1 for crm_export, an action of "
            "destination 'contacts'") in message
    assert "policy_exceptions: [{policy: no_sensitive_data_in_crm, field: Total_Spend__c, reason: <why>}]" in message


def test_a_segment_carries_the_labels_of_the_columns_its_rule_reads(tmp_path):
    message = _load_error(tmp_path, _big_spenders)
    assert ("destinations[0] (contacts) > segments > big_spenders (status field big_spenders__c): the segment's rule "
            "reads contacts.TotalSpend, labelled S1") in message
    assert "{policy: no_sensitive_data_in_crm, segment: big_spenders, reason: <why>}" in message
    assert "leads" not in message  # the segment is not mapped there


def test_a_segment_carries_labels_through_has_related(tmp_path):
    message = _load_error(tmp_path, _no_third_party_responses)
    for dest in ("contacts", "leads"):
        for segment in ("positive_responders", "negative_responders"):
            assert (f"({dest}) > segments > {segment} (status field {segment}__c): the segment's rule reads "
                    "campaign_engagement.Response, labelled C2 (No export to third parties); policy "
                    "no_third_party_export forbids C2") in message
    assert "offer_clickers" not in message  # reads campaign_engagement, but not Response


def test_an_action_no_policy_forbids_for_the_label_loads(tmp_path):
    def edit(raw):
        _map_spend(raw)
        _destination(raw)["marketing_actions"] = ["email_targeting"]
        raw["governance"]["policies"][0]["forbidden_actions"] = ["crm_export"]

    config = edited_config(tmp_path, edit)
    assert SPEND_FIELD in config.destination("contacts").attribute_map.values()


# ---------------------------------------------------------------------------------------------- exceptions


def _allow_spend(reason="Finance approved CRM use of spend tiers (ticket GOV-12)"):
    def edit(raw):
        _map_spend(raw)
        _destination(raw)["policy_exceptions"] = [
            {"policy": "no_sensitive_data_in_crm", "field": SPEND_FIELD, "reason": reason}]
    return edit


def test_an_exception_with_a_reason_allows_the_pairing_and_shows_in_metadata(tmp_path):
    config = edited_config(tmp_path, _allow_spend())
    asset = build_sync_asset(config.destination("contacts"), config)
    metadata = asset.specs_by_key[dg.AssetKey(["salesforce", "contacts"])].metadata
    table = metadata["policy_exceptions"].value
    assert "| field Total_Spend__c | contacts.TotalSpend | S1 | no_sensitive_data_in_crm | crm_export |" in table
    assert "Finance approved CRM use of spend tiers (ticket GOV-12)" in table
    assert "| Total_Spend__c | attribute | contacts.TotalSpend | S1 |" in metadata["data_usage"].value


def test_an_exception_needs_a_reason_and_must_allow_something(tmp_path):
    for blank in ("  ", "\u200b", "\u200b\u2060 \t", "\ufeff\u00a0"):  # spaces, zero-width and format characters
        assert "needs a 'reason' in words" in _load_error(tmp_path, _allow_spend(reason=blank)), repr(blank)

    def unused(raw):
        _destination(raw)["policy_exceptions"] = [
            {"policy": "no_sensitive_data_in_crm", "field": "Email", "reason": "not needed"}]

    assert ("destinations[0] (contacts) > policy_exceptions[0]: policy no_sensitive_data_in_crm does not refuse "
            "field Email here, so the exception allows nothing; remove it") in _load_error(tmp_path, unused)

    def unknown(raw):
        _map_spend(raw)
        _destination(raw)["policy_exceptions"] = [{"policy": "no_sensitive", "field": SPEND_FIELD, "reason": "x"}]

    message = _load_error(tmp_path, unknown)
    assert "policy_exceptions[0]: unknown policy 'no_sensitive'" in message
    assert "field Total_Spend__c: fed by contacts.TotalSpend" in message  # and the violation is still refused


# ---------------------------------------------------------------------------------------------- in the sink


def _bypassed() -> tuple:
    """A config that maps TotalSpend to contacts, built around the loader (``model_copy`` validates nothing):
    what the sink's own check is for."""
    dest = CONTACTS.model_copy(update={"attributes": {"LastName": "LastName", "TotalSpend": SPEND_FIELD}})
    return CONFIG.model_copy(update={"destinations": [dest]}), dest


def test_the_sync_refuses_a_forbidden_flow_before_any_request(org, tmp_path):
    pipeline, dest = _bypassed()
    client = SalesforceClient(base_url=org.base_url, client_id=org.client_id, client_secret=org.client_secret)
    ledger = SyncLedger(tmp_path / "ledger.sqlite", f"salesforce:{org.org_id}")  # without logging in
    syncer = DestinationSync.for_pipeline(pipeline, dest, client, ledger, run_id="run-1")
    ids = ["003000000000001AAA"]
    with pytest.raises(PolicyViolation) as caught:
        syncer.run(members(ids), profiles(ids).assign(TotalSpend="12.00"))
    ledger.close()
    client.close()
    assert "Destination 'contacts' (Contact) was refused before anything was sent" in str(caught.value)
    assert "field Total_Spend__c: fed by contacts.TotalSpend, labelled S1" in str(caught.value)
    assert org.requests == []  # not even a token request


def test_the_sync_asset_and_its_dry_run_fail_with_the_violation_and_send_nothing(org, tmp_path):
    pipeline, dest = _bypassed()
    resources = {"salesforce": SalesforceResource(login_url=org.base_url, client_id=org.client_id,
                                                  client_secret=org.client_secret, username=org.username,
                                                  password=org.password, security_token=org.security_token),
                 "storage": StorageResource(base_dir=str(tmp_path / "storage"))}
    asset = build_sync_asset(dest, pipeline)
    for dry_run in (False, True):
        result = materialize([asset], resources, run_config={"ops": {"salesforce__contacts": {"config": {
            "dry_run": dry_run}}}})
        failure = step_failures(result)["salesforce__contacts"]
        assert "refused before anything was sent" in failure and "policy no_sensitive_data_in_crm" in failure
    assert org.requests == []


def test_the_check_command_reports_a_violating_config_file(tmp_path, monkeypatch):
    with pytest.raises(PipelineConfigError):
        edited_config(tmp_path, _map_spend)  # writes tmp_path / "pipeline.yaml"
    monkeypatch.setenv("SFMC_PIPELINE_STORAGE", str(tmp_path / "storage"))
    lines: list[str] = []
    status = connection_check.run(config_path=tmp_path / "pipeline.yaml", out=lines.append)
    assert status != 0
    (config_line,) = [line for line in lines if line.split()[1] == "config:"]
    assert config_line.startswith("FAILED")
    assert "field Total_Spend__c: fed by contacts.TotalSpend, labelled S1" in config_line
    assert "policy no_sensitive_data_in_crm forbids S1 for crm_export" in config_line


def test_the_check_command_reports_the_violation_the_sync_refuses_with(tmp_path):
    pipeline, dest = _bypassed()
    lines: list[str] = []
    report = Report(lines.append, lambda text: text)
    connection_check.check_policies(report, pipeline)
    (failed,) = [line for line in lines if line.startswith("FAILED")]
    assert "policies contacts" in failed and "fed by contacts.TotalSpend, labelled S1" in failed
    assert "no_sensitive_data_in_crm" in failed

    allowed = edited_config(tmp_path, _allow_spend())
    lines.clear()
    connection_check.check_policies(Report(lines.append, lambda text: text), allowed)
    assert any("allowed by exception: field Total_Spend__c (S1, policy no_sensitive_data_in_crm: Finance approved"
               in line for line in lines)


# ---------------------------------------------------------------------------------------------- in the UI


def test_labels_show_on_column_schemas_segments_and_destinations(tmp_path):
    def edit(raw):
        raw["governance"]["labels"]["E1"] = {"description": "Engagement data"}  # no policy restricts it
        _column(raw, "campaign_engagement", "OfferClicks")["labels"] = ["E1"]

    config = edited_config(tmp_path, edit)
    defs = build_definitions(config)
    schema = defs.resolve_assets_def("contacts").specs_by_key[dg.AssetKey("contacts")].metadata["dagster/column_schema"]
    email = next(c for c in schema.columns if c.name == "Email")
    assert email.tags == {"I1": ""} and "I1: Directly identifies a person" in email.description
    memberships = defs.resolve_assets_def("segment_memberships").specs_by_key[dg.AssetKey("segment_memberships")]
    assert "| offer_clickers | campaign_engagement.OfferClicks | E1 |" in memberships.metadata["segment_labels"].value
    sync_spec = defs.resolve_assets_def(dg.AssetKey(["salesforce", "leads"])).specs_by_key[
        dg.AssetKey(["salesforce", "leads"])]
    usage = sync_spec.metadata["data_usage"].value
    assert "| Email | attribute | contacts.Email | I1 |" in usage
    assert "| offer_clickers__c | status of segment offer_clickers | campaign_engagement.OfferClicks | E1 |" in usage
    assert sync_spec.metadata["marketing_actions"] == "crm_export"
