"""Contract: the Salesforce REST client, over real HTTP against the fake Salesforce org, logs in
lazily with the username-password flow (password + security token, form-encoded, no bearer header,
no secret in a URL) or the client-credentials flow; fails a refused login with a message naming the
settings to check and holding no secret; re-logs in once on 401 INVALID_SESSION_ID; updates and
upserts up to 200 records per sObject Collections call and returns per-record failures as positional
results while the other records are written; retries 5xx (without really sleeping); turns 403
REQUEST_LIMIT_EXCEEDED into ``RequestLimitExceeded``; and records ``Sforce-Limit-Info``.
It knows its org (``target_id`` from the token's identity URL, else from userinfo; a re-login into
another org is refused), reads records back by Id in chunks of 2,000 (order kept, None for missing
ids), and sends ``Decimal`` values as exact JSON numbers.
``salesforce_base_url`` turns SALESFORCE_DOMAIN / SALESFORCE_LOGIN_URL into one https base URL.
The JWT bearer flow signs a 3-minute RS256 assertion (iss, sub, aud, exp) with the app's private key and sends no
secret; the token response's ``instance_url`` is used only on Salesforce's domains or the configured host; the
shapes real orgs send are accepted (token responses without ``token_type``/``issued_at``/``signature`` and with a
15-character org id, request-level errors as one object) and a 403 ``ConcurrentPerOrgLongTxn Limit exceeded.`` is
waited out, unlike the daily limit."""

from __future__ import annotations

import json
import time
from decimal import Decimal
from urllib.parse import parse_qs

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from sfmc_pipeline.errors import ApiError, ConfigurationError
from sfmc_pipeline.http import SALESFORCE_DOMAINS, RetrySettings, instance_base_url
from sfmc_pipeline.salesforce.api_errors import RequestLimitExceeded
from sfmc_pipeline.salesforce.ids import CONTACT_PREFIX, LEAD_PREFIX
from sfmc_pipeline.salesforce.jwt_bearer import default_audience
from sfmc_pipeline.salesforce.login_url import salesforce_base_url
from sfmc_pipeline.salesforce.records import (
    MAX_RECORDS_PER_REQUEST,
    ApiUsage,
    RecordError,
    RecordResult,
)
from sfmc_pipeline.salesforce.rest import SalesforceClient, json_body
from sfmc_pipeline_testing.salesforce_server import FakeSalesforceServer, fake_id

SEG = "crm_2_seg__c"
EXT = "Ext_Id__c"


@pytest.fixture()
def client_for(fake_salesforce: FakeSalesforceServer, sleeps):
    clients: list[SalesforceClient] = []

    def make(server: FakeSalesforceServer = fake_salesforce, **overrides) -> SalesforceClient:
        kwargs = dict(
            base_url=server.base_url,
            client_id=server.client_id,
            client_secret=server.client_secret,
            username=server.username,
            password=server.password,
            security_token=server.security_token,
            sleep=sleeps,
            retry=RetrySettings(max_retries=3, backoff_seconds=0.5),
        )
        kwargs.update(overrides)
        client = SalesforceClient(**kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture()
def seeded(fake_salesforce: FakeSalesforceServer) -> list[str]:
    """Three Contacts with a 10-character segment field."""
    fake_salesforce.add_field("Contact", SEG, length=10)
    ids = [fake_id(CONTACT_PREFIX, n) for n in (1, 2, 3)]
    for cid in ids:
        fake_salesforce.add_record("Contact", cid, LastName="Doe")
    return ids


def _contact(record_id: str, **values) -> dict:
    return {"attributes": {"type": "Contact"}, "id": record_id, **values}


def _no_secret_in_urls(fake: FakeSalesforceServer, *secrets: str) -> None:
    for request in fake.requests:
        for secret in secrets:
            assert secret not in request.path
            assert all(secret not in v for values in request.query.values() for v in values)


# ---------------------------------------------------------------------------------------------- login


def test_password_flow_login_is_lazy_and_form_encoded(fake_salesforce, client_for, seeded):
    client = client_for()
    assert client.flow == "password" and client.mode == "salesforce" and client.api_version == "66.0"
    assert fake_salesforce.requests == [] and client.instance_url is None  # nothing sent before the first call
    client.describe("Contact")
    client.describe("Lead")
    tokens = fake_salesforce.token_requests()
    assert len(tokens) == 1
    token = tokens[0]
    assert token.method == "POST" and token.path == "/services/oauth2/token" and not token.query
    assert "application/x-www-form-urlencoded" in token.header("Content-Type")
    assert token.header("Authorization") is None
    assert {k: v[0] for k, v in parse_qs(token.body).items()} == {
        "grant_type": "password",
        "client_id": fake_salesforce.client_id,
        "client_secret": fake_salesforce.client_secret,
        "username": fake_salesforce.username,
        "password": fake_salesforce.password + fake_salesforce.security_token,  # token appended
    }
    assert client.instance_url == fake_salesforce.base_url + "/"
    api = fake_salesforce.api_requests()
    assert [r.path for r in api] == ["/services/data/v66.0/sobjects/Contact/describe",
                                     "/services/data/v66.0/sobjects/Lead/describe"]
    assert all(r.header("Authorization") == f"Bearer {fake_salesforce.issued_tokens[0]}" for r in api)
    _no_secret_in_urls(fake_salesforce, fake_salesforce.client_secret, fake_salesforce.security_token,
                       fake_salesforce.issued_tokens[0])
    assert client.api_requests == 3  # one token call + two describes


def test_client_credentials_flow(fake_salesforce, client_for):
    client = client_for(username=None, password=None, security_token=None)
    assert client.flow == "client_credentials"
    assert client.limits()["DailyApiRequests"]["Max"] == 15000
    (token,) = fake_salesforce.token_requests()
    assert token.header("Authorization") is None
    assert {k: v[0] for k, v in parse_qs(token.body).items()} == {
        "grant_type": "client_credentials",
        "client_id": fake_salesforce.client_id,
        "client_secret": fake_salesforce.client_secret,
    }
    assert fake_salesforce.api_requests("/limits")[0].path == "/services/data/v66.0/limits/"


def test_security_token_may_be_empty(client_for, fake_salesforce):
    fake_salesforce.security_token = ""
    client_for(security_token=None).limits()
    assert "password=pw&" in fake_salesforce.token_requests()[0].body + "&"


def test_wrong_password_names_the_settings_and_hides_every_secret(fake_salesforce, client_for):
    wrong_password = "wrong-password-123"
    with pytest.raises(ApiError) as info:
        client_for(password=wrong_password).describe("Contact")
    message = str(info.value)
    assert "invalid_grant" in message
    for setting in ("SALESFORCE_USERNAME", "SALESFORCE_PASSWORD", "SALESFORCE_SECURITY_TOKEN"):
        assert setting in message
    assert "locked out" in message and "The client's IP address is unauthorized for this account" in message
    for secret in (wrong_password, fake_salesforce.security_token, fake_salesforce.client_secret):
        assert secret not in message
    assert not info.value.retryable and info.value.status == 400 and info.value.code == "invalid_grant"
    assert fake_salesforce.api_requests() == []  # no API call without a session


def test_wrong_client_id_names_the_connected_app_settings(fake_salesforce, client_for, sleeps):
    with pytest.raises(ApiError) as info:
        client_for(client_id="not-the-consumer-key").describe("Contact")
    message = str(info.value)
    assert "invalid_client_id" in message
    assert "SALESFORCE_CLIENT_ID" in message and "SALESFORCE_CLIENT_SECRET" in message and "connected app" in message
    for secret in (fake_salesforce.password, fake_salesforce.security_token, fake_salesforce.client_secret,
                   fake_salesforce.password + fake_salesforce.security_token):
        assert secret not in message
    assert not info.value.retryable and sleeps.calls == []  # a refused login is not retried


def test_client_credentials_refusal_mentions_the_run_as_user(fake_salesforce, client_for):
    with pytest.raises(ApiError, match="Run As user") as info:
        client_for(username=None, password=None, security_token=None, client_secret="wrong-secret-xyz").limits()
    assert "SALESFORCE_CLIENT_SECRET" in str(info.value) and "wrong-secret-xyz" not in str(info.value)


@pytest.mark.parametrize(
    "overrides, setting",
    [
        (dict(client_secret=""), "SALESFORCE_CLIENT_SECRET"),
        (dict(password=None), "SALESFORCE_PASSWORD"),  # a username without a password
        (dict(username=None, password=None), "SALESFORCE_SECURITY_TOKEN"),  # token without the password flow
        (dict(api_version="66"), "API version"),
        (dict(base_url="http://example.my.salesforce.com"), "SALESFORCE_LOGIN_URL"),  # plain http off loopback
    ],
)
def test_unusable_settings_are_refused_before_any_call(client_for, fake_salesforce, overrides, setting):
    with pytest.raises(ConfigurationError, match=setting):
        client_for(**overrides)
    assert fake_salesforce.requests == []


# ---------------------------------------------------------------------------------------------- JWT bearer flow


def _jwt_client(client_for, server, **settings):
    return client_for(server, client_secret=None, password=None, security_token=None, **settings)


def test_jwt_bearer_flow_signs_a_short_assertion_and_sends_no_secret(fake_salesforce, client_for, jwt_key, tmp_path):
    fake_salesforce.jwt_public_key = jwt_key.public_key
    client = _jwt_client(client_for, fake_salesforce, private_key_file=jwt_key.write(tmp_path / "salesforce.key"))
    assert client.flow == "jwt_bearer" and fake_salesforce.requests == []
    before = time.time()
    assert client.limits()["DailyApiRequests"]["Max"] == 15000
    (token,) = fake_salesforce.token_requests()
    assert token.header("Authorization") is None and not token.query
    form = {k: v[0] for k, v in parse_qs(token.body).items()}
    assert form.keys() == {"grant_type", "assertion"}  # no client secret, no password
    assert form["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
    claims = jwt.decode(form["assertion"], jwt_key.public_key, algorithms=["RS256"],
                        audience="https://login.salesforce.com")
    assert (claims["iss"], claims["sub"]) == (fake_salesforce.client_id, fake_salesforce.username)
    assert before + 170 <= claims["exp"] <= time.time() + 180  # about 3 minutes ahead
    assert jwt.get_unverified_header(form["assertion"])["alg"] == "RS256"
    fake_salesforce.expire_sessions()
    client.limits()  # a new session: a new assertion is signed, the key stays on this machine
    assert len(fake_salesforce.token_requests()) == 2 and client.target_id == f"salesforce:{fake_salesforce.org_id}"


def test_jwt_key_text_from_a_secret_store_may_be_on_one_line(fake_salesforce, client_for, jwt_key):
    fake_salesforce.jwt_public_key = jwt_key.public_key
    one_line = jwt_key.private_pem.strip().replace("\n", "\\n")  # as an env file or secret store may hold it
    assert "\n" not in one_line
    assert _jwt_client(client_for, fake_salesforce, private_key=one_line).describe("Contact").sobject == "Contact"


def test_jwt_refusals_say_what_to_check_and_never_show_the_key(fake_salesforce, client_for, jwt_key):
    fake_salesforce.jwt_public_key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    with pytest.raises(ApiError) as info:  # the app holds another certificate
        _jwt_client(client_for, fake_salesforce, private_key=jwt_key.private_pem).limits()
    message = str(info.value)
    assert message.startswith("Salesforce refused the login (jwt_bearer flow, HTTP 400, invalid_grant: invalid "
                              "assertion).")
    assert "SALESFORCE_PRIVATE_KEY_FILE" in message and "pre-authorized" in message and "clock" in message
    assert "PRIVATE KEY" not in message and not info.value.retryable and fake_salesforce.api_requests() == []
    assertion = parse_qs(fake_salesforce.token_requests()[0].body)["assertion"][0]
    assert assertion not in message

    fake_salesforce.jwt_public_key = jwt_key.public_key
    with pytest.raises(ApiError, match="audience is invalid"):  # an audience this org does not accept
        _jwt_client(client_for, fake_salesforce, private_key=jwt_key.private_pem,
                    jwt_audience="https://acme.my.site.com/partners").limits()
    with pytest.raises(ApiError, match="user hasn't approved this consumer.*SALESFORCE_USERNAME is pre-authorized"):
        _jwt_client(client_for, fake_salesforce, private_key=jwt_key.private_pem, username="other@example.com").limits()


def _pem(key) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.BestAvailableEncryption(b"pw") if isinstance(key, rsa.RSAPrivateKey)
                             else serialization.NoEncryption()).decode()


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(username=None), "SALESFORCE_USERNAME is not set: the JWT bearer flow logs in as that user"),
        (dict(password="pw"), "unset SALESFORCE_PASSWORD and SALESFORCE_SECURITY_TOKEN"),
        (dict(private_key=None, private_key_file="/nonexistent/salesforce.key"),
         "SALESFORCE_PRIVATE_KEY_FILE /nonexistent/salesforce.key cannot be read .*openssl req -x509"),
        (dict(private_key="not a key"), "SALESFORCE_PRIVATE_KEY is not a PEM private key"),
        (dict(private_key="PEM", private_key_file="x.key"),
         "Set one of SALESFORCE_PRIVATE_KEY_FILE or SALESFORCE_PRIVATE_KEY"),
        (dict(private_key=_pem(rsa.generate_private_key(public_exponent=65537, key_size=1024))),
         "SALESFORCE_PRIVATE_KEY is an encrypted private key"),
        (dict(private_key=_pem(ec.generate_private_key(ec.SECP256R1()))), "SALESFORCE_PRIVATE_KEY is not an RSA key"),
        (dict(jwt_audience="http://login.salesforce.com"), "SALESFORCE_JWT_AUDIENCE must be an https URL"),
        (dict(private_key=None, jwt_audience="https://login.salesforce.com"), "only used by the JWT bearer flow"),
    ],
)
def test_jwt_settings_are_refused_before_any_call(fake_salesforce, client_for, jwt_key, settings, message):
    settings = {"private_key": jwt_key.private_pem, **settings}
    with pytest.raises(ConfigurationError, match=message) as info:
        client_for(client_secret=None, security_token=None, **{"password": None, **settings})
    key_lines = [line for value in settings.values() if isinstance(value, str) for line in value.splitlines()[1:2]]
    assert not any(line in str(info.value) for line in key_lines) and fake_salesforce.requests == []


@pytest.mark.parametrize("base_url, audience", [
    ("https://acme.my.salesforce.com/", "https://login.salesforce.com"),
    ("https://login.salesforce.com/", "https://login.salesforce.com"),
    ("https://acme--uat.sandbox.my.salesforce.com/", "https://test.salesforce.com"),
    ("https://acme--uat.my.salesforce.com/", "https://test.salesforce.com"),  # a sandbox without enhanced domains
    ("https://test.salesforce.com/", "https://test.salesforce.com"),
])
def test_jwt_audience_follows_the_login_host(base_url, audience):
    assert default_audience(base_url) == audience


# ---------------------------------------------------------------------------------------------- instance URL


@pytest.mark.parametrize("other_host", ["localhost", "127.0.0.1"])
def test_an_instance_url_off_salesforce_is_refused_before_the_token_is_sent(fake_salesforce, client_for, other_host):
    with FakeSalesforceServer() as other:
        fake_salesforce.instance_url = f"http://{other_host}:{other.port}"  # not the configured origin
        with pytest.raises(ApiError) as info:
            client_for().describe("Contact")
        message = str(info.value)
        assert f"The Salesforce token response names instance_url http://{other_host}:{other.port}/" in message
        assert f"neither on https://*.salesforce.com, https://*.force.com nor on {fake_salesforce.base_url}" in message
        assert "(SALESFORCE_DOMAIN / SALESFORCE_LOGIN_URL); the access token was not sent there" in message
        assert fake_salesforce.issued_tokens[0] not in message and not info.value.retryable
        assert other.requests == [] and fake_salesforce.api_requests() == []


@pytest.mark.parametrize("url, accepted", [
    ("https://acme.my.salesforce.com", True),
    ("https://acme--uat.sandbox.my.salesforce.com/", True),
    ("https://na139.salesforce.com", True),  # an instance host
    ("https://acme.lightning.force.com", True),
    ("acme.my.salesforce.com", True),  # a bare host is https
    ("https://login.example.com", True),  # the configured host
    ("https://login.example.com:8443", False),  # the configured host, another port
    ("https://salesforce.com.evil.example", False),
    ("https://evilsalesforce.com", False),
    ("https://salesforce.com", False),  # the vendor's own site, not an API instance
    ("http://acme.my.salesforce.com", False),  # plain http
    ("http://127.0.0.1:8080", False),  # loopback that is not the configured host
])
def test_instance_urls_are_accepted_on_salesforce_or_the_configured_host(url, accepted):
    def check():
        return instance_base_url(url, setting="instance_url (Salesforce token response)",
                                 configured="https://login.example.com/", configured_setting="SALESFORCE_LOGIN_URL",
                                 vendor_domains=SALESFORCE_DOMAINS)

    if accepted:
        assert check().startswith("https://")
    else:
        with pytest.raises(ApiError, match="the access token was not sent there|not usable"):
            check()


# ---------------------------------------------------------------------------------------------- shapes real orgs send


def test_token_responses_without_optional_fields_and_a_15_character_org_id(fake_salesforce, client_for):
    fake_salesforce.token_fields_omitted = ("token_type", "issued_at", "signature")
    fake_salesforce.identity_org_id_length = 15
    served = requests.post(fake_salesforce.token_url, timeout=5, data={
        "grant_type": "client_credentials", "client_id": fake_salesforce.client_id,
        "client_secret": fake_salesforce.client_secret}).json()
    assert served.keys() == {"access_token", "instance_url", "id", "scope"}  # the shape this test runs against
    assert served["id"].split("/")[-2] == fake_salesforce.org_id[:15]
    client = client_for(username=None, password=None, security_token=None)
    assert client.limits()["DailyApiRequests"]["Max"] == 15000
    assert client.target_id == f"salesforce:{fake_salesforce.org_id}"  # the 18-character form, as always
    assert fake_salesforce.userinfo_requests() == []


def test_a_request_level_error_object_is_read_like_an_array(fake_salesforce, client_for, seeded):
    fake_salesforce.request_errors_as_object = True
    with pytest.raises(ApiError, match="HTTP 400 INVALID_TYPE: No SObject type found") as info:
        client_for().update([{"id": seeded[0], SEG: "x"}])  # no attributes.type: a request-level error
    assert info.value.code == "INVALID_TYPE" and not info.value.retryable
    fake_salesforce.fail_next(401, path_contains="/limits", times=2,
                              body={"message": "This session is not valid for use with the REST API",
                                    "errorCode": "INVALID_SESSION_ID"})
    with pytest.raises(ApiError, match="HTTP 401 INVALID_SESSION_ID: This session is not valid") as info:
        client_for().limits()
    assert info.value.code == "INVALID_SESSION_ID"


def test_a_concurrent_request_refusal_is_waited_out_and_the_request_sent_again(fake_salesforce, client_for, seeded,
                                                                              sleeps):
    fake_salesforce.refuse_concurrent_next(path_contains="/composite/sobjects", times=2)
    results = client_for().update([_contact(seeded[0], **{SEG: "ok"})])
    assert results[0].success and sleeps.calls == [0.5, 1.0]  # the transport's backoff
    assert fake_salesforce.write_log == [("Contact", seeded[0], {SEG: "ok"})]  # written once


def test_a_concurrent_refusal_that_lasts_is_retryable_unlike_the_daily_limit(fake_salesforce, client_for, sleeps):
    fake_salesforce.refuse_concurrent_next(path_contains="/limits", times=10)
    with pytest.raises(ApiError) as info:
        client_for().limits()
    assert not isinstance(info.value, RequestLimitExceeded)
    assert info.value.retryable and (info.value.status, info.value.code) == (403, "REQUEST_LIMIT_EXCEEDED")
    assert "refused 4 time(s) because too many long-running requests run in the org at once" in str(info.value)
    assert "ConcurrentPerOrgLongTxn Limit exceeded" in str(info.value) and sleeps.calls == [0.5, 1.0, 2.0]


# ---------------------------------------------------------------------------------------------- target identity


def test_target_id_is_the_org_of_the_identity_url(fake_salesforce, client_for):
    client = client_for()
    assert fake_salesforce.requests == []
    assert client.target_id == f"salesforce:{fake_salesforce.org_id}"  # logs in to learn it
    assert client.target_label == f"Salesforce org {fake_salesforce.org_id} at {fake_salesforce.base_url}/"
    assert client.target_id == f"salesforce:{fake_salesforce.org_id}"
    assert len(fake_salesforce.token_requests()) == 1 and fake_salesforce.userinfo_requests() == []
    assert fake_salesforce.api_requests() == [] and client.api_requests == 1
    for secret in (fake_salesforce.client_secret, fake_salesforce.password, fake_salesforce.issued_tokens[0]):
        assert secret not in client.target_label


def test_target_id_falls_back_to_userinfo_without_identity_url(client_for):
    with FakeSalesforceServer(identity_in_token=False) as org:
        client = client_for(org)
        assert client.target_id == f"salesforce:{org.org_id}"
        assert client.target_id == f"salesforce:{org.org_id}"  # asked once
        (userinfo,) = org.userinfo_requests()
        assert userinfo.method == "GET" and userinfo.header("Authorization") == f"Bearer {org.issued_tokens[0]}"
        assert org.org_id in client.target_label and org.api_usage == 0


def test_two_orgs_have_two_target_ids(fake_salesforce, client_for):
    with FakeSalesforceServer() as other:
        first, second = client_for().target_id, client_for(other).target_id
    assert first != second and second == f"salesforce:{other.org_id}"


def test_userinfo_without_an_org_id_is_an_error(client_for):
    with FakeSalesforceServer(identity_in_token=False) as org:
        org.fail_next(200, path_contains="/userinfo", body={"user_id": org.user_id})
        with pytest.raises(ApiError, match="organization_id"):
            client_for(org).target_id
        org.fail_next(403, path_contains="/userinfo", body=[{"message": "no", "errorCode": "INSUFFICIENT_SCOPE"}])
        with pytest.raises(ApiError, match="identity URL") as info:
            client_for(org).target_label
        assert info.value.status == 403


def test_relogin_into_another_org_is_refused(fake_salesforce, client_for, seeded):
    client = client_for()
    client.describe("Contact")
    fake_salesforce.expire_sessions()
    other_org = fake_id("00D", 5)
    fake_salesforce.fail_next(200, path_contains="/oauth2/token", body={
        "access_token": fake_salesforce.issue_token(), "instance_url": fake_salesforce.base_url,
        "id": f"https://login.salesforce.com/id/{other_org}/{fake_salesforce.user_id}", "token_type": "Bearer",
    })
    with pytest.raises(ApiError, match="started in org"):
        client.update([_contact(seeded[0], **{SEG: "x"})])
    assert fake_salesforce.write_log == []
    assert client.target_id == f"salesforce:{fake_salesforce.org_id}"


# ---------------------------------------------------------------------------------------------- describe


def test_describe_maps_fields(fake_salesforce, client_for):
    fake_salesforce.add_field("Contact", SEG, length=131072)
    describe = client_for().describe("Contact")
    assert describe.sobject == "Contact"
    seg = describe.find("CRM_2_SEG__C")
    assert seg is not None and seg.name == SEG
    assert (seg.type, seg.length, seg.extra_type_info, seg.updateable, seg.custom) == (
        "textarea", 131072, "plaintextarea", True, True)
    assert describe.fields["LastName"].nillable is False and describe.fields["Id"].id_lookup


def test_describe_of_an_unknown_object_says_so(client_for):
    with pytest.raises(ApiError, match="does not exist or is not accessible") as info:
        client_for().describe("Nope")
    assert info.value.status == 404 and info.value.code == "NOT_FOUND" and not info.value.retryable


# ---------------------------------------------------------------------------------------------- update / upsert


def test_update_partial_failure_gives_positional_results(fake_salesforce, client_for, seeded):
    c1, c2, c3 = seeded
    lead = fake_id(LEAD_PREFIX, 1)
    results = client_for().update([
        _contact(c1, **{SEG: "A"}),
        _contact(lead, **{SEG: "B"}),  # a Lead id sent as a Contact -> MALFORMED_ID
        _contact(c3, **{SEG: "X" * 11}),  # longer than the field -> STRING_TOO_LONG
    ])
    assert len(results) == 3
    assert results[0] == RecordResult(success=True, id=c1)
    assert results[1].success is False and results[1].id is None
    assert results[1].errors == (
        RecordError("MALFORMED_ID", f"Contact ID: id value of incorrect type: {lead}", ("Id",)),
    )
    assert results[2].error_code == "STRING_TOO_LONG" and results[2].errors[0].fields == (SEG,)
    assert "max length=10" in results[2].errors[0].message
    assert fake_salesforce.records["Contact"][c1][SEG] == "A"
    assert SEG not in fake_salesforce.records["Contact"][c3]
    assert fake_salesforce.write_log == [("Contact", c1, {SEG: "A"})]
    (call,) = fake_salesforce.api_requests("/composite/sobjects", method="PATCH")
    assert call.path == "/services/data/v66.0/composite/sobjects" and call.json["allOrNone"] is False


def test_update_writes_the_good_records_around_failures(fake_salesforce, client_for, seeded):
    c1, c2, c3 = seeded
    results = client_for().update([
        _contact(c1, **{SEG: "one"}),
        _contact("003notanid", **{SEG: "two"}),
        _contact(c2, **{SEG: "far too long"}),
        _contact(c3, **{SEG: "three"}),
    ])
    assert [r.error_code for r in results] == [None, "MALFORMED_ID", "STRING_TOO_LONG", None]
    assert [r.id for r in results] == [c1, None, None, c3]
    assert {cid: rec.get(SEG) for cid, rec in fake_salesforce.records["Contact"].items()} == {
        c1: "one", c2: None, c3: "three"}


def test_more_than_200_records_is_refused_without_a_call(fake_salesforce, client_for):
    records = [_contact(fake_id(CONTACT_PREFIX, n), LastName="x") for n in range(MAX_RECORDS_PER_REQUEST + 1)]
    client = client_for()
    with pytest.raises(ValueError, match="at most 200"):
        client.update(records)
    with pytest.raises(ValueError, match="at most 200"):
        client.upsert("Contact", EXT, records)
    assert fake_salesforce.requests == []
    assert client.update([]) == [] and fake_salesforce.requests == []


def test_upsert_reports_created_and_updated(fake_salesforce, client_for):
    fake_salesforce.add_field("Contact", EXT, type="string", length=40, external_id=True)
    existing = fake_id(CONTACT_PREFIX, 7)
    fake_salesforce.add_record("Contact", existing, LastName="Old", **{EXT: "k-1"})
    results = client_for().upsert("Contact", EXT, [
        {"attributes": {"type": "Contact"}, EXT: "k-1", "FirstName": "Ann"},
        {"attributes": {"type": "Contact"}, EXT: "k-2", "LastName": "New"},
        {"attributes": {"type": "Contact"}, EXT: "k-3"},  # creating without LastName
    ])
    assert results[0] == RecordResult(success=True, id=existing, created=False)
    assert results[1].success and results[1].created is True
    assert fake_salesforce.records["Contact"][results[1].id][EXT] == "k-2"
    assert results[2].error_code == "REQUIRED_FIELD_MISSING" and results[2].errors[0].fields == ("LastName",)
    assert fake_salesforce.records["Contact"][existing]["FirstName"] == "Ann"
    (call,) = fake_salesforce.api_requests("/composite/sobjects")
    assert call.path == f"/services/data/v66.0/composite/sobjects/Contact/{EXT}"


def test_upsert_refuses_names_that_are_not_api_names(client_for):
    with pytest.raises(ValueError, match="API name"):
        client_for().upsert("Contact", "Ext Id/../x", [])


def test_result_count_mismatch_is_an_error(fake_salesforce, client_for, seeded):
    fake_salesforce.fail_next(200, path_contains="/composite/sobjects", body=[{"id": seeded[0], "success": True}])
    with pytest.raises(ApiError, match="1 results for 2 records"):
        client_for().update([_contact(seeded[0], **{SEG: "a"}), _contact(seeded[1], **{SEG: "b"})])


# ---------------------------------------------------------------------------------------------- retrieve


def test_retrieve_chunks_by_2000_and_keeps_the_order_of_ids(fake_salesforce, client_for):
    fake_salesforce.add_field("Contact", SEG)
    ids = [fake_id(CONTACT_PREFIX, n) for n in range(2100)]
    for n, cid in enumerate(ids):
        fake_salesforce.add_record("Contact", cid, LastName=f"L{n}", **({SEG: f"s{n}"} if n % 2 else {}))
    fake_salesforce.delete_record("Contact", ids[5])
    asked = [ids[2099], fake_id(CONTACT_PREFIX, 9999), ids[5], fake_id(LEAD_PREFIX, 1), "nonsense", ids[1][:15],
             *ids[10:2010]]
    client = client_for()
    rows = client.retrieve("Contact", asked, ["lastname", "CRM_2_SEG__C"])
    assert len(rows) == len(asked)
    assert rows[0] == {"Id": ids[2099], "lastname": "L2099", "CRM_2_SEG__C": "s2099"}
    assert rows[1:5] == [None, None, None, None]  # unknown, deleted, another object's id, malformed
    assert rows[5] == {"Id": ids[1], "lastname": "L1", "CRM_2_SEG__C": "s1"}  # 15-char id answered with 18
    assert [r["Id"] for r in rows[6:]] == ids[10:2010]
    assert rows[6]["CRM_2_SEG__C"] is None and rows[7]["CRM_2_SEG__C"] == "s11"
    first, second = fake_salesforce.api_requests("/composite/sobjects/Contact", method="POST")
    assert first.json == {"ids": asked[:2000], "fields": ["Id", "lastname", "CRM_2_SEG__C"]}
    assert second.json["ids"] == asked[2000:] and "application/json" in first.header("Content-Type")
    assert client.api_requests == 3 and client.api_usage.used == 2
    assert client.retrieve("Contact", [], [SEG]) == [] and client.api_requests == 3


def test_retrieve_unknown_field_is_an_error(fake_salesforce, client_for, seeded):
    with pytest.raises(ApiError, match="INVALID_FIELD") as info:
        client_for().retrieve("Contact", seeded, ["crm_2_seg"])
    assert (info.value.status, info.value.code, info.value.retryable) == (400, "INVALID_FIELD", False)
    with pytest.raises(ValueError, match="API name"):
        client_for().retrieve("Contact", seeded, ["Last Name"])


def test_retrieve_logs_in_again_and_retries_like_other_calls(fake_salesforce, client_for, seeded, sleeps):
    client = client_for()
    client.describe("Contact")
    fake_salesforce.expire_sessions()
    fake_salesforce.fail_next(503, path_contains="/composite/sobjects/Contact")
    rows = client.retrieve("Contact", seeded, ["LastName"])
    assert [r["LastName"] for r in rows] == ["Doe"] * 3
    assert [r.status for r in fake_salesforce.api_requests("/composite/")] == [503, 401, 200]  # faults come first
    assert len(fake_salesforce.token_requests()) == 2 and sleeps.calls == [0.5]


# ---------------------------------------------------------------------------------------------- exact values


def test_decimal_values_reach_salesforce_exactly(fake_salesforce, client_for, seeded):
    fake_salesforce.add_field("Contact", "Amount__c", type="currency", length=0)
    fake_salesforce.add_field("Contact", "Rate__c", type="double", length=0)
    amount = Decimal("12345678901234567.89")
    assert float(amount) != amount  # a float round trip would lose digits
    client = client_for()
    results = client.update([_contact(seeded[0], Amount__c=amount, Rate__c=Decimal("1E+3"), LastName="Doe")])
    assert results[0].success
    (call,) = fake_salesforce.api_requests("/composite/sobjects", method="PATCH")
    assert '"Amount__c": 12345678901234567.89' in call.body and '"Rate__c": 1000' in call.body
    assert "E" not in call.body.split('"Rate__c": ')[1][:6]
    assert "application/json" in call.header("Content-Type")
    assert fake_salesforce.records["Contact"][seeded[0]]["Amount__c"] == amount
    (row,) = client.retrieve("Contact", [seeded[0]], ["Amount__c"])
    assert row["Amount__c"] == amount and isinstance(row["Amount__c"], Decimal)


def test_json_body_is_json_dumps_except_for_decimals():
    body = {"allOrNone": False, "records": [{"a": "Zoë \"q\"", "n": 3, "f": 0.1, "b": True, "z": None}], "t": (1,)}
    assert json_body(body) == json.dumps(body).encode("ascii")
    assert json_body([Decimal("-0.00"), Decimal("1.5E-7"), Decimal("7")]) == b"[-0.00, 0.00000015, 7]"
    for bad in (float("nan"), Decimal("NaN"), Decimal("Infinity")):
        with pytest.raises(ValueError):
            json_body({"x": bad})


def test_a_value_of_the_wrong_type_fails_the_whole_request(fake_salesforce, client_for, seeded):
    fake_salesforce.add_field("Contact", "Birthdate__c", type="date", length=0)
    with pytest.raises(ApiError, match="JSON_PARSER_ERROR: Cannot deserialize instance of date") as info:
        client_for().update([_contact(seeded[0], LastName="A"), _contact(seeded[1], Birthdate__c="20/11/2026")])
    assert info.value.status == 400 and fake_salesforce.write_log == []


# ---------------------------------------------------------------------------- sessions, retries, limits


def test_expired_session_logs_in_again_once_and_goes_on(fake_salesforce, client_for, seeded):
    client = client_for()
    client.update([_contact(seeded[0], **{SEG: "first"})])
    fake_salesforce.expire_sessions()  # e.g. 2 hours idle, or another process logged out
    results = client.update([_contact(seeded[1], **{SEG: "second"})])
    assert results[0].success
    assert len(fake_salesforce.token_requests()) == 2
    assert [r.status for r in fake_salesforce.api_requests()] == [200, 401, 200]
    second, retried = fake_salesforce.api_requests()[1:]
    assert second.json == retried.json  # the same request, resent
    assert retried.header("Authorization") == f"Bearer {fake_salesforce.issued_tokens[1]}"
    assert fake_salesforce.records["Contact"][seeded[1]][SEG] == "second"


def test_a_second_401_fails_with_a_clear_message(fake_salesforce, client_for):
    fake_salesforce.fail_next(401, path_contains="/services/data", times=2)
    with pytest.raises(ApiError, match="even right after a fresh login") as info:
        client_for().limits()
    assert not info.value.retryable and info.value.status == 401 and info.value.code == "INVALID_SESSION_ID"
    assert len(fake_salesforce.token_requests()) == 2 and len(fake_salesforce.api_requests()) == 2


def test_503_is_retried_with_backoff(fake_salesforce, client_for, seeded, sleeps):
    fake_salesforce.fail_next(503, path_contains="/composite/sobjects", times=2)
    fake_salesforce.drop_connection_next(path_contains="/oauth2/token")
    results = client_for().update([_contact(seeded[0], **{SEG: "ok"})])
    assert results[0].success
    assert sleeps.calls == [0.5, 0.5, 1.0]  # token: one retry; update: two retries, doubling
    assert fake_salesforce.write_log == [("Contact", seeded[0], {SEG: "ok"})]


def test_retries_exhausted_is_a_retryable_error(fake_salesforce, client_for, sleeps):
    fake_salesforce.fail_next(503, path_contains="/limits", times=10)
    with pytest.raises(ApiError, match=r"failed after 4 attempt\(s\): HTTP 503") as info:
        client_for().limits()
    assert info.value.retryable and sleeps.calls == [0.5, 1.0, 2.0]


def test_request_limit_exceeded_stops_the_run(fake_salesforce, client_for, seeded, sleeps):
    client = client_for()
    fake_salesforce.exceed_request_limit_after(1)
    client.update([_contact(seeded[0], **{SEG: "a"})])
    with pytest.raises(RequestLimitExceeded, match="resume later") as info:
        client.update([_contact(seeded[1], **{SEG: "b"})])
    assert isinstance(info.value, ApiError)
    assert (info.value.status, info.value.code, info.value.retryable) == (403, "REQUEST_LIMIT_EXCEEDED", False)
    assert "TotalRequests Limit exceeded" in str(info.value)
    assert sleeps.calls == []


def test_other_4xx_carry_salesforce_error_code(fake_salesforce, client_for):
    fake_salesforce.fail_next(
        400, path_contains="/composite/sobjects",
        body=[{"message": "Unexpected character", "errorCode": "JSON_PARSER_ERROR", "fields": []}],
    )
    with pytest.raises(ApiError, match="HTTP 400 JSON_PARSER_ERROR: Unexpected character") as info:
        client_for().update([_contact(fake_id(CONTACT_PREFIX, 1), LastName="x")])
    assert info.value.code == "JSON_PARSER_ERROR" and not info.value.retryable
    fake_salesforce.fail_next(
        403, path_contains="/limits", body=[{"message": "no", "errorCode": "API_DISABLED_FOR_ORG"}]
    )
    with pytest.raises(ApiError, match="API Enabled") as info:
        client_for().limits()
    assert not isinstance(info.value, RequestLimitExceeded) and info.value.code == "API_DISABLED_FOR_ORG"


def test_limit_info_header_is_parsed(fake_salesforce, client_for):
    fake_salesforce.set_api_usage(10017)
    client = client_for()
    assert client.api_usage is None
    client.describe("Contact")
    assert client.api_usage == ApiUsage(used=10018, limit=15000)
    client.limits()
    assert client.api_usage == ApiUsage(used=10019, limit=15000)


@pytest.mark.parametrize(
    "header, expected",
    [
        ("api-usage=25/15000", ApiUsage(25, 15000)),
        ("api-usage=25/15000, per-app-api-usage=17/250(appName=sample-app)", ApiUsage(25, 15000)),  # older format
        ("per-app-api-usage=17/250(appName=sample-app)", None),  # no org usage: keep the previous reading
    ],
)
def test_limit_info_formats(header, expected):
    client = SalesforceClient(base_url="https://acme.my.salesforce.com", client_id="id", client_secret="secret")
    response = requests.Response()
    response.headers["Sforce-Limit-Info"] = header
    client._record_limit_info(response)
    assert client.api_usage == expected
    client.close()


# ---------------------------------------------------------------------------------------------- base URL


@pytest.mark.parametrize(
    "domain, login_url, expected",
    [
        ("d5i000000isb4eak-dev-ed", None, "https://d5i000000isb4eak-dev-ed.my.salesforce.com/"),  # My Domain prefix
        ("  Acme-Corp ", "", "https://acme-corp.my.salesforce.com/"),  # blanks and case; empty login URL = unset
        ("acme.my.salesforce.com", None, "https://acme.my.salesforce.com/"),  # pasted host
        ("acme.my.salesforce.com/", None, "https://acme.my.salesforce.com/"),  # pasted host with slash
        ("https://acme.my.salesforce.com", None, "https://acme.my.salesforce.com/"),  # pasted URL
        ("https://acme--uat.sandbox.my.salesforce.com/", None, "https://acme--uat.sandbox.my.salesforce.com/"),
        (None, "https://test.salesforce.com", "https://test.salesforce.com/"),  # sandbox login URL
        ("", "http://127.0.0.1:8080", "http://127.0.0.1:8080/"),  # tests may use plain http on loopback
    ],
)
def test_salesforce_base_url(domain, login_url, expected):
    assert salesforce_base_url(domain=domain, login_url=login_url) == expected


@pytest.mark.parametrize(
    "domain, login_url, setting",
    [
        ("acme", "https://test.salesforce.com", "SALESFORCE_DOMAIN.*SALESFORCE_LOGIN_URL"),  # both
        (None, None, "SALESFORCE_DOMAIN.*SALESFORCE_LOGIN_URL"),  # neither
        ("  ", "", "SALESFORCE_DOMAIN.*SALESFORCE_LOGIN_URL"),  # blank counts as unset
        ("my domain", None, "SALESFORCE_DOMAIN"),  # a space
        ("acme/other", None, "SALESFORCE_DOMAIN"),  # a slash
        ("acme_corp!", None, "SALESFORCE_DOMAIN"),  # odd characters
        ("http://acme.my.salesforce.com", None, "SALESFORCE_DOMAIN"),  # insecure
        ("https://acme.my.salesforce.com/services/oauth2/token", None, "SALESFORCE_DOMAIN"),  # a path
        ("login.salesforce.com", None, "SALESFORCE_LOGIN_URL instead"),  # not a My Domain host
        ("acme.lightning.force.com", None, "Lightning"),  # the UI host
        (None, "http://acme.my.salesforce.com", "SALESFORCE_LOGIN_URL"),  # insecure login URL
    ],
)
def test_salesforce_base_url_refusals(domain, login_url, setting):
    with pytest.raises(ConfigurationError, match=setting):
        salesforce_base_url(domain=domain, login_url=login_url)
