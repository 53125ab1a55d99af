"""A patient summary's page is bounded by the prescriptions it carries, not only by its visits, so the
answer stays far below Lambda's 6 MB response limit however many prescriptions a visit has."""

from __future__ import annotations

from chalicelib.domain import services


def test_a_summary_page_ends_after_the_visit_that_reaches_the_prescription_bound(api, monkeypatch):
    monkeypatch.setattr(services, "SUMMARY_MAX_PRESCRIPTIONS", 4)
    pid = api.new_patient()["patientId"]
    visits = []
    for _ in range(3):
        rid = api.new_record(pid)["medicalRecordId"]
        visits.append((rid, [api.new_prescription(rid)["prescriptionId"] for _ in range(3)]))

    first = api.get(f"/v1/patients/{pid}/summary?limit=10")
    assert first.status == 200, first.text
    page = [(v["medicalRecordId"], [p["prescriptionId"] for p in v["prescriptions"]])
            for v in first.json["medicalRecords"]]
    assert page == visits[:2]  # 3 prescriptions, then 6 >= 4: the page ends after the second visit, whole
    assert first.json["nextCursor"]

    rest = api.get(f"/v1/patients/{pid}/summary?limit=10&cursor={first.json['nextCursor']}")
    assert [(v["medicalRecordId"], [p["prescriptionId"] for p in v["prescriptions"]])
            for v in rest.json["medicalRecords"]] == visits[2:]
    assert rest.json["nextCursor"] is None


def test_a_visit_with_more_prescriptions_than_the_bound_still_comes_whole(api, monkeypatch):
    monkeypatch.setattr(services, "SUMMARY_MAX_PRESCRIPTIONS", 2)
    pid = api.new_patient()["patientId"]
    rid = api.new_record(pid)["medicalRecordId"]
    prescribed = [api.new_prescription(rid)["prescriptionId"] for _ in range(3)]
    api.new_record(pid)
    reply = api.get(f"/v1/patients/{pid}/summary")
    [visit] = reply.json["medicalRecords"]
    assert [p["prescriptionId"] for p in visit["prescriptions"]] == prescribed
    assert reply.json["nextCursor"]
