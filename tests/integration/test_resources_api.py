"""The /v1 resource API end to end through the Chalice test client, against real PostgreSQL."""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg2
import pytest

from tests.helpers import card_number, patient_body, prescription_body, record_body


def test_patient_lifecycle(api):
    body = patient_body()
    created = api.post("/v1/patients", body)
    assert created.status == 201
    patient = created.json
    pid = patient["patientId"]
    assert created.headers["location"] == f"/v1/patients/{pid}"
    assert created.headers["etag"] == '"1"'
    assert {k: patient[k] for k in body} == body
    assert patient["version"] == 1 and patient["insertedTimestamp"].endswith("Z")

    read = api.get(f"/v1/patients/{pid}")
    assert read.status == 200 and read.json == patient and read.headers["etag"] == '"1"'

    replaced = api.put(f"/v1/patients/{pid}", patient_body(idCardNum=body["idCardNum"], phoneNum=None))
    assert replaced.status == 200
    assert replaced.json["phoneNum"] is None and replaced.json["version"] == 2
    assert replaced.headers["etag"] == '"2"'

    patched = api.patch(f"/v1/patients/{pid}", {"lastName": "Wongsakul"})
    assert patched.status == 200
    assert patched.json["lastName"] == "Wongsakul" and patched.json["firstName"] == body["firstName"]
    assert patched.json["version"] == 3
    assert patched.json["updatedTimestamp"] >= patched.json["insertedTimestamp"]

    deleted = api.delete(f"/v1/patients/{pid}")
    assert deleted.status == 204 and deleted.text == ""
    assert api.get(f"/v1/patients/{pid}").status == 410
    assert api.delete(f"/v1/patients/{pid}").status == 204  # deleting again is not an error


def test_medical_record_and_prescription_lifecycle(api):
    pid = api.new_patient()["patientId"]
    created = api.post(f"/v1/patients/{pid}/medical-records", record_body())
    assert created.status == 201
    record = created.json
    rid = record["medicalRecordId"]
    assert created.headers["location"] == f"/v1/medical-records/{rid}"
    assert record["patientId"] == pid and record["symptom"] == "Fever and cough"
    assert api.get(f"/v1/medical-records/{rid}").json == record
    listed = api.get(f"/v1/patients/{pid}/medical-records")
    assert listed.status == 200 and [r["medicalRecordId"] for r in listed.json["items"]] == [rid]

    patched = api.patch(f"/v1/medical-records/{rid}", {"diagnosis": None, "treatmentEndDate": "2024-02-01"})
    assert patched.status == 200
    assert patched.json["diagnosis"] is None and patched.json["treatmentEndDate"] == "2024-02-01"
    replaced = api.put(f"/v1/medical-records/{rid}", record_body(hospitalName="Ramathibodi"))
    assert replaced.status == 200 and replaced.json["hospitalName"] == "Ramathibodi"

    created_rx = api.post(f"/v1/medical-records/{rid}/prescriptions", prescription_body())
    assert created_rx.status == 201
    rx = created_rx.json
    xid = rx["prescriptionId"]
    assert created_rx.headers["location"] == f"/v1/prescriptions/{xid}"
    assert api.get(f"/v1/prescriptions/{xid}").json == rx
    assert [p["prescriptionId"] for p in api.get(f"/v1/medical-records/{rid}/prescriptions").json["items"]] == [xid]
    assert api.patch(f"/v1/prescriptions/{xid}", {"dose": "1 tablet"}).json["dose"] == "1 tablet"
    assert api.put(f"/v1/prescriptions/{xid}", prescription_body(medicineName="Paracetamol")).json[
        "medicineName"
    ] == "Paracetamol"

    summary = api.get(f"/v1/patients/{pid}/summary")
    assert summary.status == 200
    assert summary.json["patient"]["patientId"] == pid
    [visit] = summary.json["medicalRecords"]
    assert visit["medicalRecordId"] == rid and [p["prescriptionId"] for p in visit["prescriptions"]] == [xid]

    assert api.delete(f"/v1/prescriptions/{xid}").status == 204
    assert api.get(f"/v1/prescriptions/{xid}").status == 410
    assert api.delete(f"/v1/medical-records/{rid}").status == 204
    assert api.get(f"/v1/medical-records/{rid}").status == 410


def test_not_found_is_404_and_deleted_is_410(api):
    for path in ("/v1/patients/987654321", "/v1/medical-records/987654321", "/v1/prescriptions/987654321"):
        reply = api.get(path)
        assert reply.status == 404
        assert reply.headers["content-type"] == "application/problem+json"
        assert reply.json["status"] == 404
        assert api.patch(path, {}).status == 404
        assert api.delete(path).status == 404
    pid = api.new_patient()["patientId"]
    api.delete(f"/v1/patients/{pid}")
    assert api.get(f"/v1/patients/{pid}").status == 410
    assert api.patch(f"/v1/patients/{pid}", {"firstName": "A"}).status == 410
    assert api.get(f"/v1/patients/{pid}/summary").status == 410
    assert api.get(f"/v1/patients/{pid}/medical-records").status == 410
    assert api.post(f"/v1/patients/{pid}/medical-records", record_body()).status == 410
    assert api.post("/v1/patients/987654321/medical-records", record_body()).status == 404


def test_deleting_a_patient_hides_their_records_and_prescriptions(api, owner_conn):
    pid = api.new_patient()["patientId"]
    rids = [api.new_record(pid)["medicalRecordId"] for _ in range(2)]
    xids = [api.new_prescription(rid)["prescriptionId"] for rid in rids for _ in range(2)]
    other_pid = api.new_patient()["patientId"]
    other_rid = api.new_record(other_pid)["medicalRecordId"]

    assert api.delete(f"/v1/patients/{pid}").status == 204
    for rid in rids:
        assert api.get(f"/v1/medical-records/{rid}").status == 410
    for xid in xids:
        assert api.get(f"/v1/prescriptions/{xid}").status == 410
    assert api.get(f"/v1/medical-records/{other_rid}").status == 200
    with owner_conn.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM medical_app.prescription "
            "WHERE prescription_id = ANY(%s) AND deleted_timestamp IS NULL",
            (xids,),
        )
        assert cur.fetchone()[0] == 0
        # a soft delete keeps the rows (for the audit trail and the analytics refresh)
        cur.execute("SELECT count(*) FROM medical_app.prescription WHERE prescription_id = ANY(%s)", (xids,))
        assert cur.fetchone()[0] == 4


def test_a_deleted_patients_card_number_can_be_registered_again(api):
    body = patient_body()
    first = api.new_patient(**body)
    assert api.post("/v1/patients", body).status == 409
    api.delete(f"/v1/patients/{first['patientId']}")
    assert api.post("/v1/patients", body).status == 201


def test_if_match_with_a_stale_etag_is_412_and_changes_nothing(api):
    patient = api.new_patient()
    pid = patient["patientId"]
    assert api.patch(f"/v1/patients/{pid}", {"firstName": "Anan"}, headers={"If-Match": '"1"'}).status == 200
    stale = api.patch(f"/v1/patients/{pid}", {"firstName": "Boon"}, headers={"If-Match": '"1"'})
    assert stale.status == 412
    assert stale.headers["content-type"] == "application/problem+json"
    assert api.put(f"/v1/patients/{pid}", patient_body(), headers={"If-Match": '"1"'}).status == 412
    assert api.delete(f"/v1/patients/{pid}", headers={"If-Match": '"1"'}).status == 412
    assert api.patch(f"/v1/patients/{pid}", {"firstName": "Boon"}, headers={"If-Match": "garbage"}).status == 412
    current = api.get(f"/v1/patients/{pid}")
    assert current.json["firstName"] == "Anan" and current.json["version"] == 2
    etag = current.headers["etag"]
    assert api.patch(f"/v1/patients/{pid}", {"firstName": "Chai"}, headers={"If-Match": etag}).status == 200
    assert api.patch(f"/v1/patients/{pid}", {"firstName": "Dao"}, headers={"If-Match": "*"}).status == 200
    assert api.delete(f"/v1/patients/{pid}", headers={"If-Match": '"4"'}).status == 204


def test_concurrent_updates_with_the_same_etag_let_exactly_one_win(api):
    pid = api.new_patient()["patientId"]
    results: list[int] = []
    barrier = threading.Barrier(4)

    def attempt(name: str) -> None:
        barrier.wait()
        results.append(api.patch(f"/v1/patients/{pid}", {"firstName": name}, headers={"If-Match": '"1"'}).status)

    threads = [threading.Thread(target=attempt, args=(n,)) for n in ("A", "B", "C", "D")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [200, 412, 412, 412]


def test_replayed_idempotency_key_creates_one_row(api, owner_conn):
    body = patient_body()
    headers = {"Idempotency-Key": f"create-{body['idCardNum']}"}
    first = api.post("/v1/patients", body, headers=headers)
    second = api.post("/v1/patients", body, headers=headers)
    assert first.status == second.status == 201
    assert second.json == first.json
    assert second.headers["location"] == first.headers["location"]
    assert second.headers.get("idempotent-replayed") == "true"
    with owner_conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM medical_app.patient WHERE id_card_num = %s", (body["idCardNum"],))
        assert cur.fetchone()[0] == 1
    # the same key with a different body is refused, and creates nothing
    other = api.post("/v1/patients", patient_body(), headers=headers)
    assert other.status == 422
    # replays survive later changes: the first response is returned as it was
    api.patch(f"/v1/patients/{first.json['patientId']}", {"firstName": "Later"})
    assert api.post("/v1/patients", body, headers=headers).json["firstName"] == body["firstName"]


def test_idempotency_keys_are_scoped_to_the_caller(api, client, tokens):
    from tests.helpers import Api

    headers = {"Idempotency-Key": "shared-key-between-callers"}
    mine = api.post("/v1/patients", patient_body(), headers=headers)
    theirs = Api(client, tokens["write"]).post("/v1/patients", patient_body(), headers=headers)
    assert mine.status == theirs.status == 201
    assert mine.json["patientId"] != theirs.json["patientId"]


def test_idempotent_child_creation(api):
    pid = api.new_patient()["patientId"]
    headers = {"Idempotency-Key": f"visit-{pid}"}
    first = api.post(f"/v1/patients/{pid}/medical-records", record_body(), headers=headers)
    again = api.post(f"/v1/patients/{pid}/medical-records", record_body(), headers=headers)
    assert first.json == again.json
    assert len(api.get(f"/v1/patients/{pid}/medical-records").json["items"]) == 1


def test_filters(api):
    last_name = f"Filter{card_number()[-6:]}"
    a = api.new_patient(lastName=last_name, birthDate="1970-01-01")
    b = api.new_patient(lastName=last_name, birthDate="1990-05-05")
    by_name = api.get(f"/v1/patients?lastName={last_name}").json["items"]
    assert [p["patientId"] for p in by_name] == [a["patientId"], b["patientId"]]
    by_both = api.get(f"/v1/patients?lastName={last_name}&birthDate=1990-05-05").json["items"]
    assert [p["patientId"] for p in by_both] == [b["patientId"]]
    by_card = api.get(f"/v1/patients?idCardNum={a['idCardNum']}").json["items"]
    assert [p["patientId"] for p in by_card] == [a["patientId"]]
    api.delete(f"/v1/patients/{a['patientId']}")
    assert api.get(f"/v1/patients?idCardNum={a['idCardNum']}").json["items"] == []


def test_pagination_walks_every_row_once_while_rows_are_inserted(api, database):
    last_name = f"Page{card_number()[-6:]}"
    expected = [api.new_patient(lastName=last_name)["patientId"] for _ in range(260)]
    stop = threading.Event()
    inserted: list[int] = []

    def writer() -> None:
        # a separate connection, as another API instance would have
        conn = psycopg2.connect(database[1])
        conn.autocommit = True
        with conn.cursor() as cur:
            while not stop.is_set() and len(inserted) < 200:
                cur.execute(
                    "INSERT INTO medical_app.patient (id_card_num, first_name, last_name, birth_date) "
                    "VALUES (%s, 'New', %s, '2000-01-01') RETURNING patient_id",
                    (card_number(), last_name),
                )
                inserted.append(cur.fetchone()[0])
        conn.close()

    thread = threading.Thread(target=writer)
    thread.start()
    seen: list[int] = []
    cursor = None
    pages = 0
    try:
        while True:
            query = f"/v1/patients?lastName={last_name}&limit=37" + (f"&cursor={cursor}" if cursor else "")
            reply = api.get(query)
            assert reply.status == 200
            assert len(reply.json["items"]) <= 37
            seen.extend(p["patientId"] for p in reply.json["items"])
            pages += 1
            cursor = reply.json["nextCursor"]
            if cursor is None:
                break
    finally:
        stop.set()
        thread.join()
    assert len(seen) == len(set(seen)), "a row was returned twice"
    assert set(expected) <= set(seen), "a row that existed before the walk was skipped"
    assert seen == sorted(seen)
    assert pages >= 8


def test_moving_a_record_to_another_patient(api):
    a = api.new_patient()["patientId"]
    b = api.new_patient()["patientId"]
    rid = api.new_record(a)["medicalRecordId"]
    moved = api.patch(f"/v1/medical-records/{rid}", {"patientId": b})
    assert moved.status == 200 and moved.json["patientId"] == b
    assert api.get(f"/v1/patients/{a}/medical-records").json["items"] == []
    assert api.patch(f"/v1/medical-records/{rid}", {"patientId": 987654321}).status == 404


def test_patch_cannot_break_a_rule_that_spans_fields(api):
    pid = api.new_patient()["patientId"]
    rid = api.new_record(pid, treatmentStartDate="2024-03-01", treatmentEndDate=None)["medicalRecordId"]
    reply = api.patch(f"/v1/medical-records/{rid}", {"treatmentEndDate": "2024-02-01"})
    assert reply.status == 409  # valid on its own; in conflict with what is stored
    assert [e["field"] for e in reply.json["errors"]] == ["treatmentEndDate"]
    assert api.get(f"/v1/medical-records/{rid}").json["treatmentEndDate"] is None


def test_health_and_openapi_are_public(api):
    anonymous = api.as_token(None)
    assert anonymous.get("/health").json == {"status": "ok", "database": "ok"}
    doc = anonymous.get("/openapi.json")
    assert doc.status == 200 and doc.json["openapi"] == "3.1.0"


def test_concurrent_retries_with_one_idempotency_key_create_one_row(api, owner_conn):
    body = patient_body()
    headers = {"Idempotency-Key": f"race-{body['idCardNum']}"}
    barrier = threading.Barrier(5)
    replies = []

    def attempt() -> None:
        barrier.wait()
        replies.append(api.post("/v1/patients", body, headers=headers))

    threads = [threading.Thread(target=attempt) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.status for r in replies] == [201] * 5
    assert len({r.json["patientId"] for r in replies}) == 1
    with owner_conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM medical_app.patient WHERE id_card_num = %s", (body["idCardNum"],))
        assert cur.fetchone()[0] == 1


def test_a_child_created_while_its_patient_is_deleted_is_not_left_alive(api, database):
    """Creating a visit locks the patient row (FOR SHARE), so a concurrent delete either waits for the
    visit and cascades to it, or runs first and the create sees a deleted patient."""
    pid = api.new_patient()["patientId"]
    barrier = threading.Barrier(2)
    outcome: dict[str, int] = {}

    def create() -> None:
        barrier.wait()
        outcome["create"] = api.post(f"/v1/patients/{pid}/medical-records", record_body()).status

    def delete() -> None:
        barrier.wait()
        outcome["delete"] = api.delete(f"/v1/patients/{pid}").status

    threads = [threading.Thread(target=create), threading.Thread(target=delete)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcome["delete"] == 204 and outcome["create"] in (201, 410)
    conn = psycopg2.connect(database[0])
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT count(*) FROM medical_app.medical_record WHERE patient_id = %s AND deleted_timestamp IS NULL",
                (pid,),
            )
            assert cur.fetchone()[0] == 0
    finally:
        conn.close()


@pytest.mark.parametrize("writer", ["create", "move"])
def test_deleting_a_patient_while_a_prescription_is_written_under_their_visit_leaves_nothing_alive(
    api, owner_conn, monkeypatch, writer
):
    """A deterministic interleaving: the prescription writer stops after its INSERT/UPDATE, holding its lock
    on the visit, while the patient's delete runs; the writer commits only once the delete is seen waiting.
    Whatever the order of the two commits, no live prescription may remain under a deleted visit."""
    from chalicelib.api.dependencies import services
    from chalicelib.domain import models
    from chalicelib.domain.services import ActorKind, Caller
    from chalicelib.repositories import resources

    pid = api.new_patient()["patientId"]
    rid = api.new_record(pid)["medicalRecordId"]
    elsewhere = api.new_record(api.new_patient()["patientId"])["medicalRecordId"]
    moving = api.new_prescription(elsewhere)["prescriptionId"]
    caller = Caller("race-admin", ActorKind.ADMIN, "race-1")
    written, release = threading.Event(), threading.Event()
    writer_thread_id: list[int] = []
    real_insert, real_update = resources.ResourceRepository.insert, resources.ResourceRepository.update

    def pause_after(real):
        def wrapped(self, tx, *args, **kwargs):
            row = real(self, tx, *args, **kwargs)
            if threading.get_ident() in writer_thread_id and self.table.resource == "prescription":
                written.set()
                assert release.wait(10)
            return row
        return wrapped

    monkeypatch.setattr(resources.ResourceRepository, "insert", pause_after(real_insert))
    monkeypatch.setattr(resources.ResourceRepository, "update", pause_after(real_update))
    outcome: dict[str, Any] = {}

    def write() -> None:
        writer_thread_id.append(threading.get_ident())
        try:
            if writer == "create":
                data = models.PrescriptionWrite.model_validate({"medicineName": "Heparin", "dose": "5000 IU"})
                outcome["writer"] = services().prescriptions.create(caller, data, parent_key=rid).resource
            else:
                change = models.PrescriptionPatch.model_validate({"medicalRecordId": rid})
                outcome["writer"] = services().prescriptions.update(caller, moving, change, partial=True)
        except Exception as exc:  # recorded for the assertion below
            outcome["writer"] = exc

    def delete() -> None:
        outcome["delete"] = services().patients.delete(caller, pid)

    writer_thread = threading.Thread(target=write)
    writer_thread.start()
    assert written.wait(10)
    delete_thread = threading.Thread(target=delete)
    delete_thread.start()
    with owner_conn.cursor() as cur:  # the delete reaches the visit and waits for the writer's lock
        for _ in range(200):
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
            if cur.fetchone()[0]:
                break
            time.sleep(0.02)
        else:
            raise AssertionError("the delete never waited for the writer")
    release.set()
    writer_thread.join(10)
    delete_thread.join(10)
    assert outcome["delete"] is True and not isinstance(outcome["writer"], Exception), outcome
    with owner_conn.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM medical_app.prescription WHERE medical_record_id = %s AND deleted_timestamp IS NULL",
            (rid,),
        )
        assert cur.fetchone()[0] == 0


def test_the_summary_pages_through_every_visit(api):
    pid = api.new_patient()["patientId"]
    rids = [api.new_record(pid)["medicalRecordId"] for _ in range(5)]
    api.new_prescription(rids[3])
    seen, url, pages = [], f"/v1/patients/{pid}/summary?limit=2", 0
    while url:
        page = api.get(url)
        assert page.status == 200, page.text
        assert page.json["patient"]["patientId"] == pid
        seen += [(r["medicalRecordId"], len(r["prescriptions"])) for r in page.json["medicalRecords"]]
        cursor = page.json["nextCursor"]
        url = f"/v1/patients/{pid}/summary?limit=2&cursor={cursor}" if cursor else None
        pages += 1
    assert seen == [(rid, 1 if rid == rids[3] else 0) for rid in rids] and pages == 3
    assert api.get(f"/v1/patients/{pid}/summary?limit=0").status == 400
