"""The one mapping from rows to FHIR R4 resources (chalicelib/fhir/mapping.py), without a database.

Each mapped resource validates against the FHIR models; the FHIR models themselves stay out of the Lambda.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from chalicelib import config
from chalicelib.fhir import mapping
from tests.fhir_validation import validate

ROOT = Path(__file__).resolve().parents[2]
STAMP = {"inserted_timestamp": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
         "updated_timestamp": datetime(2026, 2, 3, 4, 5, 6, 789000, tzinfo=UTC), "version": 3}
PATIENT = {"patient_id": 7, "id_card_num": "1101700230708", "first_name": "Somchai", "last_name": "Jaidee",
           "birth_date": date(1980, 4, 12), "phone_num": "0812345678", **STAMP}
VISIT = {"medical_record_id": 11, "patient_id": 7, "hospital_name": "Siriraj Hospital",
         "doctor_full_name": "Dr. Malee Srisuk", "diagnosis": "Influenza", "symptom": "Fever",
         "treatment_start_date": date(2024, 1, 10), "treatment_end_date": date(2024, 1, 17), **STAMP}
PRESCRIPTION = {"prescription_id": 13, "medical_record_id": 11, "medicine_name": "Oseltamivir",
                "dose": "75 mg twice daily", **STAMP}


def test_a_patient_maps_to_a_valid_fhir_patient():
    resource = mapping.patient(PATIENT)
    validate(resource)
    assert resource["id"] == "7"
    assert resource["meta"] == {"versionId": "3", "lastUpdated": "2026-02-03T04:05:06.789000Z"}
    assert resource["identifier"] == [{
        "use": "official", "type": {"coding": [mapping.NATIONAL_ID_TYPE]}, "system": config.FHIR_NATIONAL_ID_SYSTEM,
        "value": "1101700230708",
    }]
    assert mapping.NATIONAL_ID_TYPE["code"] == "NI" and mapping.PASSPORT_TYPE["code"] == "PPN"
    assert resource["name"] == [{"use": "official", "family": "Jaidee", "given": ["Somchai"]}]
    assert resource["birthDate"] == "1980-04-12"
    assert resource["telecom"] == [{"system": "phone", "value": "0812345678"}]


def test_a_passport_maps_to_hl7s_passport_system_and_an_absent_phone_to_no_telecom():
    foreigner = {**PATIENT, "id_card_num": None, "passport_country": "gbr", "passport_number": "AB1234567",
                 "phone_num": None}
    resource = mapping.patient(foreigner)
    validate(resource)
    assert resource["identifier"] == [{
        "use": "official", "type": {"coding": [mapping.PASSPORT_TYPE]},
        "system": "http://hl7.org/fhir/sid/passport-GBR", "value": "AB1234567",
    }]
    assert "telecom" not in resource
    both = mapping.patient({**PATIENT, "passport_country": "THA", "passport_number": "AA0000001"})
    assert [i["type"]["coding"][0]["code"] for i in both["identifier"]] == ["NI", "PPN"]


def test_the_national_id_system_is_one_setting_with_a_documented_default():
    assert config.DEFAULT_FHIR_NATIONAL_ID_SYSTEM.startswith("urn:")
    assert mapping.NATIONAL_ID_SYSTEM == config.FHIR_NATIONAL_ID_SYSTEM
    script = "from chalicelib.fhir import mapping; print(mapping.NATIONAL_ID_SYSTEM)"
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=ROOT,
        env={"PYTHONPATH": str(ROOT / "functions"), "FHIR_NATIONAL_ID_SYSTEM": "https://example.org/sid/th-cid"},
    )
    assert result.stdout.strip() == "https://example.org/sid/th-cid"


def test_a_visit_maps_to_a_valid_encounter():
    resource = mapping.encounter(VISIT)
    validate(resource)
    assert resource["status"] == "finished" and resource["class"]["code"] == "AMB"
    assert resource["subject"] == {"reference": "Patient/7"}
    assert resource["period"] == {"start": "2024-01-10", "end": "2024-01-17"}
    assert resource["reasonCode"] == [{"text": "Fever"}]
    assert resource["contained"] == [{"resourceType": "Condition", "id": "diagnosis", "code": {"text": "Influenza"},
                                      "subject": {"reference": "Patient/7"}}]
    assert resource["participant"][0]["individual"] == {"display": "Dr. Malee Srisuk"}
    assert resource["serviceProvider"] == {"display": "Siriraj Hospital"}
    bare = mapping.encounter({**VISIT, "diagnosis": None, "symptom": None, "treatment_end_date": None})
    validate(bare)
    assert bare["status"] == "in-progress" and bare["period"] == {"start": "2024-01-10"}
    assert not {"reasonCode", "diagnosis", "contained"} & bare.keys()


def test_a_prescription_maps_to_a_valid_medication_request():
    resource = mapping.medication_request(PRESCRIPTION, patient_id=7)
    validate(resource)
    assert (resource["status"], resource["intent"]) == ("active", "order")
    assert resource["medicationCodeableConcept"] == {"text": "Oseltamivir"}
    assert resource["dosageInstruction"] == [{"text": "75 mg twice daily"}]
    assert resource["subject"] == {"reference": "Patient/7"} and resource["encounter"] == {"reference": "Encounter/11"}
    assert resource["authoredOn"] == "2026-01-02T03:04:05Z"


def test_bundles_and_outcomes_are_valid():
    entries = [mapping.entry("https://h/fhir/R4", mapping.patient(PATIENT))]
    validate(mapping.bundle("searchset", entries, self_url="https://h/fhir/R4/Patient", next_url="https://h/n",
                            total=None))
    validate(mapping.bundle("searchset", [], self_url="https://h/fhir/R4/Patient", total=0))
    history = mapping.bundle("history", [
        mapping.history_entry("https://h/fhir/R4", "Patient", 7, 2, "delete", STAMP["updated_timestamp"], None),
        mapping.history_entry("https://h/fhir/R4", "Patient", 7, 1, "create", STAMP["inserted_timestamp"],
                              mapping.patient(PATIENT)),
    ], self_url="https://h/fhir/R4/Patient/7/_history")
    validate(history)
    assert [e["request"]["method"] for e in history["entry"]] == ["DELETE", "POST"]
    for status in mapping.ISSUE_CODES:
        validate(mapping.operation_outcome(status, "why", ["field: what"]))


@pytest.mark.parametrize("change", ["create", "update", "delete", "restore"])
def test_every_kind_of_kept_version_has_a_history_entry(change):
    item = mapping.history_entry("https://h/fhir/R4", "Encounter", 11, 1, change, STAMP["updated_timestamp"],
                                 None if change == "delete" else mapping.encounter(VISIT))
    validate(mapping.bundle("history", [item], self_url="https://h"))


# --- the FHIR models never reach the Lambda --------------------------------------------------------------


def test_the_lambda_never_imports_the_fhir_models():
    offenders = []
    for path in (ROOT / "functions").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] in ("fhir", "fhir_core")]
    assert not offenders
    lambda_requirements = (ROOT / "functions" / "requirements.txt").read_text().splitlines()
    bundled = [line.split("#")[0].strip().lower() for line in lambda_requirements]
    assert not [line for line in bundled if line.startswith("fhir")]  # fhir.resources, fhir-core, ...
    assert "fhir.resources==" in (ROOT / "requirements-dev.txt").read_text()


def test_the_fhir_modules_load_with_the_first_fhir_request_not_at_start():
    script = (
        "import sys, app; "
        "print(sorted(m for m in sys.modules if m.startswith('chalicelib.fhir') or m.split('.')[0] == 'fhir'))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=ROOT / "functions",
        env={"PYTHONPATH": f"{ROOT / 'functions'}", "JWT_SECRET": "x" * 48, "AWS_DEFAULT_REGION": "us-east-1"},
    )
    assert result.stdout.strip().splitlines()[-1] == "[]"
