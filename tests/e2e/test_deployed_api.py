"""The API deployed by the deploy command, called over HTTP through the emulated API Gateway."""

from __future__ import annotations

import time

import jwt

from tests.e2e.conftest import http
from tests.helpers import patient_body, record_body


def token(secret: str, scopes: str = "read write admin", sub: str = "e2e-clinician", **extra: object) -> str:
    now = int(time.time())
    claims = {"sub": sub, "scope": scopes, "iss": "medical-records", "aud": "medical-records-api",
              "iat": now, "exp": now + 600, **extra}
    return jwt.encode(claims, secret, algorithm="HS256")


def test_the_access_model_holds_through_api_gateway(deployed):
    """The authorizer's context crosses API Gateway as strings; every decision must survive that trip."""
    api, secret = deployed["api_url"], deployed["jwt_secret"]
    admin = token(secret, sub="e2e-admin")
    clinician, outsider = token(secret, "read write", sub="e2e-doctor"), token(secret, "read write", sub="e2e-other")
    status, _, patient = http("POST", f"{api}/v1/patients", patient_body(), clinician)
    assert status == 201, patient
    pid = patient["patientId"]
    status, headers, _ = http("GET", f"{api}/v1/patients/{pid}", token=clinician)  # the creator is on the team
    assert status == 200 and {k.lower(): v for k, v in headers.items()}["cache-control"] == "no-store"
    status, _, problem = http("GET", f"{api}/v1/patients/{pid}", token=outsider)
    assert status == 403 and problem["type"].endswith("break-glass-required")
    status, headers, _ = http("GET", f"{api}/v1/patients/{pid}", token=outsider,
                              headers={"Break-Glass": "patient collapsed in the lobby"})
    assert status == 200 and {k.lower(): v for k, v in headers.items()}["break-glass-used"] == "true"
    own = token(secret, "read", sub=f"e2e-patient-{pid}", patient_id=pid)
    other = token(secret, "read", sub="e2e-patient-x", patient_id=987654321)
    assert http("GET", f"{api}/v1/patients/{pid}", token=own)[0] == 200
    assert http("GET", f"{api}/v1/patients/{pid}", token=other)[0] == 404
    status, _, page = http("GET", f"{api}/v1/patients?limit=100", token=own)
    assert status == 200 and [p["patientId"] for p in page["items"]] == [pid]
    assert http("PUT", f"{api}/v1/patients/{pid}/care-team/e2e-other", {"role": "nurse"}, admin)[0] == 200
    assert http("GET", f"{api}/v1/patients/{pid}", token=outsider)[0] == 200
    assert http("DELETE", f"{api}/v1/patients/{pid}/care-team/e2e-other", token=admin)[0] == 204
    assert http("GET", f"{api}/v1/patients/{pid}", token=outsider)[0] == 403
    status, _, review = http("GET", f"{api}/v1/audit/break-glass?since=2000-01-01T00:00:00Z&limit=100", token=admin)
    assert status == 200
    assert any(e["actor"] == "e2e-other" and e["reason"] == "patient collapsed in the lobby" for e in review["items"])


def test_crud_over_http_through_the_deployed_stack(deployed):
    api, tok = deployed["api_url"], token(deployed["jwt_secret"])
    assert http("GET", f"{api}/health")[0] == 200
    assert http("GET", f"{api}/v1/patients")[0] == 401
    assert http("GET", f"{api}/v1/patients", token=token("some-other-secret-entirely-0123456789"))[0] == 401

    status, headers, patient = http("POST", f"{api}/v1/patients", patient_body(), tok)
    assert status == 201, patient
    pid = patient["patientId"]
    status, headers, read = http("GET", f"{api}/v1/patients/{pid}", token=tok)
    assert status == 200 and read == patient
    assert {k.lower(): v for k, v in headers.items()}["etag"] == '"1"'
    status, _, updated = http("PATCH", f"{api}/v1/patients/{pid}", {"lastName": "Deployed"}, tok,
                              headers={"If-Match": '"1"'})
    assert status == 200 and updated["lastName"] == "Deployed"
    assert http("PATCH", f"{api}/v1/patients/{pid}", {"lastName": "Stale"}, tok, headers={"If-Match": '"1"'})[0] == 412
    status, _, record = http("POST", f"{api}/v1/patients/{pid}/medical-records", record_body(), tok)
    assert status == 201
    assert http("GET", f"{api}/medicalrecord/{pid}", token=tok)[2]["medicalRecords"][0]["medicalRecordID"] == record[
        "medicalRecordId"]
    assert http("POST", f"{api}/v1/patients", {"idCardNum": "12"}, tok)[0] == 400
    assert http("GET", f"{api}/v1/patients/{pid}", token=token(deployed["jwt_secret"], "write"))[0] == 403
    assert http("DELETE", f"{api}/v1/patients/{pid}", token=tok)[0] == 204
    assert http("GET", f"{api}/v1/patients/{pid}", token=tok)[0] == 410


def test_a_second_deploy_updates_the_stack_in_place(deployed):
    import contextlib
    import io
    import json
    import os

    from infra.localstack import deploy

    previous = os.environ.get("JWT_SECRET", "")
    os.environ["JWT_SECRET"] = deployed["jwt_secret"]
    try:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert deploy.main([*deployed["deploy_args"], "--skip-build"]) == 0
    finally:
        os.environ["JWT_SECRET"] = previous
    # The update re-creates what it changes, the 1-minute schedule included: its clock starts again now.
    deployed["deployed_at"] = time.time()
    again = json.loads(out.getvalue().strip().splitlines()[-1])
    assert again["state_machine_arn"] == deployed["state_machine_arn"]  # same stack, updated
    tok = token(deployed["jwt_secret"])
    status, _, page = http("GET", f"{again['api_url']}/v1/patients?limit=5", token=tok)
    assert status == 200 and "items" in page
