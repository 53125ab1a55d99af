"""The data a load test runs on, made through the API it loads: each clinician's token registers its
own patients (so it joins their care teams) and one visit each, exactly as a clinic would."""

from __future__ import annotations

import http.client
import json
import random
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.load.mix import visit_body

_FUNCTIONS = str(Path(__file__).resolve().parents[2] / "functions")
if _FUNCTIONS not in sys.path:
    sys.path.insert(0, _FUNCTIONS)
from chalicelib.domain import identifiers  # noqa: E402 - after the path set-up

LAST_NAMES = ("Jaidee", "Srisuk", "Wongsawat", "Chaiyaporn", "Kittisak", "Boonmee", "Suksawat", "Rattanakul")
FIRST_NAMES = ("Somchai", "Malee", "Anan", "Preecha", "Suda", "Kanya", "Niran", "Porntip")


class SetupError(RuntimeError):
    """The API refused a set-up request (the message has the route and status, never the body)."""


class ApiClient:
    """One keep-alive HTTP connection per thread to ``base_url``."""

    def __init__(self, base_url: str, timeout: float = 60) -> None:
        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.prefix = parts.path.rstrip("/")
        self.timeout = timeout
        self.local = threading.local()

    def _connection(self) -> http.client.HTTPConnection:
        if getattr(self.local, "conn", None) is None:
            self.local.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        return self.local.conn

    def request(self, method: str, path: str, token: str, body: Any = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"}
        payload = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            payload = json.dumps(body)
        for attempt in range(3):  # an emulator's cold worker may drop the first connection
            conn = self._connection()
            try:
                conn.request(method, self.prefix + path, body=payload, headers=headers)
                response = conn.getresponse()
                data = response.read()
                return response.status, (json.loads(data) if data else None)
            except (OSError, http.client.HTTPException):
                conn.close()
                self.local.conn = None
                if attempt == 2:
                    raise
                time.sleep(1)
        raise AssertionError("unreachable")


def build(api_url: str, tokens: dict[str, str], patients_per_clinician: int, seed: int = 7,
          threads: int = 8) -> list[dict[str, Any]]:
    """For each clinician (subject → token): ``patients_per_clinician`` patients with one visit each.
    Returns [{subject, token, patients: [{id, lastName, recordIds}]}] in the order of ``tokens``."""
    client = ApiClient(api_url)
    rng = random.Random(seed)
    card_base = rng.randint(10**11, 9 * 10**11)
    jobs = []
    for c_index, (subject, token) in enumerate(tokens.items()):
        for p_index in range(patients_per_clinician):
            n = c_index * patients_per_clinician + p_index
            jobs.append((subject, token, {
                "idCardNum": f"{card_base + n}{identifiers.national_id_check_digit(str(card_base + n))}",
                "firstName": FIRST_NAMES[n % len(FIRST_NAMES)],
                "lastName": LAST_NAMES[(n // len(FIRST_NAMES)) % len(LAST_NAMES)],
                "birthDate": f"{1940 + n % 70}-{1 + n % 12:02d}-{1 + n % 28:02d}",
            }, random.Random(seed + n)))
    done = [0]
    lock = threading.Lock()

    def register(job: tuple[str, str, dict[str, Any], random.Random]) -> tuple[str, dict[str, Any]]:
        subject, token, patient, job_rng = job
        status, created = client.request("POST", "/v1/patients", token, patient)
        if status != 201:
            raise SetupError(f"POST /v1/patients answered {status}")
        pid = created["patientId"]
        status, visit = client.request("POST", f"/v1/patients/{pid}/medical-records", token, visit_body(job_rng))
        if status != 201:
            raise SetupError(f"POST /v1/patients/{{id}}/medical-records answered {status}")
        with lock:
            done[0] += 1
            if done[0] % 200 == 0 or done[0] == len(jobs):
                print(f"  set-up: {done[0]}/{len(jobs)} patients", file=sys.stderr)
        return subject, {"id": pid, "lastName": patient["lastName"], "recordIds": [visit["medicalRecordId"]]}

    with ThreadPoolExecutor(threads) as pool:
        made = list(pool.map(register, jobs))
    clinicians = {subject: {"subject": subject, "token": token, "patients": []} for subject, token in tokens.items()}
    for subject, patient in made:
        clinicians[subject]["patients"].append(patient)
    return list(clinicians.values())
