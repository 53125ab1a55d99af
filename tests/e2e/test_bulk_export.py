"""FHIR bulk export end to end in the deployed stack (the template in the AWS emulator): kick-off through
API Gateway, the export state machine running the worker Lambda, polling, the manifest, the files downloaded
through their presigned links from the emulator's S3, every line a valid FHIR resource, counts equal to the
live rows, `_since`, and cancel.

The API is called at the emulator's URL for it, which the deploy also gives the functions (the template's
FhirBaseUrl), so the absolute URLs it answers with (Content-Location, the manifest's request) are followed as
they are."""

from __future__ import annotations

import json
import time
import urllib.request
from http.client import HTTPConnection
from urllib.parse import urlsplit

import psycopg2
import pytest

from tests.e2e.test_deployed_api import token
from tests.helpers import patient_body, prescription_body, record_body

ASYNC = {"Prefer": "respond-async", "Accept": "application/fhir+json"}
TYPES = {"Patient": "patient", "Encounter": "medical_record", "MedicationRequest": "prescription"}


def call(method: str, url: str, bearer: str | None = None, body: dict | None = None,
         headers: dict | None = None) -> tuple[int, dict[str, str], str]:
    """An HTTP request to the emulator, on loopback."""
    parts = urlsplit(url)
    connection = HTTPConnection("127.0.0.1", parts.port, timeout=60)
    all_headers = {"Host": parts.netloc, **(headers or {})}
    if bearer:
        all_headers["Authorization"] = f"Bearer {bearer}"
    payload = None
    if body is not None:
        payload = json.dumps(body).encode()
        all_headers["Content-Type"] = "application/json"
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    connection.request(method, path, body=payload, headers=all_headers)
    response = connection.getresponse()
    text = response.read().decode()
    connection.close()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, text


@pytest.fixture(scope="module")
def fhir_base(deployed):
    """The FHIR API's base in the emulator: /restapis/<id>/api/_user_request_/fhir/R4."""
    return f"{deployed['api_url']}/fhir/R4"


@pytest.fixture(scope="module")
def admin(deployed):
    return token(deployed["jwt_secret"], sub="e2e-export-admin")


def fhir_model(resource_type: str):
    from fhir.resources.R4B.encounter import Encounter
    from fhir.resources.R4B.medicationrequest import MedicationRequest
    from fhir.resources.R4B.patient import Patient

    return {"Patient": Patient, "Encounter": Encounter, "MedicationRequest": MedicationRequest}[resource_type]


def kick_off(fhir_base: str, bearer: str, query: str = "") -> str:
    status, headers, text = call("GET", f"{fhir_base}/$export{query}", bearer, headers=ASYNC)
    assert status == 202, text
    location = headers["content-location"]
    assert location.startswith(f"{fhir_base}/bulk-export/"), location
    return location


def wait_for_manifest(location: str, bearer: str, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status, headers, text = call("GET", location, bearer)
        if status == 200:
            assert headers["content-type"].startswith("application/json")
            return json.loads(text)
        assert status == 202, text
        assert int(headers["retry-after"]) > 0 and headers["x-progress"]
        assert time.monotonic() < deadline, f"the export did not finish within {timeout:.0f} s"
        time.sleep(1)


def download(manifest: dict) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for item in manifest["output"]:
        with urllib.request.urlopen(item["url"], timeout=60) as response:  # noqa: S310 - the emulator's S3
            lines = response.read().decode().splitlines()
        assert len(lines) == item["count"]
        for line in lines:
            resource = json.loads(line)
            assert resource["resourceType"] == item["type"]
            fhir_model(item["type"]).model_validate(resource)  # every line a valid FHIR R4 resource
            found.setdefault(item["type"], []).append(resource)
    return found


def live_counts(owner_url: str, until: str) -> dict[str, int]:
    with psycopg2.connect(owner_url) as conn, conn.cursor() as cur:
        counts = {}
        for fhir_type, table in TYPES.items():
            cur.execute(f"SELECT count(*) FROM medical_app.{table} "  # noqa: S608 - fixed table names
                        "WHERE deleted_timestamp IS NULL AND updated_timestamp <= %s", (until,))
            counts[fhir_type] = cur.fetchone()[0]
    conn.close()
    return counts


def seed(api_url: str, bearer: str, patients: int = 3) -> list[int]:
    ids = []
    for _ in range(patients):
        status, _, patient = call("POST", f"{api_url}/v1/patients", bearer, patient_body())
        assert status == 201, patient
        patient = json.loads(patient)
        ids.append(patient["patientId"])
        status, _, record = call("POST", f"{api_url}/v1/patients/{patient['patientId']}/medical-records", bearer,
                                 record_body())
        record = json.loads(record)
        for _ in range(2):
            call("POST", f"{api_url}/v1/medical-records/{record['medicalRecordId']}/prescriptions", bearer,
                 prescription_body())
    return ids


def test_bulk_export_end_to_end(deployed, fhir_base, admin):
    api_url = fhir_base.removesuffix("/fhir/R4")
    seed(api_url, admin)
    location = kick_off(fhir_base, admin)
    manifest = wait_for_manifest(location, admin)
    assert manifest["requiresAccessToken"] is False and manifest["error"] == []
    assert manifest["request"] == f"{fhir_base}/$export"
    resources = download(manifest)
    counts = {t: len(items) for t, items in resources.items()}
    assert counts == {t: n for t, n in live_counts(deployed["owner_url"], manifest["transactionTime"]).items() if n}
    for items in resources.values():
        ids = [r["id"] for r in items]
        assert len(ids) == len(set(ids))
    # One bulk access in the audit trail, naming its caller.
    job_id = int(location.rsplit("/", 1)[1])
    with psycopg2.connect(deployed["owner_url"]) as conn, conn.cursor() as cur:
        cur.execute("SELECT actor, outcome FROM medical_app.audit_event WHERE action = 'bulk_export' "
                    "AND resource_id = %s", (job_id,))
        assert cur.fetchall() == [("e2e-export-admin", "success")]
    conn.close()


def test_since_exports_only_what_changed(deployed, fhir_base, admin):
    api_url = fhir_base.removesuffix("/fhir/R4")
    ids = seed(api_url, admin, patients=2)
    with psycopg2.connect(deployed["owner_url"]) as conn, conn.cursor() as cur:
        cur.execute("SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
        since = cur.fetchone()[0]
    conn.close()
    status, _, text = call("PATCH", f"{api_url}/v1/patients/{ids[0]}", admin, {"firstName": "Malee"})
    assert status == 200, text
    location = kick_off(fhir_base, admin, f"?_type=Patient,Encounter&_since={since}")
    resources = download(wait_for_manifest(location, admin))
    assert {t: [r["id"] for r in items] for t, items in resources.items()} == {"Patient": [str(ids[0])]}


def _aws(service: str, endpoint: str):
    import boto3

    return boto3.client(service, endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test",
                        aws_secret_access_key="test")


def test_cancel_stops_the_export_and_its_status_is_gone(deployed, fhir_base, admin):
    location = kick_off(fhir_base, admin, "?_type=Encounter,MedicationRequest")
    status, _, text = call("DELETE", location, admin)
    assert status == 202, text
    status, _, text = call("GET", location, admin)
    assert status == 404 and json.loads(text)["resourceType"] == "OperationOutcome"
    # The execution ends (stopped, or done just before the cancel) and none of the job's files is left,
    # whatever a step was writing at the time.
    job_id = int(location.rsplit("/", 1)[1])
    with psycopg2.connect(deployed["owner_url"]) as conn, conn.cursor() as cur:
        cur.execute("SELECT status, execution_arn FROM medical_app.export_job WHERE export_job_id = %s", (job_id,))
        job_status, execution_arn = cur.fetchone()
    conn.close()
    assert job_status == "cancelled" and execution_arn
    sfn = _aws("stepfunctions", deployed["endpoint"])
    deadline = time.monotonic() + 120
    while (execution := sfn.describe_execution(executionArn=execution_arn))["status"] == "RUNNING":
        assert time.monotonic() < deadline, "the cancelled execution is still running"
        time.sleep(1)
    assert execution["status"] in ("ABORTED", "SUCCEEDED"), execution["status"]
    stack_name = deployed["deploy_args"][deployed["deploy_args"].index("--stack-name") + 1]
    outputs = _aws("cloudformation", deployed["endpoint"]).describe_stacks(StackName=stack_name)["Stacks"][0]
    bucket = next(o["OutputValue"] for o in outputs["Outputs"] if o["OutputKey"] == "ExportBucketName")
    listed = _aws("s3", deployed["endpoint"]).list_objects_v2(Bucket=bucket, Prefix=f"exports/{job_id}/")
    assert listed.get("KeyCount", 0) == 0, listed.get("Contents")
    status, _, text = call("GET", f"{fhir_base}/$export", token(deployed["jwt_secret"], "read write", sub="e2e-doc"),
                           headers=ASYNC)
    assert status == 403 and json.loads(text)["resourceType"] == "OperationOutcome"
