"""A patient is identified by a Thai national ID, a passport, or both (migration 0008): the rules on /v1,
on the original routes, in the database and in the history."""

from __future__ import annotations

import psycopg2
import pytest

from chalicelib.domain import identifiers
from tests.helpers import Api, card_number, check_digit, passport_number, patient_body


@pytest.fixture
def api(admin) -> Api:
    return admin[0]


def passport_patient(**overrides):
    body = patient_body(**({"passportCountry": "GBR", "passportNumber": passport_number()} | overrides))
    del body["idCardNum"]
    return body


def wrong_check_digit(card: str) -> str:
    return card[:12] + str((int(card[12]) + 1) % 10)


def errors(reply) -> dict[str, str]:
    return {e["field"]: e["message"] for e in reply.json.get("errors", [])}


def stored(owner_conn, patient_id: int) -> tuple:
    with owner_conn.cursor() as cur:
        cur.execute(
            "SELECT id_card_num, passport_country, passport_number, version FROM medical_app.patient "
            "WHERE patient_id = %s",
            (patient_id,),
        )
        return cur.fetchone()


# --- /v1 ------------------------------------------------------------------------------------------


def test_a_passport_holder_is_registered_without_a_national_id(api, owner_conn):
    body = passport_patient()
    body["passportCountry"], body["passportNumber"] = "gbr", body["passportNumber"].lower()
    reply = api.post("/v1/patients", body)
    assert reply.status == 201, reply.text
    patient = reply.json
    assert patient["idCardNum"] is None
    assert patient["passportCountry"] == "GBR"  # stored upper-case
    assert patient["passportNumber"] == body["passportNumber"].upper()
    assert stored(owner_conn, patient["patientId"])[:3] == (None, "GBR", body["passportNumber"].upper())
    assert api.get(f"/v1/patients/{patient['patientId']}").json == patient


def test_a_patient_may_hold_both_identifiers(api):
    reply = api.post("/v1/patients", patient_body(passportCountry="JPN", passportNumber=passport_number()))
    assert reply.status == 201, reply.text
    assert reply.json["idCardNum"] and reply.json["passportCountry"] == "JPN"


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"idCardNum": None}, "idCardNum", identifiers.IDENTIFIED),
        ({"idCardNum": None, "passportCountry": "GBR"}, "passportNumber", identifiers.PASSPORT_PAIRED),
        ({"passportNumber": "AB12345"}, "passportCountry", identifiers.PASSPORT_PAIRED),
        ({"idCardNum": "1234567890123"}, "idCardNum", identifiers.NATIONAL_ID_CHECK),
        ({"passportCountry": "XYZ", "passportNumber": "AB12345"}, "passportCountry", None),
        ({"passportCountry": "GBR", "passportNumber": "AB-12345"}, "passportNumber", None),
    ],
    ids=["no-identifier", "country-without-number", "number-without-country", "check-digit", "unknown-issuer",
         "passport-punctuation"],
)
def test_identifier_rules_answer_400_naming_the_field(api, owner_conn, body, field, message):
    before = _count(owner_conn)
    reply = api.post("/v1/patients", patient_body(**body))
    assert reply.status == 400, reply.text
    assert field in errors(reply)
    if message:
        assert errors(reply)[field] == message
    assert _count(owner_conn) == before


def _count(owner_conn) -> int:
    with owner_conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM medical_app.patient")
        return cur.fetchone()[0]


def test_a_passport_identifies_one_live_patient(api):
    body = passport_patient()
    first = api.post("/v1/patients", body).json
    duplicate = api.post("/v1/patients", passport_patient(passportNumber=body["passportNumber"].lower()))
    assert duplicate.status == 409 and "passport" in duplicate.json["detail"]
    # the same number from another issuer is another passport
    other = api.post("/v1/patients", passport_patient(passportCountry="JPN", passportNumber=body["passportNumber"]))
    assert other.status == 201
    # a deleted patient frees it; restoring them while it is taken again is refused, changing nothing
    assert api.delete(f"/v1/patients/{first['patientId']}").status == 204
    second = api.post("/v1/patients", body)
    assert second.status == 201
    refused = api.post(f"/v1/patients/{first['patientId']}/restore")
    assert refused.status == 409 and "passport" in refused.json["detail"]
    assert api.get(f"/v1/patients/{first['patientId']}").status == 410


def test_patients_are_found_by_passport(api):
    number = passport_number()
    gbr = api.post("/v1/patients", passport_patient(passportNumber=number)).json
    jpn = api.post("/v1/patients", passport_patient(passportCountry="JPN", passportNumber=number)).json
    by_number = api.get(f"/v1/patients?passportNumber={number.lower()}").json["items"]
    assert sorted(p["patientId"] for p in by_number) == sorted([gbr["patientId"], jpn["patientId"]])
    by_both = api.get(f"/v1/patients?passportNumber={number}&passportCountry=jpn").json["items"]
    assert [p["patientId"] for p in by_both] == [jpn["patientId"]]
    by_country = api.get("/v1/patients?passportCountry=JPN&limit=100").json["items"]
    assert jpn["patientId"] in {p["patientId"] for p in by_country}
    assert {p["passportCountry"] for p in by_country} == {"JPN"}
    bad = api.get("/v1/patients?passportNumber=a%20b")
    assert bad.status == 400 and "passportNumber" in errors(bad)


def test_identifiers_change_by_patch_within_the_rules(api, owner_conn):
    patient = api.post("/v1/patients", patient_body()).json
    path = f"/v1/patients/{patient['patientId']}"
    # the only identifier cannot be cleared: 409 naming it, nothing written
    refused = api.patch(path, {"idCardNum": None})
    assert refused.status == 409 and errors(refused) == {"idCardNum": identifiers.IDENTIFIED}
    assert api.patch(path, {"passportCountry": "GBR"}).status == 409  # half a passport
    assert stored(owner_conn, patient["patientId"])[3] == patient["version"]
    # add a passport, then drop the national ID: a passport holder now
    number = passport_number()
    assert api.patch(path, {"passportCountry": "GBR", "passportNumber": number}).status == 200
    cleared = api.patch(path, {"idCardNum": None})
    assert cleared.status == 200 and cleared.json["idCardNum"] is None
    history = api.get(f"{path}/history").json["items"]
    assert [v["changedFields"] for v in history[1:]] == [["passportCountry", "passportNumber"], ["idCardNum"]]
    assert history[1]["resource"]["passportNumber"] == number


def test_a_number_stored_before_check_digits_is_kept_while_unchanged(api, owner_conn):
    """Rows written before the check digit was enforced stay readable and writable; a new number must be valid."""
    legacy_card = wrong_check_digit(card_number())
    with owner_conn.cursor() as cur:
        cur.execute(
            "INSERT INTO medical_app.patient (id_card_num, first_name, last_name, birth_date) "
            "VALUES (%s, 'Old', 'Record', '1970-01-01') RETURNING patient_id",
            (legacy_card,),
        )
        patient_id = cur.fetchone()[0]
    owner_conn.commit()
    path = f"/v1/patients/{patient_id}"
    assert api.patch(path, {"phoneNum": "0812345678"}).status == 200
    full = patient_body(idCardNum=legacy_card, firstName="Old", lastName="Record", birthDate="1970-01-01")
    assert api.put(path, full).status == 200
    other_invalid = wrong_check_digit(card_number())
    reply = api.patch(path, {"idCardNum": other_invalid})
    assert reply.status == 400 and errors(reply) == {"idCardNum": identifiers.NATIONAL_ID_CHECK}
    assert stored(owner_conn, patient_id)[0] == legacy_card


# --- the original routes ------------------------------------------------------------------------


def test_original_routes_show_a_passport_holder_without_a_national_id(api):
    patient = api.post("/v1/patients", passport_patient()).json
    listed, cursor = None, ""
    while listed is None:
        page = api.get(f"/patient?limit=100{cursor}").json
        listed = next((p for p in page["patients"] if p["patientID"] == patient["patientId"]), None)
        if listed is None:
            assert page["nextCursor"], "the passport holder is listed"
            cursor = f"&cursor={page['nextCursor']}"
    assert listed == {
        "patientID": patient["patientId"], "idCardNum": None, "firstName": "Somchai", "lastName": "Jaidee",
        "birthDate": "1980-04-12", "phoneNum": "0812345678",
    }
    # they can still be updated there (their passport is kept), but never left without an identifier
    update = api.put(f"/patient/{patient['patientId']}", {"firstName": "Anan"})
    assert update.status == 200, update.text
    after = api.get(f"/v1/patients/{patient['patientId']}").json
    assert (after["firstName"], after["passportNumber"]) == ("Anan", patient["passportNumber"])
    cleared = api.put(f"/patient/{patient['patientId']}", {"idCardNum": None})
    assert cleared.status == 400 and "idCardNum" in cleared.json["error"] + str(cleared.json.get("errors"))


def test_original_routes_register_national_ids_only(api):
    body = {"idCardNum": card_number(), "firstName": "Anan", "lastName": "Chai", "birthDate": "1990-01-01",
            "phoneNum": "0812345678"}
    missing = api.post("/patient", {k: v for k, v in body.items() if k != "idCardNum"})
    assert missing.status == 400 and {"field": "idCardNum", "message": "is required"} in missing.json["errors"]
    passport = api.post("/patient", body | {"passportCountry": "GBR", "passportNumber": passport_number()})
    assert passport.status == 400 and "passportCountry" in str(passport.json["errors"])
    bad = api.post("/patient", body | {"idCardNum": wrong_check_digit(body["idCardNum"])})
    assert bad.status == 400
    assert {"field": "idCardNum", "message": identifiers.NATIONAL_ID_CHECK} in bad.json["errors"]
    created = api.post("/patient", body)
    assert created.status == 201
    assert api.get(f"/patient/{body['idCardNum']}").json["patient"]["patientID"] == created.json["patientID"]


# --- the database holds the rules for every writer ------------------------------------------------


@pytest.mark.parametrize(
    ("identifiers_given", "constraint"),
    [
        ((None, None, None), "patient_identified"),
        (("1101700230708", "GBR", None), "patient_passport_complete"),
        ((None, "gbr", "AB12345"), "patient_passport_country_format"),
        ((None, "GBR", "ab12345"), "patient_passport_number_format"),
    ],
)
def test_the_database_refuses_a_patient_breaking_the_rules(owner_conn, identifiers_given, constraint):
    with owner_conn.cursor() as cur, pytest.raises(psycopg2.errors.CheckViolation) as raised:
        cur.execute(
            "INSERT INTO medical_app.patient (id_card_num, passport_country, passport_number, first_name, last_name, "
            "birth_date) VALUES (%s, %s, %s, 'A', 'B', '1980-01-01')",
            identifiers_given,
        )
    owner_conn.rollback()
    assert raised.value.diag.constraint_name == constraint


def test_the_check_digit_helper_of_the_tests_is_the_published_algorithm():
    """1-1017-00230-70-8 style numbers: weights 13..2, (11 - sum mod 11) mod 10."""
    assert check_digit("110170023070") == "8"
    assert identifiers.is_national_id("1101700230708")
