"""The traffic mix of a clinician, as data: what each request is, how often, and the body it sends.

Shared by the Locust user (bench/load/locustfile.py) and the in-process limit (bench/load/inprocess.py),
so the limit replays exactly the requests the load generator sends.

70 % reads by id, 20 % searches and lists, 10 % writes; every request is on the clinician's own care
team (the patients its token created), so each one is an allowed, audited access.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any

# (name as reported, weight in percent, kind)
MIX: tuple[tuple[str, int, str], ...] = (
    ("GET /v1/patients/{id}", 35, "read"),
    ("GET /v1/medical-records/{id}", 20, "read"),
    ("GET /v1/patients/{id}/summary", 15, "read"),
    ("GET /v1/patients?limit=20", 8, "search"),
    ("GET /v1/patients?lastName=", 6, "search"),
    ("GET /v1/patients/{id}/medical-records", 6, "search"),
    ("POST /v1/patients/{id}/medical-records", 5, "write"),
    ("PATCH /v1/patients/{id}", 5, "write"),
)
KIND_SHARE = {kind: sum(w for _, w, k in MIX if k == kind) for kind in ("read", "search", "write")}
assert sum(w for _, w, _ in MIX) == 100 and KIND_SHARE == {"read": 70, "search": 20, "write": 10}


@dataclass(frozen=True)
class Request:
    name: str
    method: str
    path: str
    body: str | None = None


def visit_body(rng: random.Random) -> dict[str, Any]:
    return {
        "hospitalName": rng.choice(["Siriraj", "Ramathibodi", "Chulalongkorn", "Bumrungrad"]),
        "doctorFullName": rng.choice(["Dr. Anan Srisuk", "Dr. Malee Chai", "Dr. Preecha Wong"]),
        "diagnosis": rng.choice(["Hypertension", "Type 2 diabetes", "Influenza", "Migraine"]),
        "symptom": rng.choice(["headache", "fever", "fatigue", "cough"]),
        "treatmentStartDate": f"2026-{rng.randint(1, 10):02d}-{rng.randint(1, 28):02d}",
    }


def next_request(rng: random.Random, clinician: dict[str, Any]) -> Request:
    """One request of the mix for ``clinician`` (its ``patients``: [{id, lastName, recordIds}])."""
    name = rng.choices([m[0] for m in MIX], weights=[m[1] for m in MIX])[0]
    patient = rng.choice(clinician["patients"])
    pid = patient["id"]
    if name == "GET /v1/patients/{id}":
        return Request(name, "GET", f"/v1/patients/{pid}")
    if name == "GET /v1/medical-records/{id}":
        return Request(name, "GET", f"/v1/medical-records/{rng.choice(patient['recordIds'])}")
    if name == "GET /v1/patients/{id}/summary":
        return Request(name, "GET", f"/v1/patients/{pid}/summary")
    if name == "GET /v1/patients?limit=20":
        return Request(name, "GET", "/v1/patients?limit=20")
    if name == "GET /v1/patients?lastName=":
        return Request(name, "GET", f"/v1/patients?lastName={patient['lastName']}")
    if name == "GET /v1/patients/{id}/medical-records":
        return Request(name, "GET", f"/v1/patients/{pid}/medical-records")
    if name == "POST /v1/patients/{id}/medical-records":
        return Request(name, "POST", f"/v1/patients/{pid}/medical-records", json.dumps(visit_body(rng)))
    phone = f"08{rng.randint(0, 99_999_999):08d}"
    return Request(name, "PATCH", f"/v1/patients/{pid}", json.dumps({"phoneNum": phone}))


def headers(token: str, with_body: bool) -> dict[str, str]:
    values = {"Authorization": f"Bearer {token}"}
    if with_body:
        values["Content-Type"] = "application/json"
    return values
