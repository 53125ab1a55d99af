"""The FHIR R4 read API deployed into the emulator, called over HTTP through its API Gateway.

API Gateway allows no "$" in a resource path, so operations arrive through variable segments; this checks that
the deployed gateway routes a literal segment (metadata, _history) before a variable one and passes "$everything"
and the URL-encoded "|" of a token through to the handlers.
"""

from __future__ import annotations

from urllib.parse import quote

from tests.e2e.conftest import http
from tests.e2e.test_deployed_api import token
from tests.helpers import patient_body, prescription_body, record_body

FHIR_JSON = "application/fhir+json"


def _headers(headers: dict[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def test_the_fhir_api_through_api_gateway(deployed):
    api, secret = deployed["api_url"], deployed["jwt_secret"]
    admin = token(secret, sub="e2e-fhir-admin")
    status, headers, statement = http("GET", f"{api}/fhir/R4/metadata")  # public
    assert status == 200 and _headers(headers)["content-type"] == FHIR_JSON, statement
    assert statement["resourceType"] == "CapabilityStatement" and statement["fhirVersion"] == "4.0.1"

    body = patient_body()
    status, _, patient = http("POST", f"{api}/v1/patients", body, admin)
    assert status == 201, patient
    pid = patient["patientId"]
    status, _, record = http("POST", f"{api}/v1/patients/{pid}/medical-records", record_body(), admin)
    assert status == 201, record
    status, _, prescription = http("POST", f"{api}/v1/medical-records/{record['medicalRecordId']}/prescriptions",
                                   prescription_body(), admin)
    assert status == 201, prescription

    status, headers, resource = http("GET", f"{api}/fhir/R4/Patient/{pid}", token=admin)
    assert status == 200 and resource["resourceType"] == "Patient", resource
    assert _headers(headers)["etag"] == 'W/"1"' and _headers(headers)["cache-control"] == "no-store"
    system = resource["identifier"][0]["system"]

    status, _, bundle = http("GET", f"{api}/fhir/R4/Patient?identifier={quote(system, safe='')}%7C{body['idCardNum']}",
                             token=admin)
    assert status == 200 and [e["resource"]["id"] for e in bundle["entry"]] == [str(pid)], bundle

    status, _, everything = http("GET", f"{api}/fhir/R4/Patient/{pid}/$everything", token=admin)
    assert status == 200, everything
    assert [e["resource"]["resourceType"] for e in everything["entry"]] == ["Patient", "Encounter", "MedicationRequest"]

    status, _, history = http("GET", f"{api}/fhir/R4/Patient/{pid}/_history", token=admin)
    assert status == 200 and history["type"] == "history", history
    status, _, version = http("GET", f"{api}/fhir/R4/MedicationRequest/{prescription['prescriptionId']}/_history/1",
                              token=admin)
    assert status == 200 and version["encounter"]["reference"] == f"Encounter/{record['medicalRecordId']}", version

    status, headers, outcome = http("GET", f"{api}/fhir/R4/$not-served", token=admin)
    assert status == 404 and outcome["resourceType"] == "OperationOutcome", outcome
    assert _headers(headers)["content-type"] == FHIR_JSON
    status, _, outcome = http("GET", f"{api}/fhir/R4/Patient/{pid}", token=admin,
                              headers={"Accept": "application/fhir+xml"})
    assert status == 406 and outcome["resourceType"] == "OperationOutcome", outcome
    other = token(secret, "read", sub="e2e-fhir-patient-x", patient_id=987654321)
    assert http("GET", f"{api}/fhir/R4/Patient/{pid}", token=other)[0] == 404
