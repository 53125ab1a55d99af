"""Models, validation messages, cursors and tokens: pure functions, no I/O."""

from __future__ import annotations

import json
import random
from datetime import date, timedelta

import pytest
from pydantic import ValidationError

from chalicelib.api import auth
from chalicelib.api.routing import decode_cursor, encode_cursor
from chalicelib.domain import identifiers, models
from chalicelib.domain.validation import field_errors
from tests.helpers import check_digit


def errors_of(model, body):
    with pytest.raises(ValidationError) as raised:
        model.model_validate_json(json.dumps(body))
    return {e.field: e.message for e in field_errors(raised.value)}


VALID_PATIENT = {"idCardNum": "1234567890123", "firstName": "A", "lastName": "B", "birthDate": "2000-01-01"}


def test_every_bad_field_is_reported_at_once_by_its_json_name():
    bad = {
        "idCardNum": "12",
        "firstName": 5,
        "lastName": "x" * 51,
        "birthDate": (date.today() + timedelta(days=2)).isoformat(),
        "phoneNum": "08-123",
        "nickname": "z",
    }
    assert errors_of(models.PatientWrite, bad) == {
        "idCardNum": "must be exactly 13 digits",
        "firstName": "must be a string",
        "lastName": "must be at most 50 characters",
        "birthDate": "must not be in the future",
        "phoneNum": "must be 1 to 10 digits",
        "nickname": "is not a known field",
    }


def test_required_fields_are_named_when_missing():
    assert errors_of(models.PatientWrite, {}) == {
        "firstName": "is required",
        "lastName": "is required",
        "birthDate": "is required",
    }


def test_a_patient_needs_a_national_id_or_a_passport():
    names = {k: v for k, v in VALID_PATIENT.items() if k != "idCardNum"}
    assert errors_of(models.PatientWrite, names) == {"idCardNum": identifiers.IDENTIFIED}
    assert errors_of(models.PatientWrite, names | {"idCardNum": None}) == {"idCardNum": identifiers.IDENTIFIED}
    assert errors_of(models.PatientWrite, names | {"passportCountry": "GBR"}) == {
        "passportNumber": identifiers.PASSPORT_PAIRED
    }
    assert errors_of(models.PatientWrite, names | {"passportNumber": "AB12345"}) == {
        "passportCountry": identifiers.PASSPORT_PAIRED
    }
    both = models.PatientWrite.model_validate(VALID_PATIENT | {"passportCountry": "gbr", "passportNumber": "ab12345"})
    assert (both.passport_country, both.passport_number) == ("GBR", "AB12345")  # stored upper-case
    assert set(errors_of(models.PatientWrite, names | {"passportCountry": "XYZ", "passportNumber": "AB 12345"})) == {
        "passportCountry", "passportNumber"
    }
    # ICAO codes for issuers that are not ISO countries are issuing states too
    stateless = models.PatientWrite.model_validate(names | {"passportCountry": "XXA", "passportNumber": "X123456"})
    assert stateless.passport_country == "XXA"


@pytest.mark.parametrize(
    ("number", "valid"),
    [
        ("1101700230708", True),
        ("1101700230705", False),
        ("1234567890121", True),
        ("1234567890123", False),
        ("3100600445001", False),
        ("123456789012", False),
        ("１１０１７００２３０７０８", False),  # full-width digits are not digits here
    ],
)
def test_national_id_check_digit(number, valid):
    assert identifiers.is_national_id(number) is valid


def test_national_id_check_digit_agrees_with_an_independent_computation():
    rng = random.Random(11)
    for _ in range(5000):
        first_twelve = f"{rng.randrange(10**12):012d}"
        assert str(identifiers.national_id_check_digit(first_twelve)) == check_digit(first_twelve)


def test_the_country_list_is_iso_3166_alpha_3():
    import pycountry  # a pinned dev dependency (requirements-dev.txt)

    assert {c.alpha_3 for c in pycountry.countries} == identifiers.ISO_COUNTRIES


def test_no_type_coercion():
    body = dict(VALID_PATIENT, idCardNum=1234567890123, birthDate=946684800)
    assert set(errors_of(models.PatientWrite, body)) == {"idCardNum", "birthDate"}


def test_strings_are_trimmed_and_blank_is_refused():
    patient = models.PatientWrite.model_validate_json(json.dumps(dict(VALID_PATIENT, firstName="  Anan  ")))
    assert patient.first_name == "Anan"
    assert errors_of(models.PatientWrite, dict(VALID_PATIENT, lastName="   ")) == {"lastName": "must not be blank"}


def test_patch_accepts_any_subset_but_never_nulls_a_required_field():
    patch = models.PatientPatch.model_validate_json('{"phoneNum": null}')
    assert patch.model_fields_set == {"phone_num"}
    assert errors_of(models.PatientPatch, {"firstName": None}) == {"firstName": "must not be null"}
    assert errors_of(models.PatientPatch, {"idCardNum": "1"}) == {"idCardNum": "must be exactly 13 digits"}


def test_treatment_end_may_not_precede_start():
    body = {
        "hospitalName": "H",
        "doctorFullName": "D",
        "treatmentStartDate": "2024-02-02",
        "treatmentEndDate": "2024-02-01",
    }
    assert errors_of(models.MedicalRecordWrite, body) == {
        "treatmentEndDate": "must not be before treatmentStartDate"
    }


def test_bad_dates_are_named():
    for value in ("2024-13-45", "yesterday", "2024-02-30T10:00:00", ""):
        assert "birthDate" in errors_of(models.PatientWrite, dict(VALID_PATIENT, birthDate=value))


def test_messages_never_echo_the_input():
    secret = "9876543210987X"
    messages = errors_of(models.PatientWrite, dict(VALID_PATIENT, idCardNum=secret, firstName=secret * 10))
    assert secret not in json.dumps(messages)


def test_resource_models_put_ids_first_and_share_the_write_fields():
    assert list(models.Patient.model_fields)[:2] == ["patient_id", "id_card_num"]
    assert set(models.PatientWrite.model_fields) < set(models.Patient.model_fields)
    assert list(models.Prescription.model_fields)[:2] == ["prescription_id", "medical_record_id"]


def test_cursor_round_trip_and_rejection():
    assert decode_cursor(encode_cursor(12345)) == 12345
    assert encode_cursor(None) is None
    assert decode_cursor("9" * 19) == 2**63 - 1  # past every key: an empty page, not an error
    for garbage in ("", "abc", "e30", "12!!", "-1", "1.5", "١٢", "²", "1" * 20, " 1"):
        assert decode_cursor(garbage) is None


def test_tokens_round_trip_and_refuse_tampering():
    token = auth.mint("someone", ["read", "admin"], 60)
    identity = auth.verify(f"Bearer {token}")
    assert (identity.subject, identity.scopes, identity.patient_id) == ("someone", "read admin", None)
    header, payload, signature = token.split(".")
    for bad in (
        "",
        token,  # no scheme
        f"Basic {token}",
        f"Bearer {header}.{payload}.{signature[::-1]}",
        f"Bearer {auth.mint('someone', ['read'], -120)}",
        f"Bearer {auth.mint('someone', ['read'], 60, secret='another-secret-entirely-0123456789')}",
    ):
        with pytest.raises(auth.Unauthenticated):
            auth.verify(bad)
    with pytest.raises(ValueError):
        auth.mint("someone", ["superuser"])


def test_the_documented_whitespace_class_is_what_strip_removes():
    import re

    from chalicelib.domain.models import WHITESPACE_CLASS

    documented = re.compile(f"[{WHITESPACE_CLASS}]")
    assert {c for c in range(0x110000) if documented.fullmatch(chr(c))} == {
        c for c in range(0x110000) if chr(c).isspace()
    }
