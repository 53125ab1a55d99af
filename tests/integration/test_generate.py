"""The sample-data generator: sizes, validity, determinism, appending, the fixture and the command line.

Each test loads into a database of its own on the suite's cluster, so no other test's rows interfere.
"""

from __future__ import annotations

import itertools
import json
from datetime import date

import psycopg2
import pytest

from chalicelib.migrations import apply_migrations
from pipeline import generate as gen

_names = itertools.count()

# The content columns of each table (not the timestamps and version the database sets).
CONTENT = {
    "patient": "patient_id, id_card_num, first_name, last_name, birth_date, phone_num, deleted_timestamp",
    "medical_record": "medical_record_id, patient_id, hospital_name, doctor_full_name, diagnosis, symptom,"
    " treatment_start_date, treatment_end_date",
    "prescription": "prescription_id, medical_record_id, medicine_name, dose",
}


@pytest.fixture
def new_db(pg_cluster):
    """Factory: a fresh migrated database; returns an open owner connection (closed afterwards)."""
    conns = []

    def make():
        name = f"gen_{next(_names)}_{id(conns) % 10**6}"
        pg_cluster.create_database(name)
        conn = psycopg2.connect(pg_cluster.url(name))
        apply_migrations(conn)
        conn.autocommit = True
        conns.append(conn)
        return conn

    yield make
    for conn in conns:
        conn.close()


def scalar(conn, query, params=()):
    with conn.cursor() as cur:
        cur.execute(query, params)
        return cur.fetchone()[0]


def counts(conn):
    return tuple(scalar(conn, f"SELECT count(*) FROM medical_app.{t}") for t in CONTENT)  # noqa: S608


def digest(conn):
    """md5 of every table's content columns, ordered by id."""
    return {
        table: scalar(
            conn,
            f"SELECT md5(string_agg(concat_ws('|', {columns}), E'\\n' ORDER BY {columns.split(',')[0]}))"  # noqa: S608
            f" FROM medical_app.{table}",
        )
        for table, columns in CONTENT.items()
    }


def test_counts_match_the_request(new_db):
    conn = new_db()
    result = gen.generate(conn, 400, 2.5, 2.0, seed=1, progress=False)
    assert (result["patients"], result["medical_records"], result["prescriptions"]) == (400, 1000, 2000)
    assert counts(conn) == (400, 1000, 2000)
    assert result["first_ids"] == {"patient": 1, "medical_record": 1, "prescription": 1}
    # Every patient has a visit when there are at least as many visits as patients.
    assert (
        scalar(conn, "SELECT min(n) FROM (SELECT count(*) AS n FROM medical_app.medical_record GROUP BY patient_id) c")
        >= 1
    )
    assert scalar(conn, "SELECT count(DISTINCT patient_id) FROM medical_app.medical_record") == 400


@pytest.mark.parametrize(
    ("patients", "per_patient", "per_record", "expected"),
    [
        (7, 1.3, 0.5, (7, 9, 5)),  # 9.1 -> 9 visits; 4.5 -> 5 prescriptions (half up)
        (10, 0.25, 3.0, (10, 3, 9)),  # fewer visits than patients: some patients have none
        (5, 0, 2, (5, 0, 0)),
        (0, 2.5, 2.0, (0, 0, 0)),
    ],
)
def test_fractional_and_degenerate_sizes(new_db, patients, per_patient, per_record, expected):
    conn = new_db()
    result = gen.generate(conn, patients, per_patient, per_record, seed=3, progress=False)
    assert (result["patients"], result["medical_records"], result["prescriptions"]) == expected
    assert counts(conn) == expected


def test_rows_are_realistic_and_within_the_rules(new_db):
    conn = new_db()
    gen.generate(conn, 600, 2.5, 2.0, seed=5, progress=False, as_of=date(2024, 12, 31))
    with conn.cursor() as cur:
        cur.execute("SELECT id_card_num, first_name, last_name, birth_date, phone_num FROM medical_app.patient")
        patients = cur.fetchall()
        cur.execute(
            "SELECT r.hospital_name, r.doctor_full_name, r.diagnosis, r.symptom, r.treatment_start_date,"
            " r.treatment_end_date, p.birth_date FROM medical_app.medical_record r JOIN medical_app.patient p"
            " USING (patient_id)"
        )
        records = cur.fetchall()
        cur.execute("SELECT medicine_name, dose FROM medical_app.prescription")
        prescriptions = cur.fetchall()
    assert len({p[0] for p in patients}) == len(patients)
    assert all(gen.valid_card_number(p[0]) for p in patients)  # valid Thai ID check digits
    assert all(p[1].strip() and p[2].strip() and len(p[1]) <= 50 and len(p[2]) <= 50 for p in patients)
    assert all(date(1850, 1, 1) <= p[3] <= date(2024, 12, 31) for p in patients)
    phones = [p[4] for p in patients if p[4] is not None]
    assert phones and all(ph.isdigit() and 1 <= len(ph) <= 10 for ph in phones)
    assert len(phones) < len(patients)  # a few patients have no phone
    assert any(any("\u0e00" <= ch <= "\u0e7f" for ch in p[1]) for p in patients)  # Thai script names
    assert any(p[1].isascii() for p in patients)
    for hospital, doctor, diagnosis, _symptom, start, end, birth in records:
        assert hospital.strip() and doctor.strip() and len(hospital) <= 50 and len(doctor) <= 50
        assert start >= birth and start <= date(2024, 12, 31)
        assert end is None or end >= start
        if diagnosis in gen.ADULT_CONDITIONS:
            assert (start - birth).days >= gen.ADULT_AGE_DAYS
    assert len({r[0] for r in records}) > 20 and len({r[2] for r in records}) > 30
    assert any(r[5] is None for r in records) and any(r[2] is None or r[3] is None for r in records)
    medicines = {m for m, _ in prescriptions}
    assert medicines <= set(gen.MEDICINES) and len(medicines) > 40
    assert all(dose in gen.MEDICINES[m] for m, dose in prescriptions)
    # Medicines fit the diagnosis (or are general ones, when a visit has many prescriptions).
    treats = {c[0]: set(c[4]) | set(gen.EXTRA_MEDICINES) for c in gen.CONDITIONS}
    pairs = _rows(
        conn,
        "SELECT r.diagnosis, p.medicine_name FROM medical_app.prescription p"
        " JOIN medical_app.medical_record r USING (medical_record_id) WHERE r.diagnosis IS NOT NULL",
    )
    assert len(pairs) > 2000 and all(medicine in treats[diagnosis] for diagnosis, medicine in pairs)


def test_built_in_vocabulary_fits_the_columns():
    for name, doses in gen.MEDICINES.items():
        assert 0 < len(name) <= 50 and doses and all(0 < len(d) <= 50 for d in doses), name
    for diagnosis, symptom, weight, days, medicines in gen.CONDITIONS:
        assert len(diagnosis) <= 255 and len(symptom) <= 255 and weight > 0
        assert days is None or 0 <= days[0] <= days[1]
        assert medicines and set(medicines) <= set(gen.MEDICINES), diagnosis
    assert {c[0] for c in gen.CONDITIONS} >= gen.ADULT_CONDITIONS
    assert all(0 < len(h) <= 50 for h in gen.HOSPITALS_EN)


def test_same_seed_same_rows(new_db):
    first, second, other = new_db(), new_db(), new_db()
    for conn in (first, second):
        gen.generate(conn, 300, 2.5, 2.0, seed=11, progress=False)
    gen.generate(other, 300, 2.5, 2.0, seed=12, progress=False)
    assert digest(first) == digest(second)
    assert all(a != b for a, b in zip(digest(first).values(), digest(other).values(), strict=True))


def test_appending_continues_the_ids(new_db):
    conn = new_db()
    first = gen.generate(conn, 200, 2.5, 2.0, seed=1, progress=False)
    second = gen.generate(conn, 200, 2.5, 2.0, seed=1, progress=False)  # same seed: still new cards
    assert second["first_ids"] == {"patient": 201, "medical_record": 501, "prescription": 1001}
    assert counts(conn) == (400, 1000, 2000)
    assert first["first_ids"] != second["first_ids"]
    assert scalar(conn, "SELECT count(DISTINCT id_card_num) FROM medical_app.patient") == 400
    # The sequences moved past the generated ids: ordinary inserts continue after them.
    new_id = scalar(
        conn,
        "INSERT INTO medical_app.patient (id_card_num, first_name, last_name, birth_date)"
        " VALUES ('1234567890121', 'Somchai', 'Jaidee', '1980-04-12') RETURNING patient_id",
    )
    assert new_id == 401
    third = gen.generate(conn, 10, 2.5, 2.0, seed=1, progress=False)
    assert third["first_ids"]["patient"] == 402


def test_taken_card_numbers_are_replaced(new_db):
    conn = new_db()
    # Two live patients (ids 1 and 2) already hold the card numbers the generator would give ids 4 and 6.
    for patient_id in (4, 6):
        scalar(
            conn,
            "INSERT INTO medical_app.patient (id_card_num, first_name, last_name, birth_date)"
            " VALUES (%s, 'Malee', 'Srisuk', '1982-07-22') RETURNING patient_id",
            (gen.card_number(patient_id, seed=7),),
        )
    result = gen.generate(conn, 10, 1, 1, seed=7, progress=False)
    assert result["first_ids"]["patient"] == 3
    assert result["card_numbers_replaced"] == 2
    assert scalar(conn, "SELECT count(DISTINCT id_card_num) FROM medical_app.patient") == 12
    cards = dict(_rows(conn, "SELECT patient_id, id_card_num FROM medical_app.patient"))
    assert cards[3] == gen.card_number(3, seed=7) and cards[5] == gen.card_number(5, seed=7)
    for patient_id in (4, 6):
        assert cards[patient_id] != gen.card_number(patient_id, seed=7)
        assert gen.valid_card_number(cards[patient_id])


def _rows(conn, query, params=()):
    with conn.cursor() as cur:
        cur.execute(query, params)
        return cur.fetchall()


def test_all_or_nothing(new_db):
    conn = new_db()
    # A rule of this test database makes the load fail part-way through the prescriptions.
    with conn.cursor() as cur:
        cur.execute("ALTER TABLE medical_app.prescription ADD CONSTRAINT test_stop CHECK (prescription_id < 150)")
    with pytest.raises(psycopg2.errors.CheckViolation):
        gen.generate(conn, 100, 2.5, 2.0, seed=1, progress=False)
    assert counts(conn) == (0, 0, 0)
    assert conn.autocommit is True
    assert gen.generate(conn, 10, 2.5, 2.0, seed=1, progress=False)["first_ids"]["patient"] == 1


def test_fixture_loads_once(new_db):
    conn = new_db()
    data = json.loads(gen.FIXTURE.read_text(encoding="utf-8"))
    assert len(data) == 8 and all(gen.valid_card_number(p["idCardNum"]) for p in data)
    records = sum(len(p["medicalRecords"]) for p in data)
    prescriptions = sum(len(r["prescriptions"]) for p in data for r in p["medicalRecords"])
    assert all(1 <= len(p["medicalRecords"]) <= 2 for p in data)
    first = gen.load_fixture(conn)
    assert first == {"patients": 8, "medical_records": records, "prescriptions": prescriptions, "skipped": 0}
    assert counts(conn) == (8, records, prescriptions)
    assert gen.load_fixture(conn) == {"patients": 0, "medical_records": 0, "prescriptions": 0, "skipped": 8}
    assert counts(conn) == (8, records, prescriptions)
    somchai = _rows(
        conn,
        "SELECT first_name, last_name, birth_date::text, phone_num FROM medical_app.patient WHERE id_card_num = %s",
        (data[0]["idCardNum"],),
    )
    assert somchai == [(data[0]["firstName"], data[0]["lastName"], data[0]["birthDate"], data[0]["phoneNum"])]
    # A soft-deleted patient frees the card number: loading again brings that patient back.
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE medical_app.patient SET deleted_timestamp = now() WHERE id_card_num = %s", (data[1]["idCardNum"],)
        )
    assert gen.load_fixture(conn)["patients"] == 1
    # Generated data appends after the fixture's ids.
    assert gen.generate(conn, 5, 1, 1, seed=1, progress=False)["first_ids"]["patient"] == 10


def test_medium_size_with_progress(new_db, capsys):
    conn = new_db()
    result = gen.generate(conn, 4_000, 2.5, 2.0, seed=2024, progress=True)
    assert (result["medical_records"], result["prescriptions"]) == (10_000, 20_000)
    assert counts(conn) == (4_000, 10_000, 20_000)
    assert "rows" in capsys.readouterr().err  # 34,000 rows: large enough for the bar
    assert result["seconds"] < 60
    # Prescriptions are spread over visits: some visits have none, the average is as asked.
    assert (
        scalar(
            conn,
            "SELECT count(*) FROM medical_app.medical_record r WHERE NOT EXISTS"
            " (SELECT FROM medical_app.prescription p WHERE p.medical_record_id = r.medical_record_id)",
        )
        > 0
    )


def test_command_line(pg_cluster, new_db, capsys, monkeypatch):
    conn = new_db()
    url = pg_cluster.url(conn.info.dbname)
    monkeypatch.delenv("MIGRATION_DATABASE_URL", raising=False)
    monkeypatch.setenv("DATABASE_URL", url)
    assert gen.main(["--fixture", "--patients", "20", "--seed", "9", "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["fixture"]["patients"] == 8
    assert summary["generated"]["patients"] == 20 and summary["generated"]["first_ids"]["patient"] == 9
    assert counts(conn)[0] == 28
    # --fixture alone loads only the fixture (nothing new: it is there already).
    assert gen.main(["--database-url", url, "--fixture"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "fixture": {"patients": 0, "medical_records": 0, "prescriptions": 0, "skipped": 8}
    }
    assert counts(conn)[0] == 28
    # Errors: one line on stderr, non-zero exit, nothing loaded.
    assert gen.main(["--database-url", url, "--patients", "5", "--as-of", "2999-01-01"]) == 1
    assert capsys.readouterr().err.startswith("generate: error: as_of must not be in the future")
    assert counts(conn)[0] == 28
    with pytest.raises(SystemExit) as exit_info:
        gen.main(["--help"])
    assert exit_info.value.code == 0
    assert "--records-per-patient" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        gen.main(["--database-url", url, "--patients", "-1"])


def test_module_entry_point_is_deterministic_across_processes(pg_cluster, new_db):
    """`python -m pipeline.generate` in another process (other hash seed) writes the same rows."""
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    in_process, by_cli = new_db(), new_db()
    gen.generate(in_process, 120, 2.5, 2.0, seed=21, progress=False)
    env = dict(os.environ, PYTHONPATH=f"{ROOT / 'functions'}:{ROOT}", PYTHONHASHSEED="12345")
    env.pop("MIGRATION_DATABASE_URL", None)
    env["DATABASE_URL"] = pg_cluster.url(by_cli.info.dbname)
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.generate", "--patients", "120", "--seed", "21"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["generated"]["prescriptions"] == 600
    assert done.stderr == ""  # 660 rows: no progress bar
    assert digest(by_cli) == digest(in_process)
    help_text = subprocess.run(
        [sys.executable, "-m", "pipeline.generate", "--help"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    for option in ("--database-url", "--patients", "--records-per-patient", "--prescriptions-per-record",
                   "--seed", "--fixture"):  # fmt: skip
        assert option in help_text


def test_every_generated_row_has_its_first_version_and_history_stays_on(new_db):
    """The bulk load writes versions set-based (the history trigger is off inside its transaction only)."""
    conn = new_db()
    gen.generate(conn, 50, 2.0, 2.0, seed=3, progress=False)
    gen.generate(conn, 20, 2.0, 2.0, seed=3, progress=False)  # appending: versions for the new rows only
    for table, key in (("patient", "patient_id"), ("medical_record", "medical_record_id"),
                       ("prescription", "prescription_id")):
        rows = scalar(conn, f"SELECT count(*) FROM medical_app.{table}")  # noqa: S608
        versions = scalar(conn, "SELECT count(*) FROM medical_app.resource_version v WHERE resource_type = %s "
                                "AND change = 'create' AND version = 1 AND changed_fields <> '{}'", (table,))
        assert versions == rows, table
        assert scalar(conn, f"SELECT count(*) FROM medical_app.{table} t WHERE NOT EXISTS ("  # noqa: S608
                            f"SELECT 1 FROM medical_app.resource_version v WHERE v.resource_type = %s "
                            f"AND v.resource_id = t.{key} AND v.data = to_jsonb(t))", (table,)) == 0
    with conn.cursor() as cur:  # the trigger is back on: an ordinary change keeps its version
        cur.execute("UPDATE medical_app.patient SET last_name = 'Changed' WHERE patient_id = 1")
    assert scalar(conn, "SELECT max(version) FROM medical_app.resource_version "
                        "WHERE resource_type = 'patient' AND resource_id = 1") == 2
