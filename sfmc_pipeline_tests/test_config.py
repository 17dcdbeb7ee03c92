"""Contract: pipeline.yaml is validated when the code location loads, and every mistake is
reported with the file, the entry (by key/name) and what to change."""

import copy

import pytest
import yaml

from sfmc_pipeline.config.loader import (
    PipelineConfigError,
    load_pipeline_config,
    parse_pipeline_config,
)
from sfmc_pipeline.settings import DEFAULT_CONFIG_PATH


@pytest.fixture()
def shipped() -> dict:
    return yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())


def _error(raw: dict) -> str:
    with pytest.raises(PipelineConfigError) as info:
        parse_pipeline_config(raw, source="pipeline.yaml")
    return str(info.value)


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


# --- the YAML itself: duplicate keys, anchors and merges, dates, encoding ----------------------------


def _write(tmp_path, text: str, name: str = "pipeline.yaml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _load_error(path) -> str:
    with pytest.raises(PipelineConfigError) as info:
        load_pipeline_config(path)
    return str(info.value)


def _insert_after(lines: list[str], anchor: str, new: str) -> int:
    """Insert ``new`` after the first line equal to ``anchor``; returns the new line's number (1-based)."""
    at = lines.index(anchor) + 1
    lines.insert(at, new)
    return at + 1


def test_duplicate_keys_are_all_reported_with_file_and_lines(tmp_path):
    lines = DEFAULT_CONFIG_PATH.read_text().splitlines()
    first_threshold = lines.index("  quarantine_threshold: 0.05") + 1
    # a second threshold under settings (YAML would silently keep the last one)
    threshold = _insert_after(lines, "  page_size: 2500", "  quarantine_threshold: 0.5")
    # a segment mapped twice in the shared (anchored, then aliased) segments mapping
    first_mapping = lines.index("      new_customer: new_customer__c") + 1
    mapping = _insert_after(lines, "      form_submitters: form_submitters__c", "      new_customer: welcome__c")
    # a duplicate inside a flow mapping
    flow = lines.index("      - {name: FirstName, type: Text, length: 40, nullable: true, labels: [I1]}")
    lines[flow] = "      - {name: FirstName, type: Text, length: 40, nullable: true, labels: [I1], length: 50}"
    path = _write(tmp_path, "\n".join(lines) + "\n")

    message = _load_error(path)
    assert message.splitlines() == [
        f"Invalid pipeline config {path}:",
        f"  - {path} line {threshold}: 'quarantine_threshold' is set twice in one mapping "
        f"(first on line {first_threshold}); keep one",
        f"  - {path} line {flow + 1}: 'length' is set twice in one mapping (first on line {flow + 1}); keep one",
        f"  - {path} line {mapping}: 'new_customer' is set twice in one mapping (first on line {first_mapping}); "
        "keep one",
    ]  # sorted by line; the aliased mapping is reported once, where it is written


MERGED = """\
data_extensions:
  - key: Contacts
    asset: contacts
    primary_key: [SubscriberKey]
    columns:
      - {name: SubscriberKey, type: Text, length: 18, format: salesforce_id}
      - {name: LastName, type: Text}
      - {name: Company, type: Text, nullable: true}
      - {name: Email, type: EmailAddress}
      - {name: Stage, type: Text, nullable: true}
segments:
  - {name: new_customer, rule: {column: Stage, op: eq, value: new}}
  - {name: lapsed, rule: {column: Stage, op: eq, value: lapsed}}
destinations:
  - &contact_destination
    name: contacts
    object: Contact
    attributes: {LastName: LastName, Email: Email}
    segments: &fields {new_customer: new_customer__c, lapsed: lapsed__c}
    operation: update
  - <<: *contact_destination
    name: leads
    object: Lead
    attributes: {LastName: LastName, Company: Company, Email: Email}
"""


def test_anchors_and_merge_keys_still_work_and_only_real_duplicates_are_errors(tmp_path):
    config = load_pipeline_config(_write(tmp_path, MERGED))
    contacts, leads = config.destinations
    assert (leads.name, leads.object, leads.operation) == ("leads", "Lead", "update")  # merged, then overridden
    assert leads.segments == contacts.segments == {"new_customer": "new_customer__c", "lapsed": "lapsed__c"}
    assert leads.attribute_map == {"LastName": "LastName", "Company": "Company", "Email": "Email"}
    # the shipped config shares its segment mapping through &catalogue_fields / *catalogue_fields
    shipped_config = load_pipeline_config(DEFAULT_CONFIG_PATH)
    assert shipped_config.destination("leads").segments == shipped_config.destination("contacts").segments

    # overriding a merged key is fine; setting an explicit key twice next to the merge is not
    lines = MERGED.splitlines()
    name_line = lines.index("    name: leads") + 1
    again = _insert_after(lines, "    object: Lead", "    name: leads_again")
    message = _load_error(_write(tmp_path, "\n".join(lines) + "\n", "again.yaml"))
    assert message.splitlines()[1:] == [
        f"  - {tmp_path / 'again.yaml'} line {again}: 'name' is set twice in one mapping (first on line "
        f"{name_line}); keep one",
    ]


@pytest.mark.parametrize(
    "value, expected",
    [
        ("2026-02-30", "evaluation > as_of: '2026-02-30' is not a date (day is out of range for month); "
                       "use YYYY-MM-DD, e.g. 2026-11-20"),  # unquoted and impossible: not a YAML traceback
        ("2026-13-01", "evaluation > as_of: '2026-13-01' is not a date (month must be in 1..12)"),
        ("86400", "evaluation > as_of: 86400 is not a date; use YYYY-MM-DD"),  # not a Unix timestamp
        ("2026-11-20T10:00:00", "evaluation > as_of: '2026-11-20T10:00:00' is not a date; use YYYY-MM-DD"),
    ],
    ids=["february-30", "month-13", "a-number", "a-timestamp"],
)
def test_an_invalid_unquoted_date_is_a_setting_error(tmp_path, value, expected):
    text = DEFAULT_CONFIG_PATH.read_text().replace("  as_of: null", f"  as_of: {value}")
    message = _load_error(_write(tmp_path, text))
    assert message.startswith(f"Invalid pipeline config {tmp_path / 'pipeline.yaml'}:")
    assert expected in message


def test_a_valid_unquoted_date_is_a_date(tmp_path):
    import datetime as dt

    for value in ("2026-11-20", "'2026-11-20'", "2024-02-29"):
        text = DEFAULT_CONFIG_PATH.read_text().replace("  as_of: null", f"  as_of: {value}")
        assert load_pipeline_config(_write(tmp_path, text)).evaluation.as_of in (dt.date(2026, 11, 20),
                                                                                  dt.date(2024, 2, 29))
    # a bad date elsewhere in the file is still text for the model to judge, not a YAML error
    text = DEFAULT_CONFIG_PATH.read_text().replace("  as_of: null", "  as_of: 2026-11-20\n  as_of_note: 2026-02-30")
    assert "evaluation > as_of_note: unknown setting" in _load_error(_write(tmp_path, text))


def test_a_config_that_is_not_utf8_is_a_clear_error(tmp_path):
    lines = DEFAULT_CONFIG_PATH.read_text(encoding="utf-8").splitlines()
    lines[2] = "# Validé au chargement"  # saved by an editor set to Latin-1
    path = tmp_path / "pipeline.yaml"
    path.write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    assert _load_error(path) == (
        f"{path} is not UTF-8 text: line 3 has the byte 0xe9. Save the file as UTF-8 (your editor's encoding "
        "setting), then load it again."
    )


@pytest.mark.parametrize("char, name", [("\x00", "NUL"), ("\x07", "BEL"), ("\x1b", "ESCAPE")])
def test_a_control_character_is_a_load_error_naming_the_file_the_line_and_the_fix(tmp_path, char, name):
    lines = DEFAULT_CONFIG_PATH.read_text(encoding="utf-8").splitlines()
    at = lines.index("  quarantine_threshold: 0.05")
    lines[at] = "  quarantine_threshold: 0.05" + char  # pasted from a terminal or saved by a binary editor
    path = _write(tmp_path, "\n".join(lines) + "\n")
    message = _load_error(path)
    assert message.startswith(f"{path} holds control characters YAML does not allow:")
    assert f"{path} line {at + 1}, column 29: U+{ord(char):04X} ({name})" in message
    assert "Delete them" in message and "then load the file again" in message


def test_check_names_the_config_file_that_holds_a_control_character(capsys, monkeypatch, tmp_path):
    from sfmc_pipeline.cli import main

    path = _write(tmp_path, DEFAULT_CONFIG_PATH.read_text(encoding="utf-8").replace("page_size: 2500", "page_size: 2500\x00"))
    monkeypatch.setenv("SFMC_PIPELINE_STORAGE", str(tmp_path / "storage"))
    assert main(["check", "--config", str(path)]) == 1
    (line,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("FAILED config:")]
    assert f"{path} holds control characters" in line and "U+0000 (NUL)" in line and f"fix {path}" in line
