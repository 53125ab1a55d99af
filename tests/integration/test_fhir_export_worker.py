"""The bulk export worker against a real PostgreSQL and a real S3 (the AWS emulator's, over HTTP): every
NDJSON line a valid FHIR R4 resource, counts equal to the live rows, `_since` and `_type`, files split into
parts, a type continued across steps from its checkpoint, a crash mid-type resumed without duplicates,
and a cancelled job's files gone."""

from __future__ import annotations

import contextlib
import json
import uuid
from datetime import datetime

import psycopg2
import pytest

from chalicelib.db import Database
from chalicelib.domain import export as export_domain
from chalicelib.domain.access import ActorKind, Caller
from chalicelib.export.aws import S3ExportFiles
from chalicelib.export.worker import ExportWorker
from chalicelib.repositories import export_jobs
from pipeline import generate as gen
from tests.export_support import RecordingRunner
from tools import stack
from tools.pgcluster import free_port

pytestmark = pytest.mark.integration

FHIR_CLASSES = {}


def fhir_model(resource_type: str):
    """The fhir.resources R4 model of a type (tests only: never on the Lambda import path)."""
    if not FHIR_CLASSES:
        from fhir.resources.R4B.encounter import Encounter
        from fhir.resources.R4B.medicationrequest import MedicationRequest
        from fhir.resources.R4B.patient import Patient

        FHIR_CLASSES.update(Patient=Patient, Encounter=Encounter, MedicationRequest=MedicationRequest)
    return FHIR_CLASSES[resource_type]


@contextlib.contextmanager
def emulator_s3(state_dir):
    """The emulator's S3 on a free port, and a private bucket in it: (client, bucket)."""
    import boto3
    from botocore.config import Config

    if not stack.MINISTACK.exists():
        pytest.fail("ministack is not installed: run `make ministack` (make test does)")
    port = free_port()
    service = stack.ministack(port, state_dir)
    try:
        client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                              aws_access_key_id="test", aws_secret_access_key="test",
                              config=Config(signature_version="s3v4", s3={"addressing_style": "path"}))
        bucket = f"export-{uuid.uuid4().hex[:8]}"
        client.create_bucket(Bucket=bucket)
        yield client, bucket
    finally:
        service.stop()


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with emulator_s3(tmp_path_factory.mktemp("export-ministack")) as found:
        yield found


@pytest.fixture(scope="module")
def export_db(pg_cluster):
    """A database of its own (so counts are this module's), migrated, with the API's login."""
    from tools.provisioning import database_with_api_login

    name = f"export_{uuid.uuid4().hex[:8]}"
    owner_url, api_url = database_with_api_login(pg_cluster, name, f"{name}_api")
    conn = psycopg2.connect(owner_url)
    gen.generate(conn, 60, 2.0, 2.0, seed=7, progress=False)
    conn.close()
    return owner_url, api_url


@pytest.fixture
def owner(export_db):
    conn = psycopg2.connect(export_db[0])
    conn.autocommit = True
    yield conn
    conn.close()


@pytest.fixture
def db(export_db):
    database = Database(lambda: export_db[1])
    yield database
    database.close()


ADMIN = Caller(subject="export-admin", kind=ActorKind.ADMIN, request_id="req-1")


def new_job(db: Database, types=export_domain.RESOURCE_TYPES, since=None) -> export_jobs.ExportJob:
    request = export_domain.ExportRequest(export_domain.LEVEL_SYSTEM, tuple(types), since,
                                          idempotency_key=uuid.uuid4().hex)
    with db.transaction() as tx:
        job_id = export_jobs.insert(tx, ADMIN.subject, ADMIN.request_id, request)
    with db.transaction() as tx:
        return export_jobs.get(tx, job_id)


def live_counts(owner, until: datetime, since: datetime | None = None) -> dict[str, int]:
    counts = {}
    with owner.cursor() as cur:
        for fhir_type, table in (("Patient", "patient"), ("Encounter", "medical_record"),
                                 ("MedicationRequest", "prescription")):
            cur.execute(
                f"SELECT count(*) FROM medical_app.{table} WHERE deleted_timestamp IS NULL "  # noqa: S608
                "AND updated_timestamp <= %s AND (%s::timestamptz IS NULL OR updated_timestamp > %s)",
                (until, since, since),
            )
            counts[fhir_type] = cur.fetchone()[0]
    return counts


def exported(db: Database, s3, job_id: int) -> dict[str, list[dict]]:
    """Every resource of the job's recorded files, per type, each line validated as FHIR R4."""
    client, bucket = s3
    with db.transaction() as tx:
        files = export_jobs.files(tx, job_id)
    by_type: dict[str, list[dict]] = {}
    for f in files:
        body = client.get_object(Bucket=bucket, Key=f.object_key)["Body"].read().decode()
        lines = body.splitlines()
        assert body.endswith("\n") and len(lines) == f.resources
        for line in lines:
            resource = json.loads(line)
            assert resource["resourceType"] == f.resource_type
            fhir_model(f.resource_type).model_validate(resource)  # raises on anything not valid R4
            by_type.setdefault(f.resource_type, []).append(resource)
    return by_type


def run_to_end(worker: ExportWorker, job_id: int) -> int:
    """Steps until the job is written, then marked completed (as the state machine does): the number of steps."""
    steps = 1
    while not worker.step(job_id, lambda: float("inf")):
        steps += 1
    worker.finish(job_id)
    return steps


def test_every_line_is_a_valid_resource_and_counts_equal_the_live_rows(db, owner, s3):
    with owner.cursor() as cur:  # a deleted patient (and what its delete cascades) is not exported
        cur.execute("UPDATE medical_app.patient SET deleted_timestamp = now() "
                    "WHERE patient_id = (SELECT min(patient_id) FROM medical_app.patient)")
    job = new_job(db)
    worker = ExportWorker(db, S3ExportFiles(s3[1], s3[0]), file_max_resources=50)
    assert run_to_end(worker, job.job_id) == 1
    expected = live_counts(owner, job.transaction_time)
    resources = exported(db, s3, job.job_id)
    assert {t: len(r) for t, r in resources.items()} == expected
    for fhir_type, items in resources.items():
        ids = [r["id"] for r in items]
        assert len(ids) == len(set(ids)), f"{fhir_type} exported twice"
    with db.transaction() as tx:
        files = export_jobs.files(tx, job.job_id)
        progress = export_jobs.progress(tx, job.job_id)
    # Large types were split into parts of at most 50 resources, numbered from 1, in type order.
    assert all(f.resources <= 50 for f in files)
    assert [f.resource_type for f in files] == sorted(
        (f.resource_type for f in files), key=export_domain.RESOURCE_TYPES.index)
    for fhir_type in export_domain.RESOURCE_TYPES:
        parts = [f.part for f in files if f.resource_type == fhir_type]
        assert parts == list(range(1, len(parts) + 1))
        assert len(parts) >= -(-expected[fhir_type] // 50)
    assert all(p.done for p in progress)
    assert worker.finish(job.job_id) == "completed"


def test_type_filter_and_since_export_only_what_was_asked(db, owner, s3):
    with owner.cursor() as cur:
        cur.execute("SELECT now()")
        since = cur.fetchone()[0]
        cur.execute("UPDATE medical_app.patient SET first_name = first_name || 'a' WHERE patient_id IN "
                    "(SELECT patient_id FROM medical_app.patient WHERE deleted_timestamp IS NULL "
                    "ORDER BY patient_id LIMIT 3) RETURNING patient_id")
        changed = sorted(str(r[0]) for r in cur.fetchall())
    job = new_job(db, types=("Patient", "Encounter"), since=since)
    run_to_end(ExportWorker(db, S3ExportFiles(s3[1], s3[0])), job.job_id)
    resources = exported(db, s3, job.job_id)
    # Only the three changed patients; their visits did not change; no MedicationRequest was asked for.
    assert sorted(r["id"] for r in resources["Patient"]) == changed
    assert set(resources) == {"Patient"}
    assert live_counts(owner, job.transaction_time, since)["Patient"] == 3


def test_a_type_continues_across_steps_from_its_checkpoint(db, owner, s3):
    job = new_job(db, types=("MedicationRequest",))
    worker = ExportWorker(db, S3ExportFiles(s3[1], s3[0]), fetch_rows=25, margin_seconds=1.0)
    steps = 0
    while True:
        steps += 1
        # Each step has time for a few batches, then its budget runs out (a Lambda near its timeout).
        budget = iter([1000.0] * 3)
        if worker.step(job.job_id, lambda budget=budget: next(budget, 0.0)):
            break
    worker.finish(job.job_id)
    assert steps > 2  # the type did not fit one step
    resources = exported(db, s3, job.job_id)["MedicationRequest"]
    ids = [r["id"] for r in resources]
    assert len(ids) == len(set(ids)) == live_counts(owner, job.transaction_time)["MedicationRequest"]


class CrashingStore:
    """The real bucket, failing once on the Nth upload's completion (a worker dying mid-type)."""

    def __init__(self, store: S3ExportFiles, crash_on: int) -> None:
        self.store, self.crash_on, self.uploads = store, crash_on, 0

    def upload(self, key: str):
        upload = self.store.upload(key)
        self.uploads += 1
        if self.uploads == self.crash_on:
            original = upload.complete

            def crash() -> None:
                original()  # the object is written, but the worker dies before recording it
                raise RuntimeError("worker crashed")

            upload.complete = crash
        return upload

    def delete(self, keys):
        self.store.delete(keys)


def test_a_crash_mid_type_resumes_without_duplicates(db, owner, s3):
    job = new_job(db, types=("Encounter",))
    store = S3ExportFiles(s3[1], s3[0])
    crashing = ExportWorker(db, CrashingStore(store, crash_on=2), file_max_resources=30)
    with pytest.raises(RuntimeError, match="worker crashed"):
        crashing.step(job.job_id, lambda: float("inf"))
    with db.transaction() as tx:
        (progress,) = export_jobs.progress(tx, job.job_id)
    assert progress.parts == 1 and not progress.done  # the first file was recorded, the second was not
    run_to_end(ExportWorker(db, store, file_max_resources=30), job.job_id)
    resources = exported(db, s3, job.job_id)["Encounter"]
    ids = [r["id"] for r in resources]
    assert len(ids) == len(set(ids)) == live_counts(owner, job.transaction_time)["Encounter"]


def test_a_cancelled_job_writes_nothing_more_and_its_files_are_deleted(db, owner, s3):
    client, bucket = s3
    job = new_job(db)
    store = S3ExportFiles(bucket, client)
    worker = ExportWorker(db, store, file_max_resources=40)
    budget = iter([1000.0] * 2 + [0.0] * 100)
    assert worker.step(job.job_id, lambda: next(budget, 0.0)) is False  # one file, then out of time
    runner = RecordingRunner()
    service = export_domain.ExportService(db, lambda: runner, lambda: store)
    service.cancel(ADMIN, job.job_id)
    assert worker.step(job.job_id, lambda: float("inf")) is True  # the next step sees the cancel and stops
    with db.transaction() as tx:
        assert export_jobs.get(tx, job.job_id).status == "cancelled"
        keys = [f.object_key for f in export_jobs.files(tx, job.job_id)]
    assert keys
    listed = client.list_objects_v2(Bucket=bucket, Prefix=f"exports/{job.job_id}/").get("Contents", [])
    assert listed == []




def test_the_worker_streams_through_a_server_side_cursor(db, owner, s3):
    """No whole table is fetched: while a file is being uploaded, the worker's session is inside its
    transaction and the statement it ran last is a FETCH of one batch from the named cursor."""
    job = new_job(db, types=("Patient",))
    seen = []

    class Watching(S3ExportFiles):
        def upload(self, key):
            with owner.cursor() as cur:
                cur.execute("SELECT state, query FROM pg_stat_activity WHERE usename = current_user || '_api' "
                            "OR usename LIKE 'export_%%_api'")
                seen.extend(cur.fetchall())
            return super().upload(key)

    run_to_end(ExportWorker(db, Watching(s3[1], s3[0]), fetch_rows=7), job.job_id)
    assert ("idle in transaction", "FETCH FORWARD 7 FROM bulk_export_rows") in seen


def test_the_types_written_side_by_side_as_the_state_machine_runs_them(db, owner, s3):
    """One step loop per type, concurrently (the state machine's Map); the job is done when all are."""
    import threading

    job = new_job(db)
    worker = ExportWorker(db, S3ExportFiles(s3[1], s3[0]), file_max_resources=35, fetch_rows=10)
    errors = []

    def loop(resource_type: str) -> None:
        try:
            while not worker.step(job.job_id, lambda: float("inf"), resource_type):
                pass
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=loop, args=(t,)) for t in export_domain.RESOURCE_TYPES]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    assert worker.finish(job.job_id) == "completed"
    with db.transaction() as tx:
        assert all(p.done for p in export_jobs.progress(tx, job.job_id))
    resources = exported(db, s3, job.job_id)
    assert {t: len(r) for t, r in resources.items()} == live_counts(owner, job.transaction_time)
    assert all(len({r["id"] for r in items}) == len(items) for items in resources.values())


def test_a_write_begun_before_the_kick_off_is_waited_for_and_exported_as_committed(db, owner, s3, export_db):
    """A transaction that began before the job's transaction time stamps its row before it: the worker
    waits for it to end, so the export holds the committed version (the next `_since` export would miss it)."""
    import threading

    writer = psycopg2.connect(export_db[1])  # the API's login, as the API's writes are
    try:
        with writer.cursor() as cur:
            cur.execute("SELECT min(patient_id) FROM medical_app.patient WHERE deleted_timestamp IS NULL")
            patient_id = cur.fetchone()[0]
            cur.execute("UPDATE medical_app.patient SET first_name = 'Straddling' WHERE patient_id = %s",
                        (patient_id,))
        job = new_job(db, types=("Patient",))  # kicked off while the write is still open
        worker = ExportWorker(db, S3ExportFiles(s3[1], s3[0]))
        finished = threading.Event()
        thread = threading.Thread(target=lambda: (run_to_end(worker, job.job_id), finished.set()))
        thread.start()
        assert not finished.wait(1.5)  # waiting for the open transaction
        writer.commit()
        thread.join(timeout=60)
        assert finished.is_set()
    finally:
        writer.close()
    exported_patient = next(r for r in exported(db, s3, job.job_id)["Patient"] if r["id"] == str(patient_id))
    assert exported_patient["name"][0]["given"] == ["Straddling"]
