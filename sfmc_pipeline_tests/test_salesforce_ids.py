"""Contract: a Salesforce Id column holds one form of each Id, the 18-character case-safe one.
A well-formed 15-character Id is converted at conversion (so its two forms are one key: one
profile, one join, one duplicate), an 18-character Id with a correct suffix is kept, and anything
else is left as it is and quarantined, with the original value kept in the quarantine."""

import numpy as np
import pandas as pd
import pytest

from sfmc_pipeline.config.data_extensions import DataExtensionConfig
from sfmc_pipeline.datasets.conversion import convert_frame
from sfmc_pipeline.datasets.validation import validate_extract
from sfmc_pipeline.salesforce.ids import to_18, to_18_series, valid_id_mask
from sfmc_pipeline.segments.rules import HasRelated
from sfmc_pipeline_tests.segment_fixtures import (
    AS_OF,
    CONFIG,
    Evaluated,
    activity,
    contact,
    engagement,
    key,
    typed,
)

DOC_15, DOC_18 = "001A0000006Vm9r", "001A0000006Vm9rIAC"  # Salesforce's documented example


@pytest.mark.parametrize(
    "value, expected",
    [
        (DOC_15, DOC_18),  # 15 characters: the case-safe suffix is appended
        (DOC_18, DOC_18),  # 18 characters with the right suffix: kept
        ("0035e00000abcde", to_18("0035e00000abcde")),  # all lower case: suffix AAA
        ("0035E00000ABCDE", "0035E00000ABCDEQA5"),  # upper-case letters set the suffix bits
        (DOC_15 + "AAA", DOC_15 + "AAA"),  # 18 characters, wrong suffix: left for the check to reject
        (DOC_15.lower() + "IAC", DOC_15.lower() + "IAC"),  # right suffix for another casing: left as is
        (DOC_15[:14], DOC_15[:14]),  # 14 characters: left as is
        (DOC_15 + "I", DOC_15 + "I"),  # 16 characters: left as is
        ("0035e00000ABC-e", "0035e00000ABC-e"),  # 15 characters, not alphanumeric: left as is
        ("００1A0000006Vm9r", "００1A0000006Vm9r"),  # fullwidth digits are not Id characters
        (None, None),  # null stays null (nullability is checked separately)
    ],
)
def test_to_18_series_converts_only_well_formed_15_character_ids(value, expected):
    out = to_18_series(pd.Series([value], index=[7], dtype="string"))
    assert out.index.tolist() == [7] and str(out.dtype) == "string"
    assert (None if pd.isna(out.iloc[0]) else out.iloc[0]) == expected


def test_to_18_series_matches_the_scalar_rule_and_keeps_order():
    rng = np.random.default_rng(15)
    alphabet = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"))
    ids = ["".join(chars) for chars in alphabet[rng.integers(0, len(alphabet), size=(2000, 15))]]
    mixed = [to_18(i) if n % 3 == 0 else i for n, i in enumerate(ids)]  # every third already 18
    values = pd.Series(mixed, index=range(4000, 0, -2), dtype="string")  # a non-default index
    out = to_18_series(values)
    assert out.index.equals(values.index)
    assert out.tolist() == [to_18(i) for i in ids]
    assert valid_id_mask(out).all()


def _id_extension(**column) -> DataExtensionConfig:
    return DataExtensionConfig(key="T", asset="t", columns=[{"name": "Id", "type": "Text", **column}])


def test_conversion_types_an_id_column_as_its_18_character_form():
    raw = pd.DataFrame({"Id": [DOC_15, DOC_18, f" {DOC_15} ", "bad"]}, dtype="string")
    converted = convert_frame(raw, _id_extension(format="salesforce_id"))
    assert converted.frame["Id"].tolist() == [DOC_18, DOC_18, DOC_18, "bad"]
    assert converted.issues.empty  # a malformed Id is the salesforce_id check's to report


def test_a_text_column_without_the_id_format_is_not_touched():
    converted = convert_frame(pd.DataFrame({"Id": [DOC_15]}, dtype="string"), _id_extension())
    assert converted.frame["Id"].tolist() == [DOC_15]


def _validate(asset: str, rows: list[dict]):
    ext = CONFIG.extension(asset)
    return validate_extract(pd.DataFrame([{c.name: "" for c in ext.columns} | r for r in rows], dtype="string"), ext)


def test_a_15_character_key_is_valid_and_stored_in_its_18_character_form():
    result = _validate("contacts", [contact(1, SubscriberKey=key(1)[:15]), contact(2)])
    assert result.rows_quarantined == 0
    assert result.valid["SubscriberKey"].tolist() == [key(1), key(2)]


@pytest.mark.parametrize(
    "bad",
    [
        key(1)[:15] + "ZZZ",  # 18 characters with a wrong case-safe suffix (right: AAA)
        key(1)[:15].swapcase() + key(1)[15:],  # the suffix of another casing: a different record
        key(1)[:16],  # 16 characters
        key(1)[:14],  # 14 characters
        "0035e00000ABC-e",  # 15 characters, not alphanumeric
        "００35e00000ABCde",  # fullwidth digits
    ],
)
def test_a_malformed_id_is_quarantined_with_its_original_value(bad):
    result = _validate("contacts", [contact(1, SubscriberKey=bad), contact(2)])
    assert result.valid["SubscriberKey"].tolist() == [key(2)]
    row = result.quarantine.iloc[0]
    assert row["SubscriberKey"] == bad
    assert row["_checks"] == "salesforce_id"
    assert f"SubscriberKey: {bad!r} is not a Salesforce Id" in row["_reasons"]


def test_the_quarantine_keeps_the_15_character_form_as_served():
    result = _validate("contacts", [contact(1, SubscriberKey=key(1)[:15], Email="not-an-address")])
    assert result.quarantine["SubscriberKey"].tolist() == [key(1)[:15]]
    assert result.quarantine["_checks"].tolist() == ["email_format"]


@pytest.mark.parametrize(
    "asset, rows",
    [
        # one profile served under both forms of its Id: which row is right cannot be told
        ("contacts", [contact(1, SubscriberKey=key(1)[:15]), contact(1, FirstName="Other"), contact(2)]),
        # the 18-character form first, then the 15-character one
        ("contacts", [contact(1), contact(2), contact(1, SubscriberKey=key(1)[:15])]),
        # a composite key (SubscriberKey, CampaignId) with the two forms of the same Id
        ("campaign_engagement", [engagement(1, "C1", SubscriberKey=key(1)[:15]), engagement(1, "C1"),
                                 engagement(2, "C1")]),
    ],
)
def test_both_forms_of_one_id_are_a_duplicate_primary_key(asset, rows):
    result = _validate(asset, rows)
    assert result.valid["SubscriberKey"].tolist() == [key(2)]
    assert result.rows_quarantined == 2
    assert result.quarantine["_checks"].tolist() == ["primary_key", "primary_key"]
    assert sorted(result.quarantine["SubscriberKey"]) == sorted([key(1)[:15], key(1)])  # as served


def _related(profile_key: str, asset: str, related_key: str):
    profiles = typed("contacts", [contact(1, SubscriberKey=profile_key), contact(2)])
    rows = {
        "campaign_engagement": [engagement(1, "C1", SubscriberKey=related_key, Response="positive")],
        "activities": [{**activity(1, 1, "form_submit", 3), "SubscriberKey": related_key}],
    }
    related = {name: typed(name, rows[name] if name == asset else []) for name in rows}
    return Evaluated(profiles, related, key="SubscriberKey", as_of=AS_OF)


@pytest.mark.parametrize(
    "profile_key, related_key",
    [
        (key(1), key(1)[:15]),  # related row keyed by the 15-character form, profile by the 18
        (key(1)[:15], key(1)),  # profile keyed by the 15-character form, related row by the 18
        (key(1)[:15], key(1)[:15]),  # both by the 15-character form
    ],
)
@pytest.mark.parametrize("asset", ["campaign_engagement", "activities"])
def test_has_related_joins_the_two_forms_of_an_id(asset, profile_key, related_key):
    evaluator = _related(profile_key, asset, related_key)
    assert evaluator.selected(HasRelated(dataset=asset)) == {key(1)}
    assert evaluator.orphans(asset) == 0


@pytest.mark.parametrize(
    "segment, asset",
    [
        ("positive_responders", "campaign_engagement"),  # shipped rule over engagements
        ("form_submitters", "activities"),  # shipped rule over activities
    ],
)
def test_shipped_segments_select_a_profile_whose_related_rows_use_the_15_character_form(segment, asset):
    evaluator = _related(key(1), asset, key(1)[:15])
    assert evaluator.selected(CONFIG.segment(segment).rule) == {key(1)}
