"""Personal data is masked in everything Dagster shows (previews, sample payloads, failure tables,
log lines, step errors, alerts) unless ``governance > masking > show_personal_data``; the parquet
datasets, the quarantine and the sync-errors dataset keep full values. The runs read small samples built
from the tiny sample (``tiny_sample.py``) with the person below as a Contact."""

import json
import math

import dagster as dg
import pandas as pd
import pytest

from sfmc_pipeline import settings
from sfmc_pipeline.datasets.storage import DatasetStore, read_parquet
from sfmc_pipeline.definitions import build_resources
from sfmc_pipeline.defs.assets.crm import sync_errors_path
from sfmc_pipeline.defs.automation import failure_alerts as alerts
from sfmc_pipeline.governance.masking import Masker, mask_emails_in_text, mask_value
from sfmc_pipeline.settings import EXTRACT_DIR_ENV
from sfmc_pipeline_tests.flow_fixtures import (
    asset_metadata,
    edited_config,
    flow_assets,
    local_resources,
    materialize,
    seed_sample_org,
    step_failures,
    sync_metadata,
)
from sfmc_pipeline_tests.segment_fixtures import CONFIG
from sfmc_pipeline_tests.tiny_sample import tiny_profiles, write_tiny_sample

# A Contact of the samples below, and the Email of a profile quarantined for it (with a negative OrderCount).
CONTACT_ID, FIRST, LAST, EMAIL = "003hYSuNtIaG79bQVC", "Thomas", "Flores", "thomas.flores@mail.example.com"
BAD_EMAIL = "no-at-sign.example.com"
# Valid, 86 characters: fits SFMC's 254 but not Salesforce's Email field (80): rejected STRING_TOO_LONG.
LONG_EMAIL = "thomas.flores.with.a.long.address@department-of-marketing.region-north.mail.example.com"


def _sample(folder, email: str = EMAIL, quarantined: bool = False):
    """The tiny sample whose first profile is the Contact above with ``email``; with ``quarantined``, one more
    profile whose Email is BAD_EMAIL and whose OrderCount is -3."""
    profiles = tiny_profiles()
    profiles[0].update(SubscriberKey=CONTACT_ID, FirstName=FIRST, LastName=LAST, Email=email)
    if quarantined:
        bad = tiny_profiles(len(profiles) + 1)[-1]
        profiles.append({**bad, "Email": BAD_EMAIL, "OrderCount": "-3"})
    return write_tiny_sample(folder, contacts=profiles)


def _config(tmp_path, show: bool):
    def edit(raw):
        raw.setdefault("governance", {}).setdefault("masking", {})["show_personal_data"] = show
    return edited_config(tmp_path, edit)


def _all_logs(instance, result) -> str:
    """Every event of the run as text: log lines, materializations with their metadata, check results, errors."""
    return "\n".join(str(entry) for entry in instance.all_logs(result.run_id))


# ---------------------------------------------------------------------------------------------- the rule


def test_mask_value():
    assert mask_value("alice@example.com") == "a***@example.com"
    assert mask_value("thomas.flores@mail.example.com") == "t***@mail.example.com"
    assert mask_value("Thomas") == "T***" and mask_value("Müller") == "M***" and mask_value("x") == "x***"
    assert mask_value("no-at-sign.example.com") == "n***" and mask_value("bob@") == "b***"
    assert mask_value("") == ""
    assert mask_value(None) is None and math.isnan(mask_value(float("nan"))) and mask_value(pd.NA) is pd.NA
    assert mask_value(5551234) == "5***"


def test_mask_emails_in_text():
    assert mask_emails_in_text("Email: invalid email address: bob@x.org") == "Email: invalid email address: b***@x.org"
    assert (mask_emails_in_text("from 'ann.lee@shop.example' and <joe+1@mail.example.com>.")
            == "from 'a***@shop.example' and <j***@mail.example.com>.")
    assert mask_emails_in_text("no address here: 12 @ 3") == "no address here: 12 @ 3"
    assert mask_emails_in_text(None) is None


def test_the_masker_follows_the_labels_and_defaults():
    masker = Masker.for_pipeline(CONFIG)
    assert not masker.show_full
    assert {"FirstName", "LastName", "Email"} <= masker.columns["contacts"]
    assert "SubscriberKey" not in masker.columns["contacts"] and "Company" not in masker.columns["contacts"]

    frame = pd.DataFrame({"SubscriberKey": [CONTACT_ID, "003x"], "FirstName": [FIRST, None],
                          "Email": [EMAIL, "mei@shop.example"], "Company": ["Contoso", "Initech"]})
    masked = masker.frame(frame, "contacts")
    assert masked["FirstName"].iloc[0] == "T***" and pd.isna(masked["FirstName"].iloc[1])  # a null stays null
    assert masked.drop(columns="FirstName").to_dict("list") == {
        "SubscriberKey": [CONTACT_ID, "003x"], "Email": ["t***@mail.example.com", "m***@shop.example"],
        "Company": ["Contoso", "Initech"]}
    assert frame["Email"].tolist() == [EMAIL, "mei@shop.example"]  # the frame itself is left as it is
    assert masker.frame(frame, "activities").equals(frame)  # no identifying column of that dataset

    reasons = "Email: 'no-at-sign.example.com' is not a valid email address; OrderCount: '-3' is less than 0"
    assert masker.reasons(reasons, "contacts") == "Email: 'n***' is not a valid email address; OrderCount: '-3' is less than 0"
    assert masker.reasons("LastName: \"O'Brien-Smythe\" is longer than 80 characters", "contacts") == \
        "LastName: 'O***' is longer than 80 characters"

    # payloads by Salesforce field name, case-insensitively
    payload = {"Id": CONTACT_ID, "lastname": LAST, "FirstName": FIRST, "EMAIL": EMAIL, "new_customer__c": "x:realized"}
    assert masker.payload(payload, "contacts") == {"Id": CONTACT_ID, "lastname": "F***", "FirstName": "T***",
                                                   "EMAIL": "t***@mail.example.com", "new_customer__c": "x:realized"}
    error = {"record_id": CONTACT_ID, "stage": "rejected", "status_code": "STRING_TOO_LONG",
             "message": f"Last Name: data value too large: {LAST}-{FIRST} (max length=80)", "fields": "LastName",
             "payload": json.dumps({"LastName": f"{LAST}-{FIRST}", "Email": EMAIL})}
    [shown] = masker.failures([error], "contacts")
    assert shown["message"] == "Last Name: data value too large: F*** (max length=80)"
    assert json.loads(shown["payload"]) == {"LastName": "F***", "Email": "t***@mail.example.com"}
    assert shown["record_id"] == CONTACT_ID and error["message"].startswith("Last Name: data value too large: Flores")
    [other] = masker.failures([{**error, "message": f"see {EMAIL}", "payload": "{}"}], "contacts")
    assert other["message"] == "see t***@mail.example.com"  # an email is masked whatever the field

    assert masker.text(f"Bulk job 750x ended Failed: bad value {EMAIL}") == \
        "Bulk job 750x ended Failed: bad value t***@mail.example.com"
    logged = []
    masker.log(logged.append)(f"contacts: {EMAIL}")
    assert logged == ["contacts: t***@mail.example.com"]


def test_a_record_id_from_an_identifying_column_is_masked_too(tmp_path):
    def edit(raw):  # the profiles keyed by a column labelled identifying
        contacts = next(e for e in raw["data_extensions"] if e["asset"] == "contacts")
        key = next(c for c in contacts["columns"] if c["name"] == "SubscriberKey")
        key["labels"] = ["I1"]
    masker = Masker.for_pipeline(edited_config(tmp_path, edit))
    assert masker.payload({"Id": CONTACT_ID, "Company": "Contoso"}, "contacts") == {"Id": "0***", "Company": "Contoso"}
    [row] = masker.failures([{"record_id": CONTACT_ID, "message": f"Contact ID: bad id: {CONTACT_ID}"}], "contacts")
    assert row == {"record_id": "0***", "message": "Contact ID: bad id: 0***"}
    assert masker.column_values([CONTACT_ID], "contacts", "SubscriberKey") == ["0***"]


def test_show_personal_data_returns_everything_unchanged(tmp_path):
    masker = Masker.for_pipeline(_config(tmp_path, True))
    assert masker.show_full
    frame = pd.DataFrame({"FirstName": [FIRST], "Email": [EMAIL]})
    assert masker.frame(frame, "contacts") is frame
    assert masker.reasons(f"Email: {BAD_EMAIL!r} is not a valid email address", "contacts") == \
        f"Email: {BAD_EMAIL!r} is not a valid email address"
    assert masker.payload({"Id": CONTACT_ID, "Email": EMAIL}, "contacts") == {"Id": CONTACT_ID, "Email": EMAIL}
    error = {"record_id": CONTACT_ID, "message": f"invalid: {EMAIL}", "payload": json.dumps({"Email": EMAIL})}
    assert masker.failures([error], "contacts") == [error]
    assert masker.text(EMAIL) == EMAIL


# ---------------------------------------------------------------------------------------------- datasets


@pytest.mark.parametrize("show", [False, True], ids=["masked", "shown"])
def test_dataset_preview_and_quarantine_in_metadata_and_logs(tmp_path, show):
    config = _config(tmp_path, show)
    instance = dg.DagsterInstance.ephemeral()
    sample = _sample(tmp_path / "sample", quarantined=True)
    result = materialize(flow_assets(config), local_resources(tmp_path / "storage", sample), selection=["contacts"],
                         instance=instance)
    assert result.success, step_failures(result)
    meta = asset_metadata(result, "contacts")
    preview, quarantine, text = meta["preview"], meta["quarantine_preview"], _all_logs(instance, result)
    if show:
        assert f"| {CONTACT_ID} | {FIRST} | {LAST} | {EMAIL} |" in preview
        assert f"Email: {BAD_EMAIL!r} is not a valid email address" in quarantine
        assert EMAIL in text and BAD_EMAIL in text
    else:
        assert f"| {CONTACT_ID} | T*** | F*** | t***@mail.example.com |" in preview
        assert "Email: 'n***' is not a valid email address" in quarantine
        for value in (EMAIL, BAD_EMAIL, f"| {FIRST} |", f"| {LAST} |"):
            assert value not in preview and value not in quarantine and value not in text
        assert "OrderCount: '-3' is less than 0" in quarantine  # values of other columns stay readable

    store = DatasetStore(tmp_path / "storage")  # the files keep full values either way
    dataset = store.read_dataset("contacts").set_index("SubscriberKey")
    assert (dataset.loc[CONTACT_ID, "FirstName"], dataset.loc[CONTACT_ID, "Email"]) == (FIRST, EMAIL)
    kept = read_parquet(store.quarantine_path("contacts"))
    assert BAD_EMAIL in kept["Email"].tolist()
    assert any(f"{BAD_EMAIL!r}" in r for r in kept["_reasons"].tolist())


# ---------------------------------------------------------------------------------------------- CRM sync


@pytest.mark.parametrize("show", [False, True], ids=["masked", "shown"])
def test_sync_sample_payloads_and_failures(tmp_path, show):
    config = _config(tmp_path, show)
    sample = _sample(tmp_path / "sample", email=LONG_EMAIL)
    storage = tmp_path / "storage"
    assets, resources = flow_assets(config), local_resources(storage, sample)

    dry_instance = dg.DagsterInstance.ephemeral()
    dry = materialize(assets, resources, instance=dry_instance,
                      run_config={"ops": {"salesforce__contacts": {"config": {"dry_run": True}}}})
    assert dry.success, step_failures(dry)
    samples = sync_metadata(dry)["contacts"]["sample_payloads"]
    assert len(samples) == 5 and all({"Id", "LastName", "FirstName", "Email"} <= set(s) for s in samples)
    profiles = DatasetStore(storage).read_dataset("contacts").set_index("SubscriberKey")
    dry_text = _all_logs(dry_instance, dry)
    for shown in samples:
        full = profiles.loc[shown["Id"]]
        for column in ("LastName", "FirstName", "Email"):
            if show:
                assert shown[column] == full[column]
            else:
                assert shown[column] == mask_value(full[column]) != full[column]
                assert full[column] not in dry_text if column == "Email" else f'"{full[column]}"' not in dry_text

    instance = dg.DagsterInstance.ephemeral()
    result = materialize(assets, resources, instance=instance)
    assert result.success, step_failures(result)  # one rejected record: a WARN only
    meta = sync_metadata(result)["contacts"]
    assert meta["records_rejected"] == 1 and meta["errors.STRING_TOO_LONG"] == 1
    failures, text = meta["failures"], _all_logs(instance, result)
    local_part = LONG_EMAIL.split("@")[0] + "@"
    if show:  # (a cell is cut at 100 characters)
        assert f"Email: data value too large: {LONG_EMAIL[:60]}" in failures
        assert local_part in text
    else:
        assert "Email: data value too large: t***@department-of-marketing.region-north.mail.example.com" in failures
        assert local_part not in failures and local_part not in text
    assert CONTACT_ID in failures  # a Salesforce Id does not identify a person: shown in full

    [error] = read_parquet(sync_errors_path(DatasetStore(storage), "contacts")).to_dict("records")
    assert LONG_EMAIL in error["message"] and json.loads(error["payload"])["Email"] == LONG_EMAIL  # full values


@pytest.fixture()
def sample_org(fake_salesforce, monkeypatch, tmp_path):
    """The fake org holding the records and status fields of a small sample (``_sample``), which the embedded default
    reads, with the SALESFORCE_* variables pointing at it."""
    sample = _sample(tmp_path / "sample")
    org = seed_sample_org(fake_salesforce, sample=sample)
    for name, value in {EXTRACT_DIR_ENV: str(sample),
                        "SALESFORCE_LOGIN_URL": org.base_url, "SALESFORCE_CLIENT_ID": org.client_id,
                        "SALESFORCE_CLIENT_SECRET": org.client_secret, "SALESFORCE_USERNAME": org.username,
                        "SALESFORCE_PASSWORD": org.password, "SALESFORCE_SECURITY_TOKEN": org.security_token,
                        "SFMC_PIPELINE_STORAGE": str(tmp_path / "storage")}.items():
        monkeypatch.setenv(name, value)
    return org


@pytest.mark.parametrize("show", [False, True], ids=["masked", "shown"])
def test_an_email_in_a_salesforce_error_is_masked_in_the_step_error_and_the_alert(sample_org, tmp_path, monkeypatch,
                                                                                 show):
    def edit(raw):  # the small sample's 18 Contacts go through a Bulk API 2.0 job too, its 6 Leads do not
        raw["governance"]["masking"]["show_personal_data"] = show
        raw["sync"]["bulk_threshold"] = 10
    config = edited_config(tmp_path, edit)
    sample_org.fail_next_bulk_job(f"InvalidBatch : invalid email address: {EMAIL}")  # the Contacts' Bulk job
    instance = dg.DagsterInstance.ephemeral()
    result = materialize(flow_assets(config), build_resources(), instance=instance)
    assert not result.success
    error = step_failures(result)["salesforce__contacts"]
    assert "ended Failed" in error

    posted = []
    monkeypatch.setenv(settings.ALERT_WEBHOOK_ENV, "https://hooks.example.com/services/T0/B0/x")
    monkeypatch.setattr(alerts, "post_alert", lambda url, text, log: posted.append(text) or True)
    run = instance.get_run_by_id(result.run_id)
    [record] = instance.all_logs(result.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
    alerts.build_failure_alerts(config)(dg.build_run_status_sensor_context(
        sensor_name=alerts.ALERT_SENSOR_NAME, dagster_event=record.dagster_event, dagster_instance=instance,
        dagster_run=run).for_run_failure())
    [alert] = posted
    assert "step salesforce__contacts" in alert

    text = _all_logs(instance, result)
    if show:
        assert f"invalid email address: {EMAIL}" in error and EMAIL in alert and EMAIL in text
    else:
        assert "invalid email address: t***@mail.example.com" in error
        assert "invalid email address: t***@mail.example.com" in alert
        assert EMAIL not in error and EMAIL not in alert and EMAIL not in text


@pytest.mark.parametrize("show", [False, True], ids=["masked", "shown"])
def test_the_alert_masks_an_email_in_any_step_error(tmp_path, monkeypatch, show):
    @dg.op
    def write_segments():
        raise dg.Failure(description=f"the org refused {EMAIL}")

    @dg.job(name="alert_probe")
    def alert_probe():
        write_segments()

    instance = dg.DagsterInstance.ephemeral()
    result = alert_probe.execute_in_process(instance=instance, raise_on_error=False)
    [record] = instance.all_logs(result.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
    context = dg.build_run_status_sensor_context(
        sensor_name=alerts.ALERT_SENSOR_NAME, dagster_event=record.dagster_event, dagster_instance=instance,
        dagster_run=instance.get_run_by_id(result.run_id)).for_run_failure()
    posted = []
    monkeypatch.setenv(settings.ALERT_WEBHOOK_ENV, "https://hooks.example.com/services/T0/B0/x")
    monkeypatch.setattr(alerts, "post_alert", lambda url, text, log: posted.append(text) or True)
    alerts.build_failure_alerts(_config(tmp_path, show))(context)
    alerts.failure_alerts(context)  # the sensor built without a config masks
    assert "step write_segments: the org refused " + (EMAIL if show else "t***@mail.example.com") in posted[0]
    assert "the org refused t***@mail.example.com" in posted[1] and EMAIL not in posted[1]
