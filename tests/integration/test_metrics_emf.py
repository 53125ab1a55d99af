"""The API's metrics as CloudWatch will read them: the EMF documents the handler prints, one per request.

Requests go through the Chalice test client (authorizer included) to the real PostgreSQL; every outcome
that has a metric of its own happens at least once (a create, an access-control refusal, a hidden
patient, a break-the-glass read, a scope refusal, invalid input, the original routes). The requests carry
personal data no other test uses, and none of it may appear anywhere in the documents.
"""

from __future__ import annotations

import json
from typing import Any

from chalicelib import metrics
from chalicelib.api import auth
from chalicelib.api.meta import ALL_ROUTES
from tests.helpers import card_number

FIRST = "Vorblethina"
LAST = "Quenchwater"
PHONE = "0877712345"
BIRTH_DATE = "1923-02-14"
DIAGNOSIS = "Frumious bandersnatchitis"
DOCTOR = "Dr. Jubjub Tumtum"
REASON = "Frabjous collapse in ward Tulgey seven"
METRIC_NAMES = {metrics.REQUESTS, metrics.LATENCY, metrics.AUDIT_EVENTS_WRITTEN, metrics.ACCESS_DENIED,
                metrics.BREAK_GLASS_ACCESS}


def emf_documents(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{") and '"_aws"' in line]


def test_each_request_prints_one_document_with_its_outcome_and_no_personal_data(api, tokens, capsys):
    card = card_number()
    secrets = [FIRST, LAST, PHONE, BIRTH_DATE, DIAGNOSIS, DOCTOR, REASON, card]
    patient = {"idCardNum": card, "firstName": FIRST, "lastName": LAST, "birthDate": BIRTH_DATE, "phoneNum": PHONE}
    outsider = api.as_token(auth.mint("metrics-outsider", ["read", "write"]))
    expected: list[tuple[str, int, dict[str, int]]] = []  # route, status, counts

    def call(via: Any, method: str, path: str, route: str, status: int, body: Any = None, *,
             audit: int, denied: int = 0, break_glass: int = 0, **kw: Any) -> Any:
        reply = via.call(method, path, body, **kw)
        assert reply.status == status, (method, path, reply.status, reply.text)
        expected.append((route, status, {metrics.AUDIT_EVENTS_WRITTEN: audit, metrics.ACCESS_DENIED: denied,
                                         metrics.BREAK_GLASS_ACCESS: break_glass}))
        return reply

    capsys.readouterr()
    pid = call(api, "POST", "/v1/patients", "POST /v1/patients", 201, patient, audit=1).json["patientId"]
    call(api, "POST", f"/v1/patients/{pid}/medical-records", "POST /v1/patients/{patientId}/medical-records", 201,
         {"hospitalName": "Tulgey Wood Clinic", "doctorFullName": DOCTOR, "diagnosis": DIAGNOSIS,
          "treatmentStartDate": "2024-05-01"}, audit=1)
    call(api, "GET", f"/v1/patients?lastName={LAST}&birthDate={BIRTH_DATE}", "GET /v1/patients", 200, audit=1)
    call(outsider, "GET", f"/v1/patients/{pid}", "GET /v1/patients/{patientId}", 403, audit=1, denied=1)
    call(outsider, "GET", f"/v1/patients/{pid}", "GET /v1/patients/{patientId}", 200, audit=1, break_glass=1,
         headers={"Break-Glass": REASON})
    other_patient = api.as_token(auth.mint("metrics-patient", ["read"], patient_id=pid + 10**9))
    call(other_patient, "GET", f"/v1/patients/{pid}", "GET /v1/patients/{patientId}", 404, audit=1, denied=1)
    write_only = api.as_token(tokens["write"])
    call(write_only, "GET", f"/v1/patients/{pid}", "GET /v1/patients/{patientId}", 403, audit=1, denied=1)
    call(api, "POST", "/v1/patients", "POST /v1/patients", 400, {**patient, "birthDate": LAST}, audit=0)
    call(api, "GET", f"/patient/{card}", "GET /patient/{key}", 200, audit=1)
    call(api, "GET", "/v1/patients/999999999999", "GET /v1/patients/{patientId}", 404, audit=1)
    call(api, "GET", "/openapi.json", "GET /openapi.json", 200, audit=0)
    out = capsys.readouterr().out

    documents = emf_documents(out)
    assert len(documents) == len(expected), out
    routes = {f"{spec.method} {spec.path}" for table in ALL_ROUTES for spec in table.routes}
    for doc, (route, status, counts) in zip(documents, expected, strict=True):
        (directive,) = doc["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == "MedicalRecords"
        assert directive["Dimensions"] == [["service"], ["service", "statusClass"],
                                           ["service", "route", "statusClass"]]
        assert {m["Name"] for m in directive["Metrics"]} == METRIC_NAMES
        assert doc["service"] == "medical-records"
        assert doc["route"] == route and doc["route"] in routes
        assert doc["statusClass"] == f"{status // 100}xx" and doc["statusCode"] == status
        assert doc[metrics.REQUESTS] == [1.0]
        assert doc[metrics.LATENCY][0] > 0
        got = {name: int(sum(doc[name])) for name in counts}
        assert got == counts, (route, status)
        # Nothing else rides along: no ids, no request ids, nothing the caller sent.
        assert set(doc) == {"_aws", "service", "route", "statusClass", "statusCode", *METRIC_NAMES}

    emf_text = "\n".join(json.dumps(doc) for doc in documents)
    leaked = sorted(s for s in secrets if s.lower() in emf_text.lower())
    assert not leaked, f"personal data in the metrics: {leaked}"
    # ... nor ids: the only values are route templates, classes, codes and numbers (checked key by key above).
    assert not any(str(pid) in doc["route"].replace("/v1/", "/") for doc in documents)
