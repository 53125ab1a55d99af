"""A rotated database password: the functions read their secret again, and the next connection works.

Secrets Manager rotation changes the login's password and the secret together; a container that made its
DSN from the old secret must not answer 503 until it is recycled."""

from __future__ import annotations

import json
import secrets
from urllib.parse import urlsplit

import psycopg2
import pytest

from chalicelib import config
from chalicelib.db import Database
from tools.cli import create_login

LOGIN = "medrec_rotated_api"


@pytest.fixture
def rotating_secret(pg_cluster, database, monkeypatch):
    """The deployed configuration (DATABASE_SECRET_ARN, no DATABASE_URL) over a secret this test rotates."""
    owner_url, _ = database
    password = secrets.token_urlsafe(16)
    create_login(owner_url, LOGIN, password, "medical_api")
    parts = urlsplit(pg_cluster.url("app"))
    secret = {"host": parts.hostname, "port": parts.port, "dbname": "app", "username": LOGIN, "password": password}
    reads: list[bool] = []

    def read_secret(_arn: str, *, fresh: bool = False) -> str:
        reads.append(fresh)
        return json.dumps(secret)

    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("DATABASE_SECRET_ARN", "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCdEf")
    monkeypatch.setattr(config, "_read_secret", read_secret)
    config.get_settings.cache_clear()
    config.database_dsn.cache_clear()
    yield owner_url, secret, reads
    config.get_settings.cache_clear()
    config.database_dsn.cache_clear()


def rotate(owner_url: str, secret: dict) -> None:
    secret["password"] = secrets.token_urlsafe(16)
    conn = psycopg2.connect(owner_url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"ALTER ROLE {LOGIN} PASSWORD %s", (secret["password"],))
    conn.close()


def test_after_a_rotation_the_next_connection_reads_the_secret_again(rotating_secret):
    owner_url, secret, reads = rotating_secret
    db = Database(config.database_dsn, on_password_refused=config.forget_database_credentials)
    with db.transaction() as tx:
        assert tx.fetchone("SELECT current_user")[0] == LOGIN
    assert reads == [False]

    rotate(owner_url, secret)
    db.close()  # the next request needs a new connection (a new container, or the old one was lost)
    with db.transaction() as tx:
        assert tx.fetchone("SELECT current_user")[0] == LOGIN
    # the cached DSN was refused once, then the secret was read past every cache
    assert reads == [False, True]


def test_a_wrong_password_is_not_refetched_on_every_request(rotating_secret):
    owner_url, secret, reads = rotating_secret
    db = Database(config.database_dsn, on_password_refused=config.forget_database_credentials)
    with db.transaction() as tx:
        tx.fetchone("SELECT 1")
    rotate(owner_url, secret)
    secret["password"] = "not-the-password"  # the secret itself is wrong now
    db.close()
    for _ in range(3):
        with pytest.raises(psycopg2.OperationalError), db.transaction() as tx:
            tx.fetchone("SELECT 1")
    # one fresh read for the first refusal; the others wait SECRET_REFETCH_INTERVAL_SECONDS
    assert reads == [False, True]


def test_the_secret_is_read_again_once_the_dsn_is_older_than_its_max_age(rotating_secret, monkeypatch):
    _, _, reads = rotating_secret
    now = [1000.0]
    cache = config._DsnCache(clock=lambda: now[0])
    monkeypatch.setattr(config, "_database_dsn", cache)
    first = config.database_dsn()
    now[0] += config.SECRET_MAX_AGE_SECONDS - 1
    assert config.database_dsn() == first and reads == [False]
    now[0] += 2
    config.database_dsn()
    assert reads == [False, False]
