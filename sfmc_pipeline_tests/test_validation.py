"""Contract: every input row lands in exactly one of valid / quarantine; each kind of bad row is
quarantined with its original values and a reason in plain words; nothing is dropped silently."""

import pandas as pd
import pytest

from sfmc_pipeline.config import load_pipeline_config
from sfmc_pipeline.datasets.salesforce_id import is_valid_id, to_18, valid_id_mask
from sfmc_pipeline.datasets.validation import validate_extract
from sfmc_pipeline.settings import DEFAULT_CONFIG_PATH

CONFIG = load_pipeline_config(DEFAULT_CONFIG_PATH)
ID_A = to_18("0035e00000ABCde")
ID_B = to_18("00Q5e00000xYZab")


def _contact(**overrides) -> dict:
    row = {
        "SubscriberKey": ID_A, "FirstName": "Ada", "LastName": "Lovelace", "Email": "ada@example.com",
        "Company": "", "LifecycleStage": "new", "OrderCount": "1", "TotalSpend": "10.00",
        "LastPurchaseDate": "6/1/2026 12:00:00 AM", "CreatedDate": "1/1/2026 12:00:00 AM",
    }
    row.update(overrides)
    return row


def _validate(rows: list[dict], asset="contacts"):
    return validate_extract(pd.DataFrame(rows, dtype="string"), CONFIG.extension(asset))


def test_salesforce_id_checksum():
    assert to_18("001A0000006Vm9r") == "001A0000006Vm9rIAC"  # Salesforce's documented example
    assert is_valid_id("001A0000006Vm9r")  # 15-character ids are accepted as they are
    assert is_valid_id(ID_A) and is_valid_id(ID_B)
    assert not is_valid_id(ID_A[:15] + "AAA")  # wrong case-safe suffix
    assert not is_valid_id("003xx")  # wrong length
    assert not is_valid_id("0035e00000ABC-e")  # not alphanumeric
    mask = valid_id_mask(pd.Series([ID_A, None, "bad"], dtype="string"))
    assert mask.tolist() == [True, True, False]  # nulls are left to the nullability check


def test_valid_rows_pass_with_types():
    result = _validate([_contact(), _contact(SubscriberKey=ID_B, Company="Acme", LifecycleStage="")])
    assert result.rows_valid == 2 and result.rows_quarantined == 0
    assert str(result.valid["OrderCount"].dtype) == "Int64"


@pytest.mark.parametrize(
    "overrides, check, reason",
    [
        ({"SubscriberKey": ID_A[:15] + "AAA"}, "salesforce_id", "is not a Salesforce Id"),  # bad id
        ({"Email": "no-at-sign.example.com"}, "email_format", "is not a valid email address"),  # malformed email
        ({"OrderCount": "-3"}, "min", "OrderCount: '-3' is less than 0"),  # negative count
        ({"LifecycleStage": "vip"}, "allowed_values", "'vip' is not one of: new, repeat, loyal, inactive"),  # unknown enum
        ({"LastName": ""}, "required", "LastName: required value is missing"),  # missing required value
        ({"FirstName": "x" * 41}, "length", "longer than 40 characters"),  # too long
        ({"CreatedDate": "yesterday"}, "type:Date", "CreatedDate: 'yesterday' is not a date"),  # unparseable
    ],
)
def test_each_invalid_case_is_quarantined_with_its_reason(overrides, check, reason):
    good = _contact(SubscriberKey=ID_B)
    bad = _contact(**overrides)
    result = _validate([good, bad])
    assert result.rows_valid == 1 and result.valid["SubscriberKey"].tolist() == [ID_B]
    assert result.rows_quarantined == 1
    row = result.quarantine.iloc[0]
    assert row["_row_number"] == 2
    assert check in row["_checks"].split(",")
    assert reason in row["_reasons"]
    for name, value in overrides.items():
        assert row[name] == value  # the original value is kept


def test_duplicate_primary_key_quarantines_every_copy():
    result = _validate([_contact(), _contact(FirstName="Other"), _contact(SubscriberKey=ID_B)])
    assert result.valid["SubscriberKey"].tolist() == [ID_B]
    assert result.quarantine["_row_number"].tolist() == [1, 2]
    assert result.quarantine["_checks"].tolist() == ["primary_key", "primary_key"]


def test_row_check_and_composite_key_on_engagement():
    base = {"SubscriberKey": ID_A, "CampaignId": "C1", "SendDate": "6/1/2026 12:00:00 AM", "Opens": "1",
            "Clicks": "1", "OfferClicks": "0", "Response": "", "LastEngagedDate": ""}
    rows = [base, {**base, "CampaignId": "C2", "OfferClicks": "2"}, {**base, "CampaignId": "C3", "Response": "maybe"}]
    result = _validate(rows, "campaign_engagement")
    assert result.rows_valid == 1
    reasons = dict(zip(result.quarantine["CampaignId"], result.quarantine["_reasons"]))
    assert reasons["C2"] == "breaks the rule OfferClicks <= Clicks"
    assert "'maybe' is not one of: positive, negative, none" in reasons["C3"]


def test_a_row_with_several_problems_lists_them_all_once():
    result = _validate([_contact(Email="bad", OrderCount="x", LifecycleStage="vip")])
    row = result.quarantine.iloc[0]
    assert row["_reasons"].count(";") == 2
    assert set(row["_columns"].split(",")) == {"Email", "OrderCount", "LifecycleStage"}


def test_row_count_invariant_on_the_sample_data():
    from sfmc_pipeline.settings import SAMPLE_DATA_DIR
    from sfmc_pipeline.sfmc.embedded_source import EmbeddedSampleSource

    source = EmbeddedSampleSource(SAMPLE_DATA_DIR)
    for ext in CONFIG.data_extensions:
        extract = source.read(ext)
        result = validate_extract(extract.frame, ext)
        assert result.rows_valid + result.rows_quarantined == result.rows_read == len(extract.frame)
        assert 0 < result.rows_quarantined  # the sample ships deliberately invalid rows
        assert result.quarantined_share < CONFIG.threshold_for(ext)
        assert result.quarantine["_reasons"].str.len().gt(0).all()
