"""Contract: ``sfmc-pipeline test-segments`` runs the segment examples through the pipeline's own
conversion, validation and evaluation: the shipped ``segment_examples.yaml`` passes against the shipped
``pipeline.yaml`` and covers every segment in and out; a wrong expectation fails with the profile, the
segment, expected and actual; a row that would be quarantined fails its example with the reasons; the
config's evaluation.timezone counts the days; a bad examples file is an error naming the file, the
example, the field and the fix."""

from __future__ import annotations

import textwrap

import pytest

from sfmc_pipeline.cli import main
from sfmc_pipeline.salesforce.ids import to_18
from sfmc_pipeline.segments.examples import EXAMPLES_FILE, coverage, load_examples
from sfmc_pipeline.settings import DEFAULT_CONFIG_PATH
from sfmc_pipeline_tests.segment_fixtures import CONFIG

SHIPPED = DEFAULT_CONFIG_PATH.parent / EXAMPLES_FILE
ALICE = to_18("003ALICE0000001")
BOB = to_18("003BOB000000001")

HEADER = """
defaults:
  contacts: {LastName: Example, Email: someone@example.com, OrderCount: 0, TotalSpend: 0, CreatedDate: 2025-01-15}
"""


@pytest.fixture(autouse=True)
def shipped_config(monkeypatch):
    monkeypatch.delenv("SFMC_PIPELINE_CONFIG", raising=False)


def write(tmp_path, body: str, name: str = "examples.yaml"):
    path = tmp_path / name
    path.write_text(HEADER + textwrap.dedent(body))
    return path


def run(capsys, *args) -> tuple[int, list[str], str]:
    status = main(["test-segments", *args])
    captured = capsys.readouterr()
    return status, captured.out.splitlines(), captured.err


def test_the_shipped_examples_pass_and_cover_every_segment_both_ways(capsys):
    status, lines, err = run(capsys)
    assert status == 0, "\n".join(lines) + err
    examples = load_examples(SHIPPED, CONFIG)
    assert lines[:-1] == [f"PASS {e.name}" for e in examples]
    assert lines[-1].startswith(f"{len(examples)} example(s): {len(examples)} passed, 0 failed ({SHIPPED} against")
    assert coverage(examples, CONFIG) == {s.name: (True, True) for s in CONFIG.segments}
    assert len(CONFIG.segments) == 9


def test_a_wrong_expectation_fails_with_profile_segment_expected_and_actual(capsys, tmp_path):
    path = write(tmp_path, f"""
        examples:
          - name: inactive_customer_boundary
            as_of: 2026-11-20
            rows:
              contacts:
                # exactly 180 days ago: not older than 180 days
                - {{SubscriberKey: {ALICE}, OrderCount: 3, LastPurchaseDate: 2026-05-24}}
                - {{SubscriberKey: {BOB}, LifecycleStage: new}}
            expect:
              {ALICE}: [inactive_customer]
              {BOB}: {{in: [new_customer], not_in: [repeat_buyer]}}
          - name: still_fine
            as_of: 2026-11-20
            rows: {{contacts: [{{SubscriberKey: {BOB}, LifecycleStage: new}}]}}
            expect: {{{BOB}: {{not_in: [new_customer]}}}}
    """)
    status, lines, err = run(capsys, "--examples", str(path))
    assert status == 1 and err == ""
    assert lines[0] == f"FAIL inactive_customer_boundary: profile {ALICE}: inactive_customer expected in, actual out"
    assert lines[1] == f"FAIL still_fine: profile {BOB}: new_customer expected out, actual in"
    assert lines[2].startswith("2 example(s): 0 passed, 2 failed")
    assert any(line.startswith("note: no example expects a profile in repeat_buyer") for line in lines)


def test_a_row_that_would_be_quarantined_fails_its_example(capsys, tmp_path):
    path = write(tmp_path, f"""
        examples:
          - name: bad_email
            as_of: 2026-11-20
            rows:
              contacts:
                - {{SubscriberKey: {ALICE}, LifecycleStage: new, Email: no-at-sign.example.com}}
                - {{SubscriberKey: 003ALICE0000001AAA, LifecycleStage: new}}
            expect:
              {ALICE}: [new_customer]
    """)
    status, lines, _ = run(capsys, "--examples", str(path))
    assert status == 1
    assert lines[0] == (
        f"FAIL bad_email: contacts row 1 (SubscriberKey '{ALICE}') would be quarantined: Email: "
        "'no-at-sign.example.com' is not a valid email address; contacts row 2 (SubscriberKey '003ALICE0000001AAA') "
        "would be quarantined: SubscriberKey: '003ALICE0000001AAA' is not a Salesforce Id (15 characters, or 18 with a "
        "correct case-safe suffix)")


def test_evaluation_timezone_comes_from_the_config(capsys, tmp_path):
    config = tmp_path / "pipeline.yaml"
    config.write_text(DEFAULT_CONFIG_PATH.read_text().replace("  timezone: UTC\n", "  timezone: America/Chicago\n", 1))
    status, lines, err = run(capsys, "--config", str(config), "--examples", str(SHIPPED))
    assert status == 1, err
    failed = {line.split(":")[0] for line in lines if line.startswith("FAIL")}
    # 7 PM / 6:30 PM Central Standard Time stay on their own day in Chicago (they are the next day in UTC)
    assert failed == {"FAIL inactive_customer_boundary", "FAIL visited_no_purchase_window_and_latest_is_after"}
    assert f"profile {to_18('003LATECST05230')}: inactive_customer expected out, actual in" in "\n".join(lines)


def test_fifteen_character_ids_and_yaml_scalars_are_served_like_sfmc(capsys, tmp_path):
    path = write(tmp_path, """
        examples:
          - name: short_ids_and_numbers
            as_of: 2026-11-20
            rows:
              contacts:
                - {SubscriberKey: 003ALICE0000001, OrderCount: 10, TotalSpend: 12.5, LastPurchaseDate: 11/1/2026}
            expect:
              003ALICE0000001: {in: [loyal_customer], not_in: [inactive_customer]}
    """)
    status, lines, _ = run(capsys, "--examples", str(path))
    assert status == 0, lines
    assert lines[0] == "PASS short_ids_and_numbers"


def test_a_bad_examples_file_lists_every_problem_with_the_example_the_field_and_the_fix(capsys, tmp_path):
    path = write(tmp_path, f"""
        examples:
          - name: typo_in_segment
            as_of: 2026-11-20
            rows: {{contacts: [{{SubscriberKey: {ALICE}}}]}}
            expect: {{{ALICE}: [inactive_customers]}}
          - name: typo_in_column
            as_of: 2026-11-20
            rows: {{contacts: [{{SubscriberKey: {ALICE}, OrderCnt: 3}}], purchases: []}}
            expect: {{{ALICE}: {{not_in: [new_customer], maybe: [x]}}}}
          - name: bad_date
            as_of: 2026-02-30
            rows: {{contacts: [{{SubscriberKey: {ALICE}}}]}}
            expect: {{{BOB}: [new_customer]}}
          - name: bad_date
            rows: {{}}
            expect: {{}}
    """)
    status, lines, err = run(capsys, "--examples", str(path))
    assert status == 2 and lines == []
    assert err.splitlines()[0] == f"error: Invalid segment examples file {path}:"
    problems = [line.strip()[2:] for line in err.splitlines()[1:] if line.startswith("  - ")]
    assert problems == [
        f"examples[0] (typo_in_segment) > expect > {ALICE} > in: unknown segment 'inactive_customers' (did "
        "you mean 'inactive_customer'?); defined segments: " + ", ".join(s.name for s in CONFIG.segments),
        "examples[1] (typo_in_column) > rows > contacts[0] > OrderCnt: 'contacts' has no column 'OrderCnt' (did you "
        "mean 'OrderCount'?) (columns: " + ", ".join(c.name for c in CONFIG.extension("contacts").columns)
        + "); fix the name or remove it",
        "examples[1] (typo_in_column) > rows > purchases: unknown dataset 'purchases'; use one of contacts, "
        "campaign_engagement, activities (the assets in the pipeline config)",
        f"examples[1] (typo_in_column) > expect > {ALICE}: unknown key(s) maybe; use in, not_in",
        "examples[2] (bad_date) > as_of: '2026-02-30' is not a date; use YYYY-MM-DD, e.g. as_of: 2026-11-20",
        f"examples[2] (bad_date) > expect > {BOB}: no 'contacts' row of this example has SubscriberKey '{BOB}'; add "
        "the profile's row or fix the key",
        "examples[3] (bad_date) > as_of: required: the evaluation date; use YYYY-MM-DD, e.g. as_of: 2026-11-20",
        "examples[3] (bad_date) > rows: needs at least one row of the profile dataset 'contacts'",
        "examples[3] (bad_date) > expect: required: profile key -> [segments it is in], or {in: [...], not_in: [...]}",
    ]
    assert "Fix each entry listed (the header comment of segment_examples.yaml" in err


def test_file_level_errors(capsys, tmp_path):
    config = tmp_path / "pipeline.yaml"
    config.write_text(DEFAULT_CONFIG_PATH.read_text())
    status, _, err = run(capsys, "--config", str(config))  # default: segment_examples.yaml next to the config
    assert status == 2 and f"Invalid segment examples file {tmp_path / EXAMPLES_FILE}:" in err
    assert "no such file; write one" in err and "or pass --examples PATH" in err

    duplicate = write(tmp_path, "examples: []\nexamples: []\n")
    status, _, err = run(capsys, "--examples", str(duplicate))
    assert status == 2 and "line 5: 'examples' is set twice in one mapping (first on line 4); keep one" in err

    not_yaml = tmp_path / "not_yaml.yaml"
    not_yaml.write_text("examples:\n  - name: x\n   as_of: [\n")
    status, _, err = run(capsys, "--examples", str(not_yaml))
    assert status == 2 and f"{not_yaml}:\n  - not valid YAML: while parsing a block collection" in err

    config.write_text("data_extensions: []\n")
    status, _, err = run(capsys, "--config", str(config))
    assert status == 2 and err.startswith(f"error: Invalid pipeline config {config}:")


def test_a_control_character_in_the_examples_file_exits_2_naming_the_file_and_line(capsys, tmp_path):
    path = tmp_path / "examples.yaml"
    lines = SHIPPED.read_text(encoding="utf-8").splitlines()
    line = lines.index("examples:") + 1
    lines[line - 1] = "examples:\x00"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    status, out, err = run(capsys, "--examples", str(path))
    assert status == 2 and out == []
    assert f"{path} line {line}, column 10: U+0000 (NUL): a control character YAML does not allow; delete it" in err
    assert "Traceback" not in err
