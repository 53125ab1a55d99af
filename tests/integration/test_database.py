"""The database enforces integrity and least privilege on its own; the API survives a restart."""

from __future__ import annotations

import psycopg2
import psycopg2.errors
import pytest

from chalicelib.migrations import apply_migrations
from tests.helpers import card_number


def test_migrations_are_idempotent(owner_url):
    conn = psycopg2.connect(owner_url)
    try:
        assert apply_migrations(conn) == []
        with conn.cursor() as cur:
            cur.execute("SELECT version FROM medical_app.schema_migration ORDER BY version")
            assert [v for (v,) in cur.fetchall()][:3] == [
                "0001_application_schema",
                "0002_audit_and_idempotency",
                "0003_roles",
            ]
    finally:
        conn.close()


@pytest.fixture
def api_conn(database):
    conn = psycopg2.connect(database[1])
    conn.autocommit = True
    yield conn
    conn.close()


@pytest.mark.parametrize(
    "statement",
    [
        "DELETE FROM medical_app.patient",
        "UPDATE medical_app.audit_event SET outcome = 'success'",
        "DELETE FROM medical_app.audit_event",
        "TRUNCATE medical_app.prescription",
        "CREATE TABLE medical_app.sneaky (id int)",
        "DROP TABLE medical_app.patient",
        "ALTER TABLE medical_app.patient DROP CONSTRAINT patient_id_card_num_format",
    ],
)
def test_the_api_role_cannot(api_conn, statement):
    with api_conn.cursor() as cur, pytest.raises(psycopg2.errors.InsufficientPrivilege):
        cur.execute(statement)


def test_the_audit_trail_is_append_only_even_for_the_owner(owner_conn, api):
    api.new_patient()
    with owner_conn.cursor() as cur:
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            cur.execute("UPDATE medical_app.audit_event SET actor = 'someone-else'")
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            cur.execute("DELETE FROM medical_app.audit_event")


def test_the_reader_role_only_reads(pg_cluster, owner_url):
    from tools.cli import create_login

    create_login(owner_url, "medrec_reader_test", "reader-pw-test", "medical_reader")
    conn = psycopg2.connect(pg_cluster.url("app", user="medrec_reader_test", password="reader-pw-test"))
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM medical_app.prescription")
            with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                cur.execute("SELECT count(*) FROM medical_app.audit_event")
            with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                cur.execute(
                    "INSERT INTO medical_app.patient (id_card_num, first_name, last_name, birth_date) "
                    "VALUES ('1234567890123', 'a', 'b', '2000-01-01')"
                )
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("values", "constraint"),
    [
        (("12345", "A", "B", "2000-01-01", None), "patient_id_card_num_format"),
        (("{card}", " ", "B", "2000-01-01", None), "patient_first_name_not_blank"),
        (("{card}", "A", "B", "2999-01-01", None), "patient_birth_date_not_future"),
        (("{card}", "A", "B", "1700-01-01", None), "patient_birth_date_range"),
        (("{card}", "A", "B", "2000-01-01", "08x"), "patient_phone_num_format"),
    ],
)
def test_the_database_enforces_patient_rules(owner_conn, values, constraint):
    values = tuple(card_number() if v == "{card}" else v for v in values)
    with owner_conn.cursor() as cur, pytest.raises(psycopg2.errors.CheckViolation) as raised:
        cur.execute(
            "INSERT INTO medical_app.patient (id_card_num, first_name, last_name, birth_date, phone_num) "
            "VALUES (%s, %s, %s, %s, %s)",
            values,
        )
    assert raised.value.diag.constraint_name == constraint


def test_the_database_enforces_keys_dates_and_bookkeeping(owner_conn):
    card = card_number()
    with owner_conn.cursor() as cur:
        cur.execute(
            "INSERT INTO medical_app.patient (id_card_num, first_name, last_name, birth_date, version, "
            "inserted_timestamp) VALUES (%s, 'A', 'B', '2000-01-01', 42, '1999-01-01') "
            "RETURNING patient_id, version, inserted_timestamp > now() - interval '1 minute'",
            (card,),
        )
        pid, version, fresh = cur.fetchone()
        assert (version, fresh) == (1, True)  # callers cannot forge bookkeeping
        with pytest.raises(psycopg2.errors.UniqueViolation):
            cur.execute(
                "INSERT INTO medical_app.patient (id_card_num, first_name, last_name, birth_date) "
                "VALUES (%s, 'C', 'D', '2000-01-01')",
                (card,),
            )
        with pytest.raises(psycopg2.errors.ForeignKeyViolation):
            cur.execute(
                "INSERT INTO medical_app.medical_record (patient_id, hospital_name, doctor_full_name, "
                "treatment_start_date) VALUES (987654321, 'H', 'D', '2024-01-01')"
            )
        with pytest.raises(psycopg2.errors.CheckViolation):
            cur.execute(
                "INSERT INTO medical_app.medical_record (patient_id, hospital_name, doctor_full_name, "
                "treatment_start_date, treatment_end_date) VALUES (%s, 'H', 'D', '2024-01-10', '2024-01-01')",
                (pid,),
            )
        cur.execute("UPDATE medical_app.patient SET first_name = 'Z' WHERE patient_id = %s RETURNING version", (pid,))
        assert cur.fetchone()[0] == 2


def test_the_api_reconnects_after_the_database_restarts_and_says_503_while_it_is_down(api, pg_cluster):
    pid = api.new_patient()["patientId"]
    pg_cluster.stop()
    try:
        down = api.get(f"/v1/patients/{pid}")
        assert down.status == 503
        assert down.headers["content-type"] == "application/problem+json"
        assert down.headers["retry-after"]
        # every route says when to come back, in its own error format
        health = api.get("/health")
        assert health.status == 503 and health.headers["retry-after"]
        legacy = api.get("/patient?limit=1")
        assert legacy.status == 503 and legacy.headers["retry-after"] and "error" in legacy.json
    finally:
        pg_cluster.start()
    assert api.get(f"/v1/patients/{pid}").status == 200
    assert api.get("/health").status == 200


def test_the_server_log_holds_no_patient_data(api, pg_cluster):
    from tests.helpers import patient_body

    body = patient_body(firstName="Logwatcherella")
    api.new_patient(**body)
    assert api.post("/v1/patients", body).status == 409  # a unique violation: its DETAIL names the key
    log = pg_cluster.log_file.read_text(errors="replace")
    assert "duplicate key value violates unique constraint" in log  # the error was logged ...
    assert body["idCardNum"] not in log and "Logwatcherella" not in log  # ... without the values
