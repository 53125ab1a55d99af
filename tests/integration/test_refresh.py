"""The analytics refresh with two real databases and the real Sling binary."""

from __future__ import annotations

import random
import threading
from datetime import date, timedelta

import psycopg2
import pytest

from chalicelib.db import Database
from chalicelib.domain import models
from chalicelib.domain.errors import DomainError
from chalicelib.domain.services import Caller, build_services
from chalicelib.migrations import apply_migrations
from chalicelib.repositories.errors import translate
from pipeline import refresh
from pipeline.settings import PIPELINE_DIR, PipelineSettings
from tests.helpers import card_number

REFERENCE = """
SELECT 'prescription:' || x.prescription_id, p.patient_id, p.id_card_num, p.first_name, p.last_name,
       p.birth_date, p.phone_num, r.medical_record_id, r.hospital_name, r.doctor_full_name, r.diagnosis,
       r.symptom, r.treatment_start_date, r.treatment_end_date, x.prescription_id, x.medicine_name, x.dose,
       p.updated_timestamp, r.updated_timestamp, x.updated_timestamp
FROM medical_app.prescription x
JOIN medical_app.medical_record r USING (medical_record_id)
JOIN medical_app.patient p ON p.patient_id = r.patient_id
WHERE x.deleted_timestamp IS NULL AND r.deleted_timestamp IS NULL AND p.deleted_timestamp IS NULL
UNION ALL
SELECT 'medical_record:' || r.medical_record_id, p.patient_id, p.id_card_num, p.first_name, p.last_name,
       p.birth_date, p.phone_num, r.medical_record_id, r.hospital_name, r.doctor_full_name, r.diagnosis,
       r.symptom, r.treatment_start_date, r.treatment_end_date, NULL, NULL, NULL,
       p.updated_timestamp, r.updated_timestamp, NULL
FROM medical_app.medical_record r JOIN medical_app.patient p ON p.patient_id = r.patient_id
WHERE r.deleted_timestamp IS NULL AND p.deleted_timestamp IS NULL
  AND NOT EXISTS (SELECT 1 FROM medical_app.prescription x
                  WHERE x.medical_record_id = r.medical_record_id AND x.deleted_timestamp IS NULL)
"""
ANALYTIC = """
SELECT row_key, patient_id, id_card_num, first_name, last_name, birth_date, phone_num, medical_record_id,
       hospital_name, doctor_full_name, diagnosis, symptom, treatment_start_date, treatment_end_date,
       prescription_id, medicine_name, dose, patient_updated_timestamp, medical_record_updated_timestamp,
       prescription_updated_timestamp
FROM analytic.medical_record_denormalized
"""


def query(url: str, sql: str, params=None) -> list[tuple]:
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall() if cur.description else []
    finally:
        conn.commit()
        conn.close()


def build(model, **fields):
    """A model from Python names (the API builds them from JSON names)."""
    return model.model_validate(fields, by_name=True, by_alias=False)


class Pipeline:
    """Two fresh databases (application and analytic) on the suite's PostgreSQL."""

    def __init__(self, cluster, name: str, tmp_path) -> None:
        from tools.cli import create_login

        self.app_db, self.analytic_db = f"app_{name}", f"analytic_{name}"
        for db in (self.app_db, self.analytic_db):
            cluster.create_database(db)
        self.app_owner = cluster.url(self.app_db)
        self.analytic_url = cluster.url(self.analytic_db)
        for url, directory, schema in (
            (self.app_owner, None, "medical_app"),
            (self.analytic_url, PIPELINE_DIR / "migrations", "analytic"),
        ):
            conn = psycopg2.connect(url)
            try:
                apply_migrations(conn) if directory is None else apply_migrations(conn, directory, schema)
            finally:
                conn.close()
        create_login(self.app_owner, "medrec_reader_pipeline", "reader-pipeline-pw", "medical_reader")
        reader = cluster.url(self.app_db, user="medrec_reader_pipeline", password="reader-pipeline-pw")
        self.settings = PipelineSettings(reader, self.analytic_url, tmp_path / "sling", lock_timeout_seconds=60)
        self.services = build_services(Database(lambda: self.app_owner, translate_error=translate))
        self.caller = Caller("pipeline-test", "req-1")

    def refresh(self, mode: str = "incremental") -> refresh.RefreshResult:
        return refresh.run_refresh(mode, self.settings)

    def reference(self) -> set[tuple]:
        return set(query(self.app_owner, REFERENCE))

    def analytic(self) -> set[tuple]:
        return set(query(self.analytic_url, ANALYTIC))

    def snapshot(self) -> list[tuple]:
        return query(self.analytic_url, "SELECT *, xmin::text FROM analytic.medical_record_denormalized ORDER BY 1")

    def runs(self) -> list[tuple]:
        return query(
            self.analytic_url,
            "SELECT status, rows_inserted, rows_updated, rows_deleted, lock_acquired_at, finished_at "
            "FROM analytic.refresh_run ORDER BY refresh_run_id",
        )


@pytest.fixture
def pipeline(pg_cluster, tmp_path, request):
    name = request.node.name.replace("[", "_").replace("]", "").replace("-", "_")[-40:].lower()
    return Pipeline(pg_cluster, name, tmp_path)


class RandomActivity:
    """Random creates, updates, moves and deletes through the service layer (as the API does them)."""

    def __init__(self, pipeline: Pipeline, seed: int) -> None:
        self.s = pipeline.services
        self.caller = pipeline.caller
        self.rng = random.Random(seed)
        self.patients: list[int] = []
        self.records: list[int] = []
        self.prescriptions: list[int] = []

    def _patient(self):
        return build(models.PatientWrite,
            id_card_num=card_number(), first_name=self.rng.choice(["Anan", "Boon", "Chai", "Dao"]),
            last_name=self.rng.choice(["Srisuk", "Wong", "Jaidee"]),
            birth_date=date(1950, 1, 1) + timedelta(days=self.rng.randrange(20000)),
            phone_num=self.rng.choice([None, "0812345678"]),
        )

    def _record(self):
        start = date(2023, 1, 1) + timedelta(days=self.rng.randrange(600))
        return build(models.MedicalRecordWrite,
            hospital_name=self.rng.choice(["Siriraj", "Ramathibodi"]), doctor_full_name="Dr. Malee",
            diagnosis=self.rng.choice([None, "Influenza", "Migraine"]), symptom="Fever",
            treatment_start_date=start, treatment_end_date=self.rng.choice([None, start + timedelta(days=7)]),
        )

    def step(self) -> None:
        s, c, rng = self.s, self.caller, self.rng
        action = rng.choices(["patient", "record", "rx", "update", "move", "delete"], [3, 4, 6, 3, 2, 1])[0]
        try:
            if action == "patient" or not self.patients:
                self.patients.append(s.patients.create(c, self._patient()).resource.patient_id)
            elif action == "record" or not self.records:
                self.records.append(
                    s.medical_records.create(c, self._record(), parent_key=rng.choice(self.patients))
                    .resource.medical_record_id
                )
            elif action == "rx" or not self.prescriptions:
                medicine = rng.choice(["Paracetamol", "Ibuprofen"])
                data = build(models.PrescriptionWrite, medicine_name=medicine, dose="1 tab")
                self.prescriptions.append(
                    s.prescriptions.create(c, data, parent_key=rng.choice(self.records)).resource.prescription_id
                )
            elif action == "update":
                kind = rng.choice(["patient", "record", "rx"])
                if kind == "patient":
                    s.patients.update(c, rng.choice(self.patients), build(models.PatientPatch, last_name="Changed"),
                                      partial=True)
                elif kind == "record":
                    s.medical_records.update(c, rng.choice(self.records),
                                             build(models.MedicalRecordPatch, diagnosis=rng.choice(["Cold", None])),
                                             partial=True)
                else:
                    dose = build(models.PrescriptionPatch, dose=f"{rng.randint(1, 4)} tab")
                    s.prescriptions.update(c, rng.choice(self.prescriptions), dose, partial=True)
            elif action == "move":
                if rng.random() < 0.5:
                    s.prescriptions.update(c, rng.choice(self.prescriptions),
                                           build(models.PrescriptionPatch, medical_record_id=rng.choice(self.records)),
                                           partial=True)
                else:
                    s.medical_records.update(c, rng.choice(self.records),
                                             build(models.MedicalRecordPatch, patient_id=rng.choice(self.patients)),
                                             partial=True)
            else:
                kind = rng.choices(["patient", "record", "rx"], [1, 2, 4])[0]
                pool = {"patient": (s.patients, self.patients), "record": (s.medical_records, self.records),
                        "rx": (s.prescriptions, self.prescriptions)}[kind]
                pool[0].delete(c, rng.choice(pool[1]))
        except DomainError:
            pass  # e.g. moving under a deleted parent: refused, as the API would


def test_random_activity_then_refresh_matches_the_reference(pipeline):
    activity = RandomActivity(pipeline, seed=7)
    for round_number in range(4):
        for _ in range(60 if round_number == 0 else 25):
            activity.step()
        result = pipeline.refresh()
        assert result.status == "succeeded" and result.check_passed
        assert pipeline.analytic() == pipeline.reference(), f"mismatch after round {round_number}"
    assert len(pipeline.reference()) > 20


def test_a_second_refresh_with_no_changes_writes_nothing(pipeline):
    activity = RandomActivity(pipeline, seed=11)
    for _ in range(40):
        activity.step()
    first = pipeline.refresh()
    assert first.rows_inserted > 0
    before = pipeline.snapshot()
    second = pipeline.refresh()
    assert (second.rows_inserted, second.rows_updated, second.rows_deleted) == (0, 0, 0)
    assert sum(second.rows_changed.values()) == 0
    assert pipeline.snapshot() == before  # same rows, same timestamps, not even rewritten (same xmin)


def _visit_with_prescriptions(pipeline, count: int) -> tuple[int, int, list[int]]:
    s, c = pipeline.services, pipeline.caller
    pid = s.patients.create(c, build(models.PatientWrite, id_card_num=card_number(), first_name="Anan",
                                     last_name="Srisuk", birth_date=date(1980, 1, 1))).resource.patient_id
    rid = s.medical_records.create(
        c, build(models.MedicalRecordWrite, hospital_name="Siriraj", doctor_full_name="Dr. Malee",
                 treatment_start_date=date(2024, 1, 1)), parent_key=pid,
    ).resource.medical_record_id
    rxs = [
        s.prescriptions.create(c, build(models.PrescriptionWrite, medicine_name=f"Drug {i}", dose="1 tab"),
                               parent_key=rid).resource.prescription_id
        for i in range(count)
    ]
    return pid, rid, rxs


def test_only_changed_rows_are_rewritten(pipeline):
    pid, _rid, rxs = _visit_with_prescriptions(pipeline, 3)
    _visit_with_prescriptions(pipeline, 2)
    pipeline.refresh()
    before = {row[0]: row for row in pipeline.snapshot()}
    s, c = pipeline.services, pipeline.caller
    s.prescriptions.update(c, rxs[1], build(models.PrescriptionPatch, dose="9 tab"), partial=True)
    result = pipeline.refresh()
    assert (result.rows_inserted, result.rows_updated, result.rows_deleted) == (0, 1, 0)
    after = {row[0]: row for row in pipeline.snapshot()}
    assert {key for key in after if after[key] != before.get(key)} == {f"prescription:{rxs[1]}"}
    # a patient change rewrites exactly that patient's rows
    s.patients.update(c, pid, build(models.PatientPatch, last_name="Renamed"), partial=True)
    result = pipeline.refresh()
    assert (result.rows_inserted, result.rows_updated, result.rows_deleted) == (0, 3, 0)
    assert pipeline.analytic() == pipeline.reference()


def test_moves_leave_no_stale_rows(pipeline):
    s, c = pipeline.services, pipeline.caller
    _, rid_a, [rx] = _visit_with_prescriptions(pipeline, 1)
    pid_b, rid_b, _ = _visit_with_prescriptions(pipeline, 1)
    pipeline.refresh()
    s.prescriptions.update(c, rx, build(models.PrescriptionPatch, medical_record_id=rid_b), partial=True)
    pipeline.refresh()
    keys = {r[0]: r for r in pipeline.analytic()}
    assert f"medical_record:{rid_a}" in keys  # visit A has no prescription left: it gets its own row
    assert keys[f"prescription:{rx}"][7] == rid_b
    assert pipeline.analytic() == pipeline.reference()
    s.medical_records.update(c, rid_a, build(models.MedicalRecordPatch, patient_id=pid_b), partial=True)
    pipeline.refresh()
    assert {r[0]: r for r in pipeline.analytic()}[f"medical_record:{rid_a}"][1] == pid_b
    assert pipeline.analytic() == pipeline.reference()


@pytest.mark.parametrize("point", ["after_replication", "before_merge", "inside_merge"])
def test_a_crash_leaves_the_last_good_state_and_the_next_run_converges(pipeline, monkeypatch, point):
    activity = RandomActivity(pipeline, seed=5)
    for _ in range(40):
        activity.step()
    pipeline.refresh()
    good = pipeline.snapshot()
    for _ in range(20):
        activity.step()

    def crash(name: str) -> None:
        if name == point:
            raise RuntimeError(f"injected crash at {name}")

    monkeypatch.setattr(refresh, "crash_point", crash)
    with pytest.raises(RuntimeError, match="injected crash"):
        pipeline.refresh()
    assert pipeline.snapshot() == good
    assert pipeline.runs()[-1][0] == "failed"

    monkeypatch.setattr(refresh, "crash_point", lambda name: None)
    assert pipeline.refresh().status == "succeeded"
    assert pipeline.analytic() == pipeline.reference()


def test_two_refreshes_started_together_do_not_interleave(pipeline):
    activity = RandomActivity(pipeline, seed=9)
    for _ in range(40):
        activity.step()
    results: list[refresh.RefreshResult] = []
    barrier = threading.Barrier(2)

    def run() -> None:
        barrier.wait()
        results.append(pipeline.refresh())

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.status for r in results) == ["succeeded", "succeeded"]
    runs = pipeline.runs()
    assert [r[0] for r in runs] == ["succeeded", "succeeded"]
    (*_, end_a), (*_, start_b, _) = runs
    assert end_a <= start_b  # the second took the lock only after the first had finished
    assert pipeline.analytic() == pipeline.reference()


def test_a_refresh_that_cannot_get_the_lock_records_skipped(pipeline):
    busy = PipelineSettings(pipeline.settings.app_db_url, pipeline.settings.analytic_db_url,
                            pipeline.settings.sling_home, lock_timeout_seconds=0.5)
    with refresh.single_flight(pipeline.settings):
        result = refresh.run_refresh("incremental", busy)
    assert result.status == "skipped"
    assert pipeline.runs()[-1][0] == "skipped"


def test_hard_deletes_outside_the_api_are_removed(pipeline):
    activity = RandomActivity(pipeline, seed=13)
    for _ in range(60):
        activity.step()
    pipeline.refresh()
    rows = query(pipeline.app_owner, "SELECT x.prescription_id, x.medical_record_id FROM medical_app.prescription x "
                                     "WHERE x.deleted_timestamp IS NULL ORDER BY 1 LIMIT 1")
    rx, record = rows[0]
    query(pipeline.app_owner, "DELETE FROM medical_app.prescription WHERE prescription_id = %s", (rx,))
    result = pipeline.refresh()
    assert result.rows_hard_deleted["prescription"] == 1
    assert f"prescription:{rx}" not in {r[0] for r in pipeline.analytic()}
    assert pipeline.analytic() == pipeline.reference()
    # a whole visit, with its prescriptions, deleted by hand
    query(pipeline.app_owner, "DELETE FROM medical_app.prescription WHERE medical_record_id = %s", (record,))
    query(pipeline.app_owner, "DELETE FROM medical_app.medical_record WHERE medical_record_id = %s", (record,))
    result = pipeline.refresh()
    assert result.rows_hard_deleted["medical_record"] == 1
    assert record not in {r[7] for r in pipeline.analytic()}
    assert pipeline.analytic() == pipeline.reference()


def test_full_mode_rebuilds_from_scratch(pipeline):
    activity = RandomActivity(pipeline, seed=17)
    for _ in range(50):
        activity.step()
    pipeline.refresh()
    query(pipeline.analytic_url, "UPDATE analytic.medical_record_denormalized SET dose = 'drifted'")
    result = pipeline.refresh("full")
    assert result.status == "succeeded" and result.rows_inserted == len(pipeline.reference())
    assert pipeline.analytic() == pipeline.reference()
    assert pipeline.refresh().rows_updated == 0


def test_sling_failure_fails_the_run_with_a_clear_message(pipeline):
    broken = PipelineSettings("postgresql://nobody:secret-pw@127.0.0.1:1/nowhere", pipeline.analytic_url,
                              pipeline.settings.sling_home)
    with pytest.raises(refresh.RefreshFailed) as raised:
        refresh.run_refresh("incremental", broken)
    message = str(raised.value)
    assert "Sling replication failed" in message and "secret-pw" not in message
    status, *_ = pipeline.runs()[-1]
    assert status == "failed"
