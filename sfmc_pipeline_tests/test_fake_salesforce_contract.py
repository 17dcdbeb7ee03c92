"""Contract tests for the fake Salesforce org (``sfmc_pipeline_testing/salesforce_server.py``).

They pin, over real HTTP with plain ``requests``, the parts of the Salesforce Platform REST API contract
(OAuth, sObject Collections update/upsert/retrieve, errors, limits, describe, Contact/Lead fields) that our
Salesforce client relies on:

* OAuth token: password flow (password + security token), client-credentials flow (client id and secret in the
  form or with HTTP Basic client authentication) and JWT bearer flow (RS256 assertion verified with the app's
  certificate: ``iss``, ``sub``, ``aud``, a short ``exp``); 400 ``invalid_grant``; no ``expires_in``/refresh
  token; token calls are not API usage; the recorded shapes without ``token_type``/``issued_at``/``signature``
  and with a 15-character org id in the identity URL. ``id`` is the identity URL
  ``.../id/{orgId}/{userId}``; ``GET /services/oauth2/userinfo`` names the same org; each server is another org.
* Describe of Contact/Lead with a custom Long Text Area field.
* ``PATCH composite/sobjects``: 200 with positional per-record results (failures carry no ``id``), ``allOrNone``
  rollback, more than 200 records -> 400.
* 401 ``INVALID_SESSION_ID`` after session expiry, ``Sforce-Limit-Info`` on every API response,
  403 ``REQUEST_LIMIT_EXCEEDED`` (daily ``TotalRequests``, or ``ConcurrentPerOrgLongTxn``), a request-level error
  as one JSON object instead of an array.
* Bulk ``sf__Error`` served exactly as recorded (a bare ``UNABLE_TO_LOCK_ROW``, ``CODE:message``) and job
  ``contentUrl`` without a leading slash.
* ``PATCH composite/sobjects/{SObject}/{ExternalIdField}`` upsert with ``created`` true/false.
* ``POST composite/sobjects/{SObject}`` retrieve: order of ids, ``null`` for missing ids, 400 for unknown fields and
  for more than 2,000 ids.
* Exact decimals, and values checked against field types (400 ``JSON_PARSER_ERROR`` for the whole request).
* ``GET query?q=SELECT ... FROM Organization``: the org's one Organization row (name, type, sandbox), SOQL errors
  as 400 ``INVALID_FIELD`` / ``INVALID_TYPE`` / ``MALFORMED_QUERY``.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
import requests

from sfmc_pipeline.salesforce.ids import CONTACT_PREFIX, LEAD_PREFIX, is_valid_id
from sfmc_pipeline_testing.salesforce_server import FakeSalesforceServer, fake_id

SEG = "crm_2_seg__c"


def _login(server: FakeSalesforceServer) -> dict[str, str]:
    response = requests.post(
        server.token_url,
        data={
            "grant_type": "password",
            "client_id": server.client_id,
            "client_secret": server.client_secret,
            "username": server.username,
            "password": server.password + server.security_token,
        },
        timeout=5,
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def _update(server, headers, records, all_or_none=False) -> requests.Response:
    return requests.patch(
        f"{server.api_url}/composite/sobjects",
        json={"allOrNone": all_or_none, "records": records},
        headers=headers,
        timeout=5,
    )


def test_login_flows_and_invalid_grant(fake_salesforce: FakeSalesforceServer) -> None:
    sf = fake_salesforce
    token = requests.post(
        sf.token_url,
        data={"grant_type": "password", "client_id": "fake-consumer-key", "client_secret": "fake-consumer-secret",
              "username": "user@example.com", "password": "pwTOKEN123"},
        timeout=5,
    )
    assert token.status_code == 200
    body = token.json()
    assert {"access_token", "instance_url", "id", "token_type", "issued_at", "signature"} <= body.keys()
    assert "expires_in" not in body and "refresh_token" not in body
    assert body["instance_url"] == sf.base_url and body["token_type"] == "Bearer"
    assert body["access_token"].startswith("00D") and "!" in body["access_token"]
    assert body["issued_at"].isdigit() and len(body["issued_at"]) == 13  # epoch milliseconds as a string
    assert "Sforce-Limit-Info" not in token.headers

    cc = requests.post(
        sf.token_url,
        data={"grant_type": "client_credentials", "client_id": sf.client_id, "client_secret": sf.client_secret},
        timeout=5,
    )
    assert cc.status_code == 200 and cc.json()["access_token"] != body["access_token"]

    no_token = requests.post(
        sf.token_url,
        data={"grant_type": "password", "client_id": sf.client_id, "client_secret": sf.client_secret,
              "username": sf.username, "password": sf.password},  # security token not appended
        timeout=5,
    )
    assert no_token.status_code == 400
    assert no_token.json() == {"error": "invalid_grant", "error_description": "authentication failure"}
    bad_client = requests.post(
        sf.token_url, data={"grant_type": "client_credentials", "client_id": "nope", "client_secret": "x"}, timeout=5
    )
    assert (bad_client.status_code, bad_client.json()["error"]) == (400, "invalid_client_id")
    assert sf.api_usage == 0  # token calls are not API requests


def test_describe_and_limit_header(fake_salesforce: FakeSalesforceServer) -> None:
    sf = fake_salesforce
    sf.add_field("Contact", SEG, length=131072)
    sf.set_api_usage(10017)
    headers = _login(sf)

    response = requests.get(f"{sf.api_url}/sobjects/Contact/describe", headers=headers, timeout=5)
    assert response.status_code == 200
    assert response.headers["Sforce-Limit-Info"] == "api-usage=10018/15000"
    fields = {f["name"]: f for f in response.json()["fields"]}
    assert {"Id", "LastName", "FirstName", "Email", SEG} <= fields.keys()
    assert fields[SEG]["type"] == "textarea" and fields[SEG]["length"] == 131072
    assert fields[SEG]["extraTypeInfo"] == "plaintextarea"
    assert fields[SEG]["updateable"] and fields[SEG]["custom"]
    assert fields["LastName"]["nillable"] is False and fields["LastName"]["length"] == 80
    assert fields["Id"]["updateable"] is False and fields["Id"]["idLookup"] is True

    lead = requests.get(f"{sf.api_url}/sobjects/Lead/describe", headers=headers, timeout=5).json()
    company = next(f for f in lead["fields"] if f["name"] == "Company")
    assert company["nillable"] is False and not any(f["name"] == SEG for f in lead["fields"])

    missing = requests.get(f"{sf.api_url}/sobjects/Nope/describe", headers=headers, timeout=5)
    assert missing.status_code == 404 and missing.json()[0]["errorCode"] == "NOT_FOUND"
    assert missing.headers["Sforce-Limit-Info"] == "api-usage=10020/15000"

    limits = requests.get(f"{sf.api_url}/limits/", headers=headers, timeout=5).json()
    assert limits["DailyApiRequests"] == {"Max": 15000, "Remaining": 15000 - 10021}


def test_collections_update_partial_failure_positional_results(fake_salesforce: FakeSalesforceServer) -> None:
    sf = fake_salesforce
    sf.add_field("Contact", SEG, length=10)
    sf.add_field("Lead", SEG, length=10)
    c1, c2, gone = (fake_id(CONTACT_PREFIX, n) for n in (1, 2, 3))
    lead = fake_id(LEAD_PREFIX, 1)
    for cid in (c1, c2, gone):
        sf.add_record("Contact", cid, LastName="Doe")
    sf.add_record("Lead", lead, LastName="Roe", Company="Acme")
    sf.delete_record("Contact", gone)
    unknown = fake_id(CONTACT_PREFIX, 99)

    records = [
        {"attributes": {"type": "Contact"}, "id": c1, SEG: "A"},
        {"attributes": {"type": "Contact"}, "id": lead, SEG: "B"},  # Lead id sent as a Contact
        {"attributes": {"type": "Contact"}, "id": c2, SEG: "X" * 11},
        {"attributes": {"type": "Contact"}, "id": unknown, SEG: "C"},
        {"attributes": {"type": "Contact"}, "id": gone, SEG: "D"},
        {"attributes": {"type": "Contact"}, "id": c2, "Email": "not-an-email"},
        {"attributes": {"type": "Contact"}, "id": c2, "crm_2_seg": "E"},
        {"attributes": {"type": "Lead"}, "id": lead[:15], "CRM_2_SEG__C": "F"},  # 15-char id, other case
    ]
    response = _update(sf, _login(sf), records)
    assert response.status_code == 200
    results = response.json()
    assert len(results) == len(records)
    assert results[0] == {"id": c1, "success": True, "errors": []}
    assert results[7] == {"id": lead, "success": True, "errors": []}
    codes = [r["errors"][0]["statusCode"] if not r["success"] else None for r in results]
    assert codes == [None, "MALFORMED_ID", "STRING_TOO_LONG", "INVALID_CROSS_REFERENCE_KEY", "ENTITY_IS_DELETED",
                     "INVALID_EMAIL_ADDRESS", "INVALID_FIELD", None]
    assert all("id" not in r for r in results if not r["success"])
    assert results[1]["errors"][0]["message"] == f"Contact ID: id value of incorrect type: {lead}"
    assert results[2]["errors"][0]["fields"] == [SEG] and "(max length=10)" in results[2]["errors"][0]["message"]
    assert sf.records["Contact"][c1][SEG] == "A" and SEG not in sf.records["Contact"][c2]
    assert sf.records["Lead"][lead][SEG] == "F"
    assert sf.write_log == [("Contact", c1, {SEG: "A"}), ("Lead", lead, {SEG: "F"})]


def test_all_or_none_rollback_and_locked_row(fake_salesforce: FakeSalesforceServer) -> None:
    sf = fake_salesforce
    sf.add_field("Contact", SEG)
    c1, c2 = fake_id(CONTACT_PREFIX, 1), fake_id(CONTACT_PREFIX, 2)
    sf.add_record("Contact", c1, LastName="Doe")
    sf.add_record("Contact", c2, LastName="Roe")
    sf.lock_rows_next([c2])
    headers = _login(sf)
    records = [{"attributes": {"type": "Contact"}, "id": c1, SEG: "A"},
               {"attributes": {"type": "Contact"}, "id": c2, SEG: "B"}]

    results = _update(sf, headers, records, all_or_none=True).json()
    assert results[0] == {"success": False, "errors": [{
        "statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK",
        "message": "Record rolled back because not all records were valid and the request was using AllOrNone header",
        "fields": []}]}
    assert results[1]["errors"][0]["statusCode"] == "UNABLE_TO_LOCK_ROW"
    assert sf.write_log == []

    retry = _update(sf, headers, records, all_or_none=True).json()  # the lock was transient
    assert [r["success"] for r in retry] == [True, True]
    blank = _update(sf, headers, [{"attributes": {"type": "Contact"}, "id": c1, "LastName": ""}]).json()
    assert blank[0]["errors"] == [{"statusCode": "REQUIRED_FIELD_MISSING",
                                   "message": "Required fields are missing: [LastName]", "fields": ["LastName"]}]


def test_request_level_400s(fake_salesforce: FakeSalesforceServer) -> None:
    sf = fake_salesforce
    headers = _login(sf)
    too_many = [{"attributes": {"type": "Contact"}, "id": fake_id(CONTACT_PREFIX, n)} for n in range(201)]
    response = _update(sf, headers, too_many)
    assert response.status_code == 400
    assert response.json()[0]["errorCode"] == "EXCEEDED_ID_LIMIT"
    assert sf.write_log == []

    broken = requests.patch(f"{sf.api_url}/composite/sobjects", data='{"records": [x]}',
                            headers={**headers, "Content-Type": "application/json"}, timeout=5)
    assert broken.status_code == 400 and broken.json()[0]["errorCode"] == "JSON_PARSER_ERROR"
    untyped = _update(sf, headers, [{"id": fake_id(CONTACT_PREFIX, 1)}])
    assert untyped.status_code == 400 and isinstance(untyped.json(), list)
    assert "Sforce-Limit-Info" in untyped.headers


def test_expired_session_gets_401_until_relogin(fake_salesforce: FakeSalesforceServer) -> None:
    sf = fake_salesforce
    headers = _login(sf)
    assert requests.get(f"{sf.api_url}/limits/", headers=headers, timeout=5).status_code == 200
    sf.expire_sessions()

    expired = requests.get(f"{sf.api_url}/limits/", headers=headers, timeout=5)
    assert expired.status_code == 401
    assert expired.json() == [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]
    assert "Sforce-Limit-Info" not in expired.headers
    anonymous = requests.get(f"{sf.api_url}/limits/", timeout=5)
    assert anonymous.status_code == 401
    assert sf.api_usage == 1  # 401s are not counted

    assert requests.get(f"{sf.api_url}/limits/", headers=_login(sf), timeout=5).status_code == 200


def test_request_limit_exceeded(fake_salesforce: FakeSalesforceServer) -> None:
    sf = fake_salesforce
    headers = _login(sf)
    sf.exceed_request_limit_after(1)
    assert requests.get(f"{sf.api_url}/limits/", headers=headers, timeout=5).status_code == 200

    blocked = requests.get(f"{sf.api_url}/sobjects/Contact/describe", headers=headers, timeout=5)
    assert blocked.status_code == 403
    assert blocked.json() == [{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}]
    assert blocked.headers["Sforce-Limit-Info"].startswith("api-usage=")
    assert "Retry-After" not in blocked.headers
    sf.reset_request_limit()
    assert requests.get(f"{sf.api_url}/sobjects/Contact/describe", headers=headers, timeout=5).status_code == 200

    sf.fail_next(503, path_contains="/composite/")
    unavailable = _update(sf, headers, [])
    assert unavailable.status_code == 503 and unavailable.json()[0]["errorCode"] == "SERVER_UNAVAILABLE"


def test_upsert_created_and_updated(fake_salesforce: FakeSalesforceServer) -> None:
    sf = fake_salesforce
    sf.add_field("Contact", "Ext_Id__c", type="string", length=64, external_id=True)
    sf.add_field("Contact", SEG)
    existing = fake_id(CONTACT_PREFIX, 1)
    sf.add_record("Contact", existing, LastName="Doe", Ext_Id__c="E-1")
    headers = _login(sf)
    url = f"{sf.api_url}/composite/sobjects/Contact/Ext_Id__c"
    body = {"allOrNone": False, "records": [
        {"attributes": {"type": "Contact"}, "Ext_Id__c": "E-1", SEG: "A"},
        {"attributes": {"type": "Contact"}, "Ext_Id__c": "E-2", "LastName": "New", SEG: "B"},
        {"attributes": {"type": "Contact"}, "Ext_Id__c": "E-3", SEG: "C"},  # create without LastName
    ]}
    results = requests.patch(url, json=body, headers=headers, timeout=5).json()

    assert results[0] == {"id": existing, "success": True, "errors": [], "created": False}
    assert results[1]["success"] and results[1]["created"] is True
    new_id = results[1]["id"]
    assert is_valid_id(new_id) and len(new_id) == 18 and new_id.startswith(CONTACT_PREFIX)
    assert results[2]["errors"][0]["statusCode"] == "REQUIRED_FIELD_MISSING" and "id" not in results[2]
    assert sf.records["Contact"][existing][SEG] == "A"
    assert sf.records["Contact"][new_id] == {"Id": new_id, "Ext_Id__c": "E-2", "LastName": "New", SEG: "B"}

    not_external = requests.patch(f"{sf.api_url}/composite/sobjects/Contact/{SEG}", json=body, headers=headers,
                                  timeout=5)
    assert not_external.status_code == 400 and not_external.json()[0]["errorCode"] == "INVALID_FIELD"
    wrong_type = {"records": [{"attributes": {"type": "Lead"}, "Ext_Id__c": "E-9"}]}
    assert requests.patch(url, json=wrong_type, headers=headers, timeout=5).status_code == 400


def test_identity_url_and_userinfo_name_the_org(fake_salesforce: FakeSalesforceServer) -> None:
    sf = fake_salesforce
    token = requests.post(sf.token_url, data={"grant_type": "client_credentials", "client_id": sf.client_id,
                                              "client_secret": sf.client_secret}, timeout=5).json()
    assert token["id"] == f"{sf.base_url}/id/{sf.org_id}/{sf.user_id}" == sf.identity_url
    assert sf.org_id.startswith("00D") and is_valid_id(sf.org_id) and len(sf.org_id) == 18
    assert sf.user_id.startswith("005") and is_valid_id(sf.user_id)

    url = f"{sf.base_url}/services/oauth2/userinfo"
    info = requests.get(url, headers={"Authorization": f"Bearer {token['access_token']}"}, timeout=5)
    assert info.status_code == 200 and "Sforce-Limit-Info" not in info.headers
    body = info.json()
    assert (body["organization_id"], body["user_id"], body["preferred_username"]) == (
        sf.org_id, sf.user_id, sf.username)
    assert requests.get(url, timeout=5).status_code == 401
    assert requests.get(url, headers={"Authorization": "Bearer nope"}, timeout=5).json()[0]["errorCode"] == (
        "INVALID_SESSION_ID")
    assert sf.api_usage == 0  # token and userinfo calls are not API requests

    with FakeSalesforceServer(identity_in_token=False) as other:
        bare = requests.post(other.token_url, data={"grant_type": "client_credentials", "client_id": other.client_id,
                                                    "client_secret": other.client_secret}, timeout=5).json()
        assert "id" not in bare and other.org_id != sf.org_id
        assert requests.get(f"{other.base_url}/services/oauth2/userinfo", timeout=5,
                            headers={"Authorization": f"Bearer {bare['access_token']}"}).json()[
            "organization_id"] == other.org_id


def test_organization_query_names_the_org(fake_salesforce: FakeSalesforceServer) -> None:
    sf = fake_salesforce
    headers = _login(sf)

    def query(soql, **kwargs):
        return requests.get(f"{sf.api_url}/query/", params={"q": soql}, timeout=5, **kwargs)

    response = query("SELECT Id, Name, OrganizationType, IsSandbox FROM Organization", headers=headers)
    assert response.status_code == 200 and response.headers["Sforce-Limit-Info"] == "api-usage=1/15000"
    body = response.json()
    assert body["totalSize"] == 1 and body["done"] is True
    (row,) = body["records"]
    assert row["attributes"] == {"type": "Organization", "url": f"/services/data/v66.0/sobjects/Organization/{sf.org_id}"}
    assert {k: v for k, v in row.items() if k != "attributes"} == {
        "Id": sf.org_id, "Name": "Fake Org", "OrganizationType": "Developer Edition", "IsSandbox": False}
    assert query("select name from organization", headers=headers).json()["records"][0]["Name"] == "Fake Org"

    for soql, code in (("SELECT Id, Nope FROM Organization", "INVALID_FIELD"), ("SELECT Id FROM Contact", "INVALID_TYPE"),
                       ("DELETE Organization", "MALFORMED_QUERY"), ("", "MALFORMED_QUERY")):
        bad = query(soql, headers=headers)
        assert bad.status_code == 400 and bad.json()[0]["errorCode"] == code, soql
    assert query("SELECT Id FROM Organization").status_code == 401
    with FakeSalesforceServer(organization_name="Acme Sandbox", is_sandbox=True) as sandbox:
        token = _login(sandbox)
        rows = requests.get(f"{sandbox.api_url}/query", params={"q": "SELECT Name, IsSandbox FROM Organization"},
                            headers=token, timeout=5).json()["records"]
        assert (rows[0]["Name"], rows[0]["IsSandbox"]) == ("Acme Sandbox", True)


def test_collections_retrieve(fake_salesforce: FakeSalesforceServer) -> None:
    sf = fake_salesforce
    sf.add_field("Contact", SEG)
    c1, c2, gone = (fake_id(CONTACT_PREFIX, n) for n in (1, 2, 3))
    sf.add_record("Contact", c1, LastName="One", **{SEG: "A"})
    sf.add_record("Contact", c2, LastName="Two")
    sf.add_record("Contact", gone, LastName="Gone")
    sf.delete_record("Contact", gone)
    headers = _login(sf)
    url = f"{sf.api_url}/composite/sobjects/Contact"
    ids = [c2, fake_id(CONTACT_PREFIX, 99), c1[:15], gone, fake_id(LEAD_PREFIX, 1), "junk"]
    response = requests.post(url, json={"ids": ids, "fields": ["id", "LASTNAME", SEG]}, headers=headers, timeout=5)
    assert response.status_code == 200
    assert response.headers["Sforce-Limit-Info"] == "api-usage=1/15000"
    items = response.json()
    assert items == [
        {"attributes": {"type": "Contact", "url": f"/services/data/v66.0/sobjects/Contact/{c2}"},
         "Id": c2, "LastName": "Two", SEG: None},
        None,
        {"attributes": {"type": "Contact", "url": f"/services/data/v66.0/sobjects/Contact/{c1}"},
         "Id": c1, "LastName": "One", SEG: "A"},
        None, None, None,
    ]

    unknown = requests.post(url, json={"ids": [c1], "fields": ["Id", "Nope__c"]}, headers=headers, timeout=5)
    assert unknown.status_code == 400 and unknown.json()[0]["errorCode"] == "INVALID_FIELD"
    too_many = [fake_id(CONTACT_PREFIX, n) for n in range(2001)]
    over = requests.post(url, json={"ids": too_many, "fields": ["Id"]}, headers=headers, timeout=5)
    assert over.status_code == 400 and over.json()[0]["errorCode"] == "EXCEEDED_ID_LIMIT"
    assert requests.post(url, json={"ids": too_many[:2000], "fields": ["Id"]}, headers=headers,
                         timeout=5).status_code == 200
    assert requests.post(url, json={"fields": ["Id"]}, headers=headers, timeout=5).status_code == 400
    assert requests.post(f"{sf.api_url}/composite/sobjects/Nope", json={"ids": [c1], "fields": ["Id"]},
                         headers=headers, timeout=5).status_code == 404
    assert sf.api_usage == 6


TYPED = {"Birthdate__c": "date", "Seen__c": "datetime", "Score__c": "double", "Amount__c": "currency",
         "Share__c": "percent", "Visits__c": "int", "Active__c": "boolean"}


@pytest.fixture
def typed_org(fake_salesforce: FakeSalesforceServer) -> FakeSalesforceServer:
    for name, type_ in TYPED.items():
        fake_salesforce.add_field("Contact", name, type=type_, length=0)
    fake_salesforce.add_record("Contact", fake_id(CONTACT_PREFIX, 1), LastName="Doe")
    return fake_salesforce


def test_values_keep_their_digits_and_fit_their_field_types(typed_org: FakeSalesforceServer) -> None:
    sf = typed_org
    cid = fake_id(CONTACT_PREFIX, 1)
    body = (
        '{"records": [{"attributes": {"type": "Contact"}, "id": "%s", "Birthdate__c": "1990-02-28", '
        '"Seen__c": "2026-11-20T18:00:00Z", "Score__c": 12345678901234567.89, "Amount__c": "10.50", '
        '"Share__c": 7, "Visits__c": 3, "Active__c": false}]}' % cid
    )
    headers = {**_login(sf), "Content-Type": "application/json"}
    response = requests.patch(f"{sf.api_url}/composite/sobjects", data=body, headers=headers, timeout=5)
    assert response.status_code == 200 and response.json()[0]["success"], response.text
    record = sf.records["Contact"][cid]
    assert record["Score__c"] == Decimal("12345678901234567.89") and record["Amount__c"] == Decimal("10.50")
    assert (record["Birthdate__c"], record["Seen__c"], record["Visits__c"], record["Active__c"]) == (
        "1990-02-28", "2026-11-20T18:00:00Z", 3, False)
    items = requests.post(f"{sf.api_url}/composite/sobjects/Contact", headers=headers, timeout=5,
                          json={"ids": [cid], "fields": ["Score__c"]})
    assert '"Score__c": 12345678901234567.89' in items.text
    with_offset = _update(sf, headers, [{"attributes": {"type": "Contact"}, "id": cid,
                                         "Seen__c": "2026-11-20T18:00:00.000+01:00", "Visits__c": None}])
    assert with_offset.json()[0]["success"]


@pytest.mark.parametrize(
    "field, value, token",
    [
        ("Birthdate__c", "20/11/2026", "VALUE_STRING"),
        ("Birthdate__c", "2026-02-30", "VALUE_STRING"),
        ("Birthdate__c", "2026-11-20T18:00:00Z", "VALUE_STRING"),
        ("Seen__c", "2026-11-20", "VALUE_STRING"),
        ("Seen__c", "yesterday", "VALUE_STRING"),
        ("Score__c", "12,5", "VALUE_STRING"),
        ("Amount__c", True, "VALUE_TRUE"),
        ("Visits__c", 2.5, "VALUE_NUMBER_FLOAT"),
        ("Visits__c", "3", "VALUE_STRING"),
        ("Active__c", "true", "VALUE_STRING"),
        ("Active__c", 1, "VALUE_NUMBER_INT"),
    ],
)
def test_a_value_that_does_not_fit_its_field_type_fails_the_request(typed_org, field, value, token) -> None:
    sf = typed_org
    headers = _login(sf)
    good = {"attributes": {"type": "Contact"}, "id": fake_id(CONTACT_PREFIX, 1), "LastName": "New"}
    bad = {"attributes": {"type": "Contact"}, "id": fake_id(CONTACT_PREFIX, 1), field: value}
    response = _update(sf, headers, [good, bad])
    assert response.status_code == 400, response.text
    (error,) = response.json()
    assert error["errorCode"] == "JSON_PARSER_ERROR"
    kind = "double" if TYPED[field] in ("currency", "percent") else TYPED[field]  # the SOAP type, as Salesforce says
    assert error["message"].startswith(f"Cannot deserialize instance of {kind} from {token} value ")
    assert sf.write_log == []


def test_upsert_checks_value_types_and_nan_is_not_json(typed_org: FakeSalesforceServer) -> None:
    sf = typed_org
    sf.add_field("Contact", "Ext_Id__c", type="string", length=64, external_id=True)
    headers = _login(sf)
    url = f"{sf.api_url}/composite/sobjects/Contact/Ext_Id__c"
    body = {"records": [{"attributes": {"type": "Contact"}, "Ext_Id__c": "E-1", "LastName": "X", "Visits__c": "7"}]}
    response = requests.patch(url, json=body, headers=headers, timeout=5)
    assert response.status_code == 400 and response.json()[0]["errorCode"] == "JSON_PARSER_ERROR"
    nan = requests.patch(f"{sf.api_url}/composite/sobjects", headers={**headers, "Content-Type": "application/json"},
                         data='{"records": [{"attributes": {"type": "Contact"}, "id": "%s", "Score__c": NaN}]}'
                         % fake_id(CONTACT_PREFIX, 1), timeout=5)
    assert nan.status_code == 400 and nan.json()[0]["errorCode"] == "JSON_PARSER_ERROR"
    assert sf.write_log == []


# ---------------------------------------------------------------------------------------------- Bulk API 2.0 ingest


def _bulk(sf: FakeSalesforceServer, headers, method: str, path: str = "", **kwargs) -> requests.Response:
    return requests.request(method, f"{sf.api_url}/jobs/ingest{path}", headers=headers, timeout=5, **kwargs)


def _bulk_job(sf, headers, **spec) -> str:
    response = _bulk(sf, headers, "POST", json={"object": "Contact", "operation": "update", "contentType": "CSV",
                                                "lineEnding": "LF", **spec})
    assert response.status_code == 200, response.text
    return response.json()["id"]


def _upload(sf, headers, job_id: str, text: str, content_type: str = "text/csv") -> requests.Response:
    return _bulk(sf, {**headers, "Content-Type": content_type}, "PUT", f"/{job_id}/batches",
                 data=text.encode("utf-8"))


def _csv_rows(response: requests.Response) -> list[list[str]]:
    import csv
    import io

    return list(csv.reader(io.StringIO(response.content.decode("utf-8"), newline="")))


def test_bulk_ingest_job_lifecycle(fake_salesforce: FakeSalesforceServer) -> None:
    sf = fake_salesforce
    sf.add_field("Contact", SEG, length=10)
    sf.add_field("Contact", "Score__c", type="double", length=0)
    c1, c2, unknown = (fake_id(CONTACT_PREFIX, n) for n in (1, 2, 99))
    sf.add_record("Contact", c1, LastName="Doe", **{SEG: "old"})
    sf.add_record("Contact", c2, LastName="Roe")
    headers = _login(sf)

    created = _bulk(sf, headers, "POST", json={"object": "Contact", "operation": "update", "contentType": "CSV",
                                               "lineEnding": "LF", "columnDelimiter": "COMMA"})
    assert created.status_code == 200 and created.headers["Sforce-Limit-Info"] == "api-usage=1/15000"
    job = created.json()
    job_id = job["id"]
    assert job_id.startswith("750") and is_valid_id(job_id) and len(job_id) == 18
    assert (job["state"], job["object"], job["operation"], job["contentType"], job["lineEnding"]) == (
        "Open", "Contact", "update", "CSV", "LF")
    assert job["createdById"] == sf.user_id and job["contentUrl"] == f"services/data/v66.0/jobs/ingest/{job_id}/batches"

    early = _bulk(sf, headers, "GET", f"/{job_id}/successfulResults/")
    assert early.status_code == 400 and early.json()[0]["errorCode"] == "INVALIDJOBSTATE"
    data = (f'Id,{SEG},Score__c,Email\n{c1},"a,""b""",12345678901234567.89,\n'
            f"{c2},#N/A,,not-an-email\n{unknown},x,,\n")
    uploaded = _upload(sf, headers, job_id, data)
    assert uploaded.status_code == 201 and uploaded.content == b""
    again = _upload(sf, headers, job_id, data)
    assert again.status_code == 400 and again.json()[0]["errorCode"] == "INVALIDJOBSTATE"  # one upload per job

    closed = _bulk(sf, headers, "PATCH", f"/{job_id}", json={"state": "UploadComplete"})
    assert closed.status_code == 200 and closed.json()["state"] == "UploadComplete"
    assert sf.write_log == []  # nothing is applied before the job is processed
    info = _bulk(sf, headers, "GET", f"/{job_id}").json()
    assert (info["state"], info["numberRecordsProcessed"], info["numberRecordsFailed"]) == ("JobComplete", 3, 2)
    assert info["jobType"] == "V2Ingest" and "errorMessage" not in info
    assert sf.records["Contact"][c1][SEG] == 'a,"b"' and sf.records["Contact"][c1]["Score__c"] == Decimal(
        "12345678901234567.89")
    assert "Email" not in sf.records["Contact"][c1]  # an empty cell leaves the field as it is

    successful = _bulk(sf, headers, "GET", f"/{job_id}/successfulResults/")
    assert successful.headers["Content-Type"] == "text/csv" and "Sforce-Limit-Info" in successful.headers
    assert successful.content.startswith(b'"sf__Id","sf__Created","Id"')
    assert _csv_rows(successful) == [["sf__Id", "sf__Created", "Id", SEG, "Score__c", "Email"],
                                     [c1, "false", c1, 'a,"b"', "12345678901234567.89", ""]]
    failed = _csv_rows(_bulk(sf, headers, "GET", f"/{job_id}/failedResults/"))
    assert failed[0] == ["sf__Id", "sf__Error", "Id", SEG, "Score__c", "Email"]
    assert sorted(row[1:3] for row in failed[1:]) == sorted([
        ["INVALID_EMAIL_ADDRESS:Email: invalid email address: not-an-email:Email", c2],
        ["INVALID_CROSS_REFERENCE_KEY:invalid cross reference id:--", unknown]])
    assert all(row[0] == "" for row in failed[1:])
    assert _csv_rows(_bulk(sf, headers, "GET", f"/{job_id}/unprocessedrecords/")) == [
        ["Id", SEG, "Score__c", "Email"]]
    assert SEG not in sf.records["Contact"][c2]  # its row failed as a whole
    assert sf.api_usage == 9  # every Bulk request is an API request

    aborting_done = _bulk(sf, headers, "PATCH", f"/{job_id}", json={"state": "Aborted"})
    assert aborting_done.status_code == 400 and aborting_done.json()[0]["errorCode"] == "INVALIDJOBSTATE"
    missing = _bulk(sf, headers, "GET", "/750Fk0000000099AAA")
    assert missing.status_code == 404 and missing.json()[0]["errorCode"] == "NOT_FOUND"
    assert _bulk(sf, headers, "DELETE", f"/{job_id}").status_code == 204 and job_id not in sf.bulk_jobs


def test_bulk_rows_follow_the_composite_rules(fake_salesforce: FakeSalesforceServer) -> None:
    sf = fake_salesforce
    sf.add_field("Contact", SEG, length=5)
    sf.add_field("Contact", "Visits__c", type="int", length=0)
    ids = [fake_id(CONTACT_PREFIX, n) for n in range(1, 5)]
    for cid in ids:
        sf.add_record("Contact", cid, LastName="Doe")
    sf.delete_record("Contact", ids[3])
    sf.lock_rows_next([ids[2]])
    headers = _login(sf)
    rows = [(fake_id(LEAD_PREFIX, 1), {SEG: "a"}), (ids[0], {SEG: "toolong"}), (ids[1], {"LastName": None}),
            (ids[2], {SEG: "b"}), (ids[3], {SEG: "c"}), ("junk", {SEG: "d"})]
    composite = _update(sf, headers, [{"attributes": {"type": "Contact"}, "id": rid, **values}
                                      for rid, values in rows]).json()
    expected = {rid: f"{r['errors'][0]['statusCode']}:{r['errors'][0]['message']}:"
                     f"{','.join(r['errors'][0]['fields']) or '--'}" for (rid, _), r in zip(rows, composite)}
    sf.lock_rows_next([ids[2]])

    job_id = _bulk_job(sf, headers)
    lines = [f"Id,{SEG},LastName,Visits__c"] + [
        f"{rid},{values.get(SEG, '')},{'#N/A' if 'LastName' in values else ''}," for rid, values in rows]
    lines.append(f"{ids[0]},,,many")
    assert _upload(sf, headers, job_id, "\n".join(lines) + "\n").status_code == 201
    _bulk(sf, headers, "PATCH", f"/{job_id}", json={"state": "UploadComplete"})
    assert _bulk(sf, headers, "GET", f"/{job_id}").json()["numberRecordsFailed"] == 7
    failed = {row[2]: row[1] for row in _csv_rows(_bulk(sf, headers, "GET", f"/{job_id}/failedResults"))[1:]
              if row[5] != "many"}
    assert failed == expected  # the same codes, messages and fields as the composite endpoint
    typed = [row for row in _csv_rows(_bulk(sf, headers, "GET", f"/{job_id}/failedResults"))[1:] if row[5] == "many"]
    assert typed[0][1].startswith("INVALID_TYPE_ON_FIELD_IN_RECORD:Cannot deserialize instance of int")


def test_bulk_jobs_fail_for_what_bulk_cannot_read(fake_salesforce: FakeSalesforceServer) -> None:
    sf = fake_salesforce
    sf.add_field("Contact", SEG, length=131072)
    cid = fake_id(CONTACT_PREFIX, 1)
    sf.add_record("Contact", cid, LastName="Doe")
    headers = _login(sf)
    cases = {
        f"Id,Nope__c\n{cid},x\n": "InvalidBatch : Field name not found : Nope__c",
        f"Id,{SEG}\r\n{cid},x\r\n": "ClientInputError : LineEnding is invalid on user data. Current LineEnding "
                                    "setting is LF",
        f"Id,{SEG}\n{cid},{'x' * 32001}\n": "exceeds the maximum of 32000 characters",
        f"Id,{SEG}\n{cid},a,b\n": "Wrong number of columns in row 2",
        f"{SEG}\nx\n": "Required column is missing from the header: Id",
    }
    for data, message in cases.items():
        job_id = _bulk_job(sf, headers)
        assert _upload(sf, headers, job_id, data).status_code == 201
        _bulk(sf, headers, "PATCH", f"/{job_id}", json={"state": "UploadComplete"})
        info = _bulk(sf, headers, "GET", f"/{job_id}").json()
        assert info["state"] == "Failed" and message in info["errorMessage"], info
        assert info["numberRecordsProcessed"] == 0
    ok = _bulk_job(sf, headers)
    _upload(sf, headers, ok, f'Id,{SEG}\n{cid},"{"x" * 32000}\nquoted\r\nbreaks"\n')
    _bulk(sf, headers, "PATCH", f"/{ok}", json={"state": "UploadComplete"})
    assert _bulk(sf, headers, "GET", f"/{ok}").json()["state"] == "Failed"  # 32,000 + the breaks: over the limit
    empty = _bulk_job(sf, headers)
    _bulk(sf, headers, "PATCH", f"/{empty}", json={"state": "UploadComplete"})
    assert "No data" in _bulk(sf, headers, "GET", f"/{empty}").json()["errorMessage"]
    assert sf.write_log == []


def test_bulk_request_errors_upsert_list_and_abort(fake_salesforce: FakeSalesforceServer) -> None:
    sf = fake_salesforce
    sf.add_field("Contact", "Ext_Id__c", type="string", length=64, external_id=True)
    sf.add_field("Contact", SEG)
    existing = fake_id(CONTACT_PREFIX, 1)
    sf.add_record("Contact", existing, LastName="Doe", Ext_Id__c="E-1")
    headers = _login(sf)

    for spec, text in (({"object": "Nope"}, "Invalid object"), ({"operation": "upsert"}, "External ID was blank"),
                       ({"operation": "upsert", "externalIdFieldName": SEG}, "is not an External ID"),
                       ({"operation": "delete"}, "update and upsert")):
        bad = _bulk(sf, headers, "POST", json={"object": "Contact", "operation": "update", **spec})
        assert bad.status_code == 400 and bad.json()[0]["errorCode"] == "INVALIDJOB" and text in bad.json()[0][
            "message"]

    job_id = _bulk_job(sf, headers, operation="upsert", externalIdFieldName="ext_id__c")
    assert sf.bulk_job(job_id)["externalIdFieldName"] == "Ext_Id__c"
    wrong_type = _upload(sf, headers, job_id, "x", content_type="application/json")
    assert wrong_type.status_code == 400 and wrong_type.json()[0]["errorCode"] == "INVALID_CONTENT_TYPE"
    sf.bulk_max_upload_bytes = 100
    too_big = _upload(sf, headers, job_id, "x" * 101)
    assert too_big.status_code == 413 and too_big.json()[0]["errorCode"] == "REQUEST_ENTITY_TOO_LARGE"
    sf.bulk_max_upload_bytes = 10_000
    _upload(sf, headers, job_id, f"Ext_Id__c,{SEG},LastName\ne-1,a,\nE-2,b,New\nE-3,c,\n")
    _bulk(sf, headers, "PATCH", f"/{job_id}", json={"state": "UploadComplete"})
    assert _bulk(sf, headers, "GET", f"/{job_id}").json()["numberRecordsFailed"] == 1
    success = _csv_rows(_bulk(sf, headers, "GET", f"/{job_id}/successfulResults"))
    by_key = {row[2]: row for row in success[1:]}
    assert by_key["e-1"][:2] == [existing, "false"]  # text external ids match case-insensitively
    assert by_key["E-2"][1] == "true" and sf.records["Contact"][by_key["E-2"][0]]["LastName"] == "New"
    (failure,) = _csv_rows(_bulk(sf, headers, "GET", f"/{job_id}/failedResults"))[1:]
    assert failure[1] == "REQUIRED_FIELD_MISSING:Required fields are missing: [LastName]:LastName"

    opened = _bulk_job(sf, headers)
    aborted = _bulk(sf, headers, "PATCH", f"/{opened}", json={"state": "Aborted"})
    assert aborted.status_code == 200 and aborted.json()["state"] == "Aborted"
    assert _upload(sf, headers, opened, "Id\n").json()[0]["errorCode"] == "INVALIDJOBSTATE"
    closing_aborted = _bulk(sf, headers, "PATCH", f"/{opened}", json={"state": "UploadComplete"})
    assert closing_aborted.status_code == 400

    sf.bulk_list_page_size = 1
    first = _bulk(sf, headers, "GET", params={"jobType": "V2Ingest"}).json()
    assert first["done"] is False and [j["id"] for j in first["records"]] == [job_id]
    assert first["nextRecordsUrl"].startswith("/services/data/v66.0/jobs/ingest?queryLocator=")
    second = requests.get(f"{sf.base_url}{first['nextRecordsUrl']}", headers=headers, timeout=5).json()
    assert second["done"] is True and second["nextRecordsUrl"] is None
    assert [(j["id"], j["state"]) for j in second["records"]] == [(opened, "Aborted")]
    assert _bulk(sf, headers, "DELETE", f"/{opened}").status_code == 204
    assert _bulk(sf, headers, "GET").status_code == 200 and _bulk(sf, {}, "GET").status_code == 401


def test_bulk_fault_helpers(fake_salesforce: FakeSalesforceServer) -> None:
    sf = fake_salesforce
    sf.add_field("Contact", SEG)
    ids = [fake_id(CONTACT_PREFIX, n) for n in range(1, 5)]
    for cid in ids:
        sf.add_record("Contact", cid, LastName="Doe")
    headers = _login(sf)
    data = f"Id,{SEG}\n" + "".join(f"{cid},v{n}\n" for n, cid in enumerate(ids))

    def run(**poll_kwargs) -> dict:
        job_id = _bulk_job(sf, headers)
        _upload(sf, headers, job_id, data)
        _bulk(sf, headers, "PATCH", f"/{job_id}", json={"state": "UploadComplete"})
        return _bulk(sf, headers, "GET", f"/{job_id}").json()

    sf.fail_next_bulk_job("InvalidBatch : Failed after 10 retries", process_first=1)
    failed = run()
    assert (failed["state"], failed["errorMessage"], failed["numberRecordsProcessed"]) == (
        "Failed", "InvalidBatch : Failed after 10 retries", 1)
    unprocessed = _csv_rows(_bulk(sf, headers, "GET", f"/{failed['id']}/unprocessedrecords"))
    assert sorted(row[0] for row in unprocessed[1:]) == sorted(ids[1:])

    sf.leave_unprocessed_next(2)
    partial = run()
    assert (partial["state"], partial["numberRecordsProcessed"]) == ("JobComplete", 2)

    sf.bulk_polls_before_complete = 1
    slow = run()
    assert slow["state"] == "InProgress"
    assert _bulk(sf, headers, "GET", f"/{slow['id']}").json()["state"] == "JobComplete"

    sf.stall_bulk_jobs()
    stalled = run()
    for _ in range(5):
        assert _bulk(sf, headers, "GET", f"/{stalled['id']}").json()["state"] == "InProgress"
    assert sf.process_bulk_jobs() == [stalled["id"]] and sf.bulk_job(stalled["id"])["state"] == "JobComplete"

    left_open = sf.seed_bulk_job("Contact")
    left_closed = sf.seed_bulk_job("Contact", csv_text=data, state="UploadComplete")
    assert sf.bulk_job(left_open)["state"] == "Open" and sf.bulk_job(left_closed)["data"] == data
    sf.stall_bulk_jobs(False)
    sf.bulk_polls_before_complete = 0
    assert _bulk(sf, headers, "GET", f"/{left_closed}").json()["state"] == "JobComplete"

    sf.reject_bulk_records({ids[0]: ("FIELD_CUSTOM_VALIDATION_EXCEPTION", "Nope: not allowed", ["crm_2_seg__c"])})
    rejected = run()
    errors = _csv_rows(_bulk(sf, headers, "GET", f"/{rejected['id']}/failedResults"))
    assert errors[1][1:3] == ["FIELD_CUSTOM_VALIDATION_EXCEPTION:Nope: not allowed:crm_2_seg__c", ids[0]]
    assert len(sf.bulk_requests()) == sum(1 for r in sf.requests if "/jobs/ingest" in r.path)
    sf.reject_bulk_records({ids[0]: "UNABLE_TO_LOCK_ROW", ids[1]: "INVALID_FIELD:bad value"})
    raw = run()
    errors = {row[2]: row[1] for row in _csv_rows(_bulk(sf, headers, "GET", f"/{raw['id']}/failedResults"))[1:]}
    assert errors == {ids[0]: "UNABLE_TO_LOCK_ROW", ids[1]: "INVALID_FIELD:bad value"}  # served exactly as given
    assert raw["contentUrl"] == f"services/data/v66.0/jobs/ingest/{raw['id']}/batches"  # no leading slash


# ---------------------------------------------------------------------------------------------- recorded shapes


def _basic(client_id: str, secret: str) -> str:
    from base64 import b64encode
    from urllib.parse import quote_plus

    return "Basic " + b64encode(f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()).decode()


def test_client_credentials_with_http_basic_client_authentication(fake_salesforce: FakeSalesforceServer) -> None:
    sf = fake_salesforce
    sf.client_secret = "s3cret:with/odd+chars"
    ok = requests.post(sf.token_url, data={"grant_type": "client_credentials"}, timeout=5,
                       headers={"Authorization": _basic(sf.client_id, sf.client_secret)})
    assert ok.status_code == 200 and ok.json()["access_token"] in sf.issued_tokens
    wrong = requests.post(sf.token_url, data={"grant_type": "client_credentials"}, timeout=5,
                          headers={"Authorization": _basic(sf.client_id, "wrong")})
    assert (wrong.status_code, wrong.json()["error"]) == (400, "invalid_client")


def test_jwt_bearer_assertions_are_verified_with_the_apps_certificate(fake_salesforce: FakeSalesforceServer,
                                                                     jwt_key) -> None:
    import time

    import jwt

    sf = fake_salesforce
    claims = {"iss": sf.client_id, "sub": sf.username, "aud": "https://login.salesforce.com",
              "exp": int(time.time()) + 180}

    def login(**changes) -> requests.Response:
        assertion = jwt.encode({**claims, **changes}, jwt_key.private_pem, algorithm="RS256")
        return requests.post(sf.token_url, timeout=5, data={
            "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": assertion})

    assert login().json() == {"error": "invalid_grant", "error_description": "invalid assertion"}  # no certificate
    sf.jwt_public_key = jwt_key.public_key
    assert login().status_code == 200 and login(aud="https://test.salesforce.com").status_code == 200
    refusals = {
        "aud": ("https://acme.my.salesforce.com", "invalid_grant", "audience is invalid"),
        "iss": ("someone-else", "invalid_client_id", "client identifier invalid"),
        "sub": ("other@example.com", "invalid_grant", "user hasn't approved this consumer"),
        "exp": (int(time.time()) - 10, "invalid_grant", "invalid assertion"),  # expired
    }
    for claim, (value, error, description) in refusals.items():
        refused = login(**{claim: value})
        assert refused.status_code == 400 and refused.json() == {"error": error, "error_description": description}
    assert login(exp=int(time.time()) + 3600).json()["error_description"] == "invalid assertion"  # not short-lived


def test_recorded_token_and_error_shapes(fake_salesforce: FakeSalesforceServer) -> None:
    sf = fake_salesforce
    sf.token_fields_omitted = ("token_type", "issued_at", "signature")
    sf.identity_org_id_length = 15
    body = requests.post(sf.token_url, timeout=5, data={
        "grant_type": "password", "client_id": sf.client_id, "client_secret": sf.client_secret,
        "username": sf.username, "password": sf.password + sf.security_token}).json()
    assert body.keys() == {"access_token", "instance_url", "id"}
    assert body["id"] == f"{sf.base_url}/id/{sf.org_id[:15]}/{sf.user_id}"
    headers = {"Authorization": f"Bearer {body['access_token']}"}

    sf.request_errors_as_object = True
    bad = _update(sf, headers, [{"id": fake_id(CONTACT_PREFIX, 1), "LastName": "x"}])
    assert bad.status_code == 400 and bad.json() == {
        "message": "No SObject type found in the attributes of the record at index 0", "errorCode": "INVALID_TYPE"}
    sf.refuse_concurrent_next(times=1)
    busy = requests.get(f"{sf.api_url}/limits/", headers=headers, timeout=5)
    assert busy.status_code == 403 and busy.json() == [
        {"message": "ConcurrentPerOrgLongTxn Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}]
    assert requests.get(f"{sf.api_url}/limits/", headers=headers, timeout=5).status_code == 200
