"""The local SQLite CRM target honours the ``CrmTarget`` contract of ``sfmc_pipeline/salesforce/records.py`` the way
Salesforce's describe and sObject Collections do: describe like Salesforce's describe, at most 200 records per call,
one ``RecordResult`` per record in request order, per-record Salesforce status codes with no id on failure, valid
records written even when others in the same call fail, upsert results carrying ``created``, retrieve by Id in the
order of ids (None for missing ids). Its ``target_id`` is persisted in the file; ``Decimal`` values are stored exactly.
"""

from __future__ import annotations

import re
import sqlite3
from decimal import Decimal

import pytest

from sfmc_pipeline.crm.local.target import LocalCrmTarget
from sfmc_pipeline.salesforce.ids import CONTACT_PREFIX, LEAD_PREFIX, is_valid_id, to_18
from sfmc_pipeline.salesforce.records import (
    MAX_RECORDS_PER_REQUEST,
    CrmTarget,
    RecordResult,
)


def sf_id(prefix: str, n: int) -> str:
    return to_18(f"{prefix}Ts{n:010d}")


C1, C2, C3 = (sf_id(CONTACT_PREFIX, n) for n in (1, 2, 3))
L1 = sf_id(LEAD_PREFIX, 1)


@pytest.fixture
def target(tmp_path):
    crm = LocalCrmTarget(tmp_path / "crm" / "local.sqlite")
    crm.ensure_object("Contact", status_fields=["new_customer__c"], status_field_length=20)
    crm.ensure_object("Lead", status_fields=["new_customer__c"], status_field_length=20)
    crm.seed("Contact", [{"Id": C1, "LastName": "One"}, {"Id": C2, "LastName": "Two", "Email": "two@example.com"}])
    crm.seed("Lead", [{"Id": L1, "LastName": "Lee", "Company": "Acme"}])
    yield crm
    crm.close()


def contact(record_id: str, **fields) -> dict:
    return {"attributes": {"type": "Contact"}, "id": record_id, **fields}


def rows_by_id(crm: LocalCrmTarget, sobject: str) -> dict[str, dict]:
    return {row["Id"]: row for row in crm.read(sobject)}


def assert_failed(result: RecordResult, code: str, fields: tuple[str, ...] | None = None) -> None:
    assert not result.success and result.id is None, result
    assert result.error_code == code, result
    if fields is not None:
        assert result.errors[0].fields == fields


# ---------------------------------------------------------------------- schema and describe


def test_implements_the_protocol_and_creates_the_db(tmp_path):
    path = tmp_path / "a" / "b" / "crm.sqlite"
    crm: CrmTarget = LocalCrmTarget(path)
    assert path.exists()
    assert crm.mode == "local" and crm.api_usage is None and crm.api_requests == 0
    crm.close()


def test_describe_standard_and_status_fields(target):
    contact_d = target.describe("Contact")
    assert contact_d.sobject == "Contact"
    assert list(contact_d.fields) == ["Id", "FirstName", "LastName", "Email", "new_customer__c"]
    id_f = contact_d.fields["Id"]
    assert (id_f.type, id_f.updateable, id_f.id_lookup, id_f.nillable) == ("id", False, True, False)
    last = contact_d.fields["LastName"]
    assert (last.type, last.length, last.nillable, last.custom, last.updateable) == ("string", 80, False, False, True)
    assert (contact_d.fields["FirstName"].length, contact_d.fields["FirstName"].nillable) == (40, True)
    assert (contact_d.fields["Email"].type, contact_d.fields["Email"].length) == ("email", 80)
    status = contact_d.find("NEW_CUSTOMER__C")
    assert status is not None
    assert (status.type, status.length, status.extra_type_info, status.custom, status.updateable) == (
        "textarea", 20, "plaintextarea", True, True,
    )
    lead_d = target.describe("lead")  # object names are case-insensitive, the answer is canonical
    assert lead_d.sobject == "Lead"
    company = lead_d.fields["Company"]
    assert (company.type, company.length, company.nillable) == ("string", 255, False)
    assert target.api_requests == 2


def test_default_status_field_length_is_long_text_area(tmp_path):
    with LocalCrmTarget(tmp_path / "crm.sqlite") as crm:
        crm.ensure_object("Contact", status_fields=["seg__c"])
        assert crm.describe("Contact").fields["seg__c"].length == 32768


def test_ensure_object_is_idempotent_and_adds_status_fields_later(tmp_path):
    path = tmp_path / "crm.sqlite"
    with LocalCrmTarget(path) as crm:
        crm.ensure_object("Contact", status_fields=["a__c"])
        crm.ensure_object("Contact", status_fields=["a__c"])
        crm.seed("Contact", [{"Id": C1, "LastName": "One"}])
    with LocalCrmTarget(path) as crm:  # survives reopening
        crm.ensure_object("Contact", status_fields=["A__C", "b__c"])  # a__c exists (case-insensitive)
        assert list(crm.describe("Contact").fields) == ["Id", "FirstName", "LastName", "Email", "a__c", "b__c"]
        assert crm.read("Contact") == [
            {"Id": C1, "FirstName": None, "LastName": "One", "Email": None, "a__c": None, "b__c": None}
        ]
        assert crm.update([contact(C1, b__c="yes")])[0].success


def test_unknown_object(tmp_path):
    with LocalCrmTarget(tmp_path / "crm.sqlite") as crm:
        with pytest.raises(KeyError, match="ensure_object"):
            crm.describe("Contact")
        with pytest.raises(ValueError, match="unsupported sobject"):
            crm.ensure_object("Account")
        crm.ensure_object("Contact")
        with pytest.raises(KeyError, match="Lead"):
            crm.update([{"attributes": {"type": "Lead"}, "id": L1, "LastName": "x"}])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"status_fields": ['x"; drop table Contact; --__c']},
        {"status_fields": ["1abc__c"]},
        {"status_fields": ["new customer__c"]},
        {"status_fields": ["no_suffix"]},  # custom fields end in __c
        {"external_id_field": "ext-id__c"},
        {"status_field_length": 0},
        {"status_field_length": 131073},
    ],
)
def test_identifiers_and_lengths_are_validated(tmp_path, kwargs):
    with LocalCrmTarget(tmp_path / "crm.sqlite") as crm:
        with pytest.raises(ValueError):
            crm.ensure_object("Contact", **kwargs)
        crm.ensure_object("Contact")
        assert crm.read("Contact") == []


# ---------------------------------------------------------------------- seed


def test_seed_is_idempotent_and_never_overwrites(target):
    assert target.seed("Contact", [{"Id": C1, "LastName": "Changed"}, {"Id": C3, "LastName": "Three"}]) == 1
    assert target.seed("Contact", [{"Id": C3, "LastName": "Three"}]) == 0
    rows = rows_by_id(target, "Contact")
    assert rows[C1]["LastName"] == "One" and rows[C3]["LastName"] == "Three"


def test_seed_normalises_15_char_ids_and_rejects_bad_rows(target):
    c4 = sf_id(CONTACT_PREFIX, 4)
    assert target.seed("Contact", [{"id": c4[:15], "lastname": "Four"}]) == 1
    assert rows_by_id(target, "Contact")[c4]["LastName"] == "Four"
    with pytest.raises(ValueError, match="Id"):
        target.seed("Contact", [{"Id": L1, "LastName": "wrong prefix"}])
    with pytest.raises(ValueError, match="no field"):
        target.seed("Contact", [{"Id": C3, "Phone": "1"}])


def test_seed_is_all_or_nothing_across_batches(target, monkeypatch):
    monkeypatch.setattr("sfmc_pipeline.crm.local.store.SEED_BATCH", 2)
    good = [{"Id": sf_id(CONTACT_PREFIX, n), "LastName": f"N{n}"} for n in range(10, 15)]
    with pytest.raises(ValueError, match="no field"):
        target.seed("Contact", [*good, {"Id": sf_id(CONTACT_PREFIX, 20), "Phone": "1"}])
    assert set(rows_by_id(target, "Contact")) == {C1, C2}  # the batches before the bad row are rolled back
    assert target.seed("Contact", iter(good)) == 5
    assert [r["Id"] for r in target.read("Contact")][2:] == [g["Id"] for g in good]  # in the rows' order


# ---------------------------------------------------------------------- update


def test_update_success(target):
    results = target.update(
        [
            contact(C1, new_customer__c="true", Email="one@example.com"),
            contact(C2[:15], NEW_CUSTOMER__C=False),  # 15-char id, case-insensitive field name, bool as text
            {"attributes": {"type": "Lead"}, "Id": L1, "new_customer__c": "x"},
        ]
    )
    assert results == [
        RecordResult(success=True, id=C1),
        RecordResult(success=True, id=C2),
        RecordResult(success=True, id=L1),
    ]
    contacts = rows_by_id(target, "Contact")
    assert contacts[C1]["new_customer__c"] == "true" and contacts[C1]["Email"] == "one@example.com"
    assert contacts[C2]["new_customer__c"] == "false"
    assert target.read("Lead")[0]["new_customer__c"] == "x"
    assert target.api_requests == 1


def test_update_per_record_errors_are_positional_and_valid_records_are_written(target):
    missing = sf_id(CONTACT_PREFIX, 99)
    records = [
        contact(C1, new_customer__c="ok-1"),
        contact("003xx000004TmiQ", new_customer__c="x"),  # well-formed 15-char id, no such record
        contact("not-an-id", new_customer__c="x"),
        contact(C1[:17] + ("A" if C1[17] != "A" else "B"), new_customer__c="x"),  # 18 chars, wrong checksum
        contact(L1, new_customer__c="x"),  # a Lead id on a Contact
        contact(C2, Phone__c="x"),
        contact(missing, new_customer__c="x"),
        contact(C2, new_customer__c="x" * 21),
        contact(C2, Email="not an email"),
        contact(C2, LastName=""),
        contact(C2, LastName=None),
        contact(C2, new_customer__c="ok-2"),
    ]
    results = target.update(records)
    assert len(results) == len(records)
    assert results[0] == RecordResult(success=True, id=C1)
    assert_failed(results[1], "INVALID_CROSS_REFERENCE_KEY", ())
    assert results[1].errors[0].message == "invalid cross reference id"
    assert_failed(results[2], "MALFORMED_ID", ("Id",))
    assert results[2].errors[0].message == "Contact ID: id value of incorrect type: not-an-id"
    assert_failed(results[3], "MALFORMED_ID", ("Id",))
    assert_failed(results[4], "MALFORMED_ID", ("Id",))
    assert_failed(results[5], "INVALID_FIELD", ())
    assert "Phone__c" in results[5].errors[0].message
    assert_failed(results[6], "INVALID_CROSS_REFERENCE_KEY", ())
    assert_failed(results[7], "STRING_TOO_LONG", ("new_customer__c",))
    assert "max length=20" in results[7].errors[0].message
    assert_failed(results[8], "INVALID_EMAIL_ADDRESS", ("Email",))
    assert_failed(results[9], "REQUIRED_FIELD_MISSING", ("LastName",))
    assert results[9].errors[0].message == "Required fields are missing: [LastName]"
    assert_failed(results[10], "REQUIRED_FIELD_MISSING", ("LastName",))
    assert results[11] == RecordResult(success=True, id=C2)

    rows = rows_by_id(target, "Contact")
    assert rows[C1]["new_customer__c"] == "ok-1"
    assert rows[C2] == {
        "Id": C2, "FirstName": None, "LastName": "Two", "Email": "two@example.com", "new_customer__c": "ok-2"
    }
    assert missing not in rows


def test_update_not_updateable_field(tmp_path):
    with LocalCrmTarget(tmp_path / "crm.sqlite") as crm:
        crm.ensure_object("Contact")
        crm.seed("Contact", [{"Id": C1, "LastName": "One"}])
        # The id is the record's key, so mark a field read-only as field-level security would:
        with sqlite3.connect(crm.db_path) as conn:
            conn.execute("UPDATE _fields SET updateable = 0 WHERE sobject = 'Contact' AND name = 'FirstName'")
        conn.close()
        result = crm.update([contact(C1, FirstName="x")])[0]
        assert_failed(result, "INVALID_FIELD_FOR_INSERT_UPDATE", ("FirstName",))
        assert crm.describe("Contact").fields["FirstName"].updateable is False


def test_update_check_order(target):
    # an unknown field wins over a missing record; a missing record wins over value problems
    missing = sf_id(CONTACT_PREFIX, 98)
    assert target.update([contact(missing, Nope__c="x")])[0].error_code == "INVALID_FIELD"
    assert target.update([contact(missing, Email="bad")])[0].error_code == "INVALID_CROSS_REFERENCE_KEY"
    # too long before invalid email before required
    long_bad = "x" * 81
    assert target.update([contact(C1, Email=long_bad, LastName="")])[0].error_code == "STRING_TOO_LONG"
    assert target.update([contact(C1, LastName="", Email="bad")])[0].error_code == "INVALID_EMAIL_ADDRESS"


def test_email_check_is_pragmatic(target):
    good = ["a@b.co", "first.last+tag@sub.example.org"]
    bad = ["a@b", "a b@c.de", "a@@b.de", "@b.de", "a@b.", "a@b@c.de"]
    results = target.update([contact(C1, Email=e) for e in good + bad])
    assert [r.success for r in results] == [True] * len(good) + [False] * len(bad)
    assert target.update([contact(C1, Email="")])[0].success  # blank clears a nillable field
    assert rows_by_id(target, "Contact")[C1]["Email"] is None


def test_update_more_than_200_records_is_refused(target):
    records = [contact(C1, new_customer__c=str(i)) for i in range(MAX_RECORDS_PER_REQUEST + 1)]
    with pytest.raises(ValueError, match="200"):
        target.update(records)
    assert target.read("Contact")[0]["new_customer__c"] is None
    assert len(target.update(records[:MAX_RECORDS_PER_REQUEST])) == MAX_RECORDS_PER_REQUEST


def test_update_request_level_errors(target):
    with pytest.raises(ValueError, match="SObject type"):
        target.update([{"id": C1, "new_customer__c": "x"}])
    with pytest.raises(ValueError, match="chunks"):
        target.update(
            [contact(C1) if i % 2 == 0 else {"attributes": {"type": "Lead"}, "id": L1} for i in range(11)]
        )
    with pytest.raises(ValueError):
        target.update([contact(C1, new_customer__c=["a", "b"])])


# ---------------------------------------------------------------------- upsert


@pytest.fixture
def upsert_target(tmp_path):
    with LocalCrmTarget(tmp_path / "crm.sqlite") as crm:
        crm.ensure_object("Lead", status_fields=["seg__c"], external_id_field="Ext_Id__c")
        crm.seed("Lead", [{"Id": L1, "LastName": "Lee", "Company": "Acme", "Ext_Id__c": "K1"}])
        yield crm


def test_upsert_describe_external_id_field(upsert_target):
    ext = upsert_target.describe("Lead").fields["Ext_Id__c"]
    assert (ext.type, ext.length, ext.external_id, ext.id_lookup, ext.custom, ext.updateable) == (
        "string", 255, True, True, True, True,
    )


def test_upsert_updates_and_creates(upsert_target):
    results = upsert_target.upsert(
        "Lead",
        "Ext_Id__c",
        [
            {"attributes": {"type": "Lead"}, "Ext_Id__c": "k1", "seg__c": "updated"},  # case-insensitive match
            {"attributes": {"type": "Lead"}, "Ext_Id__c": "K2", "LastName": "New", "Company": "Co", "seg__c": "new"},
            {"attributes": {"type": "Lead"}, "Ext_Id__c": "K3", "LastName": "NoCompany"},
            {"attributes": {"type": "Lead"}, "Ext_Id__c": "K4", "LastName": "Also", "Company": "Co"},
        ],
    )
    assert results[0] == RecordResult(success=True, id=L1, created=False)
    assert results[1].success and results[1].created is True
    assert_failed(results[2], "REQUIRED_FIELD_MISSING", ("Company",))
    assert results[3].success and results[3].created is True
    new_ids = [results[1].id, results[3].id]
    assert len(set(new_ids)) == 2
    assert all(is_valid_id(i) and len(i) == 18 and i.startswith(LEAD_PREFIX) for i in new_ids)

    rows = rows_by_id(upsert_target, "Lead")
    assert rows[L1]["seg__c"] == "updated" and rows[L1]["Ext_Id__c"] == "k1"
    assert rows[results[1].id]["LastName"] == "New" and rows[results[1].id]["seg__c"] == "new"
    assert len(rows) == 3

    again = upsert_target.upsert("Lead", "ext_id__c", [{"attributes": {"type": "Lead"}, "Ext_Id__c": "K2"}])
    assert again == [RecordResult(success=True, id=results[1].id, created=False)]


def test_created_ids_do_not_repeat_after_reopening(upsert_target, tmp_path):
    first = upsert_target.upsert(
        "Lead", "Ext_Id__c", [{"attributes": {"type": "Lead"}, "Ext_Id__c": "A", "LastName": "A", "Company": "C"}]
    )[0]
    with LocalCrmTarget(upsert_target.db_path) as reopened:
        second = reopened.upsert(
            "Lead", "Ext_Id__c", [{"attributes": {"type": "Lead"}, "Ext_Id__c": "B", "LastName": "B", "Company": "C"}]
        )[0]
    assert first.created and second.created and first.id != second.id


def test_upsert_per_record_errors(upsert_target):
    upsert_target.seed("Lead", [{"Id": sf_id(LEAD_PREFIX, 2), "LastName": "x", "Company": "y", "Ext_Id__c": "dup"},
                                {"Id": sf_id(LEAD_PREFIX, 3), "LastName": "x", "Company": "y", "Ext_Id__c": "DUP"}])
    lead = {"type": "Lead"}
    results = upsert_target.upsert(
        "Lead",
        "Ext_Id__c",
        [
            {"attributes": lead, "Ext_Id__c": "Z", "LastName": "a", "Company": "b"},
            {"attributes": lead, "Ext_Id__c": "Z", "LastName": "a", "Company": "b"},
            {"attributes": lead, "LastName": "no key", "Company": "b"},
            {"attributes": lead, "Ext_Id__c": "dup", "seg__c": "x"},
            {"attributes": lead, "Ext_Id__c": "K9", "Id": L1},
            {"attributes": lead, "Ext_Id__c": "K8", "Nope__c": "x"},
            {"attributes": lead, "Ext_Id__c": "K1", "LastName": None},
            {"attributes": lead, "Ext_Id__c": "K7", "LastName": "n", "Company": "c", "Email": "bad"},
            {"attributes": lead, "Ext_Id__c": "K6", "LastName": "n", "Company": "c", "Email": "x@y.z"},
        ],
    )
    assert_failed(results[0], "DUPLICATE_VALUE", ("Ext_Id__c",))
    assert_failed(results[1], "DUPLICATE_VALUE", ("Ext_Id__c",))
    assert_failed(results[2], "MISSING_ARGUMENT")
    assert_failed(results[3], "DUPLICATE_EXTERNAL_ID", ("Ext_Id__c",))
    assert_failed(results[4], "INVALID_FIELD", ("Id",))
    assert_failed(results[5], "INVALID_FIELD")
    assert_failed(results[6], "REQUIRED_FIELD_MISSING", ("LastName",))
    assert_failed(results[7], "INVALID_EMAIL_ADDRESS", ("Email",))
    assert results[8].success and results[8].created is True
    rows = rows_by_id(upsert_target, "Lead")
    assert rows[results[8].id]["Email"] == "x@y.z"
    assert rows[L1]["LastName"] == "Lee" and len(rows) == 4  # L1, the two "dup" seeds, K6
    assert all(r.created is None for r in results[:8])


def test_upsert_request_level_errors(upsert_target):
    with pytest.raises(ValueError, match="does not exist"):
        upsert_target.upsert("Lead", "Missing__c", [])
    with pytest.raises(ValueError, match="not an External ID"):
        upsert_target.upsert("Lead", "seg__c", [])
    with pytest.raises(ValueError, match="must be a Lead"):
        upsert_target.upsert("Lead", "Ext_Id__c", [{"attributes": {"type": "Contact"}, "Ext_Id__c": "K1"}])
    with pytest.raises(ValueError, match="200"):
        upsert_target.upsert("Lead", "Ext_Id__c", [{"attributes": {"type": "Lead"}, "Ext_Id__c": "K"}] * 201)
    with pytest.raises(KeyError):
        upsert_target.upsert("Contact", "Ext_Id__c", [])


# ---------------------------------------------------------------------- identity


def test_target_id_is_kept_by_the_file_and_new_for_a_new_file(tmp_path):
    path = tmp_path / "crm.sqlite"
    with LocalCrmTarget(path) as crm:
        first = crm.target_id
        assert re.fullmatch(r"local:[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", first)
        assert crm.target_label == f"local target {path.resolve()} ({first})"
    with LocalCrmTarget(path) as reopened:
        assert reopened.target_id == first
    with LocalCrmTarget(tmp_path / "other.sqlite") as other:
        assert other.target_id != first


# ---------------------------------------------------------------------- retrieve


def test_retrieve_keeps_the_order_of_ids_and_counts_requests_like_salesforce(target):
    target.update([contact(C2, new_customer__c="yes")])
    asked = [C2, sf_id(CONTACT_PREFIX, 99), L1, "junk", C1[:15], C2]
    rows = target.retrieve("contact", asked, ["lastname", "NEW_CUSTOMER__C"])
    assert rows == [
        {"Id": C2, "lastname": "Two", "NEW_CUSTOMER__C": "yes"},
        None, None, None,  # no such record, a Lead id, malformed
        {"Id": C1, "lastname": "One", "NEW_CUSTOMER__C": None},
        {"Id": C2, "lastname": "Two", "NEW_CUSTOMER__C": "yes"},
    ]
    assert target.api_requests == 2
    many = target.retrieve("Contact", [C1] * 4001, ["Id"])
    assert len(many) == 4001 and many[-1] == {"Id": C1} and target.api_requests == 5  # 3 requests of <= 2,000 ids
    assert target.retrieve("Contact", [], ["Id"]) == [] and target.api_requests == 5


def test_retrieve_unknown_field_or_object(target):
    with pytest.raises(ValueError, match="INVALID_FIELD"):
        target.retrieve("Contact", [C1], ["Phone__c"])
    with pytest.raises(KeyError):
        target.retrieve("Account", [C1], ["Id"])


# ---------------------------------------------------------------------- exact values


def test_decimal_values_are_stored_as_their_exact_text(target):
    results = target.update([contact(C1, new_customer__c=Decimal("12345678901234567.89")),
                             contact(C2, new_customer__c=Decimal("1E+3"))])
    assert all(r.success for r in results)
    rows = rows_by_id(target, "Contact")
    assert rows[C1]["new_customer__c"] == "12345678901234567.89" and rows[C2]["new_customer__c"] == "1000"
    for bad in (Decimal("NaN"), float("inf")):
        with pytest.raises(ValueError):
            target.update([contact(C1, new_customer__c=bad)])
