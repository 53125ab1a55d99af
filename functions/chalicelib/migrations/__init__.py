"""Versioned schema migrations.

Each ``NNNN_name.sql`` file of a folder is applied once, in order, in its own transaction, and
recorded in ``<schema>.schema_migration`` with a checksum. Applying is idempotent and safe to run
concurrently (an advisory lock serialises runners); editing an applied migration is refused.
The application database uses this folder and schema ``medical_app``; the analytics pipeline
uses the same runner for its own folder and schema.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

MIGRATIONS_DIR = Path(__file__).parent
_LOCK_KEY = 0x6D65647265630001  # "medrec" + 1: serialises concurrent migration runs

_BOOTSTRAP = """
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE IF NOT EXISTS {schema}.schema_migration (
    version    text PRIMARY KEY,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
"""


@dataclass(frozen=True)
class Migration:
    version: str
    path: Path

    @property
    def sql(self) -> str:
        return self.path.read_text(encoding="utf-8")

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


class MigrationError(RuntimeError):
    pass


def available_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    return [Migration(p.stem, p) for p in sorted(directory.glob("[0-9][0-9][0-9][0-9]_*.sql"))]


def apply_migrations(connection, directory: Path = MIGRATIONS_DIR, schema: str = "medical_app") -> list[str]:
    """Apply pending migrations on a psycopg2 connection; return the versions applied."""
    if not schema.isidentifier():
        raise ValueError(f"bad schema name {schema!r}")
    connection.autocommit = False
    applied_now: list[str] = []
    with connection.cursor() as cur:
        cur.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
    try:
        with connection, connection.cursor() as cur:
            cur.execute(_BOOTSTRAP.format(schema=schema))
        with connection.cursor() as cur:
            cur.execute(f"SELECT version, checksum FROM {schema}.schema_migration")  # noqa: S608
            done = dict(cur.fetchall())
        connection.commit()
        for migration in available_migrations(directory):
            if migration.version in done:
                if done[migration.version] != migration.checksum:
                    raise MigrationError(f"migration {migration.version} was changed after it was applied")
                continue
            with connection, connection.cursor() as cur:
                cur.execute(migration.sql)
                cur.execute(
                    f"INSERT INTO {schema}.schema_migration (version, checksum) VALUES (%s, %s)",  # noqa: S608
                    (migration.version, migration.checksum),
                )
            applied_now.append(migration.version)
    finally:
        connection.rollback()
        with connection.cursor() as cur:
            cur.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
        connection.commit()
    return applied_now


def migrate(database_url: str, directory: Path = MIGRATIONS_DIR, schema: str = "medical_app") -> list[str]:
    """Connect to ``database_url`` (an owner login), apply pending migrations, disconnect."""
    from chalicelib.transport import connect

    connection = connect(database_url, connect_timeout=10)
    try:
        return apply_migrations(connection, directory, schema)
    finally:
        connection.close()
