"""The bulk export's routes through the app (authorizer included), against the suite's PostgreSQL and the
emulator's S3: kick-off rules and errors as OperationOutcomes, admins only (audited as denied otherwise),
one audited bulk access per job, retried kick-offs, polling, the manifest and its links, cancel.

The job runner here drives the real worker step by step in the test's own process (the state machine's
loop); the deployed state machine runs the same steps in tests/e2e/test_bulk_export.py."""

from __future__ import annotations

import json
import urllib.request
import uuid
from urllib.parse import urlsplit

import pytest

from chalicelib.api import auth, fhir_export
from chalicelib.api.dependencies import database
from chalicelib.domain import export as export_domain
from chalicelib.export.aws import S3ExportFiles
from chalicelib.export.worker import ExportWorker
from tests.export_support import RecordingRunner
from tests.helpers import Api, patient_body, prescription_body, record_body
from tests.integration.test_fhir_export_worker import emulator_s3, fhir_model

pytestmark = pytest.mark.integration
ASYNC = {"Prefer": "respond-async", "Accept": "application/fhir+json"}




@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with emulator_s3(tmp_path_factory.mktemp("export-api-ministack")) as found:
        yield found


@pytest.fixture
def exports(client, s3, monkeypatch):
    client_s3, bucket = s3
    runner = RecordingRunner()
    files = S3ExportFiles(bucket, client_s3)
    service = export_domain.ExportService(database(), lambda: runner, lambda: files)
    monkeypatch.setattr(fhir_export, "export_service", lambda: service)
    worker = ExportWorker(database(), files, file_max_resources=40)

    def run(job_id: int) -> None:
        while not worker.step(job_id, lambda: float("inf")):
            pass
        worker.finish(job_id)

    return runner, run


@pytest.fixture
def admin(client):
    subject = f"export-admin-{uuid.uuid4().hex[:8]}"
    return Api(client, auth.mint(subject, ["read", "write", "admin"])), subject


def job_id_of(reply) -> int:
    location = reply.headers["content-location"]
    assert urlsplit(location).scheme in ("http", "https")  # absolute, as the IG asks
    return int(location.rsplit("/", 1)[1])


def outcome(reply, status: int) -> list[dict]:
    assert reply.status == status, reply.text
    # FHIR JSON on the FHIR API; the status URL answers in application/json throughout (as its manifest)
    assert reply.headers["content-type"].startswith(("application/fhir+json", "application/json"))
    body = reply.json
    assert body["resourceType"] == "OperationOutcome"
    return body["issue"]


def audit_events(owner_conn, actor: str) -> list[tuple]:
    with owner_conn.cursor() as cur:
        cur.execute("SELECT action, resource_type, resource_id, outcome, patient_ids FROM medical_app.audit_event "
                    "WHERE actor = %s ORDER BY audit_event_id", (actor,))
        return cur.fetchall()


def live_counts(owner_conn, until) -> dict[str, int]:
    counts = {}
    with owner_conn.cursor() as cur:
        for fhir_type, table in (("Patient", "patient"), ("Encounter", "medical_record"),
                                 ("MedicationRequest", "prescription")):
            cur.execute(f"SELECT count(*) FROM medical_app.{table} "  # noqa: S608
                        "WHERE deleted_timestamp IS NULL AND updated_timestamp <= %s", (until,))
            counts[fhir_type] = cur.fetchone()[0]
    return counts


def download(url: str) -> list[dict]:
    with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 - the emulator's S3
        return [json.loads(line) for line in response.read().decode().splitlines()]


def test_a_kick_off_needs_prefer_respond_async_and_known_parameters(exports, admin):
    api, _ = admin
    issues = outcome(api.get("/fhir/R4/$export"), 400)
    assert any("Prefer" in i["diagnostics"] for i in issues)
    issues = outcome(api.get("/fhir/R4/$export?_type=Patient,Observation", headers=ASYNC), 400)
    assert any("Observation" in i["diagnostics"] for i in issues)
    issues = outcome(api.get("/fhir/R4/$export?_since=yesterday", headers=ASYNC), 400)
    assert any("_since" in i["diagnostics"] for i in issues)
    outcome(api.get("/fhir/R4/$export?_outputFormat=text/csv", headers=ASYNC), 400)
    outcome(api.get("/fhir/R4/$export?_typeFilter=Patient%3Factive%3Dtrue", headers=ASYNC), 400)
    assert exports[0].started == []  # nothing was started by a refused kick-off


def test_only_admins_may_export_and_a_refusal_is_audited(exports, client, owner_conn):
    for subject, token in (("export-clinician", auth.mint("export-clinician", ["read", "write"])),
                           ("export-patient", auth.mint("export-patient", ["read", "admin"], patient_id=1))):
        outcome(Api(client, token).get("/fhir/R4/$export", headers=ASYNC), 403)
        assert audit_events(owner_conn, subject)[-1][:4] == ("bulk_export", "export_job", None, "denied")
    assert exports[0].started == []


def test_export_kick_off_poll_manifest_download(exports, admin, owner_conn):
    runner, run = exports
    api, subject = admin
    patient = api.new_patient(**patient_body())
    record = api.post(f"/v1/patients/{patient['patientId']}/medical-records", record_body()).json
    api.post(f"/v1/medical-records/{record['medicalRecordId']}/prescriptions", prescription_body())
    kick_off = api.get("/fhir/R4/$export", headers=ASYNC)
    assert kick_off.status == 202, kick_off.text
    job_id = job_id_of(kick_off)
    assert runner.started == [job_id]
    # One bulk access, naming its caller; no patient ids listed one by one.
    assert [e[:4] for e in audit_events(owner_conn, subject) if e[0] == "bulk_export"] == [
        ("bulk_export", "export_job", job_id, "success")]
    status_path = urlsplit(kick_off.headers["content-location"]).path
    status_path = status_path[status_path.index("/fhir/R4/"):]

    polled = api.get(status_path)
    assert polled.status == 202
    assert "Patient" in polled.headers["x-progress"] and int(polled.headers["retry-after"]) > 0

    run(job_id)
    done = api.get(status_path)
    assert done.status == 200, done.text
    assert done.headers["content-type"].startswith("application/json") and "expires" in done.headers
    manifest = done.json
    assert manifest["requiresAccessToken"] is False and manifest["error"] == []
    assert manifest["request"].endswith("/fhir/R4/$export")
    counts: dict[str, int] = {}
    ids: dict[str, list[str]] = {}
    for item in manifest["output"]:
        resources = download(item["url"])
        assert len(resources) == item["count"]
        for resource in resources:
            assert resource["resourceType"] == item["type"]
            fhir_model(item["type"]).model_validate(resource)
        counts[item["type"]] = counts.get(item["type"], 0) + item["count"]
        ids.setdefault(item["type"], []).extend(r["id"] for r in resources)
    from chalicelib.repositories import export_jobs

    with database().transaction() as tx:
        job = export_jobs.get(tx, job_id)
    assert counts == live_counts(owner_conn, job.transaction_time)
    assert str(patient["patientId"]) in ids["Patient"]
    assert all(len(v) == len(set(v)) for v in ids.values())


def test_patient_level_export_with_type_and_since(exports, admin, owner_conn):
    _, run = exports
    api, _ = admin
    with owner_conn.cursor() as cur:
        cur.execute("SELECT now()")
        since = cur.fetchone()[0]
    patient = api.new_patient(**patient_body())
    since_text = since.isoformat().replace("+00:00", "Z")
    kick_off = api.get(f"/fhir/R4/Patient/$export?_type=Patient&_since={since_text}", headers=ASYNC)
    assert kick_off.status == 202, kick_off.text
    job_id = job_id_of(kick_off)
    run(job_id)
    manifest = api.get(f"/fhir/R4/bulk-export/{job_id}").json
    assert {o["type"] for o in manifest["output"]} == {"Patient"}
    exported = [r["id"] for o in manifest["output"] for r in download(o["url"])]
    assert exported == [str(patient["patientId"])]  # the only patient changed since
    assert "/fhir/R4/Patient/$export?" in manifest["request"] and "_type=Patient" in manifest["request"]


def test_a_retried_kick_off_finds_its_job(exports, admin):
    runner, _ = exports
    api, _ = admin
    key = {"Idempotency-Key": uuid.uuid4().hex}
    first = api.get("/fhir/R4/$export?_type=Encounter", headers={**ASYNC, **key})
    again = api.get("/fhir/R4/$export?_type=Encounter", headers={**ASYNC, **key})
    assert first.status == again.status == 202
    assert again.headers["content-location"] == first.headers["content-location"]
    assert again.headers.get("idempotent-replayed") == "true"
    # The same key for a different request is refused, starting nothing.
    issues = outcome(api.get("/fhir/R4/$export?_type=Patient", headers={**ASYNC, **key}), 422)
    assert "Idempotency-Key" in issues[0]["diagnostics"]
    # Without a key: the same request while its job is active is that job too ...
    plain = api.get("/fhir/R4/$export?_type=MedicationRequest", headers=ASYNC)
    plain_again = api.get("/fhir/R4/$export?_type=MedicationRequest", headers=ASYNC)
    assert plain_again.headers["content-location"] == plain.headers["content-location"]
    assert len(runner.started) == 2
    # ... and once it has been cancelled, the same request is a new export.
    plain_path = urlsplit(plain.headers["content-location"]).path
    assert api.delete(plain_path[plain_path.index("/fhir/R4/"):]).status == 202
    assert runner.stopped == [f"arn:aws:states:us-east-1:000000000000:execution:bulk-export:export-{job_id_of(plain)}"]
    after = api.get("/fhir/R4/$export?_type=MedicationRequest", headers=ASYNC)
    assert after.headers["content-location"] != plain.headers["content-location"]
    assert len(runner.started) == 3


def test_cancel_deletes_the_files_and_the_job_is_gone(exports, admin, client, s3):
    _, run = exports
    api, _ = admin
    api.new_patient(**patient_body())  # at least one patient to export, whatever ran before
    job_id = job_id_of(api.get("/fhir/R4/$export?_type=Patient", headers=ASYNC))
    run(job_id)
    manifest = api.get(f"/fhir/R4/bulk-export/{job_id}").json
    assert manifest["output"]
    other_admin = Api(client, auth.mint("another-admin", ["read", "admin"]))
    outcome(other_admin.get(f"/fhir/R4/bulk-export/{job_id}"), 404)  # another caller's job does not exist
    outcome(other_admin.delete(f"/fhir/R4/bulk-export/{job_id}"), 404)
    assert api.delete(f"/fhir/R4/bulk-export/{job_id}").status == 202
    outcome(api.get(f"/fhir/R4/bulk-export/{job_id}"), 404)
    outcome(api.delete(f"/fhir/R4/bulk-export/{job_id}"), 404)
    client_s3, bucket = s3
    assert client_s3.list_objects_v2(Bucket=bucket, Prefix=f"exports/{job_id}/").get("KeyCount", 0) == 0
    outcome(api.get("/fhir/R4/bulk-export/99999999999"), 404)
    outcome(api.get("/fhir/R4/bulk-export/abc"), 400)


def test_without_a_runner_the_kick_off_says_where_exports_run(client, admin, monkeypatch):
    service = export_domain.ExportService(database(), lambda: None, lambda: None)
    monkeypatch.setattr(fhir_export, "export_service", lambda: service)
    api, _ = admin
    issues = outcome(api.get("/fhir/R4/$export", headers=ASYNC), 501)
    assert "make up" in issues[0]["diagnostics"]


class RefusingRunner(RecordingRunner):
    def start(self, job_id: int, resource_types) -> str:
        raise ConnectionError("Step Functions could not be reached")


def test_a_run_that_cannot_start_or_that_fails_is_reported_as_such(client, admin, s3, monkeypatch):
    files = S3ExportFiles(s3[1], s3[0])
    service = export_domain.ExportService(database(), RefusingRunner, lambda: files)
    monkeypatch.setattr(fhir_export, "export_service", lambda: service)
    api, _ = admin
    refused = api.get("/fhir/R4/$export?_type=Encounter", headers={**ASYNC, "Idempotency-Key": uuid.uuid4().hex})
    issues = outcome(refused, 503)
    assert "kick it off again" in issues[0]["diagnostics"] and int(refused.headers["retry-after"]) > 0
    # A run that ends in failure (the state machine's MarkFailed): its status URL says so, as an OperationOutcome.
    runner = RecordingRunner()
    monkeypatch.setattr(fhir_export, "export_service",
                        lambda: export_domain.ExportService(database(), lambda: runner, lambda: files))
    job_id = job_id_of(api.get("/fhir/R4/$export?_type=Encounter", headers=ASYNC))
    from chalicelib.export import worker

    ExportWorker(database(), files).fail(job_id, worker.FAILED_REASON)
    reply = client.http.get(f"/fhir/R4/bulk-export/{job_id}", headers={"Authorization": f"Bearer {api.token}"})
    assert reply.status_code == 500
    body = json.loads(reply.body)
    assert body["resourceType"] == "OperationOutcome" and body["issue"][0]["diagnostics"] == worker.FAILED_REASON
