"""Who may see which patient (SPEC §4): care teams, patient access, break-the-glass, and the audit of each decision.

The matrix test enumerates every protected route of both surfaces from the app itself (as the 401/403
tests do), so a route added later is covered without editing this file: each of seven callers calls each
route on a freshly made patient, and gets the expected status and exactly one expected audit event.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

import pytest

from chalicelib.api import auth
from tests.helpers import Api, Reply, patient_body, prescription_body, record_body

BREAK_GLASS = {"Break-Glass": "unconscious patient in the emergency room"}


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@dataclass
class Actor:
    name: str
    subject: str
    scopes: tuple[str, ...]
    patient_id: int | None = None   # the patient a patient-context token speaks for
    headers: dict[str, str] | None = None

    def api(self, client: Any) -> Api:
        token = auth.mint(self.subject, list(self.scopes), patient_id=self.patient_id)
        return _HeaderApi(client, token, self.headers or {})


class _HeaderApi(Api):
    """An Api that sends some headers (Break-Glass) on every request."""

    def __init__(self, client: Any, token: str, headers: dict[str, str]) -> None:
        super().__init__(client, token)
        self.extra = headers

    def call(self, method: str, path: str, body: Any = None, **kw: Any) -> Reply:
        kw["headers"] = {**self.extra, **(kw.get("headers") or {})}
        return super().call(method, path, body, **kw)


@dataclass
class Chart:
    """One patient with a visit and a prescription, and another patient (for patient-context callers)."""

    patient_id: int
    card_number: str
    record_id: int
    prescription_id: int


def new_chart(admin: Api) -> Chart:
    body = patient_body()
    pid = admin.new_patient(**body)["patientId"]
    rid = admin.new_record(pid)["medicalRecordId"]
    xid = admin.new_prescription(rid)["prescriptionId"]
    return Chart(pid, body["idCardNum"], rid, xid)


def registered() -> list[Any]:
    from chalicelib.api.meta import ALL_ROUTES

    return [spec for table in ALL_ROUTES for spec in table.routes if spec.scope is not None]


# --- how to call each route on a chart ------------------------------------------------------------

_LEGACY_KEY = {  # what {key} means on the original routes, per method (as the original had it)
    ("/patient/{key}", "GET"): "card_number",
    ("/patient/{key}", "PUT"): "patient_id",
    ("/patient/{key}", "DELETE"): "patient_id",
    ("/medicalrecord/{key}", "GET"): "patient_id",
    ("/medicalrecord/{key}", "PUT"): "record_id",
    ("/medicalrecord/{key}", "DELETE"): "record_id",
    ("/prescription/{key}", "GET"): "record_id",
    ("/prescription/{key}", "PUT"): "prescription_id",
    ("/prescription/{key}", "DELETE"): "prescription_id",
}
_V1_PARAM = {"patientId": "patient_id", "medicalRecordId": "record_id", "prescriptionId": "prescription_id"}
_FHIR_ID = {"Patient": "patient_id", "Encounter": "record_id", "MedicationRequest": "prescription_id"}
FHIR_SEARCHES = ("/fhir/R4/Patient", "/fhir/R4/Encounter", "/fhir/R4/MedicationRequest")
FHIR_NOT_SERVED = "$not-served"  # a system-level operation no table serves: 404, whoever asks


def request_for(spec: Any, chart: Chart, member: str) -> tuple[str, Any]:
    """A concrete, valid request of ``spec`` aimed at ``chart``'s patient: (path, body)."""

    def value(name: str) -> str:
        if name == "key":
            return str(getattr(chart, _LEGACY_KEY[(spec.path, spec.method)]))
        if name == "memberSub":
            return member
        if name in ("version", "vid"):
            return "1"
        if name == "id":  # /fhir/R4/<type>/{id}...
            return str(getattr(chart, _FHIR_ID[spec.path.split("/")[3]]))
        if name == "jobId":  # a bulk export job: never the caller's own here
            return "1"
        if name == "operation":
            return "$everything" if spec.path.startswith("/fhir/R4/Patient/") else FHIR_NOT_SERVED
        return str(getattr(chart, _V1_PARAM[name]))

    path = re.sub(r"{(\w+)}", lambda m: value(m.group(1)), spec.path)
    if spec.path == "/v1/audit/break-glass":
        path += "?since=2000-01-01T00:00:00Z"
    body: Any = None
    if spec.method in ("POST", "PUT", "PATCH") and not spec.path.endswith("/restore"):
        body = _body(spec, chart)
    return path, body


def _body(spec: Any, chart: Chart) -> Any:
    path, method = spec.path, spec.method
    if "/care-team/" in path:
        return {"role": "nurse"}
    if path == "/patient" or path == "/v1/patients":
        return patient_body()
    if path == "/medicalrecord":
        return {**_legacy(record_body()), "patientID": chart.patient_id}
    if path == "/prescription":
        return {**prescription_body(), "medicalRecordID": chart.record_id}
    if path in ("/patient/{key}", "/medicalrecord/{key}", "/prescription/{key}"):
        return {"/patient/{key}": {"firstName": "Malee"}, "/medicalrecord/{key}": {"diagnosis": "Dengue"},
                "/prescription/{key}": {"dose": "1 tablet"}}[path]
    if "prescriptions" in path:
        return prescription_body() if method != "PATCH" else {"dose": "1 tablet"}
    if "medical-records" in path:
        return record_body() if method != "PATCH" else {"diagnosis": "Dengue"}
    return patient_body() if method != "PATCH" else {"firstName": "Malee"}


def _legacy(body: dict[str, Any]) -> dict[str, Any]:
    renamed = dict(body)
    renamed["symtom"] = renamed.pop("symptom")
    return renamed


# --- what each caller should get ------------------------------------------------------------------

def route_kind(spec: Any) -> str:
    if "/care-team" in spec.path or spec.path.startswith("/v1/audit/"):
        return "admin"
    if spec.path.endswith("/access-log"):
        return "access-log"
    if spec.method == "GET" and spec.path in ("/v1/patients", "/patient", "/medicalrecord", "/prescription",
                                              *FHIR_SEARCHES):
        return "list-all"
    if spec.path == "/fhir/R4/{operation}":
        return "not-served"
    if spec.path.startswith("/fhir/R4/bulk-export/"):
        return "bulk-export"
    if spec.method == "POST" and spec.path in ("/v1/patients", "/patient"):
        return "register"
    return "patient-data"


def expected(actor: Actor, spec: Any) -> tuple[int, str, bool]:
    """(status, audit outcome, break-glass flag) for ``actor`` calling ``spec`` on a chart."""
    denied, hidden = (403, "denied", False), (404, "denied", False)
    success = (spec.status, "success", False)
    if spec.scope not in actor.scopes:
        return denied
    kind = route_kind(spec)
    if kind == "not-served":
        return (404, "none", False)  # no patient data is reached: nothing to audit
    if kind == "bulk-export":  # admins only (refusals audited); another caller's job does not exist for an admin
        return (404, "none", False) if actor.name == "admin" else denied
    if actor.name == "admin" or kind in ("list-all", "register"):
        return success
    if kind == "admin":
        raise AssertionError("only admins hold the admin scope here")
    if actor.name == "patient-self":
        return success  # read-only scope: only reads get this far
    if actor.name == "patient-other":
        return hidden
    if kind == "access-log":
        return denied  # admins and the patient themself only
    if actor.name == "on-team":
        return success
    if actor.name == "break-glass":
        return (spec.status, "success", True)
    return denied


@pytest.fixture(scope="module")
def admin(client) -> Api:
    return Api(client, auth.mint(_unique("admin"), ["read", "write", "admin"]))


@pytest.fixture(scope="module")
def other_patient(admin) -> int:
    return admin.new_patient()["patientId"]


def actors_for(chart: Chart, other_patient: int) -> list[Actor]:
    clinician = ("read", "write")
    return [
        Actor("admin", _unique("admin"), ("read", "write", "admin")),
        Actor("on-team", _unique("on-team"), clinician),
        Actor("off-team", _unique("off-team"), clinician),
        Actor("break-glass", _unique("break-glass"), clinician, headers=BREAK_GLASS),
        Actor("patient-self", _unique("patient"), ("read",), patient_id=chart.patient_id),
        Actor("patient-other", _unique("patient"), ("read",), patient_id=other_patient),
        Actor("no-scope", _unique("no-scope"), ()),
    ]


def audit_events(owner_conn, subject: str) -> list[tuple]:
    with owner_conn.cursor() as cur:
        cur.execute(
            "SELECT outcome, break_glass, reason, actor_kind, patient_ids, request_id, source_ip "
            "FROM medical_app.audit_event WHERE actor = %s ORDER BY audit_event_id",
            (subject,),
        )
        return cur.fetchall()


ACTOR_NAMES = ["admin", "on-team", "off-team", "break-glass", "patient-self", "patient-other", "no-scope"]


@pytest.mark.parametrize("actor_name", ACTOR_NAMES)
def test_every_route_answers_each_kind_of_caller_as_the_access_model_says(
    client, admin, other_patient, owner_conn, actor_name
):
    wrong = []
    specs = registered()
    assert len(specs) >= 39
    for spec in specs:
        chart = new_chart(admin)  # fresh for every call: writes and deletes must not leak into the next
        actor = next(a for a in actors_for(chart, other_patient) if a.name == actor_name)
        if actor.name == "on-team":
            granted = admin.put(f"/v1/patients/{chart.patient_id}/care-team/{actor.subject}", {"role": "attending"})
            assert granted.status == 200, granted.text
        path, body = request_for(spec, chart, member=_unique("member"))
        reply = actor.api(client).call(spec.method, path, body)
        status, outcome, break_glass = expected(actor, spec)
        label = f"{spec.method} {spec.path}"
        if reply.status != status:
            wrong.append(f"{label}: {reply.status} (expected {status}) {reply.text[:160]}")
            continue
        events = audit_events(owner_conn, actor.subject)
        if outcome == "none":
            if events:
                wrong.append(f"{label}: {len(events)} audit events (expected none)")
            continue
        if len(events) != 1:
            wrong.append(f"{label}: {len(events)} audit events (expected 1)")
            continue
        got_outcome, got_break_glass, reason, kind, patient_ids, request_id, _ip = events[0]
        if (got_outcome, got_break_glass) != (outcome, break_glass):
            wrong.append(f"{label}: audited {(got_outcome, got_break_glass)} (expected {(outcome, break_glass)})")
        if break_glass and reason != BREAK_GLASS["Break-Glass"]:
            wrong.append(f"{label}: break-the-glass reason not audited: {reason!r}")
        if break_glass != (reply.headers.get("break-glass-used") == "true"):
            wrong.append(f"{label}: Break-Glass-Used header {reply.headers.get('break-glass-used')!r}")
        if outcome == "denied" and not reason:
            wrong.append(f"{label}: a denial without a reason")
        expected_kind = {"admin": "admin", "patient-self": "patient", "patient-other": "patient"}.get(
            actor.name, "clinician"
        )
        if kind != expected_kind or not request_id:
            wrong.append(f"{label}: audited as {kind!r} with request id {request_id!r}")
        if route_kind(spec) == "patient-data" and status < 300 and chart.patient_id not in patient_ids:
            wrong.append(f"{label}: the audit event does not name the patient")
        if reply.headers.get("cache-control") != "no-store" or reply.headers.get("x-content-type-options") != "nosniff":
            wrong.append(f"{label}: no Cache-Control: no-store / X-Content-Type-Options: nosniff")
    assert not wrong, "\n".join(wrong)


# --- lists ------------------------------------------------------------------------------------------

LISTS = {
    "/v1/patients?limit=100": ("items", "patientId"),
    "/patient?limit=100": ("patients", "patientID"),
    "/medicalrecord?limit=100": ("medicalRecords", "patientID"),
}


def _listed_patients(api: Api, path: str) -> set[int]:
    """Every patient id a caller gets from a list, following every page."""
    key, field = LISTS[path]
    seen: set[int] = set()
    url = path
    while True:
        reply = api.get(url)
        assert reply.status == 200, reply.text
        seen |= {item[field] for item in reply.json[key]}
        cursor = reply.json["nextCursor"]
        if not cursor:
            return seen
        url = f"{path}&cursor={cursor}"


def test_a_clinician_lists_exactly_their_care_team_patients(client, admin):
    clinician = _unique("clinician")
    api = Api(client, auth.mint(clinician, ["read", "write"]))
    mine = {api.new_patient()["patientId"] for _ in range(3)}  # the creator joins the care team
    granted = new_chart(admin)
    admin.put(f"/v1/patients/{granted.patient_id}/care-team/{clinician}")
    mine.add(granted.patient_id)
    for pid in mine:
        api.new_record(pid)
    not_mine = new_chart(admin).patient_id
    for path in LISTS:
        assert _listed_patients(api, path) == mine, path
    assert not_mine not in _listed_patients(api, "/v1/patients?limit=100")
    # pages of 1 walk the same set, in key order, without repeats
    ids, url = [], "/v1/patients?limit=1"
    while url:
        page = api.get(url).json
        ids += [p["patientId"] for p in page["items"]]
        url = f"/v1/patients?limit=1&cursor={page['nextCursor']}" if page["nextCursor"] else None
    assert ids == sorted(mine)
    prescriptions = api.get("/prescription?limit=100").json["prescriptions"]
    assert {p["medicalRecordID"] for p in prescriptions} == {granted.record_id}  # only the granted chart has any


def test_searches_are_filtered_by_care_team_too(client, admin):
    clinician = _unique("clinician")
    api = Api(client, auth.mint(clinician, ["read"]))
    chart = new_chart(admin)
    by_card = f"/v1/patients?idCardNum={chart.card_number}"
    assert api.get(by_card).json["items"] == []
    admin.put(f"/v1/patients/{chart.patient_id}/care-team/{clinician}")
    assert [p["patientId"] for p in api.get(by_card).json["items"]] == [chart.patient_id]


def test_a_patient_lists_only_their_own_data(client, admin):
    chart = new_chart(admin)
    new_chart(admin)  # someone else's
    api = Api(client, auth.mint(_unique("patient"), ["read"], patient_id=chart.patient_id))
    for path in LISTS:
        assert _listed_patients(api, path) == {chart.patient_id}, path
    prescriptions = api.get("/prescription?limit=100").json["prescriptions"]
    assert [p["prescriptionID"] for p in prescriptions] == [chart.prescription_id]


def test_revoking_a_member_takes_effect_on_the_next_request(client, admin, owner_conn):
    clinician = _unique("clinician")
    api = Api(client, auth.mint(clinician, ["read", "write"]))
    chart = new_chart(admin)
    assert api.get(f"/v1/patients/{chart.patient_id}").status == 403
    granted = admin.put(f"/v1/patients/{chart.patient_id}/care-team/{clinician}", {"role": "nurse"})
    assert granted.status == 200 and granted.json["role"] == "nurse" and granted.json["revokedAt"] is None
    assert api.get(f"/v1/prescriptions/{chart.prescription_id}").status == 200
    assert admin.delete(f"/v1/patients/{chart.patient_id}/care-team/{clinician}").status == 204
    assert api.get(f"/v1/prescriptions/{chart.prescription_id}").status == 403
    assert chart.patient_id not in _listed_patients(api, "/v1/patients?limit=100")
    # the history of who had access is kept
    team = admin.get(f"/v1/patients/{chart.patient_id}/care-team").json["items"]
    revoked = [m for m in team if m["memberSub"] == clinician]
    assert len(revoked) == 1 and revoked[0]["revokedAt"] and revoked[0]["revokedBy"]
    # revoking again is not an error; a revocation cannot be undone in the database either
    assert admin.delete(f"/v1/patients/{chart.patient_id}/care-team/{clinician}").status == 204


def test_the_creator_of_a_patient_joins_its_care_team(client, admin):
    clinician = _unique("clinician")
    api = Api(client, auth.mint(clinician, ["read", "write"]))
    pid = api.new_patient()["patientId"]
    team = admin.get(f"/v1/patients/{pid}/care-team").json["items"]
    assert [(m["memberSub"], m["role"], m["grantedBy"]) for m in team] == [(clinician, "creator", clinician)]
    other = Api(client, auth.mint(_unique("clinician"), ["read", "write"]))
    reply = other.get(f"/v1/patients/{pid}")
    assert reply.status == 403
    assert reply.json["type"].endswith("break-glass-required") and "Break-Glass" in reply.json["detail"]


def test_changing_a_role_is_a_new_grant_and_keeps_the_old_one(admin):
    chart = new_chart(admin)
    member = _unique("clinician")
    first = admin.put(f"/v1/patients/{chart.patient_id}/care-team/{member}", {"role": "nurse"}).json
    same = admin.put(f"/v1/patients/{chart.patient_id}/care-team/{member}", {"role": "nurse"}).json
    assert same["careTeamMemberId"] == first["careTeamMemberId"]  # idempotent
    changed = admin.put(f"/v1/patients/{chart.patient_id}/care-team/{member}", {"role": "attending"}).json
    assert changed["careTeamMemberId"] != first["careTeamMemberId"] and changed["role"] == "attending"
    team = admin.get(f"/v1/patients/{chart.patient_id}/care-team").json["items"]
    rows = [m for m in team if m["memberSub"] == member]
    assert [(m["role"], m["revokedAt"] is None) for m in rows] == [("nurse", False), ("attending", True)]


def test_care_team_input_is_checked(admin):
    chart = new_chart(admin)
    base = f"/v1/patients/{chart.patient_id}/care-team"
    assert admin.put(f"{base}/someone", {"role": "Not A Role!"}).status == 400
    assert admin.put(f"{base}/someone", {"role": "nurse", "extra": 1}).status == 400
    assert admin.put(f"{base}/{'x' * 256}").status == 400
    assert admin.put("/v1/patients/987654321/care-team/someone").status == 404
    admin.delete(f"/v1/patients/{chart.patient_id}")
    assert admin.put(f"{base}/someone").status == 410


# --- patients never learn whether another patient exists --------------------------------------------

def test_a_patient_token_cannot_tell_another_patient_from_no_patient(client, admin):
    mine, theirs = new_chart(admin), new_chart(admin)
    api = Api(client, auth.mint(_unique("patient"), ["read", "write"], patient_id=mine.patient_id))
    missing = Chart(987654321, "9999999999999", 987654322, 987654323)
    for spec in registered():
        if route_kind(spec) in ("admin", "list-all", "register", "bulk-export") or spec.scope == "admin":
            continue
        answers = []
        for chart in (theirs, missing):
            path, body = request_for(spec, chart, member="m")
            reply = api.call(spec.method, path, body)
            answers.append((reply.status, reply.text.replace(str(chart.patient_id), "ID")))
        # Only the ids named in the path differ; status and body are otherwise identical.
        statuses = {a[0] for a in answers}
        assert len(statuses) == 1 and statuses <= {403, 404}, (spec.method, spec.path, answers)
        if spec.method == "GET":
            assert statuses == {404}, (spec.path, answers)


def test_a_patient_reads_their_own_access_log_and_sees_who_looked(client, admin):
    chart = new_chart(admin)
    clinician = _unique("clinician")
    Api(client, auth.mint(clinician, ["read"])).get(
        f"/v1/patients/{chart.patient_id}", headers=BREAK_GLASS
    )
    api = Api(client, auth.mint(_unique("patient"), ["read"], patient_id=chart.patient_id))
    log = api.get(f"/v1/patients/{chart.patient_id}/access-log")
    assert log.status == 200, log.text
    event = next(e for e in log.json["items"] if e["actor"] == clinician)
    assert event["breakGlass"] is True and event["reason"] == BREAK_GLASS["Break-Glass"]
    assert event["actorKind"] == "clinician"


def test_patient_tokens_may_not_write_even_with_the_write_scope(client, admin):
    chart = new_chart(admin)
    api = Api(client, auth.mint(_unique("patient"), ["read", "write"], patient_id=chart.patient_id))
    reply = api.patch(f"/v1/patients/{chart.patient_id}", {"firstName": "Self"})
    assert reply.status == 403 and "only read" in reply.json["detail"]
    assert api.post("/v1/patients", patient_body()).status == 403
    assert admin.get(f"/v1/patients/{chart.patient_id}").json["firstName"] != "Self"


# --- break-the-glass ---------------------------------------------------------------------------------

def test_break_glass_accesses_are_listed_for_review_with_their_reasons(client, admin):
    chart = new_chart(admin)
    clinician = _unique("clinician")
    api = Api(client, auth.mint(clinician, ["read", "write"]))
    reasons = ["cardiac arrest in ward 3", "patient unconscious, no ID"]
    for reason in reasons:
        reply = api.get(f"/v1/medical-records/{chart.record_id}", headers={"Break-Glass": reason})
        assert reply.status == 200 and reply.headers["break-glass-used"] == "true"
    review = admin.get("/v1/audit/break-glass?since=2000-01-01T00:00:00Z&limit=100")
    assert review.status == 200, review.text
    items = []
    page = review.json
    while True:
        items += page["items"]
        if not page["nextCursor"]:
            break
        page = admin.get(f"/v1/audit/break-glass?since=2000-01-01T00:00:00Z&limit=100&cursor={page['nextCursor']}")
        page = page.json
    mine = [e for e in items if e["actor"] == clinician]
    assert [(e["reason"], e["patientIds"], e["resourceType"]) for e in mine] == [
        (r, [chart.patient_id], "medical_record") for r in reasons
    ]
    assert all(e["breakGlass"] for e in items)
    # a time after them lists none of them
    future = admin.get("/v1/audit/break-glass?since=2999-01-01T00:00:00Z").json
    assert future["items"] == []
    assert admin.get("/v1/audit/break-glass").status == 400
    assert admin.get("/v1/audit/break-glass?since=yesterday").status == 400
    assert api.get("/v1/audit/break-glass?since=2000-01-01T00:00:00Z").status == 403


@pytest.mark.parametrize("reason", ["", "too short", " " * 20, "x" * 501, "line\u0000break!!!!"])
def test_a_break_glass_reason_must_say_something(client, admin, reason):
    chart = new_chart(admin)
    api = Api(client, auth.mint(_unique("clinician"), ["read"]))
    reply = api.get(f"/v1/patients/{chart.patient_id}", headers={"Break-Glass": reason})
    assert reply.status == 400, reply.text
    assert reply.json["errors"][0]["field"] == "Break-Glass"


def test_break_glass_on_the_original_routes_too(client, admin):
    chart = new_chart(admin)
    api = Api(client, auth.mint(_unique("clinician"), ["read", "write"]))
    refused = api.get(f"/medicalrecord/{chart.patient_id}")
    assert refused.status == 403 and "Break-Glass" in refused.json["error"]
    allowed = api.get(f"/medicalrecord/{chart.patient_id}", headers=BREAK_GLASS)
    assert allowed.status == 200 and allowed.headers["break-glass-used"] == "true"
    assert [r["medicalRecordID"] for r in allowed.json["medicalRecords"]] == [chart.record_id]


# --- a decision never outlives its token ---------------------------------------------------------------

def test_a_cached_authorizer_decision_is_refused_once_its_token_has_expired(client, admin, monkeypatch):
    """API Gateway may replay an authorizer's answer for minutes; the route layer checks the expiry it carries."""
    import time as _time

    from chalicelib.api import auth as auth_module

    chart = new_chart(admin)
    real_verify = auth_module.verify
    token = auth.mint(_unique("admin"), ["read", "write", "admin"])

    def cached_answer(header: str) -> Any:
        identity = real_verify(header)
        return type(identity)(identity.subject, identity.scopes, identity.patient_id, int(_time.time()) - 1)

    monkeypatch.setattr(auth_module, "verify", cached_answer)
    reply = Api(client, token).get(f"/v1/patients/{chart.patient_id}")
    assert reply.status == 401 and reply.json["message"] == "Unauthorized" and reply.json["status"] == 401
