"""Secrets through the AWS Parameters and Secrets Lambda Extension (template parameter
SecretsExtensionLayerArn): the functions read their secrets from the extension's loopback HTTP endpoint,
without importing the AWS SDK. The extension itself is an AWS binary that does not run here; a loopback
server answering its documented interface (GET /secretsmanager/get?secretId=..., the session token in
X-Aws-Parameters-Secrets-Token, GetSecretValue's JSON) stands in for it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar
from urllib.parse import parse_qs, urlsplit

import pytest

from chalicelib import config
from tests.conftest import reset_caches

ROOT = Path(__file__).resolve().parents[2]
SESSION_TOKEN = "session-token-of-this-container"
DATABASE_ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:medrec/db-AbCdEf"
JWT_ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:medrec/jwt-GhIjKl"


class _Extension(BaseHTTPRequestHandler):
    secrets: ClassVar[dict[str, str]] = {}
    calls: ClassVar[list[tuple[str, str]]] = []

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        secret_id = parse_qs(parts.query).get("secretId", [""])[0]
        self.calls.append((parts.path, secret_id))
        if self.headers.get("X-Aws-Parameters-Secrets-Token") != SESSION_TOKEN:
            return self._answer(401, {"message": "not authorized"})
        if parts.path != "/secretsmanager/get" or secret_id not in self.secrets:
            return self._answer(400, {"message": "not found"})
        return self._answer(200, {"ARN": secret_id, "Name": secret_id.rsplit(":", 1)[-1],
                                  "SecretString": self.secrets[secret_id], "VersionStages": ["AWSCURRENT"]})

    def _answer(self, status: int, body: dict) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *_args) -> None:
        pass


@pytest.fixture
def extension(database, monkeypatch):
    """The stand-in on a free loopback port, serving the suite database's API login and a signing key."""
    from urllib.parse import unquote

    parts = urlsplit(database[1])
    _Extension.secrets = {
        DATABASE_ARN: json.dumps({"host": parts.hostname, "port": parts.port, "dbname": "app",
                                  "username": unquote(parts.username or ""),
                                  "password": unquote(parts.password or "")}),
        JWT_ARN: "k" * 48,
    }
    _Extension.calls = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Extension)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    for name in ("DATABASE_URL", "JWT_SECRET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATABASE_SECRET_ARN", DATABASE_ARN)
    monkeypatch.setenv("JWT_SECRET_ARN", JWT_ARN)
    monkeypatch.setenv(config.SECRETS_EXTENSION_PORT_VARIABLE, str(server.server_address[1]))
    monkeypatch.setenv("AWS_SESSION_TOKEN", SESSION_TOKEN)
    reset_caches()
    try:
        yield server
    finally:
        server.shutdown()
        monkeypatch.undo()
        reset_caches()


def test_the_api_reads_its_secrets_from_the_extension_and_answers(extension):
    from chalice.test import Client

    from app import app
    from chalicelib.api import auth

    assert config.jwt_secret() == "k" * 48
    token = auth.mint("extension-admin", ["read", "write", "admin"])
    with Client(app) as client:
        reply = client.http.request("GET", "/v1/patients?limit=1", headers={"Authorization": f"Bearer {token}"})
    assert reply.status_code == 200, reply.body
    assert ("/secretsmanager/get", DATABASE_ARN) in _Extension.calls
    assert ("/secretsmanager/get", JWT_ARN) in _Extension.calls


def test_a_refusal_or_a_missing_extension_is_a_clear_configuration_error(extension, monkeypatch):
    monkeypatch.setenv("AWS_SESSION_TOKEN", "someone else's token")
    reset_caches()
    with pytest.raises(config.ConfigurationError, match="refused the secret: HTTP 401"):
        config.database_dsn()
    extension.shutdown()
    extension.server_close()
    monkeypatch.setenv("AWS_SESSION_TOKEN", SESSION_TOKEN)
    reset_caches()
    with pytest.raises(config.ConfigurationError, match="did not answer on port") as caught:
        config.database_dsn()
    assert "password" not in str(caught.value)


def test_with_the_extension_no_aws_sdk_is_imported(extension):
    """The point of the extension: a cold start reads its secret without the AWS SDK's sessions and clients or
    Powertools' parameters (Powertools' logger imports only botocore's package, for its user agent)."""
    code = (
        "import sys, app\n"
        "from chalicelib import config\n"
        "config.database_dsn(); config.jwt_secret()\n"
        "print(sorted(m for m in ('boto3', 'botocore.session', 'botocore.client',"
        " 'aws_lambda_powertools.utilities.parameters') if m in sys.modules))\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'functions'}{os.pathsep}{ROOT}"}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT / "functions", env=env, capture_output=True,
                            text=True, timeout=120, check=True)
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout + result.stderr
