"""Contract: ``sfmc-pipeline check`` prints one ``OK``/``FAILED`` line per check and exits 0 only when
all are OK, over real HTTP against the fake SFMC and Salesforce servers: SFMC authentication and one
row of each Data Extension, the Salesforce org (id and name), the sink preflight per destination and
the daily API usage; embedded/local mode names the sample files and the local target. Each failure
mode gives the right FAILED line with its fix, never hides the other checks, and never prints a
secret. The JWT bearer flow is checked like client credentials; the username-password flow works with
a WARN line naming the date Salesforce ends it and the way out (local-mode preflight: test_local_setup.py)."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sfmc_pipeline.cli import main
from sfmc_pipeline.cli.check_report import CheckLine, Report, flatten, split_advice
from sfmc_pipeline.cli.check_salesforce import longest_status_values
from sfmc_pipeline.http import Redactor
from sfmc_pipeline.salesforce.rest import SalesforceClient
from sfmc_pipeline.settings import DEFAULT_CONFIG_PATH
from sfmc_pipeline_testing.salesforce_fixtures import JwtKey
from sfmc_pipeline_testing.salesforce_server import FakeSalesforceServer
from sfmc_pipeline_tests.segment_fixtures import CONFIG
from sfmc_pipeline_tests.shipped_sample import SHIPPED_SAMPLE

SFMC_SECRET = "sfmc-secret-Zq8w2"
SF_SECRET = "salesforce-secret-Kx91"
SF_PASSWORD = "correct-horse-battery"
SF_TOKEN = "SECTOKENabc123"
SECRETS = (SFMC_SECRET, SF_SECRET, SF_PASSWORD, SF_TOKEN, SF_PASSWORD + SF_TOKEN, "wrong-secret-value-42")
STATUS_FIELDS = sorted(CONFIG.destination("contacts").status_fields)
VARIABLES = [
    "SFMC_CLIENT_ID", "SFMC_CLIENT_SECRET", "SFMC_AUTH_BASE_URI", "SFMC_ACCOUNT_ID", "SALESFORCE_DOMAIN",
    "SALESFORCE_LOGIN_URL", "SALESFORCE_CLIENT_ID", "SALESFORCE_CLIENT_SECRET", "SALESFORCE_USERNAME",
    "SALESFORCE_PASSWORD", "SALESFORCE_SECURITY_TOKEN", "SFMC_PIPELINE_CONFIG", "SFMC_PIPELINE_SAMPLE",
    "SALESFORCE_PRIVATE_KEY_FILE", "SALESFORCE_PRIVATE_KEY", "SALESFORCE_JWT_AUDIENCE",
]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    """No credentials, the shipped config, storage in the test's own directory."""
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SFMC_PIPELINE_STORAGE", str(tmp_path / "storage"))


@pytest.fixture()
def sfmc(fake_sfmc_factory):
    server = fake_sfmc_factory(client_secret=SFMC_SECRET)
    for ext in CONFIG.data_extensions:
        rows = [{c.name: f"v{i}" for c in ext.columns} for i in range(3)]
        server.add_data_extension(ext.key, rows, primary_key=ext.primary_key)
    return server


@pytest.fixture()
def org():
    with FakeSalesforceServer(client_secret=SF_SECRET, password=SF_PASSWORD, security_token=SF_TOKEN,
                              organization_name="Acme Test Org") as server:
        for sobject in ("Contact", "Lead"):
            for name in STATUS_FIELDS:
                server.add_field(sobject, name)
        yield server


def use_sfmc(monkeypatch, server, secret=SFMC_SECRET):
    monkeypatch.setenv("SFMC_CLIENT_ID", server.client_id)
    monkeypatch.setenv("SFMC_CLIENT_SECRET", secret)
    monkeypatch.setenv("SFMC_AUTH_BASE_URI", server.auth_base_uri)


def use_salesforce(monkeypatch, server, secret=SF_SECRET, password_flow=False):
    monkeypatch.setenv("SALESFORCE_LOGIN_URL", server.base_url)
    monkeypatch.setenv("SALESFORCE_CLIENT_ID", server.client_id)
    monkeypatch.setenv("SALESFORCE_CLIENT_SECRET", secret)
    if password_flow:
        monkeypatch.setenv("SALESFORCE_USERNAME", server.username)
        monkeypatch.setenv("SALESFORCE_PASSWORD", SF_PASSWORD)
        monkeypatch.setenv("SALESFORCE_SECURITY_TOKEN", SF_TOKEN)


def check(capsys, *args) -> tuple[int, dict[str, list[str]], str]:
    """Exit status, the lines by ``what`` (in order), and everything printed; asserts no secret was printed
    and that every line is an OK, WARN or FAILED line."""
    status = main(["check", *args])
    captured = capsys.readouterr()
    printed = captured.out + captured.err
    for secret in SECRETS:
        assert secret not in printed
    by_what: dict[str, list[str]] = {}
    for line in captured.out.splitlines():
        assert line.startswith(("OK     ", "WARN   ", "FAILED ")), line
        what = line[7:].split(": ", 1)[0]
        by_what.setdefault(what, []).append(line)
    return status, by_what, printed


def test_all_ok_against_the_fake_servers(capsys, monkeypatch, sfmc, org):
    use_sfmc(monkeypatch, sfmc)
    use_salesforce(monkeypatch, org)
    status, lines, printed = check(capsys)
    assert status == 0, printed
    assert list(lines) == [
        "config", "policies contacts", "policies leads", "storage", "SFMC", "SFMC Data Extension Contacts", "SFMC Data Extension CampaignEngagement",
        "SFMC Data Extension Activities", "Salesforce", "preflight contacts", "preflight leads", "Salesforce API usage",
    ]
    assert all(len(v) == 1 and v[0].startswith("OK") for v in lines.values()), printed
    assert f"REST instance {sfmc.rest_base_uri}" in lines["SFMC"][0]
    assert ("actions crm_export; labelled data written: LastName (I1), FirstName (I1), Email (I1); no policy refuses it"
            in lines["policies contacts"][0])
    assert "readable, 3 row(s) (asset contacts)" in lines["SFMC Data Extension Contacts"][0]
    (org_line,) = lines["Salesforce"]
    assert org.org_id in org_line and "'Acme Test Org' (Developer Edition)" in org_line
    assert "client_credentials flow, API v66.0" in org_line
    assert "the 12 mapped fields exist" in lines["preflight contacts"][0]
    assert "of 15,000 daily API requests used" in lines["Salesforce API usage"][0]
    assert "from limits/ DailyApiRequests" in lines["Salesforce API usage"][0]


def test_embedded_and_local_mode_name_the_files_they_would_use(capsys, tmp_path):
    status, lines, printed = check(capsys)
    assert status == 0, printed
    assert "embedded mode" in lines["SFMC"][0] and str(SHIPPED_SAMPLE) in lines["SFMC"][0]
    for ext in CONFIG.data_extensions:
        (line,) = lines[f"SFMC Data Extension {ext.key}"]
        sample = SHIPPED_SAMPLE / f"{ext.key}.csv"
        with sample.open(encoding="utf-8", newline="") as f:
            rows = sum(1 for _ in csv.reader(f)) - 1  # the header row
        assert f"would read {sample}, {rows:,} row(s) (asset {ext.asset})" in line
    local_db = tmp_path / "storage" / "crm" / "local_crm.sqlite"
    assert f"local mode (no SALESFORCE_* variables set): the sync writes the local target {local_db}" in \
        lines["Salesforce"][0]
    assert lines["preflight contacts"][0].startswith("OK") and lines["Salesforce API usage"][0].startswith("OK")
    assert "storage" in lines and not (tmp_path / "storage").exists()  # the check creates nothing


def test_embedded_mode_checks_the_users_extract_folder_a_run_would_read(capsys, monkeypatch, tmp_path):
    folder = tmp_path / "my extracts"
    folder.mkdir()
    for ext in CONFIG.data_extensions[:-1]:  # the last one's CSV is missing
        shutil.copy(SHIPPED_SAMPLE / f"{ext.key}.csv", folder)
    monkeypatch.setenv("SFMC_PIPELINE_EXTRACT_DIR", str(folder))
    status, lines, printed = check(capsys)
    assert status == 1
    assert f"extracts in {folder} (SFMC_PIPELINE_EXTRACT_DIR)" in lines["SFMC"][0]
    first = CONFIG.data_extensions[0]
    assert f"would read {folder / f'{first.key}.csv'}" in lines[f"SFMC Data Extension {first.key}"][0]
    (missing,) = lines[f"SFMC Data Extension {CONFIG.data_extensions[-1].key}"]
    assert missing.startswith("FAILED") and "SFMC_PIPELINE_EXTRACT_DIR" in missing and str(folder) in missing


def test_wrong_sfmc_secret_fails_sfmc_and_still_checks_salesforce(capsys, monkeypatch, sfmc, org):
    use_sfmc(monkeypatch, sfmc, secret="wrong-secret-value-42")
    use_salesforce(monkeypatch, org)
    status, lines, printed = check(capsys)
    assert status == 1
    (line,) = lines["SFMC"]
    assert line.startswith("FAILED SFMC: SFMC refused the client credentials (HTTP 401, invalid_client)")
    assert "-> Check SFMC_CLIENT_ID and SFMC_CLIENT_SECRET against Setup > Installed Packages" in line
    for ext in CONFIG.data_extensions:
        assert lines[f"SFMC Data Extension {ext.key}"] == [
            f"FAILED SFMC Data Extension {ext.key}: skipped, SFMC did not authenticate -> fix the SFMC line above; "
            "then run `sfmc-pipeline check` again"]
    assert lines["Salesforce"][0].startswith("OK") and lines["preflight contacts"][0].startswith("OK")


def test_unknown_data_extension_key(capsys, monkeypatch, sfmc, org):
    sfmc.remove_data_extension("Activities")
    use_sfmc(monkeypatch, sfmc)
    use_salesforce(monkeypatch, org)
    status, lines, printed = check(capsys)
    assert status == 1
    (line,) = lines["SFMC Data Extension Activities"]
    assert line.startswith("FAILED SFMC Data Extension Activities: SFMC has no Data Extension with external key "
                           "'Activities' (HTTP 404)")
    assert "-> The 'key' in the pipeline config must be the Data Extension's External Key (CustomerKey)" in line
    assert lines["SFMC Data Extension Contacts"][0].startswith("OK") and lines["SFMC"][0].startswith("OK")


def test_missing_and_unknown_columns_of_a_data_extension_are_listed(capsys, monkeypatch, sfmc, org):
    """One row of each extension shows its fields: a configured column it does not serve fails the line, fields
    it serves that the config does not name are listed; an empty extension says it cannot be checked."""
    activities = CONFIG.extension("activities")
    served = [{**{c.name: f"v{i}" for c in activities.columns if c.name != "Detail"}, "Channel": "web", "Score": "1"}
              for i in range(3)]
    sfmc.add_data_extension("Activities", served, primary_key=activities.primary_key)
    sfmc.add_data_extension("CampaignEngagement", [], primary_key=CONFIG.extension("campaign_engagement").primary_key)
    use_sfmc(monkeypatch, sfmc)
    use_salesforce(monkeypatch, org)
    status, lines, printed = check(capsys)
    assert status == 1
    (line,) = lines["SFMC Data Extension Activities"]
    assert line == ("FAILED SFMC Data Extension Activities: readable, 3 row(s) (asset activities), but configured "
                    "column(s) Detail are not among its fields; fields not in the config (not read): channel, score "
                    "-> fix the column names of Activities in the pipeline config, or add the fields to the Data "
                    "Extension; then run `sfmc-pipeline check` again")
    assert lines["SFMC Data Extension CampaignEngagement"] == [
        "OK     SFMC Data Extension CampaignEngagement: readable, 0 row(s) (asset campaign_engagement); its columns "
        "are not checked: it has no row to show them"]
    assert lines["SFMC Data Extension Contacts"][0].endswith("(asset contacts), every configured column served")


def test_wrong_salesforce_secret_skips_what_needs_the_login(capsys, monkeypatch, sfmc, org):
    use_sfmc(monkeypatch, sfmc)
    use_salesforce(monkeypatch, org, secret="wrong-secret-value-42")
    status, lines, printed = check(capsys)
    assert status == 1
    (line,) = lines["Salesforce"]
    assert line.startswith("FAILED Salesforce: Salesforce refused the login (client_credentials flow, HTTP 400, "
                           "invalid_client: invalid client credentials) -> Check SALESFORCE_CLIENT_ID")
    for what in ("preflight contacts", "preflight leads", "Salesforce API usage"):
        assert lines[what] == [f"FAILED {what}: skipped, the Salesforce login failed -> fix the Salesforce line above; "
                               "then run `sfmc-pipeline check` again"]
    assert lines["SFMC"][0].startswith("OK") and lines["SFMC Data Extension Contacts"][0].startswith("OK")


def test_wrong_password_in_the_password_flow_never_shows_it(capsys, monkeypatch, sfmc, org):
    use_sfmc(monkeypatch, sfmc)  # (fast: no sample files to read)
    use_salesforce(monkeypatch, org, password_flow=True)
    monkeypatch.setenv("SALESFORCE_PASSWORD", "wrong-secret-value-42")
    status, lines, printed = check(capsys)
    assert status == 1
    assert lines["Salesforce"][0].startswith("FAILED Salesforce: Salesforce refused the login (password flow, HTTP "
                                             "400, invalid_grant: authentication failure) -> Check SALESFORCE_USERNAME")


def test_a_missing_mapped_field_fails_that_destinations_preflight(capsys, monkeypatch, sfmc, org):
    use_sfmc(monkeypatch, sfmc)  # (fast: no sample files to read)
    org.remove_field("Contact", "offer_clickers__c")
    org.add_field("Contact", "positive_responders__c", type="string", length=255)
    use_salesforce(monkeypatch, org)
    status, lines, printed = check(capsys)
    assert status == 1
    missing, wrong_type = lines["preflight contacts"]
    assert missing.startswith("FAILED preflight contacts: Contact.offer_clickers__c: no such field -> Create it on "
                              "Contact as a Long Text Area custom field (API name offer_clickers__c)")
    assert wrong_type.startswith("FAILED preflight contacts: Contact.positive_responders__c: is a string field -> a "
                                 "segment status field must be a Long Text Area")
    assert lines["preflight leads"][0].startswith("OK") and lines["Salesforce API usage"][0].startswith("OK")


def test_password_flow_works_with_a_warning_naming_the_date_and_the_way_out(capsys, monkeypatch, sfmc, org):
    use_sfmc(monkeypatch, sfmc)  # (fast: no sample files to read)
    use_salesforce(monkeypatch, org, password_flow=True)
    status, lines, printed = check(capsys)
    assert status == 0, printed  # a warning, not a failure
    assert "(password flow, API v66.0)" in lines["Salesforce"][0]
    (warning,) = lines["Salesforce login"]
    assert list(lines).index("Salesforce login") == list(lines).index("Salesforce") + 1
    assert warning.startswith("WARN   Salesforce login: the username-password flow is in use; Salesforce ends it for "
                              "connected apps on 2027-02-20")
    assert "-> migrate before then, either to client credentials (in the connected app turn on 'Enable Client " \
           "Credentials Flow' and choose a Run As user; set SALESFORCE_DOMAIN to the org's My Domain" in warning
    assert "or to the JWT bearer flow (create a key and certificate" in warning
    assert "set SALESFORCE_PRIVATE_KEY_FILE=salesforce.key, keep SALESFORCE_USERNAME" in warning


def test_jwt_bearer_flow_is_checked_like_the_others(capsys, monkeypatch, sfmc, org, jwt_key, tmp_path):
    use_sfmc(monkeypatch, sfmc)  # (fast: no sample files to read)
    org.jwt_public_key = jwt_key.public_key
    monkeypatch.setenv("SALESFORCE_LOGIN_URL", org.base_url)
    monkeypatch.setenv("SALESFORCE_CLIENT_ID", org.client_id)
    monkeypatch.setenv("SALESFORCE_USERNAME", org.username)
    monkeypatch.setenv("SALESFORCE_PRIVATE_KEY_FILE", jwt_key.write(tmp_path / "salesforce.key"))
    status, lines, printed = check(capsys)
    assert status == 0, printed
    assert "(jwt_bearer flow, API v66.0)" in lines["Salesforce"][0] and "Salesforce login" not in lines
    assert lines["preflight contacts"][0].startswith("OK") and lines["Salesforce API usage"][0].startswith("OK")

    other = JwtKey()  # a key whose certificate the app does not hold, given as text (a secret)
    monkeypatch.delenv("SALESFORCE_PRIVATE_KEY_FILE")
    monkeypatch.setenv("SALESFORCE_PRIVATE_KEY", other.private_pem)
    status, lines, printed = check(capsys)
    assert status == 1
    assert lines["Salesforce"][0].startswith("FAILED Salesforce: Salesforce refused the login (jwt_bearer flow, HTTP "
                                             "400, invalid_grant: invalid assertion) -> For the JWT bearer flow check")
    assert not any(line in printed for line in other.private_pem.splitlines()[1:-1])


def test_incomplete_credentials_are_failed_with_the_resources_message(capsys, monkeypatch):
    monkeypatch.setenv("SFMC_CLIENT_SECRET", SFMC_SECRET)
    monkeypatch.setenv("SALESFORCE_CLIENT_SECRET", SF_SECRET)
    monkeypatch.setenv("SALESFORCE_PASSWORD", SF_PASSWORD)
    status, lines, printed = check(capsys)
    assert status == 1
    assert lines["SFMC"] == [
        "FAILED SFMC: SFMC credentials are incomplete: SFMC_CLIENT_ID, SFMC_AUTH_BASE_URI not set -> Set all of "
        "SFMC_CLIENT_ID, SFMC_CLIENT_SECRET and SFMC_AUTH_BASE_URI to read from SFMC, or none to use the sample data"]
    assert lines["Salesforce"] == [
        "FAILED Salesforce: Salesforce credentials are incomplete: SALESFORCE_DOMAIN or SALESFORCE_LOGIN_URL, "
        "SALESFORCE_CLIENT_ID not set -> Set them all to write to Salesforce, or none to write to the local target"]
    assert lines["SFMC Data Extension Contacts"][0].startswith(
        "FAILED SFMC Data Extension Contacts: skipped, the SFMC settings are not usable")
    assert lines["Salesforce API usage"][0].startswith("FAILED Salesforce API usage: skipped")
    assert lines["config"][0].startswith("OK")


def test_a_broken_pipeline_config_is_a_failed_line_and_the_rest_is_still_checked(capsys, monkeypatch, tmp_path):
    broken = tmp_path / "pipeline.yaml"
    broken.write_text(DEFAULT_CONFIG_PATH.read_text().replace("type: Number, min: 0}", "type: Integer, min: 0}", 1))
    monkeypatch.setenv("SFMC_PIPELINE_CONFIG", str(broken))
    status, lines, printed = check(capsys)
    assert status == 1
    (line,) = lines["config"]
    assert line.startswith(f"FAILED config: Invalid pipeline config {broken}: data_extensions[1] "
                           "(CampaignEngagement) > columns[3] (Opens) > type: Input should be")
    assert "(got 'Integer') -> fix " + str(broken) + " as listed" in line
    assert lines["SFMC"][0].startswith("OK") and lines["Salesforce"][0].startswith("OK")
    assert lines["SFMC Data Extensions"] == [
        "FAILED SFMC Data Extensions: skipped, the pipeline config did not load -> fix the config line above; then run "
        "`sfmc-pipeline check` again"]
    assert lines["preflight"][0].startswith("FAILED preflight: skipped, the pipeline config did not load")
    # --config overrides the environment
    status, lines, _ = check(capsys, "--config", str(DEFAULT_CONFIG_PATH))
    assert status == 0 and lines["config"][0].startswith(f"OK     config: {DEFAULT_CONFIG_PATH}")


def test_api_usage_at_the_sync_threshold_fails(capsys, monkeypatch, sfmc, org):
    use_sfmc(monkeypatch, sfmc)  # (fast: no sample files to read)
    org.set_api_usage(12_500)
    use_salesforce(monkeypatch, org)
    status, lines, printed = check(capsys)
    assert status == 1
    (line,) = lines["Salesforce API usage"]
    assert "daily API requests used in the last 24 hours (83." in line
    assert "at or above sync.usage_threshold (80%), so a sync would stop before sending -> wait until" in line


def test_unreadable_org_name_and_limits_fall_back(capsys, monkeypatch, sfmc, org):
    use_sfmc(monkeypatch, sfmc)  # (fast: no sample files to read)
    org.fail_next(403, path_contains="/query", body=[{"errorCode": "INSUFFICIENT_ACCESS", "message": "no"}])
    org.fail_next(403, path_contains="/limits", body=[{"errorCode": "INSUFFICIENT_ACCESS", "message": "no"}])
    use_salesforce(monkeypatch, org)
    status, lines, printed = check(capsys)
    assert status == 0, printed
    assert f"org {org.org_id} (its name is not readable: HTTP 403 INSUFFICIENT_ACCESS)" in lines["Salesforce"][0]
    assert "from Sforce-Limit-Info header; limits/ was not readable" in lines["Salesforce API usage"][0]


def test_every_line_is_redacted():
    printed = []
    report = Report(printed.append, Redactor([SF_SECRET]))
    report.failed("Salesforce", f"the server said {SF_SECRET!r}", f"do not paste {SF_SECRET}")
    assert printed == ["FAILED Salesforce: the server said '***' -> do not paste ***"]
    assert not report.all_ok and not CheckLine("x", "y", "z").ok


def test_message_helpers():
    assert split_advice("X failed (HTTP 404) (a. B). Check the key; or not.") == ("X failed (HTTP 404) (a. B)",
                                                                                   "Check the key; or not")
    assert split_advice("e.g. nothing to split here.") == ("e.g. nothing to split here", None)
    assert split_advice("is a string field; make it a textarea") == ("is a string field", "make it a textarea")
    assert flatten("Invalid config p:\n  - a: b\n  - c") == "Invalid config p: a: b; c"
    assert longest_status_values(CONFIG.destination("contacts"))["new_customer__c"] == len("new_customer:existing")


def test_organization_query(org):
    with SalesforceClient(base_url=org.base_url, client_id=org.client_id, client_secret=SF_SECRET) as client:
        assert client.organization() == {"Id": org.org_id, "Name": "Acme Test Org",
                                         "OrganizationType": "Developer Edition", "IsSandbox": False}
    (request,) = org.api_requests("/query")
    assert request.query["q"] == ["SELECT Id, Name, OrganizationType, IsSandbox FROM Organization"]


def test_console_script_help():
    script = Path(sys.executable).with_name("sfmc-pipeline")
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert result.returncode == 0, result.stderr
    assert "check" in result.stdout and "test-segments" in result.stdout


def test_unusable_storage_and_salesforce_domain(capsys, monkeypatch, tmp_path, sfmc):
    use_sfmc(monkeypatch, sfmc)
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("SFMC_PIPELINE_STORAGE", str(tmp_path / "a-file" / "storage"))
    monkeypatch.setenv("SALESFORCE_DOMAIN", "acme.lightning.force.com")
    monkeypatch.setenv("SALESFORCE_CLIENT_ID", "key")
    monkeypatch.setenv("SALESFORCE_CLIENT_SECRET", SF_SECRET)
    status, lines, printed = check(capsys)
    assert status == 1
    assert lines["storage"][0].startswith(f"FAILED storage: Storage directory {tmp_path / 'a-file' / 'storage'} "
                                          "cannot be created: its parent")
    assert lines["Salesforce"][0].startswith("FAILED Salesforce: SALESFORCE_DOMAIN must be the My Domain prefix")
    assert "looks like a Lightning or Visualforce host" in lines["Salesforce"][0]
    assert lines["preflight contacts"][0].startswith("FAILED preflight contacts: skipped, the Salesforce settings")
    assert lines["SFMC Data Extension Contacts"][0].startswith("OK")
