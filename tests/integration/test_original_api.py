"""The original system's routes (SPEC §3.2): same paths, field names and status codes, defects fixed.

Every call goes through the Chalice test client to a real PostgreSQL. Resources are created through
the original routes where that is what is under test, and read back on /v1 to prove what was stored.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.helpers import card_number, patient_body, prescription_body, record_body

PATIENT_KEYS = {"patientID", "idCardNum", "firstName", "lastName", "birthDate", "phoneNum"}
RECORD_KEYS = {
    "medicalRecordID",
    "patientID",
    "hospitalName",
    "doctorFullName",
    "diagnosis",
    "symtom",
    "treatmentStartDate",
    "treatmentEndDate",
}
PRESCRIPTION_KEYS = {"prescriptionID", "medicalRecordID", "medicineName", "dose"}
MISSING_ID = 2**62  # a valid id that no test creates
DROP = object()  # in a parametrised body change: leave the field out


def legacy_record_body(patient_id: int, **overrides: Any) -> dict[str, Any]:
    """A POST /medicalrecord body as the original's clients send it (``symtom``, ``patientID``)."""
    body = record_body()
    body["symtom"] = body.pop("symptom")
    body["patientID"] = patient_id
    body.update(overrides)
    return body


def assert_json_error(reply, status: int, message: str | None = None) -> None:
    assert reply.status == status, reply.text
    assert reply.headers["content-type"].startswith("application/json")
    assert isinstance(reply.json, dict) and isinstance(reply.json.get("error"), str)
    if message is not None:
        assert reply.json["error"] == message


def walk(api, path: str, key: str, id_key: str, limit: int) -> list[dict[str, Any]]:
    """Every item of a paginated original-API list, following nextCursor; checks each page's shape."""
    items: list[dict[str, Any]] = []
    cursor = None
    for _ in range(100_000):
        sep = "&" if "?" in path else "?"
        url = f"{path}{sep}limit={limit}" + (f"&cursor={cursor}" if cursor else "")
        reply = api.get(url)
        assert reply.status == 200, reply.text
        assert set(reply.json) == {key, "nextCursor"}
        page = reply.json[key]
        assert len(page) <= limit
        if reply.json["nextCursor"] is not None:
            assert len(page) == limit  # only the last page may be short
        items.extend(page)
        cursor = reply.json["nextCursor"]
        if cursor is None:
            break
    ids = [item[id_key] for item in items]
    assert len(ids) == len(set(ids)), "a row was returned on two pages"
    assert ids == sorted(ids)
    return items


def register(api, **overrides: Any) -> tuple[int, dict[str, Any]]:
    body = patient_body(**overrides)
    reply = api.post("/patient", body)
    assert reply.status == 201, reply.text
    return reply.json["patientID"], body


# --- /patient -------------------------------------------------------------------------------------


def test_post_patient_registers_and_returns_the_new_id(api):
    body = patient_body()
    reply = api.post("/patient", body)
    assert reply.status == 201, reply.text
    assert reply.headers["content-type"].startswith("application/json")
    assert set(reply.json) == {"message", "patientID"}
    assert reply.json["message"] == "Patient registered successfully"
    pid = reply.json["patientID"]
    assert isinstance(pid, int) and pid > 0

    stored = api.get(f"/v1/patients/{pid}")
    assert stored.status == 200
    assert {k: stored.json[k] for k in body} == body


def test_post_patient_with_a_duplicate_card_number_is_400(api):
    pid, body = register(api)
    again = api.post("/patient", patient_body(idCardNum=body["idCardNum"], firstName="Other"))
    assert_json_error(again, 400, "Patient with id_card_num already exists")
    # nothing new was stored under that card number
    listed = api.get(f"/v1/patients?idCardNum={body['idCardNum']}")
    assert [p["patientId"] for p in listed.json["items"]] == [pid]


def test_post_patient_retried_with_an_idempotency_key_registers_once(api):
    body = patient_body()
    headers = {"Idempotency-Key": f"legacy-{body['idCardNum']}"}
    first = api.post("/patient", body, headers=headers)
    again = api.post("/patient", body, headers=headers)
    assert first.status == again.status == 201, again.text
    assert again.json == first.json
    listed = api.get(f"/v1/patients?idCardNum={body['idCardNum']}")
    assert [p["patientId"] for p in listed.json["items"]] == [first.json["patientID"]]


def test_card_number_of_a_deleted_patient_can_be_registered_again(api):
    pid, body = register(api)
    assert api.delete(f"/patient/{pid}").status == 200
    again = api.post("/patient", patient_body(idCardNum=body["idCardNum"]))
    assert again.status == 201, again.text
    assert again.json["patientID"] != pid
    read = api.get(f"/patient/{body['idCardNum']}")
    assert read.status == 200 and read.json["patient"]["patientID"] == again.json["patientID"]


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param("{not json", id="malformed-json"),
        pytest.param('["a list"]', id="not-an-object"),
        pytest.param("", id="empty-body"),
    ],
)
def test_post_patient_bad_json_is_a_json_400(api, payload):
    assert_json_error(api.post("/patient", raw=payload), 400)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        pytest.param({"idCardNum": DROP}, "idCardNum", id="missing-card-number"),
        pytest.param({"idCardNum": "12345"}, "idCardNum", id="short-card-number"),
        pytest.param({"firstName": "x" * 51}, "firstName", id="overlong-name"),
        pytest.param({"birthDate": "2999-01-01"}, "birthDate", id="future-birth-date"),
        pytest.param({"birthDate": "12/04/1980"}, "birthDate", id="bad-date"),
        pytest.param({"phoneNum": "08-1234"}, "phoneNum", id="bad-phone"),
        pytest.param({"nickname": "Chai"}, "nickname", id="unknown-field"),
        pytest.param({"firstName": 42}, "firstName", id="name-not-a-string"),
        pytest.param({"firstName": "Som\u0000chai"}, "firstName", id="nul-in-name"),
    ],
)
def test_post_patient_invalid_fields_are_a_json_400_naming_the_field(api, change, field):
    body = {k: v for k, v in {**patient_body(), **change}.items() if v is not DROP}
    reply = api.post("/patient", body)
    assert_json_error(reply, 400)
    assert field in [e["field"] for e in reply.json["errors"]]


def test_get_patient_by_card_number(api):
    pid, body = register(api)
    reply = api.get(f"/patient/{body['idCardNum']}")
    assert reply.status == 200, reply.text
    assert set(reply.json) == {"patient"}
    assert reply.json["patient"] == {"patientID": pid, **body}
    assert set(reply.json["patient"]) == PATIENT_KEYS


def test_get_patient_by_card_number_not_found(api):
    assert_json_error(api.get(f"/patient/{card_number()}"), 404, "Patient not found")
    assert_json_error(api.get("/patient/not-a-card-number"), 404, "Patient not found")


def test_get_deleted_patient_by_card_number_is_404(api):
    pid, body = register(api)
    assert api.delete(f"/patient/{pid}").status == 200
    assert_json_error(api.get(f"/patient/{body['idCardNum']}"), 404, "Patient not found")


def test_list_patients_shape(api):
    register(api)
    reply = api.get("/patient")
    assert reply.status == 200, reply.text
    assert set(reply.json) == {"patients", "nextCursor"}
    assert reply.json["patients"], "at least the patient just registered is live"
    for item in reply.json["patients"]:
        assert set(item) == PATIENT_KEYS
    first_page_ids = [p["patientID"] for p in reply.json["patients"]]
    assert first_page_ids == sorted(first_page_ids)


def test_list_patients_walks_pages_without_duplicates_or_deleted_rows(api):
    mine = [register(api)[0] for _ in range(5)]
    deleted = register(api)[0]
    assert api.delete(f"/patient/{deleted}").status == 200

    everything = walk(api, "/patient", "patients", "patientID", limit=2)
    ids = [p["patientID"] for p in everything]
    assert set(mine) <= set(ids)
    assert deleted not in ids
    for item in everything:
        assert set(item) == PATIENT_KEYS
    # a larger page size sees exactly the same rows
    assert [p["patientID"] for p in walk(api, "/patient", "patients", "patientID", limit=100)] == ids


@pytest.mark.parametrize("query", ["limit=0", "limit=101", "limit=abc", "cursor=not-a-cursor"])
def test_list_patients_bad_paging_is_a_json_400(api, query):
    assert_json_error(api.get(f"/patient?{query}"), 400)


def test_put_patient_changes_only_the_fields_sent(api):
    pid, body = register(api)
    before = api.get(f"/v1/patients/{pid}").json
    reply = api.put(f"/patient/{pid}", {"phoneNum": "0899999999"})
    assert reply.status == 200, reply.text
    assert reply.headers["content-type"].startswith("application/json")
    assert isinstance(reply.json.get("message"), str)

    after = api.get(f"/v1/patients/{pid}").json
    assert after["phoneNum"] == "0899999999"
    unchanged = {k: v for k, v in after.items() if k not in ("phoneNum", "version", "updatedTimestamp")}
    assert unchanged == {k: v for k, v in before.items() if k not in ("phoneNum", "version", "updatedTimestamp")}
    assert after["version"] == before["version"] + 1
    got = api.get(f"/patient/{body['idCardNum']}").json["patient"]
    assert got == {"patientID": pid, **body, "phoneNum": "0899999999"}


def test_put_patient_errors(api):
    pid, body = register(api)
    _, other = register(api)
    assert_json_error(api.put(f"/patient/{MISSING_ID}", {"firstName": "A"}), 404, "Patient not found")
    assert_json_error(
        api.put(f"/patient/{pid}", {"idCardNum": other["idCardNum"]}), 400, "Patient with id_card_num already exists"
    )
    assert_json_error(api.put(f"/patient/{pid}", {"lastName": ""}), 400)
    assert_json_error(api.put(f"/patient/{pid}", {"firstName": None}), 400)  # a required field cannot be cleared
    assert_json_error(api.put(f"/patient/{pid}", raw="{"), 400)
    assert_json_error(api.put("/patient/abc", {"firstName": "A"}), 400)
    # none of the failed updates changed anything
    assert api.get(f"/patient/{body['idCardNum']}").json["patient"] == {"patientID": pid, **body}
    assert api.get(f"/v1/patients/{pid}").json["version"] == 1

    assert api.delete(f"/patient/{pid}").status == 200
    assert_json_error(api.put(f"/patient/{pid}", {"firstName": "A"}), 404, "Patient not found")


def test_update_with_nothing_to_change_is_not_an_error(api):
    """A partial update that changes nothing is a no-op (or a JSON 400), never a 500, and changes nothing."""
    pid = api.new_patient()["patientId"]
    rid = api.new_record(pid)["medicalRecordId"]
    xid = api.new_prescription(rid)["prescriptionId"]
    for path, v1_path in [
        (f"/patient/{pid}", f"/v1/patients/{pid}"),
        (f"/medicalrecord/{rid}", f"/v1/medical-records/{rid}"),
        (f"/prescription/{xid}", f"/v1/prescriptions/{xid}"),
    ]:
        before = api.get(v1_path).json
        reply = api.put(path, {})
        assert reply.status in (200, 400), f"PUT {path} {{}} answered {reply.status}: {reply.text}"
        if reply.status == 400:
            assert_json_error(reply, 400)
        after = api.get(v1_path).json
        ignore = ("version", "updatedTimestamp")
        assert {k: v for k, v in after.items() if k not in ignore} == {
            k: v for k, v in before.items() if k not in ignore
        }


def test_put_naming_the_current_parent_changes_nothing(api):
    pid = api.new_patient()["patientId"]
    record = api.new_record(pid)
    rid = record["medicalRecordId"]
    rx = api.new_prescription(rid)
    xid = rx["prescriptionId"]

    reply = api.put(f"/medicalrecord/{rid}", {"patientID": pid})
    assert reply.status == 200, reply.text
    assert api.get(f"/v1/medical-records/{rid}").json["patientId"] == pid
    reply = api.put(f"/prescription/{xid}", {"medicalRecordID": rid})
    assert reply.status == 200, reply.text
    assert api.get(f"/v1/prescriptions/{xid}").json["medicalRecordId"] == rid


def test_delete_patient(api):
    pid, _ = register(api)
    reply = api.delete(f"/patient/{pid}")
    assert reply.status == 200, reply.text
    assert reply.headers["content-type"].startswith("application/json")
    assert isinstance(reply.json.get("message"), str)
    assert api.get(f"/v1/patients/{pid}").status == 410

    assert_json_error(api.delete(f"/patient/{pid}"), 404, "Patient not found")
    assert_json_error(api.delete(f"/patient/{MISSING_ID}"), 404, "Patient not found")


# --- /medicalrecord -------------------------------------------------------------------------------


def test_post_medical_record_with_symtom(api):
    pid = api.new_patient()["patientId"]
    body = legacy_record_body(pid)
    reply = api.post("/medicalrecord", body)
    assert reply.status == 201, reply.text
    assert set(reply.json) == {"message", "medicalRecordID"}
    assert isinstance(reply.json["message"], str) and reply.json["message"]
    rid = reply.json["medicalRecordID"]
    assert isinstance(rid, int) and rid > 0

    stored = api.get(f"/v1/medical-records/{rid}").json
    assert stored["patientId"] == pid
    assert stored["symptom"] == body["symtom"]
    for legacy, v1 in [
        ("hospitalName", "hospitalName"),
        ("doctorFullName", "doctorFullName"),
        ("diagnosis", "diagnosis"),
        ("treatmentStartDate", "treatmentStartDate"),
        ("treatmentEndDate", "treatmentEndDate"),
    ]:
        assert stored[v1] == body[legacy]


def test_post_medical_record_also_accepts_symptom(api):
    pid = api.new_patient()["patientId"]
    body = record_body(symptom="Headache", patientID=pid)
    reply = api.post("/medicalrecord", body)
    assert reply.status == 201, reply.text
    rid = reply.json["medicalRecordID"]
    assert api.get(f"/v1/medical-records/{rid}").json["symptom"] == "Headache"
    [listed] = api.get(f"/medicalrecord/{pid}").json["medicalRecords"]
    assert listed["symtom"] == "Headache"


def test_post_medical_record_with_both_spellings_is_400(api):
    pid = api.new_patient()["patientId"]
    body = legacy_record_body(pid, symptom="Other")
    assert_json_error(api.post("/medicalrecord", body), 400)
    assert api.get(f"/v1/patients/{pid}/medical-records").json["items"] == []


def test_post_medical_record_for_a_missing_or_deleted_patient_is_404(api):
    assert_json_error(api.post("/medicalrecord", legacy_record_body(MISSING_ID)), 404, "Patient not found")
    pid = api.new_patient()["patientId"]
    assert api.delete(f"/v1/patients/{pid}").status == 204
    assert_json_error(api.post("/medicalrecord", legacy_record_body(pid)), 404, "Patient not found")


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"patientID": DROP}, id="no-patient-id"),
        pytest.param({"patientID": "1"}, id="patient-id-as-string"),
        pytest.param({"hospitalName": DROP}, id="no-hospital"),
        pytest.param({"hospitalName": None}, id="null-hospital"),
        pytest.param({"treatmentStartDate": "yesterday"}, id="bad-date"),
        pytest.param({"treatmentEndDate": "2023-01-01"}, id="end-before-start"),
        pytest.param({"symtom": "x" * 256}, id="overlong-symtom"),
    ],
)
def test_post_medical_record_invalid_is_a_json_400(api, change):
    pid = api.new_patient()["patientId"]
    body = {k: v for k, v in {**legacy_record_body(pid), **change}.items() if v is not DROP}
    assert_json_error(api.post("/medicalrecord", body), 400)
    assert api.get(f"/v1/patients/{pid}/medical-records").json["items"] == []


def test_get_medical_records_of_a_patient(api):
    pid = api.new_patient()["patientId"]
    other = api.new_patient()["patientId"]
    first = api.new_record(pid, symptom="Cough")
    second = api.new_record(pid, diagnosis=None, symptom=None, treatmentEndDate=None)
    api.new_record(other)

    reply = api.get(f"/medicalrecord/{pid}")
    assert reply.status == 200, reply.text
    assert set(reply.json) == {"medicalRecords", "nextCursor"}
    assert reply.json["nextCursor"] is None
    assert reply.json["medicalRecords"] == [
        {
            "medicalRecordID": first["medicalRecordId"],
            "patientID": pid,
            "hospitalName": first["hospitalName"],
            "doctorFullName": first["doctorFullName"],
            "diagnosis": first["diagnosis"],
            "symtom": "Cough",
            "treatmentStartDate": first["treatmentStartDate"],
            "treatmentEndDate": first["treatmentEndDate"],
        },
        {
            "medicalRecordID": second["medicalRecordId"],
            "patientID": pid,
            "hospitalName": second["hospitalName"],
            "doctorFullName": second["doctorFullName"],
            "diagnosis": None,
            "symtom": None,
            "treatmentStartDate": second["treatmentStartDate"],
            "treatmentEndDate": None,
        },
    ]


def test_get_medical_records_404_when_none(api):
    pid = api.new_patient()["patientId"]
    assert_json_error(api.get(f"/medicalrecord/{pid}"), 404)
    assert_json_error(api.get(f"/medicalrecord/{MISSING_ID}"), 404)
    rid = api.new_record(pid)["medicalRecordId"]
    assert api.delete(f"/v1/medical-records/{rid}").status == 204
    assert_json_error(api.get(f"/medicalrecord/{pid}"), 404)  # deleted records do not count


def test_medical_records_of_a_patient_walk_pages(api):
    pid = api.new_patient()["patientId"]
    mine = [api.new_record(pid)["medicalRecordId"] for _ in range(5)]
    api.delete(f"/v1/medical-records/{mine[2]}")
    items = walk(api, f"/medicalrecord/{pid}", "medicalRecords", "medicalRecordID", limit=2)
    assert [r["medicalRecordID"] for r in items] == [m for i, m in enumerate(mine) if i != 2]
    for item in items:
        assert set(item) == RECORD_KEYS and item["patientID"] == pid


def test_paging_survives_deleting_the_row_at_the_cursor(api):
    pid = api.new_patient()["patientId"]
    mine = [api.new_record(pid)["medicalRecordId"] for _ in range(5)]
    first = api.get(f"/medicalrecord/{pid}?limit=2")
    assert [r["medicalRecordID"] for r in first.json["medicalRecords"]] == mine[:2]
    assert api.delete(f"/medicalrecord/{mine[1]}").status == 200  # the last row of the page just read
    second = api.get(f"/medicalrecord/{pid}?limit=2&cursor={first.json['nextCursor']}")
    assert second.status == 200, second.text
    assert [r["medicalRecordID"] for r in second.json["medicalRecords"]] == mine[2:4]
    third = api.get(f"/medicalrecord/{pid}?limit=2&cursor={second.json['nextCursor']}")
    assert [r["medicalRecordID"] for r in third.json["medicalRecords"]] == mine[4:]
    assert third.json["nextCursor"] is None


def test_a_full_last_page_has_no_next_cursor(api):
    rid = api.new_record(api.new_patient()["patientId"])["medicalRecordId"]
    mine = [api.new_prescription(rid)["prescriptionId"] for _ in range(4)]
    first = api.get(f"/prescription/{rid}?limit=2")
    second = api.get(f"/prescription/{rid}?limit=2&cursor={first.json['nextCursor']}")
    assert [p["prescriptionID"] for p in first.json["prescriptions"] + second.json["prescriptions"]] == mine
    assert second.json["nextCursor"] is None


def test_list_medical_records_walks_pages(api):
    pid = api.new_patient()["patientId"]
    mine = [api.new_record(pid)["medicalRecordId"] for _ in range(3)]
    first = api.get("/medicalrecord?limit=2")
    assert first.status == 200, first.text
    assert set(first.json) == {"medicalRecords", "nextCursor"}
    assert len(first.json["medicalRecords"]) == 2 and first.json["nextCursor"]

    everything = walk(api, "/medicalrecord", "medicalRecords", "medicalRecordID", limit=2)
    assert set(mine) <= {r["medicalRecordID"] for r in everything}
    for item in everything:
        assert set(item) == RECORD_KEYS


def test_put_medical_record_changes_only_the_fields_sent(api):
    pid = api.new_patient()["patientId"]
    before = api.new_record(pid)
    rid = before["medicalRecordId"]

    reply = api.put(f"/medicalrecord/{rid}", {"symtom": "Rash"})
    assert reply.status == 200, reply.text
    assert isinstance(reply.json.get("message"), str)
    after = api.get(f"/v1/medical-records/{rid}").json
    assert after["symptom"] == "Rash"
    ignore = ("symptom", "version", "updatedTimestamp")
    assert {k: v for k, v in after.items() if k not in ignore} == {k: v for k, v in before.items() if k not in ignore}

    assert api.put(f"/medicalrecord/{rid}", {"symptom": "Itch", "diagnosis": "Eczema"}).status == 200
    after = api.get(f"/v1/medical-records/{rid}").json
    assert (after["symptom"], after["diagnosis"], after["hospitalName"]) == ("Itch", "Eczema", before["hospitalName"])


def test_put_medical_record_errors(api):
    pid = api.new_patient()["patientId"]
    record = api.new_record(pid)
    rid = record["medicalRecordId"]
    assert_json_error(api.put(f"/medicalrecord/{MISSING_ID}", {"diagnosis": "X"}), 404)
    assert_json_error(api.put(f"/medicalrecord/{rid}", {"treatmentEndDate": "2000-01-01"}), 400)
    assert_json_error(api.put(f"/medicalrecord/{rid}", {"symtom": "a", "symptom": "b"}), 400)
    assert_json_error(api.put(f"/medicalrecord/{rid}", {"patientID": MISSING_ID}), 404, "Patient not found")
    gone = api.new_patient()["patientId"]
    assert api.delete(f"/v1/patients/{gone}").status == 204
    assert_json_error(api.put(f"/medicalrecord/{rid}", {"patientID": gone}), 404, "Patient not found")
    assert api.get(f"/v1/medical-records/{rid}").json == record
    assert api.delete(f"/v1/medical-records/{rid}").status == 204
    assert_json_error(api.put(f"/medicalrecord/{rid}", {"diagnosis": "X"}), 404)


def test_delete_medical_record(api):
    pid = api.new_patient()["patientId"]
    rid = api.new_record(pid)["medicalRecordId"]
    xid = api.new_prescription(rid)["prescriptionId"]
    reply = api.delete(f"/medicalrecord/{rid}")
    assert reply.status == 200, reply.text
    assert isinstance(reply.json.get("message"), str)
    assert api.get(f"/v1/medical-records/{rid}").status == 410
    assert api.get(f"/v1/prescriptions/{xid}").status == 410  # its prescriptions went with it
    assert api.get(f"/v1/patients/{pid}").status == 200  # its patient did not
    assert_json_error(api.delete(f"/medicalrecord/{rid}"), 404)
    assert_json_error(api.delete(f"/medicalrecord/{MISSING_ID}"), 404)


# --- /prescription --------------------------------------------------------------------------------


def test_post_prescription(api):
    rid = api.new_record(api.new_patient()["patientId"])["medicalRecordId"]
    body = {**prescription_body(), "medicalRecordID": rid}
    reply = api.post("/prescription", body)
    assert reply.status == 201, reply.text
    assert set(reply.json) == {"message", "prescriptionID"}
    xid = reply.json["prescriptionID"]
    assert isinstance(xid, int) and xid > 0
    stored = api.get(f"/v1/prescriptions/{xid}").json
    assert stored["medicalRecordId"] == rid
    assert (stored["medicineName"], stored["dose"]) == (body["medicineName"], body["dose"])


def test_post_prescription_for_a_missing_or_deleted_record_is_400(api):
    reply = api.post("/prescription", {**prescription_body(), "medicalRecordID": MISSING_ID})
    assert_json_error(reply, 400, "Medical record not found")
    rid = api.new_record(api.new_patient()["patientId"])["medicalRecordId"]
    assert api.delete(f"/v1/medical-records/{rid}").status == 204
    assert_json_error(api.post("/prescription", {**prescription_body(), "medicalRecordID": rid}), 400)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"medicineName": "A", "dose": "1"}, id="no-record-id"),
        pytest.param({"medicalRecordID": True, "medicineName": "A", "dose": "1"}, id="record-id-bool"),
        pytest.param({"medicalRecordID": 1, "dose": "1"}, id="no-medicine"),
        pytest.param({"medicalRecordID": 1, "medicineName": "A", "dose": "x" * 51}, id="overlong-dose"),
        pytest.param({"medicalRecordID": 1, "medicineName": "A", "dose": 5}, id="dose-not-a-string"),
    ],
)
def test_post_prescription_invalid_is_a_json_400(api, body):
    assert_json_error(api.post("/prescription", body), 400)


def test_get_prescriptions_of_a_record(api):
    pid = api.new_patient()["patientId"]
    rid = api.new_record(pid)["medicalRecordId"]
    other = api.new_record(pid)["medicalRecordId"]
    first = api.new_prescription(rid)
    second = api.new_prescription(rid, medicineName="Paracetamol", dose="500 mg")
    api.new_prescription(other)

    reply = api.get(f"/prescription/{rid}")
    assert reply.status == 200, reply.text
    assert reply.json == {
        "prescriptions": [
            {"prescriptionID": p["prescriptionId"], "medicalRecordID": rid, "medicineName": p["medicineName"],
             "dose": p["dose"]}
            for p in (first, second)
        ],
        "nextCursor": None,
    }


def test_get_prescriptions_404_when_none(api):
    rid = api.new_record(api.new_patient()["patientId"])["medicalRecordId"]
    assert_json_error(api.get(f"/prescription/{rid}"), 404)
    assert_json_error(api.get(f"/prescription/{MISSING_ID}"), 404)


def test_prescriptions_walk_pages(api):
    rid = api.new_record(api.new_patient()["patientId"])["medicalRecordId"]
    mine = [api.new_prescription(rid, dose=f"{n} mg")["prescriptionId"] for n in range(5)]
    items = walk(api, f"/prescription/{rid}", "prescriptions", "prescriptionID", limit=2)
    assert [p["prescriptionID"] for p in items] == mine
    everything = walk(api, "/prescription", "prescriptions", "prescriptionID", limit=2)
    assert set(mine) <= {p["prescriptionID"] for p in everything}
    for item in everything:
        assert set(item) == PRESCRIPTION_KEYS


def test_put_prescription_changes_only_the_fields_sent(api):
    rid = api.new_record(api.new_patient()["patientId"])["medicalRecordId"]
    before = api.new_prescription(rid)
    xid = before["prescriptionId"]
    reply = api.put(f"/prescription/{xid}", {"dose": "1 tablet"})
    assert reply.status == 200, reply.text
    assert isinstance(reply.json.get("message"), str)
    after = api.get(f"/v1/prescriptions/{xid}").json
    assert after["dose"] == "1 tablet" and after["medicineName"] == before["medicineName"]
    assert after["medicalRecordId"] == rid and after["version"] == before["version"] + 1


def test_put_prescription_errors(api):
    rid = api.new_record(api.new_patient()["patientId"])["medicalRecordId"]
    rx = api.new_prescription(rid)
    xid = rx["prescriptionId"]
    assert_json_error(api.put(f"/prescription/{MISSING_ID}", {"dose": "1"}), 404)
    assert_json_error(api.put(f"/prescription/{xid}", {"dose": ""}), 400)
    assert_json_error(api.put(f"/prescription/{xid}", {"medicineName": None}), 400)
    assert_json_error(api.put(f"/prescription/{xid}", {"colour": "red"}), 400)
    assert_json_error(api.put(f"/prescription/{xid}", {"medicalRecordID": MISSING_ID}), 400, "Medical record not found")
    gone = api.new_record(api.new_patient()["patientId"])["medicalRecordId"]
    assert api.delete(f"/v1/medical-records/{gone}").status == 204
    assert_json_error(api.put(f"/prescription/{xid}", {"medicalRecordID": gone}), 400, "Medical record not found")
    assert api.get(f"/v1/prescriptions/{xid}").json == rx
    assert api.delete(f"/v1/prescriptions/{xid}").status == 204
    assert_json_error(api.put(f"/prescription/{xid}", {"dose": "1"}), 404)


def test_put_moves_a_record_and_a_prescription_to_another_parent(api):
    pid, other_pid = api.new_patient()["patientId"], api.new_patient()["patientId"]
    rid = api.new_record(pid)["medicalRecordId"]
    other_rid = api.new_record(other_pid)["medicalRecordId"]
    xid = api.new_prescription(rid)["prescriptionId"]
    assert api.put(f"/prescription/{xid}", {"medicalRecordID": other_rid}).status == 200
    assert api.get(f"/v1/prescriptions/{xid}").json["medicalRecordId"] == other_rid
    assert_json_error(api.get(f"/prescription/{rid}"), 404)
    assert api.put(f"/medicalrecord/{rid}", {"patientID": other_pid}).status == 200
    moved = [r["medicalRecordID"] for r in api.get(f"/medicalrecord/{other_pid}").json["medicalRecords"]]
    assert moved == sorted([rid, other_rid])


def test_delete_prescription(api):
    rid = api.new_record(api.new_patient()["patientId"])["medicalRecordId"]
    xid = api.new_prescription(rid)["prescriptionId"]
    reply = api.delete(f"/prescription/{xid}")
    assert reply.status == 200, reply.text
    assert isinstance(reply.json.get("message"), str)
    assert api.get(f"/v1/prescriptions/{xid}").status == 410
    assert api.get(f"/v1/medical-records/{rid}").status == 200
    assert_json_error(api.delete(f"/prescription/{xid}"), 404)
    assert_json_error(api.delete(f"/prescription/{MISSING_ID}"), 404)


# --- scopes ---------------------------------------------------------------------------------------


def test_original_routes_require_authentication_and_scopes(api, tokens):
    assert api.as_token(None).get("/patient").status == 401
    reader = api.as_token(tokens["read"])
    assert reader.get("/patient?limit=1").status == 200
    assert_json_error(reader.post("/patient", patient_body()), 403)
    writer = api.as_token(tokens["write"])
    assert_json_error(writer.get("/patient?limit=1"), 403)


# --- a whole client session -----------------------------------------------------------------------


def test_full_original_client_session(api):
    # register
    body = patient_body(firstName="Anong", lastName="Chaiyaporn")
    created = api.post("/patient", body)
    assert created.status == 201, created.text
    pid = created.json["patientID"]

    # record a visit (the original's spelling) and prescribe
    created = api.post("/medicalrecord", legacy_record_body(pid, diagnosis="Migraine", symtom="Headache"))
    assert created.status == 201, created.text
    rid = created.json["medicalRecordID"]
    created = api.post("/prescription", {"medicalRecordID": rid, "medicineName": "Ibuprofen", "dose": "400 mg"})
    assert created.status == 201, created.text
    xid = created.json["prescriptionID"]

    # read each back
    assert api.get(f"/patient/{body['idCardNum']}").json == {"patient": {"patientID": pid, **body}}
    [record] = api.get(f"/medicalrecord/{pid}").json["medicalRecords"]
    assert (record["medicalRecordID"], record["diagnosis"], record["symtom"]) == (rid, "Migraine", "Headache")
    assert api.get(f"/prescription/{rid}").json["prescriptions"] == [
        {"prescriptionID": xid, "medicalRecordID": rid, "medicineName": "Ibuprofen", "dose": "400 mg"}
    ]

    # update each
    assert api.put(f"/patient/{pid}", {"lastName": "Srisawat"}).status == 200
    assert api.put(f"/medicalrecord/{rid}", {"symtom": "Severe headache"}).status == 200
    assert api.put(f"/prescription/{xid}", {"dose": "200 mg"}).status == 200
    assert api.get(f"/patient/{body['idCardNum']}").json["patient"]["lastName"] == "Srisawat"
    assert api.get(f"/medicalrecord/{pid}").json["medicalRecords"][0]["symtom"] == "Severe headache"
    assert api.get(f"/prescription/{rid}").json["prescriptions"][0]["dose"] == "200 mg"

    # delete the patient: their record and prescription go with them
    assert api.delete(f"/patient/{pid}").status == 200
    assert_json_error(api.get(f"/patient/{body['idCardNum']}"), 404, "Patient not found")
    assert_json_error(api.get(f"/medicalrecord/{pid}"), 404)
    assert_json_error(api.get(f"/prescription/{rid}"), 404)
    all_records = walk(api, "/medicalrecord", "medicalRecords", "medicalRecordID", limit=100)
    assert rid not in {r["medicalRecordID"] for r in all_records}
    all_prescriptions = walk(api, "/prescription", "prescriptions", "prescriptionID", limit=100)
    assert xid not in {p["prescriptionID"] for p in all_prescriptions}
    all_patients = walk(api, "/patient", "patients", "patientID", limit=100)
    assert pid not in {p["patientID"] for p in all_patients}
    assert_json_error(api.delete(f"/medicalrecord/{rid}"), 404)
    assert_json_error(api.delete(f"/prescription/{xid}"), 404)


def test_put_bodies_may_echo_the_resource_own_id_when_it_is_the_path_one(api):
    """Original clients sent e.g. {"medicalRecordID": 1, ...} to PUT /medicalrecord/1."""
    pid = api.new_patient()["patientId"]
    rid = api.new_record(pid)["medicalRecordId"]
    xid = api.new_prescription(rid)["prescriptionId"]
    cases = [
        (f"/patient/{pid}", "patientID", pid, {"firstName": "Echo"}),
        (f"/medicalrecord/{rid}", "medicalRecordID", rid, {"diagnosis": "Echoed"}),
        (f"/prescription/{xid}", "prescriptionID", xid, {"dose": "2 tablets"}),
    ]
    for path, name, key, change in cases:
        assert api.put(path, {name: key, **change}).status == 200, path
        for wrong in (key + 1, str(key), True, None):
            reply = api.put(path, {name: wrong, **change})
            assert reply.status == 400, (path, wrong, reply.text)
            assert reply.json["errors"] == [{"field": name, "message": "must equal the id in the path"}]
    assert api.get(f"/v1/patients/{pid}").json["firstName"] == "Echo"
    assert api.get(f"/v1/medical-records/{rid}").json["diagnosis"] == "Echoed"
