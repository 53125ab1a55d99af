"""medrec: the project's command line (the Makefile's targets call these). A thin command layer: the work
is done by tools/provisioning.py (migrations, logins), tools/demo_data.py (demo data, dev callers),
tools/local_state.py (.local/ and its secrets), tools/lifecycle.py (run / up / down), tools/pooler.py
(PgBouncer) and infra/localstack/deploy.py (the deploy command).

  python -m tools.cli migrate          apply schema migrations to $DATABASE_URL (an owner role)
  python -m tools.cli create-login     create/refresh a least-privilege login role
  python -m tools.cli dev-token        print a signed dev token (--kind admin|clinician|patient)
  python -m tools.cli openapi          print, write (--write) or drift-check (--check) openapi.json
  python -m tools.cli seal-audit       seal the audit events committed since the last seal
  python -m tools.cli verify-audit     check the audit trail's seal chain
  python -m tools.cli run              embedded PostgreSQL + the API on Chalice's local server
  python -m tools.cli up / down        the whole system locally (see README)
  (run and up take --pooler pgbouncer: PgBouncer in transaction mode between the API and PostgreSQL)
"""

from __future__ import annotations

import json
import os
import sys
import time

import click

from chalicelib.config import REFRESH_INCREMENTAL, REFRESH_MODES, REFRESH_SCHEDULE
from tools.demo_data import DEV_TOKEN_TTL_SECONDS, TOKEN_KINDS
from tools.local_state import LOCAL, ROOT, local_secrets
from tools.provisioning import LOGIN_ROLES, create_login
from tools.stack import StackError

POOLER_OPTION = click.option(
    "--pooler", type=click.Choice(["none", "pgbouncer"]), default="none", show_default=True, envvar="POOLER",
    help="pgbouncer: PgBouncer 1.18 in transaction mode between the API and PostgreSQL (as RDS Proxy on AWS); "
         "PostgreSQL then sees at most its pool's connections ($POOLER)",
)


def _echo(message: str) -> None:
    click.echo(message)


@click.group()
def cli() -> None:
    """Medical records service: operator and developer commands."""


@cli.command("migrate")
@click.option("--database-url", envvar="MIGRATION_DATABASE_URL", help="owner connection (default $DATABASE_URL)")
def migrate_command(database_url: str | None) -> None:
    """Apply pending schema migrations (idempotent; safe to run concurrently)."""
    from tools.provisioning import migrate_application

    url = database_url or os.environ.get("DATABASE_URL")
    if not url:
        raise click.ClickException("set MIGRATION_DATABASE_URL or DATABASE_URL")
    applied = migrate_application(url)
    click.echo(f"applied {len(applied)} migration(s): {', '.join(applied) or 'none pending'}")


@cli.command("create-login")
@click.option("--database-url", envvar="MIGRATION_DATABASE_URL", required=True, help="owner connection")
@click.option("--user", required=True, help="login role to create")
@click.option("--role", type=click.Choice(LOGIN_ROLES), required=True)
@click.option("--password-env", default="LOGIN_PASSWORD", show_default=True, help="env var holding the password")
def create_login_command(database_url: str, user: str, role: str, password_env: str) -> None:
    """Create a login role with exactly the privileges of ROLE."""
    password = os.environ.get(password_env)
    if not password:
        raise click.ClickException(f"set {password_env}")
    create_login(database_url, user, password, role)
    click.echo(f"login role {user} is a member of {role}")


@cli.command("dev-token")
@click.option("--kind", type=click.Choice(list(TOKEN_KINDS)), default="admin", show_default=True,
              help="admin: every patient; clinician: their care team's patients; patient: one patient, read only")
@click.option("--subject", default=None, help="default by kind: dev-user, dev-clinician, patient-<id>")
@click.option("--scopes", default=None,
              help='space-separated; default by kind: "read write admin", "read write", "read"')
@click.option("--patient-id", type=click.IntRange(min=1), default=None,
              help="the patient (required for --kind patient)")
@click.option("--ttl", default=DEV_TOKEN_TTL_SECONDS, show_default=True, help="seconds")
def dev_token(kind: str, subject: str | None, scopes: str | None, patient_id: int | None, ttl: int) -> None:
    """Print a signed token for local use (uses $JWT_SECRET or the local dev secret)."""
    from chalicelib.api import auth

    if kind == "patient" and patient_id is None:
        raise click.UsageError("--kind patient needs --patient-id")
    if kind != "patient" and patient_id is not None:
        raise click.UsageError("--patient-id is for --kind patient only (a token with a patient id is a patient's)")
    default_subject, default_scopes = TOKEN_KINDS[kind]
    subject = subject or default_subject.format(patient_id=patient_id)
    scope_list = list(default_scopes) if scopes is None else scopes.split()
    if not os.environ.get("JWT_SECRET"):  # only then create or read the local secrets file
        os.environ["JWT_SECRET"] = local_secrets()["jwt_secret"]
    try:
        click.echo(auth.mint(subject, scope_list, ttl, patient_id=patient_id))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None


OPENAPI_FILE = ROOT / "openapi.json"


@cli.command()
@click.option("--write", is_flag=True, help=f"write it to {OPENAPI_FILE.name} (committed)")
@click.option("--check", is_flag=True, help=f"exit 1 when {OPENAPI_FILE.name} differs from what the code builds")
def openapi(write: bool, check: bool) -> None:
    """Print the OpenAPI document (or write / drift-check the committed copy)."""
    from chalicelib.api.meta import openapi_document

    text = json.dumps(openapi_document(), indent=2, ensure_ascii=False) + "\n"
    if check:
        committed = OPENAPI_FILE.read_text(encoding="utf-8") if OPENAPI_FILE.exists() else ""
        if committed != text:
            raise click.ClickException(f"{OPENAPI_FILE.name} is out of date: run `make openapi`")
        click.echo(f"{OPENAPI_FILE.name} is up to date")
    elif write:
        OPENAPI_FILE.write_text(text, encoding="utf-8")
        click.echo(f"wrote {OPENAPI_FILE.name}")
    else:
        click.echo(text, nl=False)


@cli.command()
@click.option("--port", default=8000, show_default=True, help="API port")
@click.option("--db-port", default=None, type=int, help="PostgreSQL port (default: kept from the last run)")
@click.option("--sample-patients", default=100, show_default=True, help="demo patients loaded into an empty database")
@POOLER_OPTION
def run(port: int, db_port: int | None, sample_patients: int, pooler: str) -> None:
    """Start the embedded PostgreSQL and the API (chalice local); Ctrl-C stops both."""
    from tools import lifecycle

    try:
        lifecycle.run_api(port, db_port, sample_patients, pooler, _echo)
    except StackError as exc:
        raise click.ClickException(str(exc)) from None


@cli.command()
@click.option("--aws-port", default=4566, show_default=True, help="AWS emulator (API Gateway, Lambda, ...) port")
@click.option("--prefect-port", default=4200, show_default=True, help="Prefect server and UI port")
@click.option("--db-port", default=None, type=int, help="PostgreSQL port (default: kept from the last run)")
@click.option("--sample-patients", default=100, show_default=True, help="demo patients loaded into an empty database")
@click.option("--schedule", default=REFRESH_SCHEDULE, show_default=True, help="refresh schedule (EventBridge)")
@POOLER_OPTION
def up(aws_port: int, prefect_port: int, db_port: int | None, sample_patients: int, schedule: str,
       pooler: str) -> None:
    """The whole system, deployed as it is on AWS, without Docker; Ctrl-C stops everything it started.
    Reports ready only once the deployed API answers warm (API and authorizer workers started)."""
    from tools import lifecycle

    try:
        lifecycle.run_stack(aws_port, prefect_port, db_port, sample_patients, schedule, pooler, _echo)
    except StackError as exc:
        raise click.ClickException(str(exc)) from None


@cli.command()
def down() -> None:
    """Stop the stack `make up` started (as Ctrl-C in its terminal would)."""
    from tools import lifecycle

    lifecycle.stop_stack(_echo)


@cli.command("start-refresh")
@click.option("--mode", type=click.Choice(REFRESH_MODES), default=REFRESH_INCREMENTAL, show_default=True)
def start_refresh(mode: str) -> None:
    """Start the refresh state machine of the stack `make up` runs, and wait for its result."""
    from tools import lifecycle

    if not lifecycle.start_refresh(mode, _echo):
        raise SystemExit(1)


def _audit_database_url(database_url: str | None, *fallback_env: str) -> str:
    """The given URL, else the first of ``fallback_env`` set, else the owner of the local database (make run/up)."""
    for url in (database_url, *(os.environ.get(name) for name in fallback_env)):
        if url:
            return url
    if (LOCAL / "pg" / "state.json").exists():
        from tools.pgcluster import PostgresCluster

        return PostgresCluster(LOCAL / "pg").url("app")
    raise click.UsageError("no database: pass --database-url (or set MIGRATION_DATABASE_URL), or start the local "
                           "one with `make run` or `make up`")


@cli.command("seal-audit")
@click.option("--database-url", envvar="MIGRATION_DATABASE_URL",
              help="default: $MIGRATION_DATABASE_URL, $DATABASE_URL, else the local database of make run / make up")
def seal_audit_command(database_url: str | None) -> None:
    """Seal the audit events committed since the last seal into the next block (the scheduled function does this
    every few minutes). Prints BLOCK:DIGEST, an anchor for `verify-audit --anchor`."""
    import psycopg2

    from chalicelib.repositories import audit_seal

    url = _audit_database_url(database_url, "DATABASE_URL")
    try:
        result = audit_seal.seal_database(url)
    except psycopg2.OperationalError as exc:
        click.echo(f"seal-audit: cannot connect: {str(exc).strip().splitlines()[0]}", err=True)
        sys.exit(2)
    except psycopg2.Error as exc:
        raise click.ClickException(str(exc).strip().splitlines()[0]) from None
    if result is None:
        click.echo("nothing to seal: no audit event was committed since the last seal")
    else:
        click.echo(f"sealed block {result.block_no}: {result.event_count} event(s); anchor {result.anchor()}")


@cli.command("verify-audit")
@click.option("--database-url", envvar="MIGRATION_DATABASE_URL",
              help="a login that can read audit_event and audit_seal (the owner); default: "
                   "$MIGRATION_DATABASE_URL, else the local database of make run / make up")
@click.option("--anchor", "anchors", multiple=True, metavar="BLOCK:DIGEST",
              help="a block digest kept outside the database (the seal function logs one per block; seal-audit "
                   "prints it); the chain must still contain it. Repeatable")
@click.option("--max-findings", default=20, show_default=True, type=click.IntRange(min=1),
              help="findings listed (all are counted)")
@click.option("--quiet", is_flag=True, help="no progress lines")
def verify_audit_command(database_url: str | None, anchors: tuple[str, ...], max_findings: int, quiet: bool) -> None:
    """Recompute every seal of the audit trail and the chain of their digests; name the first altered, deleted
    or inserted audit event.

    \b
    Exit status: 0 intact, 1 tampering found, 2 usage or connection error.
    Events committed since the last seal are reported as pending (the next seal takes them).
    """
    import psycopg2

    from chalicelib.domain.audit_seal import parse_anchor
    from chalicelib.repositories import audit_seal

    try:
        parsed = [parse_anchor(a) for a in anchors]
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    url = _audit_database_url(database_url)
    started = time.monotonic()

    def progress(done: int, total: int) -> None:
        elapsed = max(time.monotonic() - started, 1e-9)
        click.echo(f"  {done:,} / {total:,} events ({100 * done / max(total, 1):.0f}%), {done / elapsed:,.0f}/s",
                   err=True)

    try:
        from chalicelib.transport import connect as secure_connect

        connection = secure_connect(url, connect_timeout=10, application_name="medical-records-verify-audit")
    except psycopg2.OperationalError as exc:
        click.echo(f"verify-audit: cannot connect: {str(exc).strip().splitlines()[0]}", err=True)
        sys.exit(2)
    try:
        report = audit_seal.verify(connection, anchors=parsed, progress=None if quiet else progress)
    except psycopg2.Error as exc:
        click.echo(f"verify-audit: {str(exc).strip().splitlines()[0]}", err=True)
        sys.exit(2)
    finally:
        connection.close()
    elapsed = time.monotonic() - started
    for warning in report.warnings:
        click.echo(f"warning: {warning}", err=True)
    head = (f"head: block {report.head_block} {report.head_digest.hex()}" if report.head_digest is not None
            else "no seal yet")
    summary = (f"{report.events:,} events, {report.blocks:,} blocks, {report.pending:,} pending the next seal; "
               f"{head} ({elapsed:.1f}s, {report.events / max(elapsed, 1e-9):,.0f} events/s)")
    if report.intact:
        click.echo(f"audit trail intact: {summary}")
        return
    first = report.first
    click.echo(f"TAMPERED: {first.message}")
    for finding in report.findings[:max_findings]:
        click.echo(f"  {finding.kind}: {finding.message}")
    if report.finding_count > max_findings:
        click.echo(f"  ... and {report.finding_count - max_findings:,} more")
    click.echo(f"{report.finding_count:,} finding(s); {summary}")
    sys.exit(1)


if __name__ == "__main__":
    cli()
