"""Contract: what the config resolves when it loads, so nothing downstream re-derives it.

- A Mapping ID is resolved to its custom field's API name: ``seg`` and ``seg__c`` (in any case)
  are the same shared field, grouped in ``status_fields`` and counted once against Salesforce's 25
  status fields per object (across all destinations of that object).
- ``evaluation.timezone`` is an IANA zone name (default UTC); anything else is a load error naming
  the setting, and the default evaluation date "today" is today in that zone.
"""

import copy
import datetime as dt
import zoneinfo

import pytest
import yaml

from sfmc_pipeline.config.destinations import custom_field_name
from sfmc_pipeline.config.loader import PipelineConfigError, parse_pipeline_config
from sfmc_pipeline.segments.evaluation_date import resolve_as_of
from sfmc_pipeline.settings import DEFAULT_CONFIG_PATH


@pytest.fixture()
def shipped() -> dict:
    return yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())


def _with_segments(raw: dict, count: int) -> dict:
    raw = copy.deepcopy(raw)
    raw["segments"] += [{"name": f"extra_{i}", "rule": {"column": "OrderCount", "op": "gte", "value": i}}
                        for i in range(count)]
    return raw


def _error(raw: dict) -> str:
    with pytest.raises(PipelineConfigError) as info:
        parse_pipeline_config(raw, source="pipeline.yaml")
    return str(info.value)


# --- Mapping IDs -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mapping_id, api_name",
    [
        ("crm_2_seg", "crm_2_seg__c"),  # the usual SFMC Mapping ID: the field's name without its suffix
        ("crm_2_seg__c", "crm_2_seg__c"),  # already an API name
        ("Crm_2_Seg__C", "Crm_2_Seg__C"),  # the suffix in another case is still the suffix
        ("ns__seg__c", "ns__seg__c"),  # a namespaced field
    ],
)
def test_custom_field_name(mapping_id, api_name):
    assert custom_field_name(mapping_id) == api_name


def test_seg_and_seg__c_in_any_case_are_one_shared_field(shipped):
    raw = _with_segments(shipped, 5)
    raw["destinations"][0]["segments"] = {
        "extra_0": "shared", "extra_1": "shared__c", "extra_2": "SHARED__C", "extra_3": "Shared", "extra_4": "own",
    }
    dest = parse_pipeline_config(raw).destination("contacts")
    # every spelling resolves to the first one seen, as an API name
    assert dest.segments == {"extra_0": "shared__c", "extra_1": "shared__c", "extra_2": "shared__c",
                             "extra_3": "shared__c", "extra_4": "own__c"}
    assert dest.status_fields == {"shared__c": ["extra_0", "extra_1", "extra_2", "extra_3"], "own__c": ["extra_4"]}


def test_25_fields_spelled_with_and_without_suffix_load(shipped):
    raw = _with_segments(shipped, 50)
    spellings = (lambda n: f"field_{n}", lambda n: f"field_{n}__c", lambda n: f"FIELD_{n}__C")
    # 50 segments over 25 fields, each field written two different ways
    raw["destinations"][0]["segments"] = {f"extra_{i}": spellings[i % 3](i % 25) for i in range(50)}
    dest = parse_pipeline_config(raw).destination("contacts")
    assert len(dest.status_fields) == 25
    assert dest.status_fields["field_0__c"] == ["extra_0", "extra_25"]  # written field_0 and field_0__c

    # a 26th field is one too many, and is counted as 26 (not as the 51 spellings)
    raw["destinations"][0]["segments"]["extra_49"] = "field_25"
    message = _error(raw)
    assert "destinations: 26 distinct status fields map to Contact, above Salesforce's limit of 25" in message


def test_the_cap_counts_fields_across_destinations_of_one_object(shipped):
    raw = _with_segments(shipped, 25)
    contacts = raw["destinations"][0]
    contacts["segments"] = {f"extra_{i}": f"field_{i}" for i in range(20)}
    second = {"name": "contacts_again", "object": "Contact", "attributes": {}, "identity_column": "SubscriberKey",
              "segments": {f"extra_{i}": f"Field_{i}__c" for i in range(20, 25)}}
    raw["destinations"].append(second)
    parse_pipeline_config(raw)  # 20 + 5 = 25 fields on Contact
    second["segments"]["extra_19"] = "another_field"
    assert "26 distinct status fields map to Contact" in _error(raw)


def test_a_field_is_written_by_one_destination_of_an_object(shipped):
    """Two destinations writing one field of one object would overwrite each other on every run."""
    raw = _with_segments(shipped, 2)
    second = {"name": "contacts_again", "object": "Contact", "attributes": {}, "identity_column": "SubscriberKey",
              "segments": {"extra_0": "New_Customer"}}  # the contacts destination writes new_customer__c
    raw["destinations"].append(second)
    message = _error(raw)
    assert "Contact.New_Customer__c is also written by destination 'contacts'" in message
    second["segments"] = {"extra_0": "extra_0__c"}
    second["attributes"] = {"Email": "Email"}
    assert "Contact.Email is also written by destination 'contacts'" in _error(raw)


# --- evaluation.timezone ---------------------------------------------------------------------------


def test_timezone_defaults_to_utc_and_takes_iana_names(shipped):
    assert parse_pipeline_config(shipped).evaluation.timezone == "UTC"
    raw = copy.deepcopy(shipped)
    raw["evaluation"]["timezone"] = "America/Los_Angeles"
    assert parse_pipeline_config(raw).evaluation.timezone == "America/Los_Angeles"


@pytest.mark.parametrize(
    "name",
    [
        "Mars/Olympus_Mons",  # no such zone
        "PST",  # an abbreviation, not a zone name
        "America",  # a folder of the zone database, not a zone
        "../../etc/passwd",  # not a key at all
        "",
    ],
)
def test_unknown_timezone_is_a_load_error_naming_the_setting(shipped, name):
    raw = copy.deepcopy(shipped)
    raw["evaluation"]["timezone"] = name
    message = _error(raw)
    assert f"evaluation > timezone: unknown time zone {name!r}; use an IANA name such as 'UTC'" in message


def test_today_is_taken_in_the_evaluation_timezone():
    # UTC+14 and UTC-11 are 25 hours apart: at any instant their calendar dates differ.
    east, west = "Pacific/Kiritimati", "Pacific/Pago_Pago"
    before = {tz: dt.datetime.now(zoneinfo.ZoneInfo(tz)).date() for tz in (east, west)}
    got = {tz: resolve_as_of(run_config=None, configured=None, sample_anchor=None, timezone=tz) for tz in (east, west)}
    after = {tz: dt.datetime.now(zoneinfo.ZoneInfo(tz)).date() for tz in (east, west)}
    for tz in (east, west):
        assert got[tz][0] in (before[tz], after[tz])
        assert got[tz][1] == f"today ({tz})"
    assert got[east][0] > got[west][0]
    # the other sources do not depend on the zone
    configured = dt.date(2026, 11, 20)
    assert resolve_as_of(run_config=None, configured=configured, sample_anchor=None, timezone=east) == (
        configured, "pipeline config evaluation.as_of")
