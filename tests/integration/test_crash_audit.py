"""A database crash loses no audit event of an answered request (SPEC §4: durable when the response is sent).

A dedicated PostgreSQL (fsync on, as in production) serves reads and writes from several threads through
the real service layer; midway it is killed (``pg_ctl stop -m immediate``: no checkpoint, no flush of
anything not already committed). After a restart, every request that returned successfully before the
crash has its audit event, and every write that returned has its data.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psycopg2
import pytest

from chalicelib.db import Database
from chalicelib.domain import models
from chalicelib.domain.errors import DomainError
from chalicelib.domain.services import ActorKind, Caller, PageRequest, build_services
from chalicelib.migrations import migrate
from chalicelib.repositories.errors import translate
from tests.helpers import card_number


@pytest.fixture
def crash_cluster():
    from tools.pgcluster import PostgresCluster

    base = Path(tempfile.mkdtemp(prefix="medrec-crash-"))
    cluster = PostgresCluster(base / "pg", settings={"fsync": "on"})
    cluster.start()
    try:
        cluster.create_database("app")
        migrate(cluster.url("app"))
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


def new_patient() -> models.PatientWrite:
    body = {"idCardNum": card_number(), "firstName": "Crash", "lastName": "Test", "birthDate": "1970-01-01"}
    return models.PatientWrite.model_validate_json(json.dumps(body))


def test_no_answered_request_loses_its_audit_event_in_a_crash(crash_cluster):
    url = crash_cluster.url("app")
    services = build_services(Database(lambda: url, translate_error=translate))
    admin = Caller("crash-admin", ActorKind.ADMIN, "setup")
    pid = services.patients.create(admin, new_patient()).resource.patient_id
    answered_reads: list[str] = []
    answered_writes: list[tuple[str, int]] = []
    stop = threading.Event()

    def worker(n: int) -> None:
        while not stop.is_set():
            request_id = f"crash-{n}-{uuid.uuid4().hex}"
            caller = Caller("crash-admin", ActorKind.ADMIN, request_id)
            try:
                if n % 2:
                    services.patients.get(caller, pid)
                    answered_reads.append(request_id)
                else:
                    created = services.patients.create(caller, new_patient())
                    answered_writes.append((request_id, created.resource.patient_id))
                    services.patients.list(caller, PageRequest(limit=5))
                    answered_reads.append(request_id)
            except DomainError:  # 503 while the database is down: not answered, nothing promised
                time.sleep(0.01)
            except psycopg2.Error:
                time.sleep(0.01)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    crash_cluster.stop(mode="immediate")
    answered_before_crash = (list(answered_reads), list(answered_writes))
    stop.set()
    for t in threads:
        t.join(10)
    crash_cluster.start()

    reads, writes = answered_before_crash
    assert len(reads) > 50 and writes, (len(reads), len(writes))
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT request_id FROM medical_app.audit_event")
            audited = {r[0] for r in cur.fetchall()}
            cur.execute("SELECT patient_id FROM medical_app.patient")
            stored = {r[0] for r in cur.fetchall()}
    finally:
        conn.close()
    lost = [r for r in reads if r not in audited]
    assert not lost, f"{len(lost)} of {len(reads)} answered requests lost their audit event"
    assert all(request_id in audited and patient_id in stored for request_id, patient_id in writes)
