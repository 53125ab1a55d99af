"""The FHIR R4 read API (/fhir/R4) against the real PostgreSQL, through the app's own routes.

Every resource and Bundle it serves is validated against the FHIR models (tests/fhir_validation.py); the
CapabilityStatement is checked against the routes the app serves; access and audit are the /v1 ones.
"""

from __future__ import annotations

import re
import uuid
from typing import Any
from urllib.parse import quote, urlsplit

import pytest

from chalicelib.api import auth
from chalicelib.fhir import mapping
from tests.fhir_validation import validate
from tests.helpers import Api, Reply, passport_number

FHIR_JSON = "application/fhir+json"
BREAK_GLASS = {"Break-Glass": "unconscious patient in the emergency room"}


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def fhir(reply: Reply, status: int = 200) -> dict[str, Any]:
    """The body of a FHIR answer, once its status, media type and FHIR validity are checked."""
    assert reply.status == status, reply.text
    assert reply.headers["content-type"] == FHIR_JSON, reply.headers
    body = reply.json
    validate(body)
    return body


def outcome(reply: Reply, status: int) -> dict[str, Any]:
    body = fhir(reply, status)
    assert body["resourceType"] == "OperationOutcome", body
    assert body["issue"][0]["code"] == mapping.ISSUE_CODES[status], body
    return body


def follow(api: Api, url: str) -> list[dict[str, Any]]:
    """Every entry of a Bundle, page after page through its ``next`` links (each page validated)."""
    entries, seen_urls = [], set()
    while url:
        assert url not in seen_urls, f"the next link loops: {url}"
        seen_urls.add(url)
        page = fhir(api.get(url))
        entries += page.get("entry", [])
        following = [link["url"] for link in page["link"] if link["relation"] == "next"]
        url = _local(following[0]) if following else ""
    return entries


def _local(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


@pytest.fixture(scope="module")
def admin(client) -> Api:
    return Api(client, auth.mint(_unique("admin"), ["read", "write", "admin"]))


@pytest.fixture(scope="module")
def chart(admin) -> dict[str, Any]:
    """A patient with two visits (one ended, one not), three prescriptions, and an update in its history."""
    patient = admin.new_patient()
    pid = patient["patientId"]
    ended = admin.new_record(pid)
    ongoing = admin.new_record(pid, treatmentEndDate=None, diagnosis=None, symptom="Headache")
    prescriptions = [
        admin.new_prescription(ended["medicalRecordId"]),
        admin.new_prescription(ended["medicalRecordId"], medicineName="Paracetamol", dose="500 mg"),
        admin.new_prescription(ongoing["medicalRecordId"]),
    ]
    updated = admin.patch(f"/v1/patients/{pid}", {"phoneNum": "0899999999"})
    assert updated.status == 200, updated.text
    return {"patient": updated.json, "records": [ended, ongoing], "prescriptions": prescriptions}


# --- reads -------------------------------------------------------------------------------------------------------


def test_a_patient_reads_as_a_fhir_patient_with_its_identifier_and_version(admin, chart):
    patient = chart["patient"]
    reply = admin.get(f"/fhir/R4/Patient/{patient['patientId']}")
    body = fhir(reply)
    assert body["id"] == str(patient["patientId"]) and body["meta"]["versionId"] == "2"
    assert reply.headers["etag"] == 'W/"2"' and reply.headers["last-modified"].endswith("GMT")
    assert reply.headers["cache-control"] == "no-store" and reply.headers["x-content-type-options"] == "nosniff"
    [identifier] = body["identifier"]
    assert identifier["system"] == mapping.NATIONAL_ID_SYSTEM and identifier["value"] == patient["idCardNum"]
    assert identifier["type"]["coding"][0]["code"] == "NI"
    assert body["name"] == [{"use": "official", "family": patient["lastName"], "given": [patient["firstName"]]}]
    assert body["birthDate"] == patient["birthDate"]
    assert body["telecom"] == [{"system": "phone", "value": "0899999999"}]


def test_a_visit_reads_as_an_encounter_and_a_prescription_as_a_medication_request(admin, chart):
    ended, ongoing = chart["records"]
    pid = chart["patient"]["patientId"]
    body = fhir(admin.get(f"/fhir/R4/Encounter/{ended['medicalRecordId']}"))
    assert body["status"] == "finished" and body["class"]["code"] == "AMB"
    assert body["subject"] == {"reference": f"Patient/{pid}"}
    assert body["period"] == {"start": ended["treatmentStartDate"], "end": ended["treatmentEndDate"]}
    assert body["reasonCode"] == [{"text": ended["symptom"]}]
    assert body["contained"][0]["code"] == {"text": ended["diagnosis"]}
    assert body["diagnosis"][0]["condition"] == {"reference": "#diagnosis"}
    assert body["participant"][0]["individual"] == {"display": ended["doctorFullName"]}
    assert body["serviceProvider"] == {"display": ended["hospitalName"]}
    open_visit = fhir(admin.get(f"/fhir/R4/Encounter/{ongoing['medicalRecordId']}"))
    assert open_visit["status"] == "in-progress" and "end" not in open_visit["period"]
    assert "diagnosis" not in open_visit and "contained" not in open_visit

    prescription = chart["prescriptions"][1]
    reply = admin.get(f"/fhir/R4/MedicationRequest/{prescription['prescriptionId']}")
    body = fhir(reply)
    assert reply.headers["etag"] == 'W/"1"'
    assert (body["status"], body["intent"]) == ("active", "order")
    assert body["medicationCodeableConcept"] == {"text": "Paracetamol"}
    assert body["dosageInstruction"] == [{"text": "500 mg"}]
    assert body["subject"] == {"reference": f"Patient/{pid}"}
    assert body["encounter"] == {"reference": f"Encounter/{ended['medicalRecordId']}"}
    assert body["authoredOn"].startswith(prescription["insertedTimestamp"][:19])


def test_missing_deleted_and_malformed_resources_answer_with_operation_outcomes(admin):
    for resource in ("Patient", "Encounter", "MedicationRequest"):
        outcome(admin.get(f"/fhir/R4/{resource}/987654321"), 404)
        outcome(admin.get(f"/fhir/R4/{resource}/abc"), 400)
        outcome(admin.get(f"/fhir/R4/{resource}/0"), 400)
    pid = admin.new_patient()["patientId"]
    rid = admin.new_record(pid)["medicalRecordId"]
    assert admin.delete(f"/v1/patients/{pid}").status == 204
    outcome(admin.get(f"/fhir/R4/Patient/{pid}"), 410)
    outcome(admin.get(f"/fhir/R4/Encounter/{rid}"), 410)
    # the history outlives the delete: version 2 is the deletion itself
    outcome(admin.get(f"/fhir/R4/Patient/{pid}/_history/2"), 410)
    fhir(admin.get(f"/fhir/R4/Patient/{pid}/_history/1"))
    outcome(admin.get(f"/fhir/R4/Patient/{pid}/_history/3"), 404)
    outcome(admin.get("/fhir/R4/$unknown-operation"), 404)
    outcome(admin.get(f"/fhir/R4/Patient/{pid}/$not-served"), 404)
    outcome(admin.get("/fhir/R4/Patient/$not-served"), 404)
    outcome(admin.get("/fhir/R4/Patient?family=Jaidee"), 400)
    outcome(admin.get("/fhir/R4/Patient?_count=0"), 400)
    outcome(admin.get("/fhir/R4/Patient?_count=101"), 400)
    outcome(admin.get("/fhir/R4/Patient?_cursor=x"), 400)
    outcome(admin.get("/fhir/R4/Encounter?patient=Encounter/1"), 400)
    outcome(admin.get("/fhir/R4/Patient?identifier=a&identifier=b"), 400)


# --- representation ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("accept", [None, FHIR_JSON, "application/json", "*/*", "application/fhir+json; q=0.9",
                                    "text/html, application/json;q=0.5", "application/json+fhir"])
def test_fhir_json_is_served_to_whoever_accepts_it(admin, chart, accept):
    headers = {"Accept": accept} if accept else {}
    fhir(admin.get(f"/fhir/R4/Patient/{chart['patient']['patientId']}", headers=headers))


@pytest.mark.parametrize("query", ["json", "application/fhir%2Bjson", "application/fhir+json", "application/json"])
def test_format_json_is_served(admin, chart, query):
    fhir(admin.get(f"/fhir/R4/Patient/{chart['patient']['patientId']}?_format={query}",
                   headers={"Accept": "application/xml"}))


@pytest.mark.parametrize(("accept", "query"), [
    ("application/fhir+xml", ""), ("text/html", ""), ("application/json;q=0", ""), (None, "?_format=xml"),
    (None, "?_format=ttl"), (FHIR_JSON, "?_format=html"),
])
def test_other_representations_are_refused_with_406(admin, chart, accept, query):
    headers = {"Accept": accept} if accept else {}
    outcome(admin.get(f"/fhir/R4/Patient/{chart['patient']['patientId']}{query}", headers=headers), 406)
    outcome(admin.get(f"/fhir/R4/metadata{query}", headers=headers), 406)


# --- searches ----------------------------------------------------------------------------------------------------


def test_patients_are_found_by_national_id_with_or_without_the_system(admin, chart):
    patient = chart["patient"]
    card, pid = patient["idCardNum"], str(patient["patientId"])
    for token in (f"{mapping.NATIONAL_ID_SYSTEM}|{card}", card, f"|{card}"):
        bundle = fhir(admin.get(f"/fhir/R4/Patient?identifier={quote(token, safe='')}"))
        assert bundle["type"] == "searchset" and bundle["total"] == 1, token
        assert [e["resource"]["id"] for e in bundle["entry"]] == [pid]
        assert bundle["entry"][0]["search"] == {"mode": "match"}
        assert bundle["entry"][0]["fullUrl"].endswith(f"/fhir/R4/Patient/{pid}")
    # the unencoded "|" of a client that does not encode it works as well
    assert fhir(admin.get(f"/fhir/R4/Patient?identifier={mapping.NATIONAL_ID_SYSTEM}|{card}"))["total"] == 1
    for nothing in (f"http://example.org/other-system|{card}", "0000000000000", f"{mapping.NATIONAL_ID_SYSTEM}|12"):
        bundle = fhir(admin.get(f"/fhir/R4/Patient?identifier={quote(nothing, safe='')}"))
        assert bundle["total"] == 0 and "entry" not in bundle, nothing


def test_a_passport_holder_reads_and_is_found_by_hls_passport_system(admin):
    number = passport_number()
    pid = admin.new_patient(idCardNum=None, passportCountry="GBR", passportNumber=number)["patientId"]
    body = fhir(admin.get(f"/fhir/R4/Patient/{pid}"))
    assert body["identifier"] == [{"use": "official", "type": {"coding": [mapping.PASSPORT_TYPE]},
                                   "system": "http://hl7.org/fhir/sid/passport-GBR", "value": number}]
    system = mapping.passport_system("GBR")
    for token in (f"{system}|{number}", number, f"|{number}", f"{system.lower()}|{number.lower()}"):
        bundle = fhir(admin.get(f"/fhir/R4/Patient?identifier={quote(token, safe='')}"))
        assert [e["resource"]["id"] for e in bundle.get("entry", [])] == [str(pid)], token
    for nothing in (f"{mapping.passport_system('THA')}|{number}", f"{mapping.NATIONAL_ID_SYSTEM}|{number}"):
        assert fhir(admin.get(f"/fhir/R4/Patient?identifier={quote(nothing, safe='')}"))["total"] == 0, nothing


def test_visits_and_prescriptions_are_found_by_patient_and_by_visit(admin, chart):
    pid = chart["patient"]["patientId"]
    ended, ongoing = chart["records"]
    record_ids = [str(r["medicalRecordId"]) for r in chart["records"]]
    prescription_ids = [str(p["prescriptionId"]) for p in chart["prescriptions"]]
    for reference in (f"Patient/{pid}", str(pid)):
        bundle = fhir(admin.get(f"/fhir/R4/Encounter?patient={quote(reference, safe='')}"))
        assert [e["resource"]["id"] for e in bundle["entry"]] == record_ids and bundle["total"] == 2
        bundle = fhir(admin.get(f"/fhir/R4/MedicationRequest?patient={quote(reference, safe='')}"))
        assert [e["resource"]["id"] for e in bundle["entry"]] == prescription_ids
    bundle = fhir(admin.get(f"/fhir/R4/MedicationRequest?encounter=Encounter/{ended['medicalRecordId']}"))
    assert [e["resource"]["id"] for e in bundle["entry"]] == prescription_ids[:2]
    bundle = fhir(admin.get(f"/fhir/R4/MedicationRequest?encounter={ongoing['medicalRecordId']}"))
    assert [e["resource"]["id"] for e in bundle["entry"]] == prescription_ids[2:]
    # both: the visit's prescriptions when it is that patient's visit, else none
    both = f"/fhir/R4/MedicationRequest?patient={pid}&encounter={ended['medicalRecordId']}"
    assert [e["resource"]["id"] for e in fhir(admin.get(both))["entry"]] == prescription_ids[:2]
    other = admin.new_patient()["patientId"]
    both = f"/fhir/R4/MedicationRequest?patient={other}&encounter={ended['medicalRecordId']}"
    assert fhir(admin.get(both))["total"] == 0
    # a patient or visit that does not exist matches nothing
    assert fhir(admin.get("/fhir/R4/Encounter?patient=987654321"))["total"] == 0
    assert fhir(admin.get("/fhir/R4/MedicationRequest?encounter=987654321"))["total"] == 0


def test_next_links_walk_every_match_exactly_once(admin):
    pid = admin.new_patient()["patientId"]
    records = [admin.new_record(pid)["medicalRecordId"] for _ in range(7)]
    prescriptions = [admin.new_prescription(rid)["prescriptionId"] for rid in records for _ in range(2)]
    for count in (1, 3, 7, 100):
        entries = follow(admin, f"/fhir/R4/Encounter?patient={pid}&_count={count}")
        assert [int(e["resource"]["id"]) for e in entries] == records, count
        entries = follow(admin, f"/fhir/R4/MedicationRequest?patient=Patient/{pid}&_count={count}")
        assert [int(e["resource"]["id"]) for e in entries] == prescriptions, count
    first = fhir(admin.get(f"/fhir/R4/Encounter?patient={pid}&_count=3"))
    assert "total" not in first  # not exact without counting every page: left out
    [self_link] = [link["url"] for link in first["link"] if link["relation"] == "self"]
    assert _local(self_link) == f"/fhir/R4/Encounter?patient={pid}&_count=3"
    # $everything: the patient once, then each visit followed by its prescriptions, across pages
    for count in (1, 2, 100):
        entries = follow(admin, f"/fhir/R4/Patient/{pid}/$everything?_count={count}")
        ids = [(e["resource"]["resourceType"], int(e["resource"]["id"])) for e in entries]
        expected = [("Patient", pid)]
        for index, rid in enumerate(records):
            pair = prescriptions[2 * index:2 * index + 2]
            expected += [("Encounter", rid), *[("MedicationRequest", x) for x in pair]]
        assert ids == expected, count


def test_a_search_without_parameters_lists_what_the_caller_may_see(client, admin):
    clinician = _unique("clinician")
    api = Api(client, auth.mint(clinician, ["read", "write"]))
    mine = api.new_patient()["patientId"]
    record = api.new_record(mine)["medicalRecordId"]
    prescription = api.new_prescription(record)["prescriptionId"]
    admin.new_prescription(admin.new_record(admin.new_patient()["patientId"])["medicalRecordId"])  # not theirs
    for resource, expected in (("Patient", mine), ("Encounter", record), ("MedicationRequest", prescription)):
        entries = follow(api, f"/fhir/R4/{resource}?_count=100")
        assert [int(e["resource"]["id"]) for e in entries] == [expected], resource


# --- history -------------------------------------------------------------------------------------------------------


def test_history_and_vread_come_from_the_kept_versions(admin):
    pid = admin.new_patient(firstName="First")["patientId"]
    for name in ("Second", "Third"):
        assert admin.patch(f"/v1/patients/{pid}", {"firstName": name}).status == 200
    assert admin.delete(f"/v1/patients/{pid}").status == 204
    assert admin.post(f"/v1/patients/{pid}/restore").status == 200
    bundle = fhir(admin.get(f"/fhir/R4/Patient/{pid}/_history"))
    assert bundle["type"] == "history" and bundle["total"] == 5
    summary = [(e["request"]["method"], e["response"]["etag"], e.get("resource", {}).get("name", [{}])[0].get("given"))
               for e in bundle["entry"]]
    assert summary == [  # newest first
        ("PUT", 'W/"5"', ["Third"]), ("DELETE", 'W/"4"', None), ("PUT", 'W/"3"', ["Third"]),
        ("PUT", 'W/"2"', ["Second"]), ("POST", 'W/"1"', ["First"]),
    ]
    assert [e["resource"]["meta"]["versionId"] for e in bundle["entry"] if "resource" in e] == ["5", "3", "2", "1"]
    entries = follow(admin, f"/fhir/R4/Patient/{pid}/_history?_count=2")
    assert [e["response"]["etag"] for e in entries] == [f'W/"{v}"' for v in (5, 4, 3, 2, 1)]
    reply = admin.get(f"/fhir/R4/Patient/{pid}/_history/2")
    body = fhir(reply)
    assert body["name"][0]["given"] == ["Second"] and body["meta"]["versionId"] == "2"
    assert reply.headers["etag"] == 'W/"2"'
    rid = admin.new_record(pid)["medicalRecordId"]
    xid = admin.new_prescription(rid)["prescriptionId"]
    assert admin.patch(f"/v1/prescriptions/{xid}", {"dose": "1 tablet"}).status == 200
    body = fhir(admin.get(f"/fhir/R4/MedicationRequest/{xid}/_history/1"))
    assert body["dosageInstruction"] == [{"text": "75 mg twice daily"}]
    assert body["subject"]["reference"] == f"Patient/{pid}"
    bundle = fhir(admin.get(f"/fhir/R4/Encounter/{rid}/_history"))
    assert [e["request"]["method"] for e in bundle["entry"]] == ["POST"]
    outcome(admin.get("/fhir/R4/Encounter/987654321/_history"), 404)


# --- the CapabilityStatement --------------------------------------------------------------------------------


_INTERACTION_PATHS = [
    (re.compile(r"^/fhir/R4/(\w+)$"), "search-type"),
    (re.compile(r"^/fhir/R4/(\w+)/\{id\}$"), "read"),
    (re.compile(r"^/fhir/R4/(\w+)/\{id\}/_history$"), "history-instance"),
    (re.compile(r"^/fhir/R4/(\w+)/\{id\}/_history/\{vid\}$"), "vread"),
]


def served_interactions() -> set[tuple[str, str]]:
    """(type, interaction) for each FHIR route the app serves, read from the app's own route paths."""
    from app import app

    served = set()
    for path in app.routes:
        for pattern, interaction in _INTERACTION_PATHS:
            match = pattern.match(path)
            if match and match.group(1) != "metadata":
                served.add((match.group(1), interaction))
    return served


def test_the_capability_statement_lists_exactly_the_interactions_served(client, admin, chart):
    reply = Api(client, None).get("/fhir/R4/metadata")  # public, like /health: FHIR clients read it first
    statement = fhir(reply)
    assert statement["fhirVersion"] == "4.0.1" and statement["format"] == ["json"] and statement["kind"] == "instance"
    [rest] = statement["rest"]
    listed = {(r["type"], i["code"]) for r in rest["resource"] for i in r["interaction"]}
    assert listed == served_interactions()
    assert {r["type"] for r in rest["resource"]} == {"Patient", "Encounter", "MedicationRequest"}
    # what is listed works: each interaction answers 200 on the chart
    ids = {"Patient": chart["patient"]["patientId"], "Encounter": chart["records"][0]["medicalRecordId"],
           "MedicationRequest": chart["prescriptions"][0]["prescriptionId"]}
    paths = {"read": "/fhir/R4/{t}/{id}", "vread": "/fhir/R4/{t}/{id}/_history/1",
             "history-instance": "/fhir/R4/{t}/{id}/_history", "search-type": "/fhir/R4/{t}"}
    for resource_type, interaction in listed:
        fhir(admin.get(paths[interaction].format(t=resource_type, id=ids[resource_type])))
    # each search parameter listed is accepted, and none other
    for resource in rest["resource"]:
        for param in resource.get("searchParam", []):
            value = {"identifier": chart["patient"]["idCardNum"], "patient": ids["Patient"],
                     "encounter": ids["Encounter"]}[param["name"]]
            fhir(admin.get(f"/fhir/R4/{resource['type']}?{param['name']}={value}"))
    # the operations listed are served, and an operation not listed is not
    operations = {(r["type"], o["name"]) for r in rest["resource"] for o in r.get("operation", [])}
    assert ("Patient", "everything") in operations
    for resource_type, name in operations:
        if resource_type == "Patient" and name == "everything":
            fhir(admin.get(f"/fhir/R4/Patient/{ids['Patient']}/${name}"))
    for name in {o["name"] for o in rest.get("operation", [])}:
        assert admin.get(f"/fhir/R4/${name}").status != 404


# --- errors that do not come from the data --------------------------------------------------------------------


def test_a_token_without_the_read_scope_gets_a_403_operation_outcome(client, chart):
    api = Api(client, auth.mint(_unique("writer"), ["write"]))
    outcome(api.get(f"/fhir/R4/Patient/{chart['patient']['patientId']}"), 403)
    outcome(api.get("/fhir/R4/Patient"), 403)


def test_an_unexpected_failure_is_a_500_operation_outcome_without_detail(client, admin, chart, monkeypatch):
    from chalicelib.domain.errors import Unavailable
    from chalicelib.domain.services import ResourceService

    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("secret internals: SELECT * FROM medical_app.patient")

    monkeypatch.setattr(ResourceService, "get_owned", broken)
    # The suite's Api refuses any 500; this one call is made bare to look at it.
    response = client.http.get(f"/fhir/R4/Patient/{chart['patient']['patientId']}",
                               headers={"Authorization": f"Bearer {admin.token}"})
    assert response.status_code == 500
    body = Reply(500, {k.lower(): v for k, v in response.headers.items()}, response.body.decode())
    document = outcome(body, 500)
    assert "secret" not in body.text and "SELECT" not in body.text and document["issue"][0]["code"] == "exception"

    def unavailable(*_args: Any, **_kwargs: Any) -> Any:
        raise Unavailable("the database is unreachable; retry shortly")

    monkeypatch.setattr(ResourceService, "get_owned", unavailable)
    reply = admin.get(f"/fhir/R4/Patient/{chart['patient']['patientId']}")
    outcome(reply, 503)
    assert reply.headers["retry-after"]


# --- access and audit, as on /v1 --------------------------------------------------------------------------------


def _events(owner_conn, subject: str) -> list[tuple]:
    with owner_conn.cursor() as cur:
        cur.execute("SELECT action, resource_type, resource_id, outcome, patient_ids, break_glass "
                    "FROM medical_app.audit_event WHERE actor = %s ORDER BY audit_event_id", (subject,))
        return cur.fetchall()


def test_fhir_requests_are_audited_as_their_v1_equivalents(client, admin, chart, owner_conn):
    pid = chart["patient"]["patientId"]
    rid = chart["records"][0]["medicalRecordId"]
    pairs = [
        (f"/v1/patients/{pid}", f"/fhir/R4/Patient/{pid}"),
        (f"/v1/patients/{pid}/history", f"/fhir/R4/Patient/{pid}/_history"),
        (f"/v1/patients/{pid}/history/1", f"/fhir/R4/Patient/{pid}/_history/1"),
        (f"/v1/patients/{pid}/medical-records", f"/fhir/R4/Encounter?patient={pid}"),
        (f"/v1/medical-records/{rid}/prescriptions", f"/fhir/R4/MedicationRequest?encounter={rid}"),
        (f"/v1/patients?idCardNum={chart['patient']['idCardNum']}",
         f"/fhir/R4/Patient?identifier={chart['patient']['idCardNum']}"),
        (f"/v1/patients/{pid}/summary", f"/fhir/R4/Patient/{pid}/$everything"),
    ]
    for v1_path, fhir_path in pairs:
        v1_actor, fhir_actor = _unique("v1"), _unique("fhir")
        assert Api(client, auth.mint(v1_actor, ["read", "admin"])).get(v1_path).status == 200
        assert Api(client, auth.mint(fhir_actor, ["read", "admin"])).get(fhir_path).status == 200
        assert _events(owner_conn, fhir_actor) == _events(owner_conn, v1_actor), fhir_path
        assert len(_events(owner_conn, fhir_actor)) == 1
    # by patient across visits: a list of that patient's prescriptions
    actor = _unique("fhir")
    Api(client, auth.mint(actor, ["read", "admin"])).get(f"/fhir/R4/MedicationRequest?patient={pid}")
    assert _events(owner_conn, actor) == [("list", "patient.prescription", pid, "success", [pid], False)]


def test_a_clinician_outside_the_care_team_needs_the_glass_and_a_patient_sees_only_their_own(client, admin, chart,
                                                                                            owner_conn):
    pid = chart["patient"]["patientId"]
    rid = chart["records"][0]["medicalRecordId"]
    clinician = _unique("clinician")
    api = Api(client, auth.mint(clinician, ["read"]))
    refused = outcome(api.get(f"/fhir/R4/Patient/{pid}"), 403)
    assert "Break-Glass" in refused["issue"][0]["diagnostics"]
    outcome(api.get(f"/fhir/R4/Encounter?patient={pid}"), 403)
    reply = api.get(f"/fhir/R4/Patient/{pid}/$everything", headers=BREAK_GLASS)
    assert fhir(reply)["entry"] and reply.headers["break-glass-used"] == "true"
    assert _events(owner_conn, clinician)[-1][-1] is True
    # not on the team: a search lists none of the patient's data
    card = chart["patient"]["idCardNum"]
    assert fhir(api.get(f"/fhir/R4/Patient?identifier={card}"))["total"] == 0

    me = Api(client, auth.mint(_unique("patient"), ["read"], patient_id=pid))
    fhir(me.get(f"/fhir/R4/Patient/{pid}"))
    assert [e["resource"]["id"] for e in follow(me, "/fhir/R4/Encounter")] == [
        str(r["medicalRecordId"]) for r in chart["records"]
    ]
    other = admin.new_patient()
    other_record = admin.new_record(other["patientId"])["medicalRecordId"]
    # another patient's data reads exactly as data that does not exist
    for theirs, missing in (
        (f"/fhir/R4/Patient/{other['patientId']}", "/fhir/R4/Patient/987654321"),
        (f"/fhir/R4/Encounter/{other_record}", "/fhir/R4/Encounter/987654321"),
        (f"/fhir/R4/Patient/{other['patientId']}/$everything", "/fhir/R4/Patient/987654321/$everything"),
        (f"/fhir/R4/Patient/{other['patientId']}/_history", "/fhir/R4/Patient/987654321/_history"),
    ):
        a, b = me.get(theirs), me.get(missing)
        assert a.status == b.status == 404
        assert outcome(a, 404)["issue"][0]["diagnostics"].replace(str(other["patientId"]), "ID").replace(
            str(other_record), "ID") == outcome(b, 404)["issue"][0]["diagnostics"].replace("987654321", "ID")
    for search in (f"/fhir/R4/Encounter?patient={other['patientId']}",
                   f"/fhir/R4/MedicationRequest?encounter={other_record}",
                   f"/fhir/R4/Patient?identifier={other['idCardNum']}"):
        assert fhir(me.get(search))["total"] == 0, search
    assert fhir(me.get(f"/fhir/R4/Encounter?patient={rid}987"))["total"] == 0


def test_bundle_links_use_the_api_gateway_stage_and_host():
    from chalicelib.fhir import rest

    class Request:
        def __init__(self, headers: dict[str, str], context: dict[str, str]) -> None:
            self.headers, self.context = headers, context

        @staticmethod
        def path_str(name: str) -> str:
            return "7"

    domain = "abc123.execute-api.us-east-1.amazonaws.com"
    gateway = Request({"host": domain, "x-forwarded-proto": "https"},
                      {"domainName": domain, "path": "/api/fhir/R4/Patient/7", "resourcePath": "/fhir/R4/Patient/{id}"})
    assert rest.base_url(gateway) == f"https://{domain}/api/fhir/R4"
    spoofed = Request({"host": "evil.example/<script>"},
                      {"path": "/fhir/R4/Patient/7", "resourcePath": "/fhir/R4/Patient/{id}"})
    assert rest.base_url(spoofed) == "http://localhost/fhir/R4"
