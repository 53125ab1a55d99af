"""Restore (POST /v1/.../restore): a deleted resource comes back with exactly what its own delete
cascaded, as new versions; refused with 409, changing nothing, when it would break a rule."""

from __future__ import annotations

import threading

from chalicelib.db import Database
from chalicelib.domain import models
from chalicelib.domain.errors import Conflict
from chalicelib.domain.services import ActorKind, Caller, build_services
from chalicelib.repositories.errors import translate
from tests.helpers import card_number, patient_body
from tests.pipeline_support import build


def state(owner_conn, table: str, key_column: str, key: int) -> tuple[bool, int, str, str]:
    """(deleted, version, last change, last actor) of a row."""
    with owner_conn.cursor() as cur:
        cur.execute(
            f"SELECT t.deleted_timestamp IS NOT NULL, t.version, v.change, v.actor "  # noqa: S608 - fixed names
            f"FROM medical_app.{table} t JOIN medical_app.resource_version v "
            f"ON v.resource_type = %s AND v.resource_id = t.{key_column} AND v.version = t.version "
            f"WHERE t.{key_column} = %s",
            (table, key),
        )
        return cur.fetchone()


def test_restoring_a_patient_brings_back_exactly_what_its_delete_cascaded(admin, owner_conn):
    api, subject = admin
    pid = api.new_patient()["patientId"]
    kept = api.new_record(pid)["medicalRecordId"]
    kept_rx = api.new_prescription(kept)["prescriptionId"]
    own_rx = api.new_prescription(kept)["prescriptionId"]            # deleted on its own, before
    gone = api.new_record(pid)["medicalRecordId"]                    # deleted on its own, with its prescription
    gone_rx = api.new_prescription(gone)["prescriptionId"]
    assert api.delete(f"/v1/prescriptions/{own_rx}").status == 204
    assert api.delete(f"/v1/medical-records/{gone}").status == 204
    assert api.delete(f"/v1/patients/{pid}").status == 204

    reply = api.post(f"/v1/patients/{pid}/restore")
    assert reply.status == 200, reply.text
    assert reply.json["patientId"] == pid
    assert reply.headers["etag"] == f'"{reply.json["version"]}"'
    assert api.get(f"/v1/patients/{pid}").status == 200

    assert state(owner_conn, "patient", "patient_id", pid) == (False, 3, "restore", subject)
    assert state(owner_conn, "medical_record", "medical_record_id", kept) == (False, 3, "restore", subject)
    assert state(owner_conn, "prescription", "prescription_id", kept_rx) == (False, 3, "restore", subject)
    assert state(owner_conn, "prescription", "prescription_id", own_rx)[:3] == (True, 2, "delete")
    assert state(owner_conn, "medical_record", "medical_record_id", gone)[:3] == (True, 2, "delete")
    assert state(owner_conn, "prescription", "prescription_id", gone_rx)[:3] == (True, 2, "delete")
    summary = api.get(f"/v1/patients/{pid}/summary").json
    assert [(r["medicalRecordId"], [p["prescriptionId"] for p in r["prescriptions"]])
            for r in summary["medicalRecords"]] == [(kept, [kept_rx])]


def test_a_visit_comes_back_with_its_cascaded_prescriptions_only(admin, owner_conn):
    api, _ = admin
    pid = api.new_patient()["patientId"]
    rid = api.new_record(pid)["medicalRecordId"]
    cascaded = api.new_prescription(rid)["prescriptionId"]
    earlier = api.new_prescription(rid)["prescriptionId"]
    assert api.delete(f"/v1/prescriptions/{earlier}").status == 204
    assert api.delete(f"/v1/medical-records/{rid}").status == 204
    assert api.post(f"/v1/medical-records/{rid}/restore").status == 200
    assert state(owner_conn, "prescription", "prescription_id", cascaded)[0] is False
    assert state(owner_conn, "prescription", "prescription_id", earlier)[0] is True
    # A prescription deleted on its own is restored on its own.
    assert api.post(f"/v1/prescriptions/{earlier}/restore").status == 200
    assert api.get(f"/v1/prescriptions/{earlier}").status == 200


def test_a_child_of_a_deleted_parent_is_refused_and_nothing_changes(admin, owner_conn):
    api, _ = admin
    pid = api.new_patient()["patientId"]
    rid = api.new_record(pid)["medicalRecordId"]
    xid = api.new_prescription(rid)["prescriptionId"]
    assert api.delete(f"/v1/patients/{pid}").status == 204
    before = [state(owner_conn, "medical_record", "medical_record_id", rid),
              state(owner_conn, "prescription", "prescription_id", xid)]
    for path, detail in ((f"/v1/medical-records/{rid}/restore", f"patient {pid}, which is deleted"),
                         (f"/v1/prescriptions/{xid}/restore", f"medical_record {rid}, which is deleted")):
        reply = api.post(path)
        assert reply.status == 409, reply.text
        assert reply.headers["content-type"] == "application/problem+json"
        assert detail in reply.json["detail"]
    assert [state(owner_conn, "medical_record", "medical_record_id", rid),
            state(owner_conn, "prescription", "prescription_id", xid)] == before


def test_a_card_number_taken_by_a_live_patient_is_refused_and_nothing_changes(admin, owner_conn):
    api, _ = admin
    body = patient_body()
    first = api.new_patient(**body)["patientId"]
    rid = api.new_record(first)["medicalRecordId"]
    assert api.delete(f"/v1/patients/{first}").status == 204
    api.new_patient(**{**body, "firstName": "Other"})               # the card number is free again: reused
    reply = api.post(f"/v1/patients/{first}/restore")
    assert reply.status == 409, reply.text
    assert "idCardNum" in reply.json["detail"]
    assert state(owner_conn, "patient", "patient_id", first)[:3] == (True, 2, "delete")
    assert state(owner_conn, "medical_record", "medical_record_id", rid)[:3] == (True, 2, "delete")


def test_restoring_a_live_resource_changes_nothing_and_a_stale_if_match_is_refused(admin, owner_conn):
    api, _ = admin
    pid = api.new_patient()["patientId"]
    live = api.post(f"/v1/patients/{pid}/restore")
    assert live.status == 200
    assert live.json["version"] == 1
    assert api.delete(f"/v1/patients/{pid}").status == 204
    stale = api.post(f"/v1/patients/{pid}/restore", headers={"If-Match": '"1"'})
    assert stale.status == 412
    assert api.post(f"/v1/patients/{pid}/restore", headers={"If-Match": '"2"'}).status == 200
    assert api.post("/v1/patients/999999999/restore").status == 404
    with owner_conn.cursor() as cur:
        cur.execute("SELECT outcome FROM medical_app.audit_event WHERE action = 'restore' "
                    "AND resource_type = 'patient' AND resource_id = %s ORDER BY audit_event_id", (pid,))
        assert [r[0] for r in cur.fetchall()] == ["success", "precondition_failed", "success"]


def test_the_analytics_refresh_picks_restores_up_exactly(pg_cluster, tmp_path):
    from tests.pipeline_support import Pipeline, RandomActivity

    pipeline = Pipeline(pg_cluster, "restore_exactness", tmp_path)
    activity = RandomActivity(pipeline, seed=101)
    for round_number in range(4):
        for _ in range(60):
            activity.step()
        # Bring back a share of what was deleted since the last round, with what each delete cascaded.
        for kind, key in activity.deleted[::2]:
            service = {"patient": activity.s.patients, "record": activity.s.medical_records,
                       "rx": activity.s.prescriptions}[kind]
            try:
                service.restore(activity.caller, key)
                activity.restored += 1
            except Conflict:  # refused while its parent is deleted: part of the mix
                pass
        result = pipeline.refresh()
        assert result.status == "succeeded" and result.check_passed
        assert pipeline.analytic() == pipeline.reference(), f"mismatch after round {round_number}"
        assert pipeline.deidentified() == pipeline.deidentified_reference(), f"de-identified, round {round_number}"
    assert activity.restored >= 5



def test_a_restore_racing_the_delete_of_its_patient_serialises(database, owner_conn):
    """A visit restored while its patient is being deleted: either the restore commits first and the
    patient's delete then cascades to the visit, or the delete commits first and the restore is refused.
    Never a live visit under a deleted patient, never a half-done restore."""
    services = build_services(Database(lambda: database[1], translate_error=translate))
    caller = Caller("race-admin", ActorKind.ADMIN, "race")
    outcomes = []
    for _ in range(25):
        patient = build(models.PatientWrite, **RACE_PATIENT, id_card_num=card_number())
        patient_id = services.patients.create(caller, patient).resource.patient_id
        record = build(models.MedicalRecordWrite, **RACE_VISIT)
        kept = services.medical_records.create(caller, record, parent_key=patient_id).resource.medical_record_id
        gone = services.medical_records.create(caller, record, parent_key=patient_id).resource.medical_record_id
        services.medical_records.delete(caller, gone)  # deleted on its own: the one to restore
        start = threading.Barrier(2)
        results: dict[str, object] = {}

        def restore(gone=gone, start=start, results=results) -> None:
            start.wait()
            try:
                services.medical_records.restore(caller, gone)
                results["restore"] = "restored"
            except Conflict:
                results["restore"] = "refused"

        def delete(patient_id=patient_id, start=start, results=results) -> None:
            start.wait()
            results["delete"] = services.patients.delete(caller, patient_id)

        threads = [threading.Thread(target=restore), threading.Thread(target=delete)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert results["delete"] is True
        with owner_conn.cursor() as cur:
            cur.execute(
                "SELECT medical_record_id, deleted_timestamp IS NOT NULL FROM medical_app.medical_record "
                "WHERE patient_id = %s ORDER BY medical_record_id",
                (patient_id,),
            )
            visits = cur.fetchall()
            cur.execute(
                "SELECT change FROM medical_app.resource_version WHERE resource_type = 'medical_record' "
                "AND resource_id = %s ORDER BY version",
                (gone,),
            )
            changes = [r[0] for r in cur.fetchall()]
        owner_conn.commit()
        # the patient is deleted, and with it every visit: never a live visit under a deleted patient
        assert visits == [(kept, True), (gone, True)]
        if results["restore"] == "restored":
            assert changes == ["create", "delete", "restore", "delete"]  # restored, then cascaded again
        else:
            assert changes == ["create", "delete"]  # the refused restore wrote nothing
        outcomes.append(results["restore"])
    assert len(outcomes) == 25


RACE_PATIENT = {"first_name": "Race", "last_name": "Test", "birth_date": "1980-01-01"}
RACE_VISIT = {"hospital_name": "Siriraj", "doctor_full_name": "Dr. Malee", "treatment_start_date": "2024-01-10"}
