"""Service configuration, read once from the environment and typed.

Secrets come either straight from the environment (local runs, tests) or from AWS Secrets Manager
when an ``*_SECRET_ARN`` variable names one (deployed Lambdas); boto3 is imported only then.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import lru_cache


class ConfigurationError(RuntimeError):
    pass


@dataclass(frozen=True)
class Settings:
    database_url: str | None
    database_secret_arn: str | None
    jwt_secret: str | None
    jwt_secret_arn: str | None
    jwt_issuer: str
    jwt_audience: str
    service_name: str
    default_page_size: int = 50
    max_page_size: int = 100


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ConfigurationError(f"{name} must be an integer") from exc


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings(
        database_url=os.environ.get("DATABASE_URL") or None,
        database_secret_arn=os.environ.get("DATABASE_SECRET_ARN") or None,
        jwt_secret=os.environ.get("JWT_SECRET") or None,
        jwt_secret_arn=os.environ.get("JWT_SECRET_ARN") or None,
        jwt_issuer=os.environ.get("JWT_ISSUER", "medical-records"),
        jwt_audience=os.environ.get("JWT_AUDIENCE", "medical-records-api"),
        service_name=os.environ.get("POWERTOOLS_SERVICE_NAME", "medical-records"),
        default_page_size=_env_int("DEFAULT_PAGE_SIZE", 50),
        max_page_size=_env_int("MAX_PAGE_SIZE", 100),
    )


def _read_secret(arn: str) -> str:
    import boto3  # deferred: only deployed Lambdas read Secrets Manager

    return boto3.client("secretsmanager").get_secret_value(SecretId=arn)["SecretString"]


@lru_cache(maxsize=1)
def database_dsn() -> str:
    """The application database DSN, from DATABASE_URL or an RDS-style secret."""
    settings = get_settings()
    if settings.database_url:
        return settings.database_url
    if settings.database_secret_arn:
        secret = json.loads(_read_secret(settings.database_secret_arn))
        from psycopg2.extensions import make_dsn

        return make_dsn(
            host=secret["host"],
            port=secret.get("port", 5432),
            dbname=secret.get("dbname", "app"),
            user=secret["username"],
            password=secret["password"],
            sslmode=secret.get("sslmode", "prefer"),
        )
    raise ConfigurationError("set DATABASE_URL or DATABASE_SECRET_ARN")


@lru_cache(maxsize=1)
def jwt_secret() -> str:
    settings = get_settings()
    if settings.jwt_secret:
        return settings.jwt_secret
    if settings.jwt_secret_arn:
        return _read_secret(settings.jwt_secret_arn)
    raise ConfigurationError("set JWT_SECRET or JWT_SECRET_ARN")
