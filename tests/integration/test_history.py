"""Version history (migration 0006): every write keeps exactly one version, with its actor and the fields
it changed, written by the database in the same transaction; read through /v1/.../history, access-
controlled and audited like reads."""

from __future__ import annotations

import uuid

import psycopg2
import pytest

from chalicelib.api import auth
from tests.helpers import Api, patient_body, record_body


def _subject(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def versions(owner_conn, resource_type: str, key: int) -> list[tuple]:
    with owner_conn.cursor() as cur:
        cur.execute(
            "SELECT version, change, changed_fields, actor FROM medical_app.resource_version "
            "WHERE resource_type = %s AND resource_id = %s ORDER BY version",
            (resource_type, key),
        )
        return cur.fetchall()


def test_every_write_keeps_exactly_one_version_with_its_actor_and_changed_fields(admin, owner_conn):
    api, subject = admin
    body = patient_body()
    patient = api.new_patient(**body)
    pid = patient["patientId"]
    assert api.patch(f"/v1/patients/{pid}", {"firstName": "Malee"}).status == 200
    assert api.put(f"/v1/patients/{pid}", {**body, "lastName": "Srisuk", "phoneNum": None}).status == 200
    assert api.delete(f"/v1/patients/{pid}").status == 204

    rows = versions(owner_conn, "patient", pid)
    assert [r[0] for r in rows] == [1, 2, 3, 4]
    assert [r[1] for r in rows] == ["create", "update", "update", "delete"]
    assert rows[0][2] == sorted(k for k, v in {
        "id_card_num": 1, "first_name": 1, "last_name": 1, "birth_date": 1, "phone_num": body.get("phoneNum"),
    }.items() if v is not None)
    assert rows[1][2] == ["first_name"]
    # PUT sent the original first name back and cleared the phone: both count as changes.
    expected_put = {"first_name", "last_name"} | ({"phone_num"} if body.get("phoneNum") else set())
    assert set(rows[2][2]) == expected_put
    assert rows[3][2] == []
    assert {r[3] for r in rows} == {subject}


def test_a_cascade_keeps_a_version_of_each_row_it_deletes_under_the_same_actor(admin, owner_conn):
    api, subject = admin
    pid = api.new_patient()["patientId"]
    rid = api.new_record(pid)["medicalRecordId"]
    xid = api.new_prescription(rid)["prescriptionId"]
    assert api.delete(f"/v1/patients/{pid}").status == 204
    for resource_type, key in (("patient", pid), ("medical_record", rid), ("prescription", xid)):
        rows = versions(owner_conn, resource_type, key)
        assert [(r[0], r[1], r[3]) for r in rows] == [(1, "create", subject), (2, "delete", subject)], resource_type


def test_a_move_lists_the_parent_as_changed(admin, owner_conn):
    api, _ = admin
    first, second = api.new_patient()["patientId"], api.new_patient()["patientId"]
    rid = api.new_record(first)["medicalRecordId"]
    assert api.patch(f"/v1/medical-records/{rid}", {"patientId": second}).status == 200
    assert versions(owner_conn, "medical_record", rid)[-1][1:3] == ("update", ["patient_id"])
    reply = api.get(f"/v1/medical-records/{rid}/history/2")
    assert reply.status == 200
    assert reply.json["changedFields"] == ["patientId"]
    assert reply.json["resource"]["patientId"] == second


def test_the_original_routes_and_sql_writes_keep_versions_too(client, owner_conn):
    legacy_subject = _subject("legacy")
    legacy = Api(client, auth.mint(legacy_subject, ["read", "write", "admin"]))
    body = patient_body()
    created = legacy.post("/patient", {**body, "phoneNum": body.get("phoneNum") or "0812345678"})
    assert created.status == 201, created.text
    pid = created.json["patientID"]
    assert legacy.put(f"/patient/{pid}", {"lastName": "Wong"}).status == 200
    with owner_conn.cursor() as cur:  # an operator's SQL, outside the API
        cur.execute("UPDATE medical_app.patient SET first_name = first_name || 'x' WHERE patient_id = %s", (pid,))
        cur.execute("SELECT session_user")
        (owner,) = cur.fetchone()
    rows = versions(owner_conn, "patient", pid)
    assert [(r[1], r[2], r[3]) for r in rows] == [
        ("create", rows[0][2], legacy_subject),
        ("update", ["last_name"], legacy_subject),
        ("update", ["first_name"], f"database:{owner}"),
    ]


def test_history_pages_oldest_first_and_each_version_reads_back_as_it_was(admin):
    api, subject = admin
    body = patient_body()
    pid = api.new_patient(**body)["patientId"]
    names = ["Anong", "Boonmee", "Chai", "Dao"]
    for name in names:
        assert api.patch(f"/v1/patients/{pid}", {"firstName": name}).status == 200

    first = api.get(f"/v1/patients/{pid}/history?limit=2")
    assert first.status == 200, first.text
    assert first.headers["cache-control"] == "no-store"
    assert [v["version"] for v in first.json["items"]] == [1, 2]
    assert first.json["nextCursor"]
    rest = api.get(f"/v1/patients/{pid}/history?limit=10&cursor={first.json['nextCursor']}")
    assert [v["version"] for v in rest.json["items"]] == [3, 4, 5]
    assert rest.json["nextCursor"] is None

    everything = first.json["items"] + rest.json["items"]
    assert everything[0]["resource"]["firstName"] == body["firstName"]
    assert [v["resource"]["firstName"] for v in everything[1:]] == names
    assert all(v["actor"] == subject and not v["deleted"] for v in everything)
    assert [v["resource"]["version"] for v in everything] == [1, 2, 3, 4, 5]

    one = api.get(f"/v1/patients/{pid}/history/3")
    assert one.status == 200
    assert one.json == everything[2]
    missing = api.get(f"/v1/patients/{pid}/history/99")
    assert missing.status == 404
    assert "no version 99" in missing.json["detail"]


def test_the_history_of_a_deleted_resource_stays_readable(admin):
    api, _ = admin
    pid = api.new_patient()["patientId"]
    rid = api.new_record(pid, **record_body())["medicalRecordId"]
    assert api.delete(f"/v1/medical-records/{rid}").status == 204
    assert api.get(f"/v1/medical-records/{rid}").status == 410
    history = api.get(f"/v1/medical-records/{rid}/history")
    assert history.status == 200
    assert [(v["change"], v["deleted"]) for v in history.json["items"]] == [("create", False), ("delete", True)]


def test_history_follows_the_access_model_and_is_audited(admin, client, owner_conn):
    api, _ = admin
    pid = api.new_patient()["patientId"]
    xid = api.new_prescription(api.new_record(pid)["medicalRecordId"])["prescriptionId"]
    off_team = _subject("off-team")
    outsider = Api(client, auth.mint(off_team, ["read", "write"]))
    assert outsider.get(f"/v1/prescriptions/{xid}/history").status == 403
    glass = outsider.get(f"/v1/prescriptions/{xid}/history",
                         headers={"Break-Glass": "patient collapsed in the waiting room"})
    assert glass.status == 200
    assert glass.headers["break-glass-used"] == "true"
    own = Api(client, auth.mint(_subject("patient"), ["read"], patient_id=pid))
    assert own.get(f"/v1/prescriptions/{xid}/history").status == 200
    stranger = Api(client, auth.mint(_subject("patient"), ["read"], patient_id=api.new_patient()["patientId"]))
    hidden = stranger.get(f"/v1/prescriptions/{xid}/history/1")
    assert hidden.status == 404
    with owner_conn.cursor() as cur:
        cur.execute(
            "SELECT outcome, break_glass FROM medical_app.audit_event "
            "WHERE actor = %s AND action = 'read_history' AND resource_id = %s ORDER BY audit_event_id",
            (off_team, xid),
        )
        assert cur.fetchall() == [("denied", False), ("success", True)]


def test_the_api_login_cannot_write_or_rewrite_history(database, admin):
    api, _ = admin
    pid = api.new_patient()["patientId"]
    with psycopg2.connect(database[1]) as conn, conn.cursor() as cur:
        for statement in (
            "UPDATE medical_app.resource_version SET actor = 'someone' WHERE resource_id = %s",
            "DELETE FROM medical_app.resource_version WHERE resource_id = %s",
            "INSERT INTO medical_app.resource_version SELECT resource_type, resource_id, version + 100, change, "
            "changed_fields, data, actor, recorded_at FROM medical_app.resource_version WHERE resource_id = %s",
        ):
            with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                cur.execute(statement, (pid,))
            conn.rollback()


def test_an_actor_with_quotes_and_percent_signs_is_recorded_verbatim(client, owner_conn):
    subject = f"dr.o'neil%s%%-{uuid.uuid4().hex[:6]}"
    api = Api(client, auth.mint(subject, ["read", "write", "admin"]))
    pid = api.new_patient()["patientId"]
    assert api.patch(f"/v1/patients/{pid}", {"lastName": "Chaiyo"}).status == 200
    assert [r[3] for r in versions(owner_conn, "patient", pid)] == [subject, subject]


def test_the_version_trigger_fires_last_so_it_records_the_row_as_written(owner_conn):
    """BEFORE triggers fire in name order: one that changes the row after the history trigger would make the
    kept version differ from the stored row."""
    with owner_conn.cursor() as cur:
        cur.execute(
            "SELECT c.relname, array_agg(t.tgname ORDER BY t.tgname) FROM pg_trigger t "
            "JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'medical_app' AND c.relname IN ('patient', 'medical_record', 'prescription') "
            "AND NOT t.tgisinternal AND t.tgtype & 2 = 2 GROUP BY c.relname"  # BEFORE row triggers
        )
        for table, names in cur.fetchall():
            assert names[-1] == f"{table}_history", (table, names)
