"""Every access to patient data leaves exactly one audit event, written with the data it concerns."""

from __future__ import annotations

import uuid

import pytest

from chalicelib.api import auth
from tests.helpers import Api, patient_body, record_body


@pytest.fixture
def actor(client):
    """A caller with a subject no other test uses, so its audit trail can be read exactly."""
    subject = f"auditor-{uuid.uuid4().hex[:8]}"
    return subject, Api(client, auth.mint(subject, ["read", "write", "admin"]))


def events(owner_conn, subject):
    with owner_conn.cursor() as cur:
        cur.execute(
            "SELECT action, resource_type, resource_id, patient_ids, outcome, request_id "
            "FROM medical_app.audit_event WHERE actor = %s ORDER BY audit_event_id",
            (subject,),
        )
        return cur.fetchall()


def test_each_access_is_audited_once_with_actor_and_patients(actor, owner_conn):
    subject, api = actor
    pid = api.new_patient()["patientId"]
    rid = api.new_record(pid)["medicalRecordId"]
    xid = api.new_prescription(rid)["prescriptionId"]
    api.get(f"/v1/patients/{pid}")
    api.get(f"/v1/medical-records/{rid}")
    api.get(f"/v1/prescriptions/{xid}")
    api.get(f"/v1/medical-records/{rid}/prescriptions")
    api.get(f"/v1/patients/{pid}/summary")
    api.patch(f"/v1/prescriptions/{xid}", {"dose": "2 tablets"})
    api.delete(f"/v1/patients/{pid}")
    api.get(f"/v1/patients/{pid}")

    trail = [(a, t, r, p, o) for a, t, r, p, o, _ in events(owner_conn, subject)]
    assert trail == [
        ("create", "patient", pid, [pid], "success"),
        ("create", "medical_record", rid, [pid], "success"),
        ("create", "prescription", xid, [pid], "success"),
        ("read", "patient", pid, [pid], "success"),
        ("read", "medical_record", rid, [pid], "success"),
        ("read", "prescription", xid, [pid], "success"),
        ("list", "medical_record.prescription", rid, [pid], "success"),
        ("read", "patient_summary", pid, [pid], "success"),
        ("update", "prescription", xid, [pid], "success"),
        ("delete", "patient", pid, [pid], "success"),
        ("read", "patient", pid, [pid], "gone"),
    ]
    assert all(request_id for *_, request_id in events(owner_conn, subject))


def test_a_list_records_which_patients_it_returned(actor, owner_conn):
    subject, api = actor
    last_name = f"Audit{uuid.uuid4().hex[:6]}"
    ids = [api.new_patient(lastName=last_name)["patientId"] for _ in range(3)]
    api.get(f"/v1/patients?lastName={last_name}")
    api.get("/patient?limit=1")
    lists = [e for e in events(owner_conn, subject) if e[0] == "list"]
    assert lists[0][3] == sorted(ids)
    assert len(lists[1][3]) == 1


def test_original_routes_are_audited_too(actor, owner_conn):
    subject, api = actor
    body = patient_body()
    api.post("/patient", body)
    patient = api.get(f"/patient/{body['idCardNum']}").json["patient"]
    pid = patient["patientID"]
    trail = [(a, t, r, p, o) for a, t, r, p, o, _ in events(owner_conn, subject)]
    assert trail == [("create", "patient", pid, [pid], "success"), ("read", "patient", pid, [pid], "success")]


def test_a_failed_write_leaves_no_event_claiming_success(actor, owner_conn):
    subject, api = actor
    body = patient_body()
    existing = api.new_patient(**body)
    duplicate = api.post("/v1/patients", body)  # fails at the database's unique index, after validation
    assert duplicate.status == 409
    stale = api.patch(f"/v1/patients/{existing['patientId']}", {"firstName": "X"}, headers={"If-Match": '"7"'})
    assert stale.status == 412
    invalid = api.patch(f"/v1/patients/{existing['patientId']}", {"birthDate": "2999-01-01"})
    assert invalid.status == 400
    trail = [(a, t, o) for a, t, _r, _p, o, _ in events(owner_conn, subject)]
    assert trail == [
        ("create", "patient", "success"),
        ("create", "patient", "conflict"),
        ("update", "patient", "precondition_failed"),
    ]
    with owner_conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM medical_app.patient WHERE id_card_num = %s", (body["idCardNum"],))
        assert cur.fetchone()[0] == 1


def test_access_log_shows_who_touched_a_patient(actor, client, tokens):
    _subject, api = actor
    pid = api.new_patient()["patientId"]
    reader = Api(client, tokens["read"])
    reader.get(f"/v1/patients/{pid}")
    api.post(f"/v1/patients/{pid}/medical-records", record_body())

    log = api.get(f"/v1/patients/{pid}/access-log")
    assert log.status == 200
    items = log.json["items"]
    assert [(e["actor"], e["action"]) for e in items][:3] == [
        (_subject, "create"),
        ("reader-1", "read"),
        (_subject, "create"),
    ]
    assert all(pid in e["patientIds"] for e in items)
    page = api.get(f"/v1/patients/{pid}/access-log?limit=1")
    assert len(page.json["items"]) == 1 and page.json["nextCursor"]
    nxt = api.get(f"/v1/patients/{pid}/access-log?limit=1&cursor={page.json['nextCursor']}")
    assert nxt.json["items"][0]["auditEventId"] < page.json["items"][0]["auditEventId"]

    assert reader.get(f"/v1/patients/{pid}/access-log").status == 403
    assert api.get("/v1/patients/987654321/access-log").status == 404
