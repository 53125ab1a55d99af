"""Versioned schema migrations for the application database.

Each ``NNNN_name.sql`` file in this folder is applied once, in order, in its own transaction, and
recorded in ``medical_app.schema_migration`` with a checksum. Applying is idempotent and safe to run
concurrently (an advisory lock serialises runners); editing an applied migration is refused.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

MIGRATIONS_DIR = Path(__file__).parent
_LOCK_KEY = 0x6D65647265630001  # "medrec" + 1: serialises concurrent migration runs

_BOOTSTRAP = """
CREATE SCHEMA IF NOT EXISTS medical_app;
CREATE TABLE IF NOT EXISTS medical_app.schema_migration (
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


def available_migrations() -> list[Migration]:
    return [Migration(p.stem, p) for p in sorted(MIGRATIONS_DIR.glob("[0-9][0-9][0-9][0-9]_*.sql"))]


def apply_migrations(connection) -> list[str]:
    """Apply pending migrations on a psycopg2 connection; return the versions applied."""
    connection.autocommit = False
    applied_now: list[str] = []
    with connection.cursor() as cur:
        cur.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
    try:
        with connection, connection.cursor() as cur:
            cur.execute(_BOOTSTRAP)
        with connection.cursor() as cur:
            cur.execute("SELECT version, checksum FROM medical_app.schema_migration")
            done = dict(cur.fetchall())
        connection.commit()
        for migration in available_migrations():
            if migration.version in done:
                if done[migration.version] != migration.checksum:
                    raise MigrationError(f"migration {migration.version} was changed after it was applied")
                continue
            with connection, connection.cursor() as cur:
                cur.execute(migration.sql)
                cur.execute(
                    "INSERT INTO medical_app.schema_migration (version, checksum) VALUES (%s, %s)",
                    (migration.version, migration.checksum),
                )
            applied_now.append(migration.version)
    finally:
        connection.rollback()
        with connection.cursor() as cur:
            cur.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
        connection.commit()
    return applied_now
