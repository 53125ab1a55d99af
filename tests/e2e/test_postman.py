"""The Postman collection (postman/), run with Newman against the deployed stack.

Newman must pass every assertion, and the collection must reach every route the Chalice app declares:
a route added to the app without a request in the collection fails this test.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import jwt
import pytest

from tests.e2e.test_deployed_api import token

ROOT = Path(__file__).resolve().parents[2]
POSTMAN = ROOT / "postman"
COLLECTION = "medical-records.postman_collection.json"
ENVIRONMENT = "local.postman_environment.json"
NEWMAN = POSTMAN / "node_modules" / ".bin" / "newman"
CLINICIAN_SUBJECT = "postman-clinician"
PATIENT_TOKEN_PATIENT_ID = 999999999  # a patient the collection does not register: it must read as 404


def _install_newman() -> None:
    if NEWMAN.exists():
        return
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("Newman is not installed and npm is not on PATH: install Node.js (with npm), then "
                    "`cd postman && npm ci`")
    result = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=POSTMAN, capture_output=True, text=True,
                            timeout=600, check=False)
    if result.returncode != 0 or not NEWMAN.exists():
        pytest.fail(f"`npm ci` in postman/ failed (exit {result.returncode}); it installs the Newman pinned in "
                    f"postman/package-lock.json:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")


def _user_token(secret: str, subject: str, scopes: str, patient_id: int | None = None) -> str:
    """A clinician's or a patient's token, minted like the admin ``token`` (same issuer, audience, lifetime)."""
    admin = jwt.decode(token(secret), secret, algorithms=["HS256"], audience="medical-records-api")
    claims = {**admin, "sub": subject, "scope": scopes}
    if patient_id is not None:
        claims["patient_id"] = patient_id
    return jwt.encode(claims, secret, algorithm="HS256")


def _app_routes() -> set[tuple[str, str]]:
    from app import app

    return {(method, path) for path, methods in app.routes.items() for method in methods}


def _template_of(method: str, path: str, routes: set[tuple[str, str]]) -> tuple[str, str] | None:
    """The route (method, template) a concrete request path is served by: as API Gateway picks it, a literal
    segment wins over a variable one (/fhir/R4/metadata over /fhir/R4/{operation})."""
    matches = []
    for route_method, template in routes:
        pattern = "".join("[^/]+" if part.startswith("{") else re.escape(part)
                          for part in re.split(r"(\{[^}]+\})", template))
        if route_method == method and re.fullmatch(pattern, path):
            matches.append((route_method, template))
    return max(matches, key=lambda route: [not part.startswith("{") for part in route[1].split("/")], default=None)


def test_the_postman_collection_passes_and_covers_every_route(deployed, tmp_path):
    _install_newman()
    api, secret = deployed["api_url"], deployed["jwt_secret"]
    clinician = _user_token(secret, CLINICIAN_SUBJECT, "read write")
    patient = _user_token(secret, f"patient-{PATIENT_TOKEN_PATIENT_ID}", "read", PATIENT_TOKEN_PATIENT_ID)
    report = tmp_path / "newman.json"
    result = subprocess.run(
        [str(NEWMAN), "run", COLLECTION, "-e", ENVIRONMENT,
         "--env-var", f"baseUrl={api}", "--env-var", f"token={token(secret)}",
         "--env-var", f"clinicianToken={clinician}", "--env-var", f"patientToken={patient}",
         "--reporters", "cli,json", "--reporter-json-export", str(report),
         "--timeout-request", "60000", "--color", "off", "--disable-unicode"],
        cwd=POSTMAN, capture_output=True, text=True, timeout=600, check=False,
    )
    output = f"{result.stdout[-6000:]}\n{result.stderr[-2000:]}"
    assert result.returncode == 0, output
    run = json.loads(report.read_text())["run"]
    stats = run["stats"]
    assert stats["assertions"]["failed"] == 0, output
    assert stats["assertions"]["total"] >= 300, stats  # the collection lost its tests
    assert stats["testScripts"]["failed"] == 0 and stats["prerequestScripts"]["failed"] == 0, output
    assert run["failures"] == [], output

    routes = _app_routes()
    base_path = urlsplit(api).path.rstrip("/")
    reached: set[tuple[str, str]] = set()
    unknown = []
    for execution in run["executions"]:
        assert "response" in execution, f"no response to {execution['item']['name']!r}"
        request = execution["request"]
        if any(q.get("key") == "X-Amz-Signature" for q in request["url"].get("query") or []):
            continue  # a bulk export file fetched through its presigned S3 link: not a route of the app
        path = "/" + "/".join(request["url"]["path"])
        assert path.startswith(base_path + "/"), path
        path = path[len(base_path):]
        route = _template_of(request["method"], path, routes)
        if route is None:
            unknown.append(f"{request['method']} {path} ({execution['item']['name']})")
        else:
            reached.add(route)
    assert not unknown, f"requests to no route of the app: {unknown}"
    missing = sorted(routes - reached)
    assert not missing, f"routes no request of the collection reached: {missing}"
