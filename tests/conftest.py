"""Shared test set-up.

Integration tests run against a real PostgreSQL that the suite starts itself (one throwaway cluster
per pytest worker, removed afterwards). Migrations run as the owner; the API connects as a
least-privilege login that is a member of ``medical_api``, exactly as deployed.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "functions"))
sys.path.insert(0, str(ROOT))

# Configuration must exist before the app is imported; the database URL is filled in by the fixture.
os.environ["JWT_SECRET"] = secrets.token_urlsafe(32)
os.environ.setdefault("PSEUDONYM_KEY", secrets.token_urlsafe(32))  # the served refresh flow's (e2e)
os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "medical-records")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

API_USER = "medrec_api_test"


def reset_caches() -> None:
    from chalicelib import config
    from chalicelib.api import dependencies

    config.get_settings.cache_clear()
    config.database_dsn.cache_clear()
    config.jwt_secret.cache_clear()
    if dependencies.database.cache_info().currsize:
        dependencies.database().close()
    dependencies.database.cache_clear()
    dependencies.services.cache_clear()


@pytest.fixture(scope="session")
def pg_cluster():
    from tools.pgcluster import PostgresCluster

    base = Path(tempfile.mkdtemp(prefix="medrec-test-"))
    cluster = PostgresCluster(base / "pg", settings={"fsync": "off", "synchronous_commit": "on"})
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def database(pg_cluster):
    """A migrated ``app`` database; returns (owner_url, api_url)."""
    from tools.provisioning import database_with_api_login

    owner_url, api_url = database_with_api_login(pg_cluster, "app", API_USER)
    os.environ["DATABASE_URL"] = api_url
    reset_caches()
    return owner_url, api_url


@pytest.fixture(scope="session")
def owner_url(database):
    return database[0]


@pytest.fixture
def owner_conn(owner_url):
    import psycopg2

    conn = psycopg2.connect(owner_url)
    conn.autocommit = True
    yield conn
    conn.close()


@pytest.fixture(scope="session")
def client(database):
    from chalice.test import Client

    from app import app

    with Client(app) as test_client:
        yield test_client


@pytest.fixture(scope="session")
def tokens():
    from chalicelib.api import auth

    return {
        "read": auth.mint("reader-1", ["read"]),
        "write": auth.mint("writer-1", ["write"]),
        "admin": auth.mint("admin-1", ["admin"]),
        "all": auth.mint("clinician-1", ["read", "write", "admin"]),
    }


@pytest.fixture
def api(client, tokens):
    from tests.helpers import Api

    return Api(client, tokens["all"])


@pytest.fixture
def admin(client):
    """An admin of its own (a subject no other test uses): (Api, subject), for tests that look for their
    actor in the history or the audit trail."""
    import uuid

    from chalicelib.api import auth
    from tests.helpers import Api

    subject = f"admin-{uuid.uuid4().hex[:10]}"
    return Api(client, auth.mint(subject, ["read", "write", "admin"])), subject
