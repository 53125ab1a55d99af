"""Database provisioning shared by the deploy command and the local commands: migrations and the
least-privilege logins (a LOGIN role that is a member of one group role and nothing else)."""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import unquote, urlsplit

API_ROLE = "medical_api"  # what the API's login is a member of (migration 0003)
READER_ROLE = "medical_reader"  # what the analytics pipeline's login is a member of
# The analytic database's readers (pipeline/migrations/0002): analysts see the de-identified table only.
ANALYST_ROLE = "analytic_analyst"
IDENTIFIED_READER_ROLE = "analytic_identified_reader"
LOGIN_ROLES = (API_ROLE, READER_ROLE, ANALYST_ROLE, IDENTIFIED_READER_ROLE)


def connect(url: str):
    """A connection under the transport rule (verify-full to any database not on this machine)."""
    from chalicelib.transport import connect as secure_connect

    return secure_connect(url, connect_timeout=5)


def create_login(admin_url: str, user: str, password: str, role: str) -> None:
    """Create (or update the password of) a LOGIN role that is a member of ``role`` and nothing else."""
    from psycopg2 import sql

    if role not in LOGIN_ROLES:
        raise ValueError(f"role must be one of {', '.join(LOGIN_ROLES)}")
    with connect(admin_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (user,))
        verb = "ALTER" if cur.fetchone() else "CREATE"
        cur.execute(
            sql.SQL(verb + " ROLE {} LOGIN PASSWORD %s NOSUPERUSER NOCREATEDB NOCREATEROLE").format(
                sql.Identifier(user)
            ),
            (password,),
        )
        cur.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(role), sql.Identifier(user)))
    conn.close()


def create_logins_from_urls(admin_url: str, logins: Iterable[tuple[str | None, str]]) -> None:
    """For each (login URL, role): the login named in the URL, with the URL's password."""
    for url, role in logins:
        if url:
            parts = urlsplit(url)
            create_login(admin_url, unquote(parts.username or ""), unquote(parts.password or ""), role)


def database_with_api_login(cluster, name: str, api_user: str) -> tuple[str, str]:
    """A new database ``name`` on ``cluster`` (tools.pgcluster), migrated, with a least-privilege API login
    as deployed: (owner URL, API URL). For tests and benchmarks."""
    import secrets

    cluster.create_database(name)
    owner_url = cluster.url(name)
    migrate_application(owner_url)
    password = secrets.token_urlsafe(16)
    create_login(owner_url, api_user, password, API_ROLE)
    return owner_url, cluster.url(name, user=api_user, password=password)


def migrate_application(owner_url: str) -> list[str]:
    from chalicelib.migrations import migrate

    return migrate(owner_url)


def migrate_analytic(owner_url: str) -> list[str]:
    from chalicelib.migrations import migrate
    from pipeline.settings import PIPELINE_DIR

    return migrate(owner_url, PIPELINE_DIR / "migrations", "analytic")
