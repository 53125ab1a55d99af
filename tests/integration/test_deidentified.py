"""The de-identified analytic table (HIPAA Safe Harbor), the roles that keep analysts to it, and the
view of the identified table under the original system's column names. Two real databases and the
real Sling binary, as in test_refresh.py; the expected de-identified rows are computed in Python
(hmac, from the application tables), independently of the SQL that maintains the table."""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
from datetime import date

import psycopg2
import psycopg2.errors
import pytest

from chalicelib.domain import models
from pipeline import refresh
from pipeline.settings import PipelineConfigurationError, PipelineSettings, PseudonymKey
from tests.helpers import card_number
from tests.pipeline_support import Pipeline, RandomActivity, build, query

DEIDENTIFIED_COLUMNS = [
    "row_pseudonym", "patient_pseudonym", "visit_pseudonym", "birth_year", "age_90_or_older", "hospital_name",
    "diagnosis", "symptom", "treatment_start_year", "treatment_end_year", "medicine_name", "dose",
    "inserted_timestamp", "updated_timestamp",
]
# The original system's analytic table, column for column (its docker init script's DDL).
ORIGINAL_COLUMNS = [
    "medical_record_sk", "patient_id", "id_card_num", "first_name", "last_name", "birth_date", "phone_num",
    "medical_record_id", "hospital_name", "doctor_full_name", "diagnosis", "symtom", "treatment_start_date",
    "treatment_end_date", "prescription_id", "medicine_name", "dose", "inserted_timestamp", "updated_timestamp",
]
PSEUDONYMS = "SELECT row_pseudonym, patient_pseudonym, visit_pseudonym FROM analytic.medical_record_deidentified"


@pytest.fixture
def pipeline(pg_cluster, tmp_path, request):
    name = request.node.name.replace("[", "_").replace("]", "").replace("-", "_")[-40:].lower()
    return Pipeline(pg_cluster, f"d_{name}"[-40:], tmp_path)


def _activity(pipeline, seed: int, steps: int) -> RandomActivity:
    activity = RandomActivity(pipeline, seed=seed)
    for _ in range(steps):
        activity.step()
    return activity


def _patient(pipeline, birth_date: date, visits: list[date], prescriptions: int = 1, **names) -> dict:
    s, c = pipeline.services, pipeline.caller
    fields = {"id_card_num": card_number(), "first_name": "Anan", "last_name": "Srisuk", "birth_date": birth_date,
              **names}
    pid = s.patients.create(c, build(models.PatientWrite, **fields)).resource.patient_id
    records, rxs = [], []
    for start in visits:
        rid = s.medical_records.create(
            c, build(models.MedicalRecordWrite, hospital_name="Siriraj", doctor_full_name="Dr. Malee",
                     diagnosis="Influenza", treatment_start_date=start), parent_key=pid,
        ).resource.medical_record_id
        records.append(rid)
        rxs += [s.prescriptions.create(c, build(models.PrescriptionWrite, medicine_name="Paracetamol", dose="1 tab"),
                                       parent_key=rid).resource.prescription_id for _ in range(prescriptions)]
    return {"patient_id": pid, "records": records, "prescriptions": rxs}


def _by_patient(pipeline, patient_id: int) -> list[tuple]:
    return query(pipeline.analytic_url,
                 "SELECT birth_year, age_90_or_older, treatment_start_year, xmin::text "
                 "FROM analytic.medical_record_deidentified WHERE patient_pseudonym = %s ORDER BY row_pseudonym",
                 (pipeline.pseudonym_key.pseudonym(f"patient:{patient_id}"),))


def _last_run_counts(pipeline) -> tuple:
    return query(pipeline.analytic_url,
                 "SELECT deidentified_rows_inserted, deidentified_rows_updated, deidentified_rows_deleted "
                 "FROM analytic.refresh_run ORDER BY refresh_run_id DESC LIMIT 1")[0]


def _counts(result: refresh.RefreshResult) -> tuple[int, int, int]:
    return result.deidentified_rows_inserted, result.deidentified_rows_updated, result.deidentified_rows_deleted


# --- exactness and idempotence --------------------------------------------------------------------

def test_random_activity_then_refresh_matches_the_deidentified_reference(pipeline):
    activity = RandomActivity(pipeline, seed=31)
    for round_number in range(4):
        for _ in range(60 if round_number == 0 else 25):
            activity.step()
        result = pipeline.refresh()
        assert result.status == "succeeded" and result.check_passed
        assert pipeline.deidentified() == pipeline.deidentified_reference(), f"mismatch after round {round_number}"
        assert _last_run_counts(pipeline) == _counts(result)  # the run log records what the run did
    assert len(pipeline.deidentified()) == len(pipeline.reference()) > 20  # same grain as the identified table


def test_a_second_refresh_with_no_changes_touches_no_deidentified_row(pipeline):
    _activity(pipeline, seed=37, steps=40)
    assert _counts(pipeline.refresh())[0] > 0
    before = pipeline.deidentified_snapshot()
    second = pipeline.refresh()
    assert _counts(second) == (0, 0, 0) and not second.deidentified_rebuilt
    assert pipeline.deidentified_snapshot() == before  # not rewritten: same xmin, same updated_timestamp


def test_only_deidentified_content_changes_rewrite_deidentified_rows(pipeline):
    a = _patient(pipeline, date(1980, 1, 1), [date(2024, 1, 1)], prescriptions=3)
    b = _patient(pipeline, date(1975, 5, 5), [date(2024, 2, 2)], prescriptions=1)
    pipeline.refresh()
    s, c, key = pipeline.services, pipeline.caller, pipeline.pseudonym_key
    before = {row[0]: row for row in pipeline.deidentified_snapshot()}

    # a name and a phone number are not in the de-identified table: the identified rows change, these do not
    s.patients.update(c, a["patient_id"], build(models.PatientPatch, last_name="Renamed", phone_num="0899999999"),
                      partial=True)
    result = pipeline.refresh()
    assert (result.rows_updated, _counts(result)) == (3, (0, 0, 0))
    assert {row[0]: row for row in pipeline.deidentified_snapshot()} == before

    # a dose is: exactly that row is rewritten
    s.prescriptions.update(c, a["prescriptions"][1], build(models.PrescriptionPatch, dose="9 tab"), partial=True)
    assert _counts(pipeline.refresh()) == (0, 1, 0)
    after = {row[0]: row for row in pipeline.deidentified_snapshot()}
    assert {k for k in after if after[k] != before.get(k)} == {key.pseudonym(f"prescription:{a['prescriptions'][1]}")}

    # a prescription moved to another visit: its row follows (new visit pseudonym), the visit it left keeps a row
    s.prescriptions.update(c, b["prescriptions"][0],
                           build(models.PrescriptionPatch, medical_record_id=a["records"][0]), partial=True)
    assert _counts(pipeline.refresh()) == (1, 1, 0)  # b's visit gets its own row; the moved one is updated
    rows = {r[0]: r for r in pipeline.deidentified()}
    assert rows[key.pseudonym(f"prescription:{b['prescriptions'][0]}")][2] == key.pseudonym(
        f"medical_record:{a['records'][0]}")
    assert rows[key.pseudonym(f"medical_record:{b['records'][0]}")][10] is None  # no medicine on a visit's own row
    assert pipeline.deidentified() == pipeline.deidentified_reference()

    # a deleted patient's rows go
    s.patients.delete(c, a["patient_id"])
    assert _counts(pipeline.refresh()) == (0, 0, 4)
    assert pipeline.deidentified() == pipeline.deidentified_reference()


def test_the_global_check_reconciles_the_deidentified_table(pipeline):
    _activity(pipeline, seed=41, steps=30)
    pipeline.refresh()
    query(pipeline.analytic_url, "DELETE FROM analytic.medical_record_deidentified WHERE row_pseudonym = "
                                 "(SELECT min(row_pseudonym) FROM analytic.medical_record_deidentified)")
    due_now = dataclasses.replace(pipeline.settings, global_check_interval_seconds=0)
    with pytest.raises(refresh.RefreshFailed, match="reconciliation failed: de-identified table"):
        refresh.run_refresh("incremental", due_now)
    assert pipeline.runs()[-1][0] == "failed"
    assert pipeline.refresh("full").status == "succeeded"  # a full run rebuilds it
    assert pipeline.deidentified() == pipeline.deidentified_reference()


# --- what is left out or generalised --------------------------------------------------------------

def test_no_direct_identifier_reaches_the_deidentified_table(pipeline):
    _activity(pipeline, seed=43, steps=60)
    _patient(pipeline, date(1961, 7, 19), [date(2022, 3, 14), date(2023, 11, 2)], first_name="Quintessa",
             last_name="Zwolinska", phone_num="0867531234")
    pipeline.refresh()

    columns = query(pipeline.analytic_url,
                    "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = 'analytic' "
                    "AND table_name = 'medical_record_deidentified' ORDER BY ordinal_position")
    assert [name for name, _ in columns] == DEIDENTIFIED_COLUMNS
    assert "date" not in {data_type for _, data_type in columns}  # years only

    identifiers: set[str] = set()
    for first, last, card, passport, phone, birth in query(
        pipeline.app_owner,
        "SELECT first_name, last_name, id_card_num, passport_number, phone_num, birth_date FROM medical_app.patient",
    ):
        identifiers |= {first, last, birth.isoformat(), birth.strftime("%Y%m%d"), birth.strftime("%d/%m/%Y")}
        identifiers |= {value for value in (card, passport, phone) if value}
    for doctor, start, end in query(pipeline.app_owner, "SELECT doctor_full_name, treatment_start_date, "
                                    "treatment_end_date FROM medical_app.medical_record"):
        identifiers |= {doctor, start.isoformat()} | ({end.isoformat()} if end else set())
    # ids in the clear or hashed without the key would be re-identifiable by anyone with the app's ids
    for (patient_id,) in query(pipeline.app_owner, "SELECT patient_id FROM medical_app.patient"):
        for text in (str(patient_id), f"patient:{patient_id}"):
            identifiers |= {hashlib.sha256(text.encode()).hexdigest(), hashlib.md5(text.encode()).hexdigest()}  # noqa: S324
    identifiers = {i.lower() for i in identifiers}
    assert {"quintessa", "zwolinska", "0867531234", "1961-07-19", "2022-03-14", "dr. malee"} <= identifiers

    rows = query(pipeline.analytic_url, "SELECT * FROM analytic.medical_record_deidentified")
    assert len(rows) == len(pipeline.reference())
    leaks = [(value, i) for row in rows for value in row if value is not None
             for i in identifiers if i in str(value).lower()]
    assert leaks == []


def test_ages_over_89_are_aggregated_and_follow_the_year(pipeline, monkeypatch):
    year = refresh.age_reference_year()
    over = _patient(pipeline, date(year - 95, 6, 15), [date(year - 10, 3, 1), date(year - 1, 3, 1)])
    turning_90 = _patient(pipeline, date(year - 90, 12, 31), [date(year - 1, 1, 2)])
    turning_90_next_year = _patient(pipeline, date(year - 89, 1, 1), [date(year - 1, 12, 31)], prescriptions=2)
    young = _patient(pipeline, date(1990, 1, 1), [date(year - 1, 6, 1)])
    pipeline.refresh()
    # 95 now: no birth year on any row, even the visit at 85 (it would date them, and the pseudonym links rows)
    assert sorted(r[:3] for r in _by_patient(pipeline, over["patient_id"])) == [(None, True, year - 10),
                                                                                 (None, True, year - 1)]
    assert [r[:2] for r in _by_patient(pipeline, turning_90["patient_id"])] == [(None, True)]
    assert [r[:2] for r in _by_patient(pipeline, turning_90_next_year["patient_id"])] == [(year - 89, False)] * 2
    assert [r[:2] for r in _by_patient(pipeline, young["patient_id"])] == [(1990, False)]
    assert pipeline.deidentified() == pipeline.deidentified_reference(reference_year=year)

    # the first refresh of the next year moves exactly the patients who turn 90 into the category
    before = {r[0]: r for r in pipeline.deidentified_snapshot()}
    monkeypatch.setattr(refresh, "age_reference_year", lambda: year + 1)
    result = pipeline.refresh()
    assert (result.rows_updated, _counts(result), result.deidentified_rebuilt) == (0, (0, 2, 0), False)
    assert [r[:2] for r in _by_patient(pipeline, turning_90_next_year["patient_id"])] == [(None, True)] * 2
    after = {r[0]: r for r in pipeline.deidentified_snapshot()}
    changed = {k for k in after if after[k] != before[k]}
    assert changed == {pipeline.pseudonym_key.pseudonym(f"prescription:{rx}")
                       for rx in turning_90_next_year["prescriptions"]}
    assert pipeline.deidentified() == pipeline.deidentified_reference(reference_year=year + 1)
    assert _counts(pipeline.refresh()) == (0, 0, 0)  # and nothing more in the same year


# --- pseudonyms -----------------------------------------------------------------------------------

def test_pseudonyms_are_stable_across_rebuilds_and_change_with_the_key(pipeline):
    _activity(pipeline, seed=47, steps=50)
    pipeline.refresh()
    pseudonyms = set(query(pipeline.analytic_url, PSEUDONYMS))
    (patient_id,) = query(pipeline.app_owner, "SELECT min(patient_id) FROM medical_app.patient "
                                              "WHERE deleted_timestamp IS NULL")[0]
    expected = pipeline.pseudonym_key.pseudonym(f"patient:{patient_id}")
    assert len(expected) == 64 and expected in {p for _, p, _ in pseudonyms}

    full = pipeline.refresh("full")
    assert full.deidentified_rebuilt and full.check_scope == "global"
    assert set(query(pipeline.analytic_url, PSEUDONYMS)) == pseudonyms  # same key, same pseudonyms

    other_key = PseudonymKey.from_text(secrets.token_urlsafe(32))
    identified = pipeline.snapshot()
    result = refresh.run_refresh("incremental", dataclasses.replace(pipeline.settings, pseudonym_key=other_key))
    # pseudonyms of another key cannot be merged into: the table is rebuilt, the identified one untouched
    assert result.deidentified_rebuilt and result.check_scope == "global" and result.rows_updated == 0
    assert pipeline.snapshot() == identified
    new_pseudonyms = set(query(pipeline.analytic_url, PSEUDONYMS))
    assert {v for row in new_pseudonyms for v in row}.isdisjoint({v for row in pseudonyms for v in row})
    assert pipeline.deidentified() == pipeline.deidentified_reference(other_key)

    # and back to the first key: the first pseudonyms again
    assert pipeline.refresh().deidentified_rebuilt
    assert set(query(pipeline.analytic_url, PSEUDONYMS)) == pseudonyms


def test_the_pseudonym_key_is_required_and_never_recorded(pipeline, pg_cluster, monkeypatch):
    monkeypatch.setenv("APP_DB_URL", pipeline.settings.app_db_url)
    monkeypatch.setenv("ANALYTIC_DB_URL", pipeline.analytic_url)
    monkeypatch.delenv("PSEUDONYM_KEY", raising=False)
    with pytest.raises(PipelineConfigurationError, match="set PSEUDONYM_KEY"):
        PipelineSettings.from_env()
    monkeypatch.setenv("PSEUDONYM_KEY", "too short")
    with pytest.raises(PipelineConfigurationError, match="at least 32 bytes"):
        PipelineSettings.from_env()
    with pytest.raises(PipelineConfigurationError, match="set PSEUDONYM_KEY"):
        refresh.run_refresh("incremental", dataclasses.replace(pipeline.settings, pseudonym_key=None))
    assert pipeline.runs() == []  # refused before anything ran

    _activity(pipeline, seed=53, steps=20)
    monkeypatch.setenv("PSEUDONYM_KEY", pipeline.pseudonym_key_text)
    settings = PipelineSettings.from_env()
    assert settings.pseudonym_key == pipeline.pseudonym_key
    # even with every statement logged, the server log gets neither the key nor its pads
    query(pipeline.analytic_url, f"ALTER DATABASE {pipeline.analytic_db} SET log_statement = 'all'")
    log_start = pg_cluster.log_file.stat().st_size
    settings = dataclasses.replace(settings, sling_home=pipeline.settings.sling_home)
    try:
        result = refresh.run_refresh("incremental", settings)
    finally:
        query(pipeline.analytic_url, f"ALTER DATABASE {pipeline.analytic_db} RESET log_statement")
    with pg_cluster.log_file.open(encoding="utf-8", errors="replace") as log:
        log.seek(log_start)
        server_log = log.read()
    assert "pseudonym_pads" in server_log  # the refresh's statements were logged
    secrets_ = [pipeline.pseudonym_key_text, *pipeline.pseudonym_key.hmac_pads()]
    recorded = " ".join(str(row) for row in query(pipeline.analytic_url, "SELECT * FROM analytic.refresh_run"))
    shown = [repr(settings), refresh.summary_markdown(result), str(result.as_dict())]
    assert not [s for s in secrets_ for text in [recorded, server_log, *shown] if s in text]
    # the pads lived only in the refresh's transaction
    conn = psycopg2.connect(pipeline.analytic_url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT current_setting('medrec.pseudonym_ipad', true)")
            assert cur.fetchone()[0] is None
            with pytest.raises(psycopg2.errors.UndefinedObject):  # an analyst's session cannot compute them
                cur.execute("SELECT analytic.pseudonym('patient:1')")
    finally:
        conn.close()


# --- roles and the original names -----------------------------------------------------------------

def _login(pipeline, pg_cluster, role: str):
    from tools.cli import create_login

    user, password = f"{role}_test_login", secrets.token_urlsafe(16)
    create_login(pipeline.analytic_url, user, password, role)
    return pg_cluster.url(pipeline.analytic_db, user=user, password=password)


def _denied(url: str, sql: str) -> bool:
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
        return False
    except psycopg2.errors.InsufficientPrivilege:
        return True
    finally:
        conn.close()


def test_the_analyst_reads_the_deidentified_table_and_nothing_else(pipeline, pg_cluster):
    _activity(pipeline, seed=59, steps=30)
    pipeline.refresh()
    analyst = _login(pipeline, pg_cluster, "analytic_analyst")
    privileged = _login(pipeline, pg_cluster, "analytic_identified_reader")
    rows = len(pipeline.reference())

    assert query(analyst, "SELECT count(*) FROM analytic.medical_record_deidentified") == [(rows,)]
    for relation in ("analytic.medical_record_denormalized", "analytic.medical_record_denormalized_original",
                     "analytic.medical_record_denormalized_source", "analytic.medical_record_deidentified_source",
                     "analytic.refresh_run", "stg.patient", "stg.medical_record", "stg.prescription"):
        assert _denied(analyst, f"SELECT 1 FROM {relation} LIMIT 1"), relation  # noqa: S608
    assert _denied(analyst, "SELECT analytic.pseudonym('patient:1')")
    assert _denied(analyst, "DELETE FROM analytic.medical_record_deidentified")

    assert query(privileged, "SELECT count(*) FROM analytic.medical_record_denormalized") == [(rows,)]
    assert query(privileged, "SELECT count(*) FROM analytic.medical_record_denormalized_original") == [(rows,)]
    assert query(privileged, "SELECT count(*) FROM analytic.medical_record_deidentified") == [(rows,)]
    for relation in ("stg.patient", "stg.medical_record", "stg.prescription", "analytic.refresh_run"):
        assert _denied(privileged, f"SELECT 1 FROM {relation} LIMIT 1"), relation  # noqa: S608
    assert _denied(privileged, "UPDATE analytic.medical_record_denormalized_original SET symtom = 'x'")


def test_the_original_column_names_stay_queryable(pipeline, pg_cluster):
    _activity(pipeline, seed=61, steps=40)
    pipeline.refresh()
    privileged = _login(pipeline, pg_cluster, "analytic_identified_reader")
    columns = query(privileged, "SELECT column_name FROM information_schema.columns WHERE table_schema = 'analytic' "
                                "AND table_name = 'medical_record_denormalized_original' ORDER BY ordinal_position")
    assert [c for (c,) in columns] == ORIGINAL_COLUMNS
    original = query(privileged, "SELECT medical_record_sk, symtom, patient_id, medical_record_id, prescription_id, "
                                 "first_name, inserted_timestamp FROM analytic.medical_record_denormalized_original")
    identified = query(pipeline.analytic_url, "SELECT row_key, symptom, patient_id, medical_record_id, "
                                              "prescription_id, first_name, inserted_timestamp "
                                              "FROM analytic.medical_record_denormalized")

    def sk(row_key: str) -> int:  # the documented derivation from the stable row key
        kind, number = row_key.split(":")
        return int(number) * 2 + (0 if kind == "prescription" else 1)

    assert set(original) == {(sk(row[0]), *row[1:]) for row in identified}
    assert len({row[0] for row in original}) == len(original)  # a key: unique
    pipeline.refresh("full")
    rebuilt = query(privileged, "SELECT medical_record_sk FROM analytic.medical_record_denormalized_original")
    assert {r[0] for r in rebuilt} == {row[0] for row in original}  # stable across a rebuild
