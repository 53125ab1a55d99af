"""Authentication and scopes on every route (SPEC §4).

Routes are enumerated from what Chalice registered, so a route added later is covered without editing
this file. Every route except /health and /openapi.json needs a valid bearer token (401 otherwise), and
a token without the route's scope is answered 403 (read for GET, write for changes, admin for the
access log).
"""

from __future__ import annotations

import base64
import json
import os
import re
import time
from typing import Any

import jwt
import pytest

from chalicelib.api import auth
from chalicelib.config import get_settings
from tests.helpers import Reply

# The FHIR CapabilityStatement is public too: FHIR clients read it before they have a token.
PUBLIC = {("/health", "GET"), ("/openapi.json", "GET"), ("/fhir/R4/metadata", "GET")}
PROBLEM_JSON = "application/problem+json"
OTHER_SECRET = "not-the-api-secret-" + "x" * 64

# HS512 with the (32-byte) API secret is one of the bad tokens on purpose.
pytestmark = pytest.mark.filterwarnings("ignore:The HMAC key is:jwt.warnings.InsecureKeyLengthWarning")


def registered_routes() -> list[tuple[str, str, Any]]:
    """(path, method, RouteEntry) for every route Chalice knows."""
    from app import app

    return [(path, method, entry) for path, methods in app.routes.items() for method, entry in methods.items()]


def route_specs() -> dict[tuple[str, str], Any]:
    from chalicelib.api.meta import ALL_ROUTES

    return {(spec.path, spec.method): spec for table in ALL_ROUTES for spec in table.routes}


def concrete(path: str, value: str = "1") -> str:
    return re.sub(r"{\w+}", value, path)


PROTECTED = [
    pytest.param(path, method, id=f"{method} {path}")
    for path, method, _ in registered_routes()
    if (path, method) not in PUBLIC
]


def call(client: Any, method: str, path: str, authorization: str | None) -> Reply:
    headers = {"Content-Type": "application/json"}
    if authorization is not None:
        headers["Authorization"] = authorization
    body = json.dumps({"probe": 1}) if method in ("POST", "PUT", "PATCH") else None
    response = client.http.request(method, path, headers=headers, body=body)
    text = response.body.decode() if isinstance(response.body, bytes) else (response.body or "")
    return Reply(response.status_code, {k.lower(): v for k, v in response.headers.items()}, text)


def now() -> int:
    return int(time.time())


def claims(**overrides: Any) -> dict[str, Any]:
    settings = get_settings()
    base = {
        "sub": "intruder-1",
        "scope": "read write admin",
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "iat": now(),
        "exp": now() + 3600,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def signed(**overrides: Any) -> str:
    """A token signed with the real key, with some claims changed (None removes a claim)."""
    return jwt.encode(claims(**overrides), os.environ["JWT_SECRET"], algorithm="HS256")


def unsigned_token() -> str:
    """alg "none", built by hand so it does not depend on the JWT library allowing it."""

    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims())}."


def _tampered() -> str:
    """A real token whose payload was changed after signing (scope raised), keeping the signature."""
    token = auth.mint("reader-1", ["read"])
    header, payload, signature = token.split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    data["scope"] = "read write admin"
    forged = base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")
    return f"{header}.{forged}.{signature}"


BAD_CREDENTIALS: dict[str, Any] = {
    "no-header": lambda: None,
    "empty-header": lambda: "",
    "bearer-without-token": lambda: "Bearer ",
    "basic-scheme": lambda: "Basic " + base64.b64encode(b"admin:admin").decode(),
    "token-without-scheme": lambda: auth.mint("clinician-1", ["read", "write", "admin"]),
    "garbage-token": lambda: "Bearer not.a.jwt",
    "other-secret": lambda: "Bearer " + auth.mint("clinician-1", ["read", "write", "admin"], secret=OTHER_SECRET),
    "expired": lambda: "Bearer " + auth.mint("clinician-1", ["read", "write", "admin"], ttl_seconds=-3600),
    "alg-none-by-hand": lambda: "Bearer " + unsigned_token(),
    "alg-none-pyjwt": lambda: "Bearer " + jwt.encode(claims(), None, algorithm="none"),
    "wrong-issuer": lambda: "Bearer " + signed(iss="someone-else"),
    "wrong-audience": lambda: "Bearer " + signed(aud="another-api"),
    "no-issuer": lambda: "Bearer " + signed(iss=None),
    "no-audience": lambda: "Bearer " + signed(aud=None),
    "no-expiry": lambda: "Bearer " + signed(exp=None),
    "no-subject": lambda: "Bearer " + signed(sub=None),
    "not-yet-valid": lambda: "Bearer " + signed(nbf=now() + 3600),
    "other-hmac-algorithm": lambda: "Bearer " + jwt.encode(claims(), os.environ["JWT_SECRET"], algorithm="HS512"),
    "tampered-payload": lambda: "Bearer " + _tampered(),
    # claim hardening: exact types and bounds, whatever the JWT library would tolerate
    "empty-subject": lambda: "Bearer " + signed(sub=""),
    "blank-subject": lambda: "Bearer " + signed(sub="   "),
    "subject-too-long": lambda: "Bearer " + signed(sub="x" * 256),
    "subject-not-a-string": lambda: "Bearer " + signed(sub=12345),
    "expiry-as-string": lambda: "Bearer " + signed(exp=str(now() + 3600)),
    "issued-at-as-string": lambda: "Bearer " + signed(iat=str(now())),
    "not-before-as-string": lambda: "Bearer " + signed(nbf=str(now())),
    "expiry-as-boolean": lambda: "Bearer " + signed(exp=True),
    "no-issued-at": lambda: "Bearer " + signed(iat=None),
    "lifetime-of-100-years": lambda: "Bearer " + signed(exp=now() + 100 * 365 * 24 * 3600),
    "issued-in-the-future": lambda: "Bearer " + signed(iat=now() + 3600, exp=now() + 7200),
    "patient-id-letters": lambda: "Bearer " + signed(patient_id="abc"),
    "patient-id-negative": lambda: "Bearer " + signed(patient_id=-1),
    "patient-id-zero": lambda: "Bearer " + signed(patient_id=0),
    "patient-id-non-ascii-digit": lambda: "Bearer " + signed(patient_id="١"),
    "patient-id-too-large": lambda: "Bearer " + signed(patient_id=2**63),
    "patient-id-float": lambda: "Bearer " + signed(patient_id=7.0),
    "id-token": lambda: "Bearer " + signed(token_use="id"),
}


@pytest.fixture(scope="module")
def credentials() -> dict[str, str | None]:
    return {name: make() for name, make in BAD_CREDENTIALS.items()}


def test_every_registered_route_is_in_the_route_table_and_vice_versa():
    """The enumeration below is complete: Chalice's routes and the declarative table agree."""
    registered = {(path, method) for path, method, _ in registered_routes()}
    assert registered == set(route_specs())
    assert registered >= PUBLIC
    assert len(PROTECTED) == len(registered) - len(PUBLIC) >= 30


@pytest.mark.parametrize(("path", "method"), PROTECTED)
def test_protected_route_has_the_authorizer_and_a_scope(path, method):
    entry = dict(((p, m), e) for p, m, e in registered_routes())[(path, method)]
    assert entry.authorizer is not None
    assert route_specs()[(path, method)].scope in auth.SCOPES


@pytest.mark.parametrize(("path", "method"), sorted(PUBLIC))
def test_public_route_has_no_authorizer(path, method):
    entry = dict(((p, m), e) for p, m, e in registered_routes())[(path, method)]
    assert entry.authorizer is None
    assert route_specs()[(path, method)].scope is None


def test_the_bad_tokens_really_are_bad():
    """Guard against a helper producing a token that fails for an unintended reason."""
    for name, make in BAD_CREDENTIALS.items():
        header = make()
        with pytest.raises(auth.Unauthenticated):
            auth.verify(header)
        assert name  # every case is named
    # ...and a correctly built token with the same helpers is accepted.
    good = claims()
    identity = auth.verify("Bearer " + signed(**good))
    assert identity == auth.Identity("intruder-1", "read write admin", None, good["exp"])
    # the claims the table corrupts are accepted in their proper form
    assert auth.verify("Bearer " + signed(patient_id="42", nbf=now())).patient_id == 42
    assert auth.verify("Bearer " + signed(patient_id=42, exp=now() + 43200)).patient_id == 42


@pytest.mark.parametrize("case", list(BAD_CREDENTIALS))
def test_bad_credentials_are_401_on_every_protected_route(client, owner_conn, credentials, case):
    counts_sql = (
        "SELECT (SELECT count(*) FROM medical_app.patient), (SELECT count(*) FROM medical_app.medical_record),"
        " (SELECT count(*) FROM medical_app.prescription), (SELECT count(*) FROM medical_app.audit_event),"
        " (SELECT max(updated_timestamp) FROM medical_app.patient)"
    )
    with owner_conn.cursor() as cur:
        cur.execute(counts_sql)
        before = cur.fetchone()
    wrong = []
    for param in PROTECTED:
        path, method = param.values
        reply = call(client, method, concrete(path), credentials[case])
        if reply.status != 401:
            wrong.append(f"{method} {path} -> {reply.status}")
        elif "probe" in reply.text or "patient" in reply.text.lower():
            wrong.append(f"{method} {path} leaked a body: {reply.text[:100]}")
    assert not wrong, wrong
    with owner_conn.cursor() as cur:
        cur.execute(counts_sql)
        assert cur.fetchone() == before  # no handler ran: nothing written, not even an audit event


def test_401_body_is_json_and_says_unauthorized(client):
    from chalicelib.api.problems import UNAUTHENTICATED

    reply = call(client, "GET", "/v1/patients", None)  # no header: the local gateway's own answer
    assert reply.status == 401
    assert reply.json["message"] == "Unauthorized"
    reply = call(client, "GET", "/v1/patients", "Bearer not.a.jwt")  # refused by the authorizer
    assert reply.status == 401 and reply.json == UNAUTHENTICATED


def token_without(scope: str) -> str:
    return auth.mint(f"no-{scope}", [s for s in auth.SCOPES if s != scope])


def test_required_scopes_follow_the_method():
    for (path, method), spec in route_specs().items():
        if (path, method) in PUBLIC:
            continue
        if "/care-team" in path or path.startswith(("/v1/audit/", "/fhir/R4/bulk-export/")):
            assert spec.scope == "admin", (method, path)  # managing access and reviewing it; bulk exports
        elif method == "GET":
            assert spec.scope == "read", (method, path)
        else:
            assert spec.scope == "write", (method, path)


@pytest.mark.parametrize(("path", "method"), PROTECTED)
def test_token_without_the_route_scope_is_403(client, path, method):
    spec = route_specs()[(path, method)]
    for token in (token_without(spec.scope), auth.mint("no-scopes", [])):
        reply = call(client, method, concrete(path), f"Bearer {token}")
        assert reply.status == 403, reply.text
        content_type = reply.headers["content-type"].split(";")[0].strip()
        if spec.error_schema == "OperationOutcome":  # FHIR answers errors as OperationOutcomes
            assert content_type == spec.media_type
            outcome = reply.json
            assert outcome["resourceType"] == "OperationOutcome" and outcome["issue"][0]["code"] == "forbidden"
            assert spec.scope in outcome["issue"][0]["diagnostics"]
        elif spec.error_renderer is None:
            assert content_type == PROBLEM_JSON
            problem = reply.json
            assert problem["status"] == 403 and problem["title"] and problem["type"]
            assert spec.scope in problem["detail"]
        else:  # the original routes answer errors as {"error": ...}
            assert content_type == "application/json"
            assert spec.scope in reply.json["error"]


@pytest.mark.parametrize(("path", "method"), PROTECTED)
def test_exactly_the_route_scope_is_enough(client, path, method):
    """The other side of the 403s: holding only the required scope gets past authorization.
    Ids that do not exist keep this from changing anything."""
    spec = route_specs()[(path, method)]
    token = auth.mint(f"only-{spec.scope}", [spec.scope])
    reply = call(client, method, concrete(path, "987654321"), f"Bearer {token}")
    assert reply.status not in (401, 403), reply.text
    assert reply.status < 500, reply.text


def test_scope_claim_values_outside_the_known_set_grant_nothing(client):
    token = signed(scope="superuser read:all write* ADMIN")
    reply = call(client, "GET", "/v1/patients", f"Bearer {token}")
    assert reply.status == 403


def test_lowercase_bearer_scheme_is_accepted(client, tokens):
    reply = call(client, "GET", "/v1/patients?limit=1", f"bearer {tokens['read']}")
    assert reply.status == 200, reply.text


def test_health_needs_no_token(client):
    for authorization in (None, "Bearer not.a.jwt"):
        reply = call(client, "GET", "/health", authorization)
        assert reply.status == 200, reply.text
        assert reply.json["status"] == "ok"


def test_openapi_needs_no_token(client):
    for authorization in (None, "Bearer not.a.jwt"):
        reply = call(client, "GET", "/openapi.json", authorization)
        assert reply.status == 200, reply.text
        assert reply.json["openapi"].startswith("3.1")
