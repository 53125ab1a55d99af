"""Secrets through the AWS Parameters and Secrets Lambda Extension (template parameter
SecretsExtensionLayerArn): the functions read their secrets from the extension's loopback HTTP endpoint,
without importing the AWS SDK. The extension itself is an AWS binary that does not run here; a loopback
server answering its documented interface stands in for it (tools/secrets_extension.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from chalicelib import config
from tests.conftest import reset_caches
from tools.secrets_extension import SecretsExtensionStandIn

ROOT = Path(__file__).resolve().parents[2]
SESSION_TOKEN = "session-token-of-this-container"
DATABASE_ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:medrec/db-AbCdEf"
JWT_ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:medrec/jwt-GhIjKl"


@pytest.fixture
def extension(database, monkeypatch):
    """The stand-in on a free loopback port, serving the suite database's API login and a signing key."""
    from urllib.parse import unquote

    parts = urlsplit(database[1])
    server = SecretsExtensionStandIn({
        DATABASE_ARN: json.dumps({"host": parts.hostname, "port": parts.port, "dbname": "app",
                                  "username": unquote(parts.username or ""),
                                  "password": unquote(parts.password or "")}),
        JWT_ARN: "k" * 48,
    }, SESSION_TOKEN).start()
    for name in ("DATABASE_URL", "JWT_SECRET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATABASE_SECRET_ARN", DATABASE_ARN)
    monkeypatch.setenv("JWT_SECRET_ARN", JWT_ARN)
    monkeypatch.setenv(config.SECRETS_EXTENSION_PORT_VARIABLE, str(server.port))
    monkeypatch.setenv("AWS_SESSION_TOKEN", SESSION_TOKEN)
    reset_caches()
    try:
        yield server
    finally:
        server.stop()
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
    assert ("/secretsmanager/get", DATABASE_ARN) in extension.calls
    assert ("/secretsmanager/get", JWT_ARN) in extension.calls


def test_a_refusal_or_a_missing_extension_is_a_clear_configuration_error(extension, monkeypatch):
    monkeypatch.setenv("AWS_SESSION_TOKEN", "someone else's token")
    reset_caches()
    with pytest.raises(config.ConfigurationError, match="refused the secret: HTTP 401"):
        config.database_dsn()
    extension.stop()
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
