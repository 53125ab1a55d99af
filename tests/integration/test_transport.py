"""Connections to PostgreSQL verify the server (SPEC §4: transmission security).

A PostgreSQL started with a certificate from a CA generated here: with that CA, ``verify-full``
connects (the API's own Database included); with another CA the connection fails with a message
that says why. The rule that applies it (any host not on this machine) is tested on connection
strings; the rule's loopback exemption is switched off for the live checks, which run on 127.0.0.1.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import psycopg2
import pytest

from chalicelib.transport import InsecureConnection, is_loopback, secure_dsn, secure_url


@pytest.fixture(scope="module")
def tls_cluster():
    """A PostgreSQL that speaks TLS with a certificate for 127.0.0.1 from a CA made here."""
    from tools.certificates import TlsFiles, write_tls_files
    from tools.pgcluster import PostgresCluster

    base = Path(tempfile.mkdtemp(prefix="medrec-tls-"))
    certs = base / "certs"
    planned = TlsFiles(certs / "ca.crt", certs / "other-ca.crt", certs / "server.crt", certs / "server.key")
    cluster = PostgresCluster(base / "pg", settings=planned.server_settings())
    write_tls_files(certs, ("127.0.0.1",), cluster._os_user())
    cluster.start()
    try:
        yield cluster, certs
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


def test_verify_full_with_the_right_ca_connects(tls_cluster):
    cluster, certs = tls_cluster
    dsn = secure_dsn(cluster.url(), str(certs / "ca.crt"), verify_loopback=True)
    assert "sslmode=verify-full" in dsn
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            assert cur.fetchone()[0] is True
    finally:
        conn.close()


def test_a_wrong_ca_fails_with_a_clear_message(tls_cluster):
    cluster, certs = tls_cluster
    dsn = secure_dsn(cluster.url(), str(certs / "other-ca.crt"), verify_loopback=True)
    with pytest.raises(psycopg2.OperationalError, match="certificate verify failed"):
        psycopg2.connect(dsn)


def test_the_api_connects_with_verify_full_and_refuses_a_wrong_ca(tls_cluster):
    from chalicelib.db import Database
    from chalicelib.domain.errors import Unavailable
    from chalicelib.repositories.errors import translate

    cluster, certs = tls_cluster
    for ca, works in ((certs / "ca.crt", True), (certs / "other-ca.crt", False)):
        dsn = secure_dsn(cluster.url(), str(ca), verify_loopback=True)
        database = Database(lambda dsn=dsn: dsn, translate_error=translate)
        try:
            if works:
                with database.transaction() as tx:
                    assert tx.fetchone("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()") == (True,)
            else:
                with pytest.raises(Unavailable), database.transaction() as tx:
                    tx.fetchone("SELECT 1")
        finally:
            database.close()


REMOTE_HOSTS = [
    "db.internal", "10.0.0.5", "mydb.abc.eu-west-1.rds.amazonaws.com", "[2001:db8::1]", "127.0.0.1,db.internal"
]


@pytest.mark.parametrize("host", REMOTE_HOSTS)
def test_a_remote_database_gets_verify_full_and_the_ca(host):
    dsn = secure_dsn(f"postgresql://api:pw@{host}:5432/app", "/certs/rds.pem")
    assert "sslmode=verify-full" in dsn and "sslrootcert=/certs/rds.pem" in dsn
    url = secure_url(f"postgresql://api:pw@{host}:5432/app", "/certs/rds.pem")
    assert "sslmode=verify-full" in url and "sslrootcert=%2Fcerts%2Frds.pem" in url


@pytest.mark.parametrize("mode", ["disable", "allow", "prefer", "require", "verify-ca"])
def test_anything_less_than_verify_full_is_refused_for_a_remote_database(mode):
    with pytest.raises(InsecureConnection, match=f"sslmode={mode} is refused"):
        secure_dsn(f"postgresql://api:pw@db.internal/app?sslmode={mode}", "/certs/ca.pem")
    with pytest.raises(InsecureConnection, match=f"sslmode={mode} is refused"):
        secure_url(f"postgresql://api:pw@db.internal/app?sslmode={mode}", "/certs/ca.pem")


def test_a_remote_database_without_a_ca_bundle_is_refused_with_what_to_set():
    with pytest.raises(InsecureConnection, match="DATABASE_CA_BUNDLE"):
        secure_dsn("host=db.internal dbname=app user=api", None)


@pytest.mark.parametrize("host", [None, "", "localhost", "127.0.0.1", "127.8.9.10", "::1", "/var/run/postgresql"])
def test_a_local_database_is_left_as_configured(host):
    assert is_loopback(host)
    dsn = f"dbname=app user=api sslmode=disable host={host}" if host else "dbname=app user=api sslmode=disable"
    assert secure_dsn(dsn, None) == dsn


def test_the_api_configuration_refuses_an_insecure_remote_database(monkeypatch):
    from chalicelib import config
    from chalicelib.config import ConfigurationError

    monkeypatch.setenv("DATABASE_URL", "postgresql://api:pw@db.internal/app?sslmode=disable")
    config.get_settings.cache_clear()
    config.database_dsn.cache_clear()
    try:
        with pytest.raises(ConfigurationError, match="sslmode=disable is refused"):
            config.database_dsn()
    finally:
        config.get_settings.cache_clear()
        config.database_dsn.cache_clear()


def test_a_ca_bundle_given_as_pem_text_is_written_once_to_a_file(tls_cluster):
    """The compose stack passes its small CA to the functions as the DatabaseCaBundle parameter's text."""
    from chalicelib.transport import ca_bundle_file

    cluster, certs = tls_cluster
    pem = (certs / "ca.crt").read_text()
    path = ca_bundle_file(pem)
    assert path == ca_bundle_file(pem) and Path(path).read_text() == pem
    assert ca_bundle_file("/etc/ssl/ca.pem") == "/etc/ssl/ca.pem" and ca_bundle_file(None) is None
    conn = psycopg2.connect(secure_dsn(cluster.url(), pem, verify_loopback=True))
    conn.close()


def test_the_pipeline_verifies_a_remote_database_with_psycopg2_and_sling(monkeypatch):
    from pipeline.refresh import _sling_url
    from pipeline.settings import PipelineConfigurationError, PipelineSettings

    monkeypatch.setenv("PSEUDONYM_KEY", "k" * 40)
    monkeypatch.setenv("DATABASE_CA_BUNDLE", "/certs/ca.crt")
    monkeypatch.setenv("APP_DB_URL", "postgresql://reader:pw@app-db:5432/app")
    monkeypatch.setenv("ANALYTIC_DB_URL", "postgresql://owner:pw@127.0.0.1:5433/analytic")
    settings = PipelineSettings.from_env()
    assert "sslmode=verify-full" in settings.app_db_url and "sslrootcert=%2Fcerts%2Fca.crt" in settings.app_db_url
    assert _sling_url(settings.app_db_url) == settings.app_db_url  # Sling gets the same verification
    assert _sling_url(settings.analytic_db_url).endswith("sslmode=disable")  # loopback: as before
    monkeypatch.setenv("APP_DB_URL", "postgresql://reader:pw@app-db:5432/app?sslmode=disable")
    with pytest.raises(PipelineConfigurationError, match="sslmode=disable is refused"):
        PipelineSettings.from_env()
