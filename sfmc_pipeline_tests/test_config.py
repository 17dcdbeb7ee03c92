"""Contract: pipeline.yaml is validated when the code location loads, and every mistake is
reported with the file, the entry (by key/name) and what to change."""

import copy

import pytest
import yaml

from sfmc_pipeline.config import PipelineConfigError, SfmcType, load_pipeline_config
from sfmc_pipeline.config.loader import parse_pipeline_config
from sfmc_pipeline.settings import DEFAULT_CONFIG_PATH


@pytest.fixture()
def shipped() -> dict:
    return yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())


def _error(raw: dict) -> str:
    with pytest.raises(PipelineConfigError) as info:
        parse_pipeline_config(raw, source="pipeline.yaml")
    return str(info.value)


def test_shipped_config_describes_the_three_extensions():
    config = load_pipeline_config(DEFAULT_CONFIG_PATH)
    assert [(e.key, e.asset) for e in config.data_extensions] == [
        ("Contacts", "contacts"),
        ("CampaignEngagement", "campaign_engagement"),
        ("Activities", "activities"),
    ]
    contacts = config.extension("contacts")
    assert contacts.primary_key == ["SubscriberKey"]
    assert contacts.column("SubscriberKey").format == "salesforce_id"
    assert contacts.column("TotalSpend").type is SfmcType.DECIMAL
    assert config.extension("campaign_engagement").primary_key == ["SubscriberKey", "CampaignId"]
    assert config.extension("activities").incremental_column == "OccurredAt"
    assert config.threshold_for(contacts) == 0.05


@pytest.mark.parametrize(
    "mutate, expected",
    [
        # an SFMC type that does not exist: the allowed names are listed
        (lambda c: c["data_extensions"][1]["columns"][3].update(type="Integer"),
         ["data_extensions[1] (CampaignEngagement) > columns[3] (Opens) > type", "'Integer'", "'Number'"]),
        # two extensions landing as the same asset
        (lambda c: c["data_extensions"][2].update(asset="contacts"),
         ["asset name 'contacts' is used twice"]),
        # primary key spelled differently from the column
        (lambda c: c["data_extensions"][0].update(primary_key=["SubscriberKy"]),
         ["data_extensions[0] (Contacts)", "primary key 'SubscriberKy' is not among the columns"]),
        # a misspelt setting is not silently ignored
        (lambda c: c["data_extensions"][0].update(colums=[]),
         ["unknown setting 'colums'; remove it or fix the spelling"]),
        # Decimal needs its shape
        (lambda c: c["data_extensions"][0]["columns"][7].pop("precision"),
         ["columns[7] (TotalSpend)", "Decimal needs 'precision' and 'scale'"]),
        # a row check comparing a date with a number
        (lambda c: c["data_extensions"][1]["row_checks"][0].update(other_column="SendDate"),
         ["row check 'OfferClicks <= SendDate' compares Number with Date"]),
        # length on a number makes no sense
        (lambda c: c["data_extensions"][0]["columns"][6].update(length=5),
         ["columns[6] (OrderCount)", "'length' applies to text types only"]),
        # the same field twice, differing only in case (SFMC lower-cases names)
        (lambda c: c["data_extensions"][2]["columns"].append({"name": "detail", "type": "Text"}),
         ["column 'detail' is listed twice"]),
        # incremental column must be a date
        (lambda c: c["data_extensions"][2].update(incremental_column="Detail"),
         ["incremental_column 'Detail' must name a Date column"]),
        # threshold out of range
        (lambda c: c["settings"].update(quarantine_threshold=5),
         ["settings > quarantine_threshold"]),
    ],
)
def test_bad_config_names_the_entry_and_the_fix(shipped, mutate, expected):
    raw = copy.deepcopy(shipped)
    mutate(raw)
    message = _error(raw)
    assert message.startswith("Invalid pipeline config pipeline.yaml:")
    for fragment in expected:
        assert fragment in message


def test_every_problem_is_reported_at_once(shipped):
    raw = copy.deepcopy(shipped)
    raw["data_extensions"][0]["primary_key"] = ["Nope"]
    raw["data_extensions"][1]["columns"][0]["type"] = "Texty"
    message = _error(raw)
    assert "'Nope'" in message and "'Texty'" in message


def test_missing_file_and_bad_yaml_are_clear(tmp_path):
    with pytest.raises(PipelineConfigError, match="Set SFMC_PIPELINE_CONFIG"):
        load_pipeline_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data_extensions: [\n")
    with pytest.raises(PipelineConfigError, match="is not valid YAML"):
        load_pipeline_config(bad)


@pytest.mark.parametrize(
    "mutate, expected",
    [
        # a Mapping ID with a space cannot be a Salesforce field name
        (lambda c: c["destinations"][0]["segments"].update(new_customer="new customer__c"),
         "Mapping ID 'new customer__c' for segment 'new_customer' contains spaces; Salesforce field names cannot: "
         "use 'new_customer__c'"),
        # a segment that does not exist
        (lambda c: c["destinations"][1]["segments"].update(vip="vip__c"),
         "destinations[1] (leads) > segments: unknown segment 'vip'"),
        # upsert needs to know its key
        (lambda c: c["destinations"][0].update(operation="upsert"), "operation 'upsert' needs external_id"),
        # an attribute column the profile dataset does not have
        (lambda c: c["destinations"][0].update(attributes={"Phone": "Phone"}),
         "destinations[0] (contacts) > attributes: 'contacts' has no column 'Phone'"),
        # only Contact and Lead
        (lambda c: c["destinations"][0].update(object="Account"), "Input should be 'Contact' or 'Lead'"),
    ],
)
def test_bad_destinations_are_reported(shipped, mutate, expected):
    raw = copy.deepcopy(shipped)
    mutate(raw)
    assert expected in _error(raw)


def test_at_most_25_status_fields_per_object(shipped):
    raw = copy.deepcopy(shipped)
    for i in range(26):
        raw["segments"].append({"name": f"extra_{i}", "rule": {"column": "OrderCount", "op": "gte", "value": i}})
    raw["destinations"][0]["segments"] = {f"extra_{i}": f"extra_{i}__c" for i in range(26)}
    message = _error(raw)
    assert "26 distinct status fields map to Contact, above Salesforce's limit of 25" in message
    # sharing fields keeps the same segments within the limit
    raw["destinations"][0]["segments"] = {f"extra_{i}": f"shared_{i % 5}__c" for i in range(26)}
    parse_pipeline_config(raw)
