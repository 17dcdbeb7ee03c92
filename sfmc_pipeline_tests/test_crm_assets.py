"""Contract: the sync assets run the whole flow from the Dagster side: on the embedded local
target with no credentials (a second run sends nothing), against Salesforce when the
SALESFORCE_* variables are set (real HTTP to the fake org), as a dry run from run config, and
never show a secret in logs, metadata or errors.

The local and the Salesforce-mode end-to-end runs read the full shipped sample (the smoke runs of
this flow); the other tests read the tiny sample (``tiny_sample.py``) or a larger one built the same way."""

import dagster as dg
import pandas as pd
import pytest

from sfmc_pipeline.datasets.storage import DatasetStore
from sfmc_pipeline.definitions import build_resources
from sfmc_pipeline.settings import EXTRACT_DIR_ENV
from sfmc_pipeline_tests.flow_fixtures import (
    ASSETS,
    check_evaluations,
    local_crm_records,
    local_resources,
    materialize,
    seed_sample_org,
    step_failures,
    sync_metadata,
)
from sfmc_pipeline_tests.segment_fixtures import CONFIG
from sfmc_pipeline_tests.tiny_sample import tiny_profiles, write_tiny_sample

PASSWORD = "correct-horse-battery"
TOKEN = "SECTOKEN987654"


def _checks(result) -> dict[tuple[str, str], dg.AssetCheckEvaluation]:
    return {(c.asset_key.path[-1], c.check_name): c for c in check_evaluations(result)}


def test_local_target_end_to_end(tmp_path):
    resources = local_resources(tmp_path)
    first = materialize(ASSETS, resources)
    assert first.success
    meta = sync_metadata(first)
    assert meta["contacts"]["mode"] == "local" and meta["leads"]["mode"] == "local"
    assert meta["contacts"]["records_succeeded"] == meta["contacts"]["records_considered"] > 0
    assert meta["contacts"]["records_skipped"] == meta["leads"]["records_considered"]
    checks = _checks(first)
    assert checks[("contacts", "reconciliation")].passed and checks[("leads", "failed_records_below_threshold")].passed
    contacts = local_crm_records(tmp_path)["Contact"]
    statuses = DatasetStore(tmp_path).read_dataset("segment_statuses")
    new = statuses[(statuses["segment"] == "new_customer") & statuses["profile_key"].str.startswith("003")]
    written = {r["Id"] for r in contacts if r.get("new_customer__c") == "new_customer:realized"}
    assert written == set(new["profile_key"])

    second = materialize(ASSETS, resources)
    assert second.success
    assert sync_metadata(second)["contacts"]["records_sent"] == 0


@pytest.fixture()
def sample_org(fake_salesforce):
    """The fake org holding the shipped sample's records and the shipped status fields."""
    return seed_sample_org(fake_salesforce)


def _small_org(org, monkeypatch, folder, profiles: int):
    """``org`` seeded for a tiny-style sample of ``profiles`` profiles written to ``folder``, which the
    embedded default reads (SFMC_PIPELINE_EXTRACT_DIR)."""
    sample = write_tiny_sample(folder, contacts=tiny_profiles(profiles))
    monkeypatch.setenv(EXTRACT_DIR_ENV, str(sample))
    return seed_sample_org(org, sample=sample)


@pytest.fixture()
def tiny_org(fake_salesforce, monkeypatch, tmp_path_factory):
    """The fake org holding the tiny sample's records (18 Contacts, 6 Leads), which the run reads."""
    return _small_org(fake_salesforce, monkeypatch, tmp_path_factory.mktemp("extract"), 24)


def _salesforce_env(monkeypatch, org, tmp_path, password=PASSWORD):
    org.password, org.security_token = PASSWORD, TOKEN
    monkeypatch.setenv("SALESFORCE_LOGIN_URL", org.base_url)
    monkeypatch.setenv("SALESFORCE_CLIENT_ID", org.client_id)
    monkeypatch.setenv("SALESFORCE_CLIENT_SECRET", org.client_secret)
    monkeypatch.setenv("SALESFORCE_USERNAME", org.username)
    monkeypatch.setenv("SALESFORCE_PASSWORD", password)
    monkeypatch.setenv("SALESFORCE_SECURITY_TOKEN", TOKEN)
    monkeypatch.setenv("SFMC_PIPELINE_STORAGE", str(tmp_path))


def _all_text(result, instance) -> str:
    logs = instance.all_logs(result.run_id)
    return "\n".join(str(entry) for entry in logs)


def test_salesforce_mode_via_environment_never_shows_secrets(sample_org, monkeypatch, tmp_path):
    _salesforce_env(monkeypatch, sample_org, tmp_path)
    instance = dg.DagsterInstance.ephemeral()
    result = materialize(ASSETS, build_resources(), instance=instance)
    assert result.success
    meta = sync_metadata(result)
    assert meta["contacts"]["mode"] == "salesforce" and meta["contacts"]["api_version"] == "66.0"
    assert meta["contacts"]["records_succeeded"] > 0 and meta["contacts"]["records_failed"] == 0
    assert meta["contacts"]["api_usage"].split(" ")[0].endswith("/15000")
    # 2,372 Contacts to send: at the 2,000-record threshold they go through one Bulk API 2.0 job (create, upload,
    # close, poll, results); 604 Leads through sObject Collections, 200 a request
    assert meta["contacts"]["write_path"] == "Bulk API 2.0" and meta["contacts"]["write_requests"] == 0
    assert meta["contacts"]["bulk_requests"] == meta["contacts"]["write_requests_minimum"] == 5
    assert meta["leads"]["write_path"] == "sObject Collections"
    assert meta["leads"]["write_requests"] == meta["leads"]["write_requests_minimum"] == -(-meta["leads"]["records_sent"] // 200)
    assert _checks(result)[("contacts", "reconciliation")].passed
    text = _all_text(result, instance)
    for secret in (PASSWORD, TOKEN, PASSWORD + TOKEN, sample_org.client_secret, *sample_org.issued_tokens):
        assert secret not in text


def test_wrong_password_fails_clearly_without_the_secret(tiny_org, monkeypatch, tmp_path):
    wrong = "not-the-password-42"
    _salesforce_env(monkeypatch, tiny_org, tmp_path, password=wrong)
    instance = dg.DagsterInstance.ephemeral()
    result = materialize(ASSETS, build_resources(), instance=instance)
    assert not result.success
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    message = failures[0].event_specific_data.error.message
    assert "invalid_grant" in message and "SALESFORCE_PASSWORD" in message
    text = _all_text(result, instance)
    for secret in (wrong, TOKEN, wrong + TOKEN, tiny_org.client_secret):
        assert secret not in text


def test_dry_run_from_run_config(tiny_org, monkeypatch, tmp_path):
    _salesforce_env(monkeypatch, tiny_org, tmp_path)
    run_config = {"ops": {f"salesforce__{d.name}": {"config": {"dry_run": True}} for d in CONFIG.destinations}}
    result = materialize(ASSETS, build_resources(), run_config=run_config)
    assert result.success
    meta = sync_metadata(result)["contacts"]
    assert meta["dry_run"] is True and meta["records_sent"] == 0 and meta["records_to_send"] > 0
    assert "| field | status | records |" in meta["would_write"]
    assert tiny_org.write_log == []


def test_drift_in_the_crm_fails_the_run_and_the_next_run_repairs_it(tiny_org, monkeypatch, tmp_path):
    _salesforce_env(monkeypatch, tiny_org, tmp_path)
    first = materialize(ASSETS, build_resources())
    assert first.success
    assert sync_metadata(first)["contacts"]["target"].startswith(f"Salesforce org {tiny_org.org_id}")
    edited = next(rid for rid, r in tiny_org.records["Contact"].items() if r.get("new_customer__c"))
    tiny_org.records["Contact"][edited]["new_customer__c"] = "edited by hand"

    def sync_contacts():
        return materialize(ASSETS, build_resources(), selection=[dg.AssetKey(["salesforce", "contacts"])])

    drifted = sync_contacts()
    assert not drifted.success  # a green run means the CRM is right
    check = _checks(drifted)[("contacts", "reconciliation")]
    assert not check.passed and check.metadata["drifted_records"].value == 1
    failure = next(e for e in drifted.all_events if e.event_type_value == "STEP_FAILURE")
    assert "Reconciliation of contacts" in failure.event_specific_data.error.message

    repaired = sync_contacts()
    assert repaired.success and sync_metadata(repaired)["contacts"]["records_sent"] == 1
    assert tiny_org.records["Contact"][edited]["new_customer__c"].startswith("new_customer:")
    assert _checks(repaired)[("contacts", "reconciliation")].passed


def test_failed_records_above_the_threshold_fail_the_step_and_below_it_only_warn(fake_salesforce, monkeypatch,
                                                                                 tmp_path, tmp_path_factory):
    # 100 profiles, 75 of them Contacts: 3 of them still deleted are within the 5% of records read back that
    # reconciliation allows not to be found (4%), so the second run can stay green
    sample_org = _small_org(fake_salesforce, monkeypatch, tmp_path_factory.mktemp("extract"), 100)
    _salesforce_env(monkeypatch, sample_org, tmp_path)
    contacts = sorted(sample_org.records["Contact"])
    assert len(contacts) == 75
    for rid in contacts[: len(contacts) // 10]:  # ~10% of the Contacts were deleted in the org
        sample_org.delete_record("Contact", rid)
    result = materialize(ASSETS, build_resources())
    assert not result.success
    checks = _checks(result)
    threshold = checks[("contacts", "failed_records_below_threshold")]
    assert not threshold.passed and threshold.severity == dg.AssetCheckSeverity.ERROR
    message = step_failures(result)["salesforce__contacts"]
    assert "above the 5% threshold" in message and "sync_errors" in message
    meta = sync_metadata(result)["contacts"]
    assert meta["records_succeeded"] > 0  # the rest went through
    # Leads had no failures: both of its checks pass
    assert checks[("leads", "failed_records_below_threshold")].passed and checks[("leads", "no_failed_records")].passed

    failed = sorted(pd.read_parquet(tmp_path / "crm" / "sync_errors" / "contacts.parquet")["record_id"])
    assert meta["standing_records_gone"] == meta["errors.ENTITY_IS_DELETED"] == len(failed) > 3  # not sent every run

    deleted = failed  # the deleted records the sync manages
    for rid in deleted[3:]:  # all but 3 are restored; the operator asks for the held-back records to be sent again
        sample_org.add_record("Contact", rid, LastName="x")
    again = materialize(ASSETS, build_resources(),
                        run_config={"ops": {"salesforce__contacts": {"config": {"retry_standing_failures": True}}}})
    assert again.success, step_failures(again)  # the 3 still deleted fail as they stood: the run stays green
    meta = sync_metadata(again)["contacts"]
    assert meta["records_succeeded"] >= len(deleted) - 3 and meta["records_failed_again"] == 3
    assert meta["records_failed_new"] == 0 and meta["standing_records_gone"] == 3
    warn = _checks(again)[("contacts", "no_failed_records")]
    assert not warn.passed and warn.severity == dg.AssetCheckSeverity.WARN
    assert _checks(again)[("contacts", "failed_records_below_threshold")].passed
    assert all(sample_org.records["Contact"][rid].get("LastName") != "x" for rid in deleted[3:])  # written again
