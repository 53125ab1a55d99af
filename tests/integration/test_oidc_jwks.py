"""OIDC tokens verified with the issuer's JWKS (SPEC §4, Authentication).

A test issuer serves a JWKS over HTTP on 127.0.0.1 (an RSA and a P-256 key, plus keys that must never
be used: a 1024-bit RSA key and a symmetric one); tokens are signed with the matching private keys.
OIDC is configured through the environment for each test, as deployed, and the settings and key
caches are cleared before and after.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from chalicelib import config
from chalicelib.api import auth, jwks

ISSUER = "https://issuer.example.test/pool-1"
AUDIENCE = "medical-records-client"
PREFIX = "medical-records"
# The 1024-bit RSA key is one of the keys that must be refused, on purpose.
pytestmark = pytest.mark.filterwarnings("ignore:The RSA key is:jwt.warnings.InsecureKeyLengthWarning")


@dataclass(frozen=True)
class SigningKey:
    kid: str
    alg: str
    private: Any

    def jwk(self) -> dict[str, Any]:
        algorithm = jwt.algorithms.RSAAlgorithm if self.alg == "RS256" else jwt.algorithms.ECAlgorithm
        data = algorithm.to_jwk(self.private.public_key(), as_dict=True)
        return {**data, "kid": self.kid, "alg": self.alg, "use": "sig"}

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def _rsa(kid: str, bits: int = 2048) -> SigningKey:
    return SigningKey(kid, "RS256", rsa.generate_private_key(public_exponent=65537, key_size=bits))


@pytest.fixture(scope="module")
def keys() -> dict[str, SigningKey]:
    return {
        "rsa": _rsa("rsa-1"),
        "ec": SigningKey("ec-1", "ES256", ec.generate_private_key(ec.SECP256R1())),
        "impostor": _rsa("rsa-1"),  # same kid as "rsa", another key
        "rotated": _rsa("rsa-2"),
        "small": _rsa("rsa-small", bits=1024),
    }


OCT_SECRET = b"a-symmetric-key-the-issuer-should-never-publish"
OCT_JWK = {"kty": "oct", "kid": "oct-1", "k": base64.urlsafe_b64encode(OCT_SECRET).decode().rstrip("=")}


class Issuer:
    """A JWKS endpoint on a free loopback port: serves ``jwks``, counts requests, can be made to fail."""

    def __init__(self, jwks_keys: list[dict[str, Any]]) -> None:
        self.jwks_keys = jwks_keys
        self.requests = 0
        self.down = False
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                issuer.requests += 1
                if issuer.down:
                    self.send_error(503)
                    return
                body = json.dumps({"keys": issuer.jwks_keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/.well-known/jwks.json"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def environment(**values: str | None) -> Iterator[None]:
    """Set (or, with None, remove) environment variables for a block, with fresh settings and keys."""

    def fresh() -> None:
        config.get_settings.cache_clear()
        config.jwt_secret.cache_clear()
        jwks.reset()

    previous = {name: os.environ.get(name) for name in values}
    for name, value in values.items():
        _set(name, value)
    fresh()
    try:
        yield
    finally:
        for name, value in previous.items():
            _set(name, value)
        fresh()


def _set(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


@pytest.fixture
def issuer(keys) -> Iterator[Issuer]:
    server = Issuer([keys["rsa"].jwk(), keys["ec"].jwk(), keys["small"].jwk(), OCT_JWK])
    yield server
    server.close()


@pytest.fixture
def oidc(issuer) -> Iterator[Issuer]:
    """OIDC configured for one test against the test issuer; dev tokens stay configured too."""
    with environment(OIDC_ISSUER=ISSUER, OIDC_AUDIENCE=AUDIENCE, OIDC_JWKS_URL=issuer.url, OIDC_SCOPE_PREFIX=PREFIX):
        yield issuer


def now() -> int:
    return int(time.time())


def token(key: SigningKey, *, kid: str | None = None, **overrides: Any) -> str:
    """A token of the test issuer signed with ``key`` (None removes a claim)."""
    payload = {
        "sub": "oidc-user-1",
        "iss": ISSUER,
        "aud": AUDIENCE,
        "scope": "read write admin",
        "iat": now(),
        "exp": now() + 900,
    }
    payload.update(overrides)
    payload = {k: v for k, v in payload.items() if v is not None}
    return jwt.encode(payload, key.private, algorithm=key.alg, headers={"kid": kid or key.kid})


def by_hand(header: dict[str, Any], payload: dict[str, Any], sign) -> str:
    """A token built without the JWT library, for what it rightly refuses to produce."""

    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    signing_input = f"{part(header)}.{part(payload)}"
    signature = base64.urlsafe_b64encode(sign(signing_input.encode())).decode().rstrip("=")
    return f"{signing_input}.{signature}"


def standard_claims(**overrides: Any) -> dict[str, Any]:
    payload = {"sub": "oidc-user-1", "iss": ISSUER, "aud": AUDIENCE, "scope": "read write admin",
               "iat": now(), "exp": now() + 900}
    payload.update(overrides)
    return payload


def alg_confusion(keys: dict[str, SigningKey]) -> str:
    """HS256 'signed' with the issuer's RSA public key (PEM) as the HMAC secret."""
    pem = keys["rsa"].public_pem()
    return by_hand({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}, standard_claims(),
                   lambda data: hmac.new(pem, data, hashlib.sha256).digest())


def authorize(authorization: str) -> dict[str, Any]:
    """Call the app's authorizer as API Gateway does (a TOKEN event) and return its policy."""
    from app import jwt_authorizer

    event = {"type": "TOKEN", "authorizationToken": authorization,
             "methodArn": "arn:aws:execute-api:us-east-1:123456789012:abcdef/api/GET/v1/patients"}
    return jwt_authorizer(event, {})


# --- accepted ---------------------------------------------------------------------------------------


def test_rs256_and_es256_tokens_are_accepted_and_keys_fetched_once(oidc, keys):
    assert oidc.requests == 0  # nothing fetched before the first OIDC token
    for key in (keys["rsa"], keys["ec"]):
        exp = now() + 600
        identity = auth.verify("Bearer " + token(key, exp=exp))
        assert identity == auth.Identity("oidc-user-1", "read write admin", None, exp)
    assert oidc.requests == 1


def test_float_times_and_a_patient_token(oidc, keys):
    exp = time.time() + 600.75
    identity = auth.verify("Bearer " + token(keys["ec"], exp=exp, iat=time.time(), scope="read", patient_id="42"))
    assert identity == auth.Identity("oidc-user-1", "read", 42, int(exp))


def test_the_authorizer_passes_identity_and_expiry_on(oidc, keys):
    exp = now() + 600
    policy = authorize("Bearer " + token(keys["rsa"], exp=exp, patient_id=7, scope="read"))
    assert policy["principalId"] == "oidc-user-1"
    assert policy["context"] == {"scope": "read", "patient_id": "7", "exp": str(exp)}
    assert policy["policyDocument"]["Statement"][0]["Effect"] == "Allow"
    policy = authorize("Bearer " + token(keys["ec"], exp=exp))
    assert policy["context"] == {"scope": "read write admin", "patient_id": "", "exp": str(exp)}
    with pytest.raises(Exception, match="Unauthorized"):
        authorize("Bearer " + token(keys["impostor"]))


def test_oidc_tokens_get_through_the_app(client, oidc, keys):
    for key in (keys["rsa"], keys["ec"]):
        headers = {"Authorization": f"Bearer {token(key)}"}
        response = client.http.get("/v1/patients?limit=1", headers=headers)
        assert response.status_code != 401, response.body
    bad = {"Authorization": f"Bearer {token(keys['impostor'])}"}
    assert client.http.get("/v1/patients?limit=1", headers=bad).status_code == 401


# --- refused ----------------------------------------------------------------------------------------

REFUSED = {
    "wrong-key-same-kid": lambda k: token(k["impostor"]),
    "unknown-kid": lambda k: token(k["rsa"], kid="no-such-key"),
    "no-kid": lambda k: jwt.encode(standard_claims(), k["rsa"].private, algorithm="RS256"),
    "wrong-issuer": lambda k: token(k["rsa"], iss="https://issuer.example.test/another-pool"),
    "dev-issuer": lambda k: token(k["rsa"], iss=config.get_settings().jwt_issuer),
    "wrong-audience": lambda k: token(k["ec"], aud="another-api"),
    "no-audience": lambda k: token(k["ec"], aud=None),
    "alg-confusion-rsa-public-key-as-hmac-secret": alg_confusion,
    "hs256-with-the-published-symmetric-key": lambda k: jwt.encode(
        standard_claims(), OCT_SECRET, algorithm="HS256", headers={"kid": "oct-1"}),
    "alg-none": lambda k: by_hand({"alg": "none", "kid": "rsa-1"}, standard_claims(), lambda data: b""),
    "rs384": lambda k: jwt.encode(standard_claims(), k["rsa"].private, algorithm="RS384", headers={"kid": "rsa-1"}),
    "rsa-key-named-for-an-es256-token": lambda k: token(k["ec"], kid="rsa-1"),
    "rsa-key-of-1024-bits": lambda k: token(k["small"]),
    "expired": lambda k: token(k["rsa"], iat=now() - 3600, exp=now() - 600),
    "too-long-lived": lambda k: token(k["rsa"], exp=now() + 13 * 3600),
    "empty-subject": lambda k: token(k["rsa"], sub=""),
    "exp-as-string": lambda k: token(k["ec"], exp=str(now() + 600)),
    "patient-id-malformed": lambda k: token(k["ec"], patient_id="١"),
    "id-token": lambda k: token(k["rsa"], token_use="id"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_bad_oidc_tokens_are_refused(oidc, keys, case):
    with pytest.raises(auth.Unauthenticated):
        auth.verify("Bearer " + REFUSED[case](keys))


def test_bad_oidc_tokens_are_401_through_the_app(client, oidc, keys):
    for case, make in REFUSED.items():
        response = client.http.get("/v1/patients?limit=1", headers={"Authorization": f"Bearer {make(keys)}"})
        assert response.status_code == 401, case


def test_alg_confusion_fails_without_a_dev_key_too(oidc, keys):
    with environment(JWT_SECRET=None):
        with pytest.raises(auth.Unauthenticated, match="dev tokens not accepted"):
            auth.verify("Bearer " + alg_confusion(keys))
        assert auth.verify("Bearer " + token(keys["rsa"])).subject == "oidc-user-1"


def test_oidc_tokens_are_refused_when_no_issuer_is_configured(issuer, keys):
    refused = pytest.raises(auth.Unauthenticated, match="oidc tokens not accepted")
    with environment(OIDC_ISSUER=None, OIDC_AUDIENCE=None, OIDC_JWKS_URL=None), refused:
        auth.verify("Bearer " + token(keys["rsa"]))
    assert issuer.requests == 0


# --- key rotation and the refetch throttle ----------------------------------------------------------


def test_rotation_is_picked_up_and_refetches_are_throttled(oidc, keys, monkeypatch):
    assert auth.verify("Bearer " + token(keys["rsa"])).subject == "oidc-user-1"
    assert oidc.requests == 1
    # made-up kids within the interval: refused without asking the issuer again
    for n in range(20):
        with pytest.raises(auth.Unauthenticated, match="unknown kid"):
            auth.verify("Bearer " + token(keys["rsa"], kid=f"random-{n}"))
    assert oidc.requests == 1
    # the issuer rotates: a new key with a new kid, the old one withdrawn
    oidc.jwks_keys = [keys["rotated"].jwk(), keys["ec"].jwk()]
    rotated = "Bearer " + token(keys["rotated"])
    with pytest.raises(auth.Unauthenticated):  # still within the interval since the last fetch
        auth.verify(rotated)
    assert oidc.requests == 1
    # once the interval has passed (shortened here rather than slept), the unknown kid triggers one refetch
    monkeypatch.setattr(jwks, "REFETCH_INTERVAL_SECONDS", 0.0)
    assert auth.verify(rotated).subject == "oidc-user-1"
    assert oidc.requests == 2
    assert auth.verify(rotated).subject == "oidc-user-1"  # a known kid never refetches
    assert oidc.requests == 2
    with pytest.raises(auth.Unauthenticated):  # the withdrawn key is forgotten with the refetch
        auth.verify("Bearer " + token(keys["rsa"]))
    assert oidc.requests == 3
    monkeypatch.setattr(jwks, "REFETCH_INTERVAL_SECONDS", 30.0)
    for n in range(5):
        with pytest.raises(auth.Unauthenticated):
            auth.verify("Bearer " + token(keys["rsa"], kid=f"random-again-{n}"))
    assert oidc.requests == 3


# --- Amazon Cognito access tokens -------------------------------------------------------------------


def cognito(key: SigningKey, **overrides: Any) -> str:
    claims = {"aud": None, "token_use": "access", "client_id": AUDIENCE, "scope": f"{PREFIX}/read",
              "username": "someone"}
    claims.update(overrides)
    return "Bearer " + token(key, **claims)


def test_cognito_access_tokens_are_accepted_with_their_resource_server_scopes(oidc, keys):
    assert auth.verify(cognito(keys["rsa"])).scopes == "read"
    both = cognito(keys["rsa"], scope=f"{PREFIX}/write {PREFIX}/read aws.cognito.signin.user.admin")
    assert auth.verify(both).scopes == "read write"
    assert auth.verify(cognito(keys["ec"], scope=f"other-server/admin {PREFIX}/admin/x read")).scopes == "read"
    assert auth.verify(cognito(keys["ec"], scope="other-server/admin")).scopes == ""


def test_cognito_tokens_that_are_not_access_tokens_of_the_client_are_refused(oidc, keys):
    for bad in (
        cognito(keys["rsa"], token_use="id", aud=AUDIENCE, client_id=None),  # an ID token: not for APIs
        cognito(keys["rsa"], token_use="id"),
        cognito(keys["rsa"], client_id="another-client"),
        cognito(keys["rsa"], client_id=None),
        cognito(keys["rsa"], token_use=None),
    ):
        with pytest.raises(auth.Unauthenticated):
            auth.verify(bad)


def test_prefixed_scopes_grant_nothing_without_a_configured_prefix(oidc, keys):
    with environment(OIDC_SCOPE_PREFIX=None):
        assert auth.verify(cognito(keys["rsa"])).scopes == ""


# --- the issuer unavailable -------------------------------------------------------------------------


def test_jwks_endpoint_down_is_401_and_recovers(client, oidc, keys, monkeypatch):
    oidc.down = True
    headers = {"Authorization": f"Bearer {token(keys['rsa'])}"}
    assert client.http.get("/v1/patients?limit=1", headers=headers).status_code == 401
    with pytest.raises(auth.Unauthenticated, match="no signing keys"):
        auth.verify(headers["Authorization"])
    assert oidc.requests == 1  # the failed fetch is throttled too
    oidc.down = False
    monkeypatch.setattr(jwks, "REFETCH_INTERVAL_SECONDS", 0.0)
    assert client.http.get("/v1/patients?limit=1", headers=headers).status_code != 401
    assert oidc.requests == 2


def test_jwks_endpoint_unreachable_is_401(keys):
    with socket.socket() as probe:  # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/jwks.json"
    refused = pytest.raises(auth.Unauthenticated, match="no signing keys")
    with environment(OIDC_ISSUER=ISSUER, OIDC_AUDIENCE=AUDIENCE, OIDC_JWKS_URL=url), refused:
        auth.verify("Bearer " + token(keys["ec"]))


def test_a_slow_issuer_costs_at_most_the_fetch_timeout(keys, monkeypatch):
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/jwks.json"
        monkeypatch.setattr(jwks, "FETCH_TIMEOUT_SECONDS", 0.5)
        with environment(OIDC_ISSUER=ISSUER, OIDC_AUDIENCE=AUDIENCE, OIDC_JWKS_URL=url):
            started = time.monotonic()
            with pytest.raises(auth.Unauthenticated):
                auth.verify("Bearer " + token(keys["ec"]))
            assert time.monotonic() - started < 3


# --- configuration ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"OIDC_ISSUER": ISSUER, "OIDC_JWKS_URL": "https://issuer.example.test/jwks.json"}, "go together"),
        ({"OIDC_ISSUER": ISSUER, "OIDC_AUDIENCE": AUDIENCE, "OIDC_JWKS_URL": "http://issuer.example.test/jwks"},
         "https"),
        ({"OIDC_ISSUER": ISSUER, "OIDC_AUDIENCE": AUDIENCE, "OIDC_JWKS_URL": "file:///etc/passwd"}, "https"),
        ({"MAX_TOKEN_LIFETIME_SECONDS": "0"}, "MAX_TOKEN_LIFETIME_SECONDS"),
    ],
)
def test_unworkable_oidc_configuration_is_refused_with_a_clear_message(values, message):
    with environment(**values), pytest.raises(config.ConfigurationError, match=message):
        config.get_settings()
