"""Token configuration and claim checks without I/O (SPEC §4, Authentication).

A dev signing key shorter than 32 bytes is refused with a message naming the variable, when the key
is loaded and, for a key given in the environment, when the app starts. The claim checks are plain
functions of a payload and are exercised here on edge values the integration tests do not reach.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chalicelib import config
from chalicelib.api import auth, claims

ROOT = Path(__file__).resolve().parents[2]
SHORT_KEY_MESSAGE = "JWT_SECRET must be at least 32 bytes"


def _fresh() -> None:
    config.get_settings.cache_clear()
    config.jwt_secret.cache_clear()


@pytest.fixture
def env(monkeypatch):
    """Set environment variables (None removes one) with fresh settings; restored afterwards."""

    def set_env(**values: str | None) -> None:
        for name, value in values.items():
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, value)
        _fresh()

    yield set_env
    monkeypatch.undo()
    _fresh()


def test_a_dev_key_shorter_than_32_bytes_is_refused_with_a_clear_message(env):
    env(JWT_SECRET="x" * 31)
    with pytest.raises(config.ConfigurationError, match=SHORT_KEY_MESSAGE):
        config.jwt_secret()
    with pytest.raises(config.ConfigurationError, match=SHORT_KEY_MESSAGE):
        auth.check_configuration()
    env(JWT_SECRET="é" * 15 + "x")  # 16 characters, 31 bytes: bytes count
    with pytest.raises(config.ConfigurationError, match=SHORT_KEY_MESSAGE):
        config.jwt_secret()
    env(JWT_SECRET="é" * 16)
    assert config.jwt_secret() == "é" * 16


def test_a_short_key_from_secrets_manager_is_refused_too(env, monkeypatch):
    env(JWT_SECRET=None, JWT_SECRET_ARN="arn:aws:secretsmanager:us-east-1:123456789012:secret:medical-records/jwt")
    monkeypatch.setattr(config, "_read_secret", lambda arn: "short")
    with pytest.raises(config.ConfigurationError, match=SHORT_KEY_MESSAGE):
        config.jwt_secret()
    auth.check_configuration()  # the secret is not read at start: that would slow every cold start


def test_the_app_refuses_to_start_with_a_short_key():
    environment = {**os.environ, "JWT_SECRET": "too-short", "PYTHONPATH": f"{ROOT / 'functions'}{os.pathsep}{ROOT}"}
    result = subprocess.run([sys.executable, "-c", "import app"], cwd=ROOT / "functions", env=environment,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert SHORT_KEY_MESSAGE in result.stderr
    assert "too-short" not in result.stderr  # the message never shows the key


def test_without_a_dev_key_dev_tokens_are_refused(env):
    token = auth.mint("someone", ["read"])
    env(JWT_SECRET=None, JWT_SECRET_ARN=None)
    with pytest.raises(auth.Unauthenticated, match="dev tokens not accepted"):
        auth.verify(f"Bearer {token}")


def test_mint_refuses_what_verify_would_refuse(env):
    with pytest.raises(ValueError, match="MAX_TOKEN_LIFETIME_SECONDS"):
        auth.mint("someone", ["read"], ttl_seconds=12 * 3600 + 1)
    for bad in (0, -1, True, 2**63, 1.5):
        with pytest.raises(ValueError, match="patient_id"):
            auth.mint("someone", ["read"], patient_id=bad)
    identity = auth.verify("Bearer " + auth.mint("patient-7", ["read"], 12 * 3600, patient_id=7))
    assert (identity.subject, identity.scopes, identity.patient_id) == ("patient-7", "read", 7)
    env(MAX_TOKEN_LIFETIME_SECONDS="600")
    with pytest.raises(ValueError):
        auth.mint("someone", ["read"], ttl_seconds=601)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(1, 1), ("1", 1), ("0042", 42), (2**63 - 1, 2**63 - 1), (str(2**63 - 1), 2**63 - 1)],
)
def test_patient_id_accepted_forms(value, expected):
    assert claims.patient_id(value) == expected


@pytest.mark.parametrize(
    "value",
    [None, 0, -1, "-1", "+1", " 1", "1 ", "", "abc", "١", "１", "1.0", 1.0, True, False, 2**63, str(2**63),
     "9" * 5000, [1], {"id": 1}],
)
def test_patient_id_refused_forms(value):
    with pytest.raises(claims.ClaimError):
        claims.patient_id(value)


@pytest.mark.parametrize("value", [True, "1", None, float("nan"), float("inf"), float("-inf"), [1]])
def test_not_numbers(value):
    assert not claims.is_number(value)


def test_huge_and_non_finite_times_are_refused_not_crashed():
    expected = claims.Expected(issuer="i", audience="a", max_lifetime_seconds=3600)
    now = time.time()
    base = {"sub": "s", "iss": "i", "aud": "a", "iat": int(now), "exp": int(now) + 60}
    for overrides in ({"exp": 10**400}, {"iat": -(10**400)}, {"exp": float("inf")}, {"nbf": float("nan")}):
        with pytest.raises(claims.ClaimError):
            claims.check({**base, **overrides}, expected, auth.SCOPES, now)
    assert claims.check(base, expected, auth.SCOPES, now).expires_at == int(now) + 60


def test_scopes_keep_only_known_names_and_the_configured_prefix():
    known = auth.SCOPES
    assert claims.granted_scopes("admin read read", known) == ("read", "admin")
    assert claims.granted_scopes("api/read api/write", known) == ()
    assert claims.granted_scopes("api/read other/write api/x", known, "api") == ("read",)
    assert claims.granted_scopes("api/read", known, "ap") == ()
    assert claims.granted_scopes(None, known) == ()
    with pytest.raises(claims.ClaimError):
        claims.granted_scopes(["read"], known)


@pytest.mark.parametrize(
    ("args", "subject", "scopes", "patient"),
    [
        ([], "dev-user", "read write admin", None),
        (["--kind", "clinician"], "dev-clinician", "read write", None),
        (["--kind", "patient", "--patient-id", "12"], "patient-12", "read", 12),
        (["--kind", "patient", "--patient-id", "1", "--subject", "p", "--scopes", "read write"], "p", "read write", 1),
        (["--scopes", "read"], "dev-user", "read", None),
    ],
)
def test_dev_token_kinds(args, subject, scopes, patient):
    from click.testing import CliRunner

    from tools.cli import cli

    result = CliRunner().invoke(cli, ["dev-token", *args])
    assert result.exit_code == 0, result.output
    identity = auth.verify("Bearer " + result.output.strip())
    assert (identity.subject, identity.scopes, identity.patient_id) == (subject, scopes, patient)


@pytest.mark.parametrize("args", [["--kind", "patient"], ["--kind", "clinician", "--patient-id", "3"],
                                  ["--kind", "patient", "--patient-id", "0"], ["--ttl", str(13 * 3600)]])
def test_dev_token_refuses_what_makes_no_sense(args):
    from click.testing import CliRunner

    from tools.cli import cli

    result = CliRunner().invoke(cli, ["dev-token", *args])
    assert result.exit_code != 0


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


@pytest.mark.parametrize(
    "token",
    [
        _b64(b"[" * 3000) + ".e30.x",  # nesting deep enough to exhaust the JSON parser
        _b64(b"[1]") + ".e30.x",
        _b64(json.dumps({"alg": ["HS256"]}).encode()) + ".e30.x",
        _b64(json.dumps({"alg": "RS256", "kid": 5}).encode()) + ".e30.x",
        "éé.e30.x",
        "a" * 9000,
    ],
    ids=["deep-header", "list-header", "alg-list", "kid-int", "non-ascii", "too-long"],
)
def test_malformed_tokens_are_refused_not_crashed(token):
    with pytest.raises(auth.Unauthenticated):
        auth.verify(f"Bearer {token}")
