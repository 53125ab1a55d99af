"""Two real databases and random activity through the service layer, for the refresh tests."""

from __future__ import annotations

import random
import secrets
from datetime import date, timedelta

import psycopg2

from chalicelib.db import Database
from chalicelib.domain import models
from chalicelib.domain.errors import DomainError
from chalicelib.domain.services import ActorKind, Caller, build_services
from chalicelib.migrations import migrate
from chalicelib.repositories.errors import translate
from pipeline import refresh
from pipeline.settings import PIPELINE_DIR, PipelineSettings, PseudonymKey
from tests.helpers import card_number, passport_number

REFERENCE = """
SELECT 'prescription:' || x.prescription_id, p.patient_id, p.id_card_num, p.passport_country,
       p.passport_number, p.first_name, p.last_name,
       p.birth_date, p.phone_num, r.medical_record_id, r.hospital_name, r.doctor_full_name, r.diagnosis,
       r.symptom, r.treatment_start_date, r.treatment_end_date, x.prescription_id, x.medicine_name, x.dose,
       p.updated_timestamp, r.updated_timestamp, x.updated_timestamp
FROM medical_app.prescription x
JOIN medical_app.medical_record r USING (medical_record_id)
JOIN medical_app.patient p ON p.patient_id = r.patient_id
WHERE x.deleted_timestamp IS NULL AND r.deleted_timestamp IS NULL AND p.deleted_timestamp IS NULL
UNION ALL
SELECT 'medical_record:' || r.medical_record_id, p.patient_id, p.id_card_num, p.passport_country,
       p.passport_number, p.first_name, p.last_name,
       p.birth_date, p.phone_num, r.medical_record_id, r.hospital_name, r.doctor_full_name, r.diagnosis,
       r.symptom, r.treatment_start_date, r.treatment_end_date, NULL, NULL, NULL,
       p.updated_timestamp, r.updated_timestamp, NULL
FROM medical_app.medical_record r JOIN medical_app.patient p ON p.patient_id = r.patient_id
WHERE r.deleted_timestamp IS NULL AND p.deleted_timestamp IS NULL
  AND NOT EXISTS (SELECT 1 FROM medical_app.prescription x
                  WHERE x.medical_record_id = r.medical_record_id AND x.deleted_timestamp IS NULL)
"""
ANALYTIC = """
SELECT row_key, patient_id, id_card_num, passport_country, passport_number, first_name, last_name, birth_date,
       phone_num, medical_record_id,
       hospital_name, doctor_full_name, diagnosis, symptom, treatment_start_date, treatment_end_date,
       prescription_id, medicine_name, dose, patient_updated_timestamp, medical_record_updated_timestamp,
       prescription_updated_timestamp
FROM analytic.medical_record_denormalized
"""
DEIDENTIFIED = """
SELECT row_pseudonym, patient_pseudonym, visit_pseudonym, birth_year, age_90_or_older, hospital_name, diagnosis,
       symptom, treatment_start_year, treatment_end_year, medicine_name, dose
FROM analytic.medical_record_deidentified
"""
# The identified reference rows' columns the de-identified reference is computed from (see deidentify).
_ROW_KEY, _PATIENT_ID, _BIRTH_DATE, _RECORD_ID, _HOSPITAL, _DIAGNOSIS, _SYMPTOM = 0, 1, 7, 9, 10, 12, 13
_START, _END, _MEDICINE, _DOSE = 14, 15, 17, 18


def deidentify(row: tuple, key: PseudonymKey, reference_year: int) -> tuple:
    """The de-identified row of a REFERENCE row, computed independently of the SQL (Python's hmac):
    pseudonyms are HMAC-SHA256 in hex; birth year withheld for whoever is 90 or older in reference_year."""
    birth, start, end = row[_BIRTH_DATE], row[_START], row[_END]
    age_90_or_older = reference_year - birth.year >= 90
    return (
        key.pseudonym(row[_ROW_KEY]),
        key.pseudonym(f"patient:{row[_PATIENT_ID]}"),
        key.pseudonym(f"medical_record:{row[_RECORD_ID]}"),
        None if age_90_or_older else birth.year,
        age_90_or_older,
        row[_HOSPITAL], row[_DIAGNOSIS], row[_SYMPTOM],
        start.year, end.year if end else None,
        row[_MEDICINE], row[_DOSE],
    )


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

    def __init__(self, cluster, name: str, tmp_path, pseudonym_key: str | None = None) -> None:
        from tools.cli import create_login

        self.app_db, self.analytic_db = f"app_{name}", f"analytic_{name}"
        for db in (self.app_db, self.analytic_db):
            cluster.create_database(db)
        self.app_owner = cluster.url(self.app_db)
        self.analytic_url = cluster.url(self.analytic_db)
        migrate(self.app_owner)
        migrate(self.analytic_url, PIPELINE_DIR / "migrations", "analytic")
        create_login(self.app_owner, "medrec_reader_pipeline", "reader-pipeline-pw", "medical_reader")
        reader = cluster.url(self.app_db, user="medrec_reader_pipeline", password="reader-pipeline-pw")
        self.pseudonym_key_text = pseudonym_key or secrets.token_urlsafe(32)
        self.pseudonym_key = PseudonymKey.from_text(self.pseudonym_key_text)
        self.settings = PipelineSettings(reader, self.analytic_url, tmp_path / "sling", lock_timeout_seconds=60,
                                         pseudonym_key=self.pseudonym_key)
        self.services = build_services(Database(lambda: self.app_owner, translate_error=translate))
        self.caller = Caller("pipeline-test", ActorKind.ADMIN, "req-1")

    def refresh(self, mode: str = "incremental") -> refresh.RefreshResult:
        return refresh.run_refresh(mode, self.settings)

    def reference(self) -> set[tuple]:
        return set(query(self.app_owner, REFERENCE))

    def analytic(self) -> set[tuple]:
        return set(query(self.analytic_url, ANALYTIC))

    def snapshot(self) -> list[tuple]:
        return query(self.analytic_url, "SELECT *, xmin::text FROM analytic.medical_record_denormalized ORDER BY 1")

    def deidentified_reference(self, key: PseudonymKey | None = None, reference_year: int | None = None) -> set[tuple]:
        year = reference_year or refresh.age_reference_year()
        return {deidentify(row, key or self.pseudonym_key, year) for row in query(self.app_owner, REFERENCE)}

    def deidentified(self) -> set[tuple]:
        return set(query(self.analytic_url, DEIDENTIFIED))

    def deidentified_snapshot(self) -> list[tuple]:
        return query(self.analytic_url, "SELECT *, xmin::text FROM analytic.medical_record_deidentified ORDER BY 1")

    def runs(self) -> list[tuple]:
        return query(
            self.analytic_url,
            "SELECT status, rows_inserted, rows_updated, rows_deleted, lock_acquired_at, finished_at "
            "FROM analytic.refresh_run ORDER BY refresh_run_id",
        )


class RandomActivity:
    """Random creates, updates, moves, deletes and restores through the service layer (as the API does them)."""

    def __init__(self, pipeline: Pipeline, seed: int) -> None:
        self.s = pipeline.services
        self.caller = pipeline.caller
        self.rng = random.Random(seed)
        self.patients: list[int] = []
        self.records: list[int] = []
        self.prescriptions: list[int] = []
        self.deleted: list[tuple[str, int]] = []   # (kind, id) of each delete, for restores to pick from
        self.restored = 0                          # restores that brought a deleted row back

    def _patient(self):
        # a national ID, a passport, or both
        kind = self.rng.choice(["national", "passport", "both"])
        passport = {"passport_country": self.rng.choice(["GBR", "JPN"]), "passport_number": passport_number()}
        return build(models.PatientWrite,
            id_card_num=card_number() if kind != "passport" else None,
            **(passport if kind != "national" else {}),
            first_name=self.rng.choice(["Anan", "Boon", "Chai", "Dao"]),
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
        action = rng.choices(["patient", "record", "rx", "update", "move", "delete", "restore"],
                             [3, 4, 6, 3, 2, 1, 1])[0]
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
                    change = rng.choice([{"last_name": "Changed"},
                                         {"passport_country": "THA", "passport_number": passport_number()}])
                    s.patients.update(c, rng.choice(self.patients), build(models.PatientPatch, **change), partial=True)
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
            else:  # delete, or restore (with what the delete cascaded)
                kind = rng.choices(["patient", "record", "rx"], [1, 2, 4])[0]
                pool = {"patient": (s.patients, self.patients), "record": (s.medical_records, self.records),
                        "rx": (s.prescriptions, self.prescriptions)}[kind]
                if action == "delete":
                    key = rng.choice(pool[1])
                    if pool[0].delete(c, key):
                        self.deleted.append((kind, key))
                elif self.deleted:
                    kind, key = self.deleted.pop(rng.randrange(len(self.deleted)))
                    pools = {"patient": s.patients, "record": s.medical_records, "rx": s.prescriptions}
                    pools[kind].restore(c, key)  # refused (409) while its parent is deleted: as the API would
                    self.restored += 1
        except DomainError:
            pass  # e.g. moving under a deleted parent: refused, as the API would


