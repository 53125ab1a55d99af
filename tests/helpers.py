"""Small helpers for calling the app through chalice's test client."""

from __future__ import annotations

import itertools
import json
import random
from dataclasses import dataclass
from typing import Any

_card_numbers = itertools.count(random.SystemRandom().randrange(10**11, 9 * 10**11))


def check_digit(first_twelve: str) -> str:
    """The Thai national ID check digit, computed here independently of the product's code."""
    total = sum(int(d) * (13 - i) for i, d in enumerate(first_twelve))
    return str((11 - total % 11) % 10)


def card_number() -> str:
    """A valid 13-digit Thai national ID not used before in this run."""
    first_twelve = f"{next(_card_numbers):012d}"
    return first_twelve + check_digit(first_twelve)


def passport_number() -> str:
    """A passport number not used before in this run."""
    return f"P{next(_card_numbers):012d}"


def patient_body(**overrides: Any) -> dict[str, Any]:
    body = {
        "idCardNum": card_number(),
        "firstName": "Somchai",
        "lastName": "Jaidee",
        "birthDate": "1980-04-12",
        "phoneNum": "0812345678",
    }
    body.update(overrides)
    return body


def record_body(**overrides: Any) -> dict[str, Any]:
    body = {
        "hospitalName": "Siriraj Hospital",
        "doctorFullName": "Dr. Malee Srisuk",
        "diagnosis": "Influenza",
        "symptom": "Fever and cough",
        "treatmentStartDate": "2024-01-10",
        "treatmentEndDate": "2024-01-17",
    }
    body.update(overrides)
    return body


def prescription_body(**overrides: Any) -> dict[str, Any]:
    body = {"medicineName": "Oseltamivir", "dose": "75 mg twice daily"}
    body.update(overrides)
    return body


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    text: str

    @property
    def json(self) -> Any:
        return json.loads(self.text) if self.text else None


class Api:
    def __init__(self, client: Any, token: str | None) -> None:
        self.client = client
        self.token = token

    def as_token(self, token: str | None) -> Api:
        return Api(self.client, token)

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: str | bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        all_headers = {"Content-Type": "application/json"}
        if self.token is not None:
            all_headers["Authorization"] = f"Bearer {self.token}"
        all_headers.update(headers or {})
        payload = raw if raw is not None else (json.dumps(body) if body is not None else None)
        response = self.client.http.request(method, path, headers=all_headers, body=payload)
        text = response.body.decode() if isinstance(response.body, bytes) else (response.body or "")
        # No input anywhere in the suite may produce a 500: every request made through here is checked.
        assert response.status_code != 500, f"{method} {path} answered 500: {text}"
        return Reply(response.status_code, {k.lower(): v for k, v in response.headers.items()}, text)

    def get(self, path: str, **kw: Any) -> Reply:
        return self.call("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> Reply:
        return self.call("POST", path, body, **kw)

    def put(self, path: str, body: Any = None, **kw: Any) -> Reply:
        return self.call("PUT", path, body, **kw)

    def patch(self, path: str, body: Any = None, **kw: Any) -> Reply:
        return self.call("PATCH", path, body, **kw)

    def delete(self, path: str, **kw: Any) -> Reply:
        return self.call("DELETE", path, **kw)

    # -- fixtures through the API ----------------------------------------------------------------

    def new_patient(self, **overrides: Any) -> dict[str, Any]:
        reply = self.post("/v1/patients", patient_body(**overrides))
        assert reply.status == 201, reply.text
        return reply.json

    def new_record(self, patient_id: int, **overrides: Any) -> dict[str, Any]:
        reply = self.post(f"/v1/patients/{patient_id}/medical-records", record_body(**overrides))
        assert reply.status == 201, reply.text
        return reply.json

    def new_prescription(self, record_id: int, **overrides: Any) -> dict[str, Any]:
        reply = self.post(f"/v1/medical-records/{record_id}/prescriptions", prescription_body(**overrides))
        assert reply.status == 201, reply.text
        return reply.json
