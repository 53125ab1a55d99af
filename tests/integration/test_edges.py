"""Inputs at the edges: numbers that are not ASCII, bodies that are not UTF-8 JSON, sizes, unexpected failures.

Each answer is a 4xx in the surface's own error format (problem+json on /v1, ``{"error": ...}`` on the
original routes); nothing here may answer 500 except the simulated bug, and no input is silently repaired.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from tests.helpers import Api, Reply, patient_body

PROBLEM = "application/problem+json"


def raw_call(api: Api, method: str, path: str, body: bytes | None = None, content_type: str = "application/json"):
    """A request through the test client without Api's own checks (some of these must answer 500)."""
    headers = {"Authorization": f"Bearer {api.token}", "Content-Type": content_type}
    response = api.client.http.request(method, path, headers=headers, body=body)
    text = response.body.decode() if isinstance(response.body, bytes) else (response.body or "")
    return Reply(response.status_code, {k.lower(): v for k, v in response.headers.items()}, text)


def is_problem(reply: Reply, status: int) -> bool:
    return (
        reply.status == status
        and reply.headers["content-type"].startswith(PROBLEM)
        and reply.json["status"] == status
    )


def is_legacy_error(reply: Reply, status: int) -> bool:
    return reply.status == status and reply.headers["content-type"] == "application/json" and "error" in reply.json


@pytest.fixture
def chart(api) -> dict[str, int]:
    pid = api.new_patient()["patientId"]
    rid = api.new_record(pid)["medicalRecordId"]
    xid = api.new_prescription(rid)["prescriptionId"]
    return {"patient": pid, "record": rid, "prescription": xid}


NOT_ASCII_NUMBERS = ["١", "٥٢٩", "²", "１", "¹²", "፩", "𝟙", "1" * 20, "9" * 5000, "0x1", "1e3", "+1", " 1", "-1"]


@pytest.mark.parametrize("raw", NOT_ASCII_NUMBERS)
def test_only_ascii_digits_are_ids(api, chart, raw):
    for path in (f"/v1/patients/{raw}", f"/v1/prescriptions/{raw}", f"/v1/medical-records/{raw}/prescriptions"):
        reply = api.get(path)
        assert is_problem(reply, 400), (path, reply.text)
        assert reply.json["errors"][0]["field"] in ("patientId", "prescriptionId", "medicalRecordId")
    assert is_problem(api.delete(f"/v1/prescriptions/{raw}"), 400)
    assert is_legacy_error(api.put(f"/patient/{raw}", {"firstName": "X"}), 400)
    assert is_legacy_error(api.delete(f"/prescription/{raw}"), 400)
    # and nothing was deleted by a number that merely looks like one
    assert api.get(f"/v1/prescriptions/{chart['prescription']}").status == 200


@pytest.mark.parametrize("raw", ["١", "²", "5" * 5000, "0", "101", "-5", "1.5"])
def test_only_ascii_digits_are_limits(api, raw):
    assert is_problem(api.get(f"/v1/patients?limit={raw}"), 400)
    assert is_legacy_error(api.get(f"/patient?limit={raw}"), 400)


def test_cursors_that_are_not_ours_are_400(api):
    nested = base64.urlsafe_b64encode(("[" * 100_000 + "]" * 100_000).encode()).decode()
    forged = base64.urlsafe_b64encode(json.dumps({"after": {"after": 1}}).encode()).decode()
    for cursor in (nested, forged, "x" * 10_000, "¹"):
        reply = api.get(f"/v1/patients?cursor={cursor}")
        assert is_problem(reply, 400), reply.text[:200]
        assert is_legacy_error(api.get(f"/patient?cursor={cursor}"), 400)


def _legacy_patient() -> dict[str, Any]:
    return patient_body()


@pytest.mark.parametrize(
    ("content_type", "status"),
    [
        ("text/plain", 415),
        ("application/xml", 415),
        ("application/json; charset=iso-8859-1", 415),
        ("application/json; charset=utf-16", 415),
        ("application/json; charset=UTF-8", 201),
        ("application/merge-patch+json", 201),
    ],
)
def test_bodies_must_be_json_in_utf8(api, content_type, status):
    body = json.dumps(patient_body()).encode()
    v1 = raw_call(api, "POST", "/v1/patients", body, content_type)
    assert v1.status == status, v1.text
    if status == 415:
        assert is_problem(v1, 415)
        legacy = raw_call(api, "POST", "/patient", json.dumps(_legacy_patient()).encode(), content_type)
        assert is_legacy_error(legacy, 415)


def test_a_get_with_any_content_type_is_served(api, chart):
    reply = raw_call(api, "GET", f"/v1/patients/{chart['patient']}", None, "text/plain")
    assert reply.status == 200


@pytest.mark.parametrize(
    "body",
    [
        '{"idCardNum": "1234567890123", "firstName": "\xff\xfeSom", "lastName": "J", "birthDate": "1980-01-01"}'.encode(
            "latin-1"
        ),
        '{"idCardNum": "1234567890123", "firstName": "Som\ufffd", "lastName": "J", "birthDate": "1980-01-01"}'.encode(),
    ],
    ids=["not-utf8", "replacement-character"],
)
def test_a_body_that_is_not_utf8_is_refused_not_repaired(api, owner_conn, body):
    v1 = raw_call(api, "POST", "/v1/patients", body)
    assert is_problem(v1, 400) and "UTF-8" in v1.json["detail"]
    assert is_legacy_error(raw_call(api, "POST", "/patient", body), 400)
    with owner_conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM medical_app.patient WHERE first_name LIKE %s", ("%\ufffd%",))
        assert cur.fetchone()[0] == 0


def test_a_body_over_1mb_is_413_before_parsing(api):
    body = json.dumps({**patient_body(), "firstName": "x" * 1_000_001}).encode()
    assert is_problem(raw_call(api, "POST", "/v1/patients", body), 413)
    assert is_legacy_error(raw_call(api, "POST", "/patient", body), 413)


def test_an_error_list_is_capped(api):
    body = json.dumps({f"unknown{i}": i for i in range(100_000)})[:999_000].rsplit(",", 1)[0] + "}"
    reply = raw_call(api, "POST", "/v1/patients", body.encode())
    assert is_problem(reply, 400)
    assert len(reply.json["errors"]) <= 51 and len(reply.text) < 20_000
    assert reply.json["errors"][-1]["message"].startswith("and ")
    long_key = json.dumps({**patient_body(), "k" * 50_000: 1}).encode()
    reply = raw_call(api, "POST", "/v1/patients", long_key)
    assert is_problem(reply, 400) and len(reply.text) < 2_000


def test_an_unexpected_failure_answers_in_each_surface_own_format(api, chart, monkeypatch):
    from chalicelib.api.dependencies import services

    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(type(services().patients), "get_by_card_number", broken)
    monkeypatch.setattr(type(services().patients), "summary", broken)
    legacy = raw_call(api, "GET", "/patient/1234567890123")
    assert is_legacy_error(legacy, 500) and "a bug" not in legacy.text
    v1 = raw_call(api, "GET", f"/v1/patients/{chart['patient']}/summary")
    assert is_problem(v1, 500) and "a bug" not in v1.text
