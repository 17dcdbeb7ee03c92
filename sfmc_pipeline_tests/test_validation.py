"""Contract: every input row lands in exactly one of valid / quarantine; each kind of bad row is
quarantined with its original values and a reason in plain words; nothing is dropped silently."""

import pandas as pd
import pytest

from sfmc_pipeline.config.data_extensions import DataExtensionConfig
from sfmc_pipeline.config.loader import load_pipeline_config
from sfmc_pipeline.datasets.validation import validate_extract
from sfmc_pipeline.salesforce.ids import is_valid_id, to_18, valid_id_mask
from sfmc_pipeline.settings import DEFAULT_CONFIG_PATH
from sfmc_pipeline_tests.shipped_sample import SHIPPED_SAMPLE

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
    from sfmc_pipeline.sfmc.embedded_source import EmbeddedSampleSource

    source = EmbeddedSampleSource(SHIPPED_SAMPLE)
    for ext in CONFIG.data_extensions:
        extract = source.read(ext)
        result = validate_extract(extract.frame, ext)
        assert result.rows_valid + result.rows_quarantined == result.rows_read == len(extract.frame)
        assert 0 < result.rows_quarantined  # the sample ships deliberately invalid rows
        assert result.quarantined_share < CONFIG.threshold_for(ext)
        assert result.quarantine["_reasons"].str.len().gt(0).all()


INT64_RANGE = "is outside the range of a whole-number column (-9223372036854775808 to 9223372036854775807)"


@pytest.mark.parametrize(
    "overrides, check, reason",
    [
        # Number (Int64): beyond int64 is quarantined with the value as served, never wrapped
        ({"OrderCount": "18446744073709551615"}, "type:Number", f"OrderCount: '18446744073709551615' {INT64_RANGE}"),
        ({"OrderCount": "9223372036854775808"}, "type:Number", f"OrderCount: '9223372036854775808' {INT64_RANGE}"),
        ({"OrderCount": "-9223372036854775809"}, "type:Number", f"OrderCount: '-9223372036854775809' {INT64_RANGE}"),
        # Number: not a number, reported as such (not as a missing value)
        ({"OrderCount": "１２３"}, "type:Number", "OrderCount: '１２３' is not a number"),  # fullwidth digits
        ({"OrderCount": "١٢٣"}, "type:Number", "OrderCount: '١٢٣' is not a number"),  # Arabic-Indic digits
        ({"OrderCount": "1,234"}, "type:Number", "OrderCount: '1,234' is not a number"),  # thousands separator
        ({"OrderCount": "1e5"}, "type:Number", "OrderCount: '1e5' is not a number"),  # scientific notation
        ({"OrderCount": "12abc"}, "type:Number", "OrderCount: '12abc' is not a number"),  # trailing letters
        ({"OrderCount": "½"}, "type:Number", "OrderCount: '½' is not a number"),  # vulgar fraction
        ({"OrderCount": "³"}, "type:Number", "OrderCount: '³' is not a number"),  # superscript digit
        # Decimal(18,2): more digits than it holds is quarantined, never rounded
        ({"TotalSpend": "12.345"}, "type:Decimal", "TotalSpend: '12.345' is more precise than a Decimal(18,2) column holds"),
        ({"TotalSpend": "12345678901234567"}, "type:Decimal", "TotalSpend: '12345678901234567' is outside the range of a Decimal(18,2) column"),
        # Decimal: not a number (these raised ArrowInvalid out of validate_extract)
        ({"TotalSpend": "１２３.４５"}, "type:Decimal", "TotalSpend: '１２３.４５' is not a number"),  # fullwidth digits
        ({"TotalSpend": "١٢٣"}, "type:Decimal", "TotalSpend: '١٢٣' is not a number"),  # Arabic-Indic digits
        ({"TotalSpend": "1e3"}, "type:Decimal", "TotalSpend: '1e3' is not a number"),  # scientific notation
        # Date: ASCII digits only
        ({"CreatedDate": "1/15/２０２６"}, "type:Date", "CreatedDate: '1/15/２０２６' is not a date"),  # fullwidth year
        # a configured bound quotes the value as served, not its typed form
        ({"OrderCount": "-03"}, "min", "OrderCount: '-03' is less than 0"),  # not '-3'
        ({"TotalSpend": "-5.5"}, "min", "TotalSpend: '-5.5' is less than 0"),  # not '-5.50'
    ],
)
def test_values_a_column_cannot_hold_are_quarantined_one_row_with_the_value_as_served(overrides, check, reason):
    result = _validate([_contact(SubscriberKey=ID_B), _contact(**overrides)])
    assert result.valid["SubscriberKey"].tolist() == [ID_B]
    row = result.quarantine.iloc[0]
    assert row["_checks"] == check  # one reason, and not "required"
    assert row["_reasons"].startswith(reason)
    assert "missing" not in row["_reasons"]
    for name, value in overrides.items():
        assert row[name] == value  # the original value is kept
    (summary, count), = result.top_reasons()
    assert count == 1 and repr(next(iter(overrides.values()))) not in summary  # counted without the value


def test_a_nullable_column_does_not_null_a_value_that_is_not_a_number():
    ext = DataExtensionConfig(
        key="T", asset="t", columns=[{"name": "N", "type": "Number", "nullable": True}]
    )
    result = validate_extract(pd.DataFrame({"N": ["1", "１２３", ""]}, dtype="string"), ext)
    assert result.valid["N"].tolist()[:1] == [1] and result.rows_valid == 2  # "" is a genuine null
    assert result.quarantine["N"].tolist() == ["１２３"]
    assert result.quarantine["_reasons"].tolist() == ["N: '１２３' is not a number (expected a whole number)"]


def test_an_extract_full_of_unconvertible_values_is_quarantined_row_by_row():
    bad = ["１２３", "١٢٣", "1,234", "1e5", "12abc", "½", "²", "18446744073709551615", "-9223372036854775809"]
    rows = [_contact(SubscriberKey=to_18(f"0035e0000{n:06d}"), OrderCount=v, TotalSpend=v) for n, v in enumerate(bad)]
    rows.append(_contact(SubscriberKey=ID_B))
    result = _validate(rows)  # no exception escapes
    assert result.valid["SubscriberKey"].tolist() == [ID_B]
    assert result.quarantine["OrderCount"].tolist() == bad
    assert (result.quarantine["_checks"] == "type:Number,type:Decimal").all()
    assert result.rows_valid + result.rows_quarantined == result.rows_read == len(rows)
