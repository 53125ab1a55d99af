"""How the functions find and authenticate to their database when deployed: the secret through Powertools
Parameters (cached with a max age, imported only when an ARN is configured), and behind RDS Proxy an IAM
auth token signed by boto3, reused until shortly before it expires."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from psycopg2.extensions import parse_dsn

from chalicelib import config

ROOT = Path(__file__).resolve().parents[2]
SECRET = {"host": "db.internal.example", "port": 5432, "dbname": "app", "username": "medrec_api",
          "password": "from-the-secret"}


@pytest.fixture
def deployed_env(monkeypatch, tmp_path):
    """The environment template.yaml gives the API with DatabaseProxyMode=create (no DATABASE_URL)."""
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n")
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("DATABASE_SECRET_ARN", "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCdEf")
    monkeypatch.setenv("DATABASE_CA_BUNDLE", str(ca))
    monkeypatch.setenv("DATABASE_PROXY_ENDPOINT", "medrec-db.proxy-abc.us-east-1.rds.amazonaws.com")
    monkeypatch.setenv("DATABASE_IAM_AUTH", "true")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLEEXAMPLE00")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "example-secret-key-example-secret-key-00")
    monkeypatch.setattr(config, "_read_secret", lambda arn, fresh=False: json.dumps(SECRET))
    monkeypatch.setattr(config, "_iam_tokens", config._IamTokens())
    config.get_settings.cache_clear()
    config.database_dsn.cache_clear()
    yield
    config.get_settings.cache_clear()
    config.database_dsn.cache_clear()


def test_behind_the_proxy_the_password_is_an_iam_token_for_the_proxy_over_verified_tls(deployed_env):
    params = parse_dsn(config.database_dsn())
    assert params["host"] == "medrec-db.proxy-abc.us-east-1.rds.amazonaws.com"
    assert params["user"] == "medrec_api" and params["dbname"] == "app"
    assert params["sslmode"] == "verify-full" and params["sslrootcert"]
    # boto3's real signer (SigV4, computed locally): a token for this host, port and user, never the secret's password
    token = params["password"]
    assert token != SECRET["password"]
    assert token.startswith("medrec-db.proxy-abc.us-east-1.rds.amazonaws.com:5432/?Action=connect")
    assert "DBUser=medrec_api" in token and "X-Amz-Signature=" in token


def test_the_token_is_reused_until_shortly_before_it_expires(deployed_env, monkeypatch):
    now = [1000.0]
    signed = []

    class Signer:
        def generate_db_auth_token(self, DBHostname, Port, DBUsername):
            signed.append((DBHostname, Port, DBUsername))
            return f"token-{len(signed)}"

    tokens = config._IamTokens(clock=lambda: now[0])
    tokens._client = Signer()
    monkeypatch.setattr(config, "_iam_tokens", tokens)
    first = parse_dsn(config.database_dsn())["password"]
    now[0] += config.IAM_TOKEN_LIFETIME_SECONDS - config.IAM_TOKEN_RENEW_MARGIN_SECONDS - 1
    assert parse_dsn(config.database_dsn())["password"] == first == "token-1"
    now[0] += 2  # within the renewal margin of its 15 minutes: a new one
    assert parse_dsn(config.database_dsn())["password"] == "token-2"
    assert signed == [("medrec-db.proxy-abc.us-east-1.rds.amazonaws.com", 5432, "medrec_api")] * 2


def test_without_a_proxy_the_secrets_password_is_used(deployed_env, monkeypatch):
    monkeypatch.setenv("DATABASE_IAM_AUTH", "false")
    monkeypatch.delenv("DATABASE_PROXY_ENDPOINT")
    config.get_settings.cache_clear()
    params = parse_dsn(config.database_dsn())
    assert params["host"] == "db.internal.example" and params["password"] == "from-the-secret"


@pytest.mark.parametrize(("name", "value", "message"), [
    ("DATABASE_IAM_AUTH", "yes please", "DATABASE_IAM_AUTH must be true or false"),
    ("DATABASE_PROXY_ENDPOINT", "", "DATABASE_IAM_AUTH needs DATABASE_PROXY_ENDPOINT"),
    ("AWS_REGION", "", "DATABASE_IAM_AUTH needs AWS_REGION"),
])
def test_an_incomplete_proxy_configuration_is_refused_with_its_name(deployed_env, monkeypatch, name, value, message):
    monkeypatch.setenv(name, value)
    if name == "AWS_REGION":
        monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    config.get_settings.cache_clear()
    with pytest.raises(config.ConfigurationError, match=message):
        config.database_dsn()


def test_secrets_come_through_powertools_parameters_cached_with_a_max_age(monkeypatch):
    """Against moto's Secrets Manager: read once, then served from the cache until SECRET_MAX_AGE_SECONDS."""
    from aws_lambda_powertools.utilities import parameters
    from moto import mock_aws

    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        import boto3

        client = boto3.client("secretsmanager", region_name="us-east-1")
        arn = client.create_secret(Name="medical-records/jwt-test", SecretString="first-value")["ARN"]
        parameters.clear_caches()
        try:
            assert config._read_secret(arn) == "first-value"
            client.put_secret_value(SecretId=arn, SecretString="rotated-value")
            assert config._read_secret(arn) == "first-value"  # cached ...
            parameters.clear_caches()  # ... until its max age passes (here: the cache emptied)
            assert config._read_secret(arn) == "rotated-value"
        finally:
            parameters.clear_caches()


def test_importing_the_app_loads_neither_powertools_parameters_nor_boto3():
    """Cold start: they are imported only when a secret ARN is configured (deployed), not by `import app`."""
    env = {**os.environ, "DATABASE_URL": "postgresql://medrec_api@127.0.0.1/app", "JWT_SECRET": "x" * 48}
    env.pop("DATABASE_SECRET_ARN", None)
    out = subprocess.run(
        [sys.executable, "-c", "import sys, app; print(sorted(m for m in ('boto3', "
         "'aws_lambda_powertools.utilities.parameters') if m in sys.modules))"],
        cwd=ROOT / "functions", env=env, capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"
