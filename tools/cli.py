"""medrec: the project's command line (the Makefile's targets call these).

  python -m tools.cli migrate          apply schema migrations to $DATABASE_URL (an owner role)
  python -m tools.cli create-login     create/refresh a least-privilege login role
  python -m tools.cli dev-token        print a signed dev token (--kind admin|clinician|patient)
  python -m tools.cli openapi          print, write (--write) or drift-check (--check) openapi.json
  python -m tools.cli seal-audit       seal the audit events committed since the last seal
  python -m tools.cli verify-audit     check the audit trail's seal chain
  python -m tools.cli run              embedded PostgreSQL + the API on Chalice's local server
  python -m tools.cli up / down        the whole system locally (see README)
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parent.parent
# Local state (databases, secrets, logs); MEDREC_LOCAL_DIR moves it (the tests run `up` in a temp dir).
LOCAL = Path(os.environ.get("MEDREC_LOCAL_DIR") or ROOT / ".local")
SECRETS_FILE = LOCAL / "secrets.json"
# The subjects of the dev tokens; the demo data puts DEV_CLINICIAN on some patients' care teams.
DEV_ADMIN = "dev-user"
DEV_CLINICIAN = "dev-clinician"
DEMO_CARE_TEAM_SIZE = 10
sys.path.insert(0, str(ROOT / "functions"))


MINTING_HINT = "make token KIND=clinician  |  make token KIND=patient PATIENT_ID=1"


def _load_or_create_secrets() -> dict[str, str]:
    """Secrets for local runs, generated once into .local/ (never committed)."""
    if SECRETS_FILE.exists():
        return json.loads(SECRETS_FILE.read_text())
    LOCAL.mkdir(exist_ok=True)
    values = {"jwt_secret": secrets.token_urlsafe(48), "api_password": secrets.token_urlsafe(24)}
    SECRETS_FILE.write_text(json.dumps(values))
    SECRETS_FILE.chmod(0o600)
    return values


def local_secrets() -> dict[str, str]:
    values = _load_or_create_secrets()
    if "pipeline_password" not in values:  # added after the first release of this file
        values["pipeline_password"] = secrets.token_urlsafe(24)
        SECRETS_FILE.write_text(json.dumps(values))
    if "pseudonym_key" not in values:  # the de-identified table's pseudonyms: kept, never rotated by a restart
        values["pseudonym_key"] = secrets.token_urlsafe(32)
        SECRETS_FILE.write_text(json.dumps(values))
    return values


def connect(url: str):
    from chalicelib.transport import connect as secure_connect

    return secure_connect(url, connect_timeout=5)


def create_login(admin_url: str, user: str, password: str, role: str) -> None:
    """Create (or update the password of) a LOGIN role that is a member of ``role`` and nothing else."""
    from psycopg2 import sql

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


@click.group()
def cli() -> None:
    """Medical records service: operator and developer commands."""


@cli.command("migrate")
@click.option("--database-url", envvar="MIGRATION_DATABASE_URL", help="owner connection (default $DATABASE_URL)")
def migrate_command(database_url: str | None) -> None:
    """Apply pending schema migrations (idempotent; safe to run concurrently)."""
    from chalicelib.migrations import migrate

    url = database_url or os.environ.get("DATABASE_URL")
    if not url:
        raise click.ClickException("set MIGRATION_DATABASE_URL or DATABASE_URL")
    applied = migrate(url)
    click.echo(f"applied {len(applied)} migration(s): {', '.join(applied) or 'none pending'}")


@cli.command("create-login")
@click.option("--database-url", envvar="MIGRATION_DATABASE_URL", required=True, help="owner connection")
@click.option("--user", required=True, help="login role to create")
@click.option("--role", type=click.Choice(["medical_api", "medical_reader"]), required=True)
@click.option("--password-env", default="LOGIN_PASSWORD", show_default=True, help="env var holding the password")
def create_login_command(database_url: str, user: str, role: str, password_env: str) -> None:
    """Create a login role with exactly the privileges of ROLE."""
    password = os.environ.get(password_env)
    if not password:
        raise click.ClickException(f"set {password_env}")
    create_login(database_url, user, password, role)
    click.echo(f"login role {user} is a member of {role}")


@cli.command("dev-token")
@click.option("--kind", type=click.Choice(["admin", "clinician", "patient"]), default="admin", show_default=True,
              help="admin: every patient; clinician: their care team's patients; patient: one patient, read only")
@click.option("--subject", default=None, help="default by kind: dev-user, dev-clinician, patient-<id>")
@click.option("--scopes", default=None,
              help='space-separated; default by kind: "read write admin", "read write", "read"')
@click.option("--patient-id", type=click.IntRange(min=1), default=None,
              help="the patient (required for --kind patient)")
@click.option("--ttl", default=12 * 3600, show_default=True, help="seconds")
def dev_token(kind: str, subject: str | None, scopes: str | None, patient_id: int | None, ttl: int) -> None:
    """Print a signed token for local use (uses $JWT_SECRET or the local dev secret)."""
    from chalicelib.api import auth

    # What each kind of caller (SPEC §4) gets unless --subject/--scopes say otherwise.
    kinds = {
        "admin": (DEV_ADMIN, "read write admin"),
        "clinician": (DEV_CLINICIAN, "read write"),
        "patient": (f"patient-{patient_id}", "read"),
    }
    if kind == "patient" and patient_id is None:
        raise click.UsageError("--kind patient needs --patient-id")
    if kind != "patient" and patient_id is not None:
        raise click.UsageError("--patient-id is for --kind patient only (a token with a patient id is a patient's)")
    default_subject, default_scopes = kinds[kind]
    subject = subject or default_subject
    scopes = default_scopes if scopes is None else scopes
    if not os.environ.get("JWT_SECRET"):  # only then create or read the local secrets file
        os.environ["JWT_SECRET"] = local_secrets()["jwt_secret"]
    try:
        click.echo(auth.mint(subject, scopes.split(), ttl, patient_id=patient_id))
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
def run(port: int, db_port: int | None, sample_patients: int) -> None:
    """Start the embedded PostgreSQL and the API (chalice local); Ctrl-C stops both."""
    values = local_secrets()
    click.echo("starting PostgreSQL ...")
    from tools.pgcluster import PostgresCluster

    cluster = PostgresCluster(LOCAL / "pg", port=db_port)
    try:
        _start_databases(cluster, values, sample_patients)
    except Exception:
        cluster.stop()
        raise
    env = {
        **os.environ,
        "DATABASE_URL": cluster.url("app", user="medrec_api", password=values["api_password"]),
        "JWT_SECRET": values["jwt_secret"],
    }
    click.echo("starting the API ...")
    api = subprocess.Popen(
        [sys.executable, "-m", "tools.local_server", "--port", str(port)],  # chalice local without its stall
        cwd=ROOT,
        env=env,
    )
    stopping = False

    def stop(*_args: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        _wait_for_http(f"http://127.0.0.1:{port}/health", api)
        os.environ["JWT_SECRET"] = values["jwt_secret"]
        from chalicelib.api import auth

        click.echo(f"\nAPI:       http://127.0.0.1:{port}  (OpenAPI at /openapi.json)")
        click.echo(f"database:  {cluster.url('app', user='medrec_api', password='***')}")  # noqa: S106
        click.echo(f"dev token: {auth.mint(DEV_ADMIN, ['read', 'write', 'admin'], 12 * 3600)}  (admin)")
        click.echo(f"           other callers: {MINTING_HINT}")
        click.echo("refresh:   make refresh   (analytic table: analytic.medical_record_denormalized)")
        click.echo("ready. Ctrl-C stops everything.")
        while not stopping and api.poll() is None:
            time.sleep(0.5)
    finally:
        if api.poll() is None:
            api.terminate()
            api.wait(timeout=10)
        cluster.stop()
        click.echo("stopped.")


@cli.command()
@click.option("--aws-port", default=4566, show_default=True, help="AWS emulator (API Gateway, Lambda, ...) port")
@click.option("--prefect-port", default=4200, show_default=True, help="Prefect server and UI port")
@click.option("--db-port", default=None, type=int, help="PostgreSQL port (default: kept from the last run)")
@click.option("--sample-patients", default=100, show_default=True, help="demo patients loaded into an empty database")
@click.option("--schedule", default="rate(15 minutes)", show_default=True, help="refresh schedule (EventBridge)")
def up(aws_port: int, prefect_port: int, db_port: int | None, sample_patients: int, schedule: str) -> None:
    """The whole system, deployed as it is on AWS, without Docker; Ctrl-C stops everything it started."""
    import contextlib
    import io

    from tools import stack

    started_at = time.monotonic()
    values = local_secrets()
    services: list[stack.Service] = []
    cluster = None

    def step(message: str) -> None:
        click.echo(f"[{time.monotonic() - started_at:5.1f}s] {message}")

    def interrupt(*_args: object) -> None:
        raise KeyboardInterrupt

    # Ctrl-C, and `make down` (SIGTERM), end the wait below even where SIGINT was inherited as ignored
    # (a shell's background job).
    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    pid_file = LOCAL / "up.pid"
    try:
        LOCAL.mkdir(exist_ok=True)
        pid_file.write_text(str(os.getpid()))
        stack.require_free(aws_port, "AWS emulator")
        stack.require_free(prefect_port, "Prefect server")
        step("starting PostgreSQL (app + analytic databases, data kept in .local/pg) ...")
        from tools.pgcluster import PostgresCluster

        cluster = PostgresCluster(LOCAL / "pg", port=db_port)
        _start_databases(cluster, values, sample_patients)
        step("starting the AWS emulator (ministack) ...")
        services.append(stack.ministack(aws_port, LOCAL / "ministack"))
        step("starting the Prefect server and UI ...")
        prefect_api = f"http://127.0.0.1:{prefect_port}/api"
        services.append(stack.prefect_server(prefect_port, LOCAL / "prefect"))
        step("serving the refresh flow ...")
        pipeline_env = dict(line.split("=", 1) for line in (LOCAL / "pipeline.env").read_text().splitlines())
        os.environ["PSEUDONYM_KEY"] = pipeline_env["PSEUDONYM_KEY"]  # the served flow inherits it
        services.append(stack.served_flow(prefect_api, pipeline_env["APP_DB_URL"], pipeline_env["ANALYTIC_DB_URL"],
                                          LOCAL / "flow"))
        step("packaging the Chalice app and deploying template.yaml into the emulator ...")
        from infra.localstack import deploy

        os.environ["JWT_SECRET"] = values["jwt_secret"]
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = deploy.main([
                "--endpoint-url", f"http://127.0.0.1:{aws_port}", "--stack-name", "medical-records",
                "--database-url", cluster.url("app", user="medrec_api", password=values["api_password"]),
                "--migration-database-url", cluster.url("app"), "--prefect-api-url", prefect_api,
                "--refresh-schedule", schedule,
            ])
        if code != 0:
            raise stack.StackError(f"deploy failed: {out.getvalue().strip()}")
        deployed = json.loads(out.getvalue().strip().splitlines()[-1])
        from chalicelib.api import auth

        token = auth.mint(DEV_ADMIN, ["read", "write", "admin"], 12 * 3600)
        api = deployed["api_url"]
        (LOCAL / "stack.json").write_text(json.dumps({**deployed, "prefect_ui": f"http://127.0.0.1:{prefect_port}",
                                                       "aws_endpoint": f"http://127.0.0.1:{aws_port}"}))
        step("ready")
        lines = [
            "",
            f"  API           {api}",
            f'                (e.g. curl -H "Authorization: Bearer $TOKEN" {api}/v1/patients)',
            f"  OpenAPI       {api}/openapi.json",
            f"  dev token     {token}  (admin)",
            f"                other callers: {MINTING_HINT}",
            f"  Prefect UI    http://127.0.0.1:{prefect_port}",
            f"  refresh       scheduled {schedule}; by hand: make start-refresh (the state machine) or make refresh",
            "  analytics     make psql-analytic, then: select * from analytic.medical_record_denormalized limit 5;",
            "  logs          .local/ministack, .local/prefect, .local/flow, .local/pg/postgres.log",
            "",
            "Ctrl-C stops everything.",
        ]
        click.echo("\n".join(lines))
        while all(s.alive() for s in services):
            time.sleep(0.5)
        dead = next(s for s in services if not s.alive())
        raise stack.StackError(f"{dead.name} stopped unexpectedly; last lines of {dead.log_file}:\n{dead.tail()}")
    except KeyboardInterrupt:
        click.echo("\nstopping ...")
    except stack.StackError as exc:
        raise click.ClickException(str(exc)) from None
    # (a ClickException from a step propagates as is: one clear line, then the cleanup below)
    finally:
        for service in reversed(services):
            service.stop()
        if cluster is not None:
            cluster.stop()
        pid_file.unlink(missing_ok=True)
        click.echo("stopped.")


@cli.command()
def down() -> None:
    """Stop the stack `make up` started (as Ctrl-C in its terminal would)."""
    pid_file = LOCAL / "up.pid"
    if not pid_file.exists():
        click.echo("nothing to stop: make up is not running")
        return
    pid = int(pid_file.read_text())
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pid_file.unlink(missing_ok=True)
        click.echo("nothing to stop: make up is not running")
        return
    deadline = time.monotonic() + 60
    while pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.3)
    click.echo("stopped." if not pid_file.exists() else f"process {pid} is still stopping")


@cli.command("start-refresh")
@click.option("--mode", type=click.Choice(["incremental", "full"]), default="incremental", show_default=True)
def start_refresh(mode: str) -> None:
    """Start the refresh state machine of the stack `make up` runs, and wait for its result."""
    import boto3

    info = json.loads((LOCAL / "stack.json").read_text())
    sfn = boto3.client("stepfunctions", endpoint_url=info["aws_endpoint"], region_name="us-east-1",
                       aws_access_key_id="test", aws_secret_access_key="test")  # noqa: S106 - emulator
    arn = sfn.start_execution(stateMachineArn=info["state_machine_arn"],
                              input=json.dumps({"mode": mode, "pollIntervalSeconds": 2}))["executionArn"]
    click.echo(f"started {arn}")
    while (execution := sfn.describe_execution(executionArn=arn))["status"] == "RUNNING":
        time.sleep(1)
    click.echo(execution["status"])
    if execution["status"] != "SUCCEEDED":
        raise SystemExit(1)


def _start_databases(cluster, values: dict[str, str], sample_patients: int) -> None:
    """The embedded PostgreSQL with both databases migrated, the least-privilege logins and demo data."""
    from chalicelib.migrations import MigrationError

    cluster.ensure_initialized()
    try:
        cluster.start()
    except RuntimeError as exc:
        raise click.ClickException(f"PostgreSQL did not start: {exc}") from None
    try:
        _prepare_databases(cluster, values, sample_patients)
    except MigrationError as exc:
        raise click.ClickException(f"{exc}: the local data predates this version; `make reset` starts over") from None


def _prepare_databases(cluster, values: dict[str, str], sample_patients: int) -> None:
    from chalicelib.migrations import migrate

    cluster.create_database("app")
    admin_url = cluster.url("app")
    migrate(admin_url)
    create_login(admin_url, "medrec_api", values["api_password"], "medical_api")
    _prepare_analytics(cluster, values)
    _load_demo_data(admin_url, sample_patients)


def _prepare_analytics(cluster, values: dict[str, str]) -> None:
    """The analytic database, its migrations, the pipeline's read-only login and .local/pipeline.env."""
    from chalicelib.migrations import migrate
    from pipeline.settings import PIPELINE_DIR

    cluster.create_database("analytic")
    migrate(cluster.url("analytic"), PIPELINE_DIR / "migrations", "analytic")
    create_login(cluster.url("app"), "medrec_pipeline", values["pipeline_password"], "medical_reader")
    env_file = LOCAL / "pipeline.env"
    env_file.write_text(
        f"APP_DB_URL={cluster.url('app', user='medrec_pipeline', password=values['pipeline_password'])}\n"
        f"ANALYTIC_DB_URL={cluster.url('analytic')}\n"
        f"SLING_HOME_DIR={LOCAL / 'sling'}\n"
        f"PSEUDONYM_KEY={values['pseudonym_key']}\n"
    )
    env_file.chmod(0o600)


def _load_demo_data(owner_url: str, patients: int) -> None:
    """The original system's 8 sample patients plus generated ones, into an empty database only."""
    from pipeline.generate import generate, load_fixture

    conn = connect(owner_url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT EXISTS (SELECT 1 FROM medical_app.patient)")
            if cur.fetchone()[0]:
                return
        conn.commit()
        load_fixture(conn)
        if patients:
            generate(conn, patients=patients, records_per_patient=2.5, prescriptions_per_record=2.0, seed=42,
                     progress=patients >= 20_000)
        with conn.cursor() as cur:  # so that the clinician's dev token has patients to see
            cur.execute(
                "INSERT INTO medical_app.care_team_member (patient_id, member_sub, role, granted_by) "
                "SELECT patient_id, %s, 'attending', %s FROM medical_app.patient ORDER BY patient_id LIMIT %s",
                (DEV_CLINICIAN, DEV_ADMIN, DEMO_CARE_TEAM_SIZE),
            )
        conn.commit()
        click.echo(
            f"loaded demo data: 8 fixture patients + {patients} generated; "
            f"{DEV_CLINICIAN} is on the care team of the first {DEMO_CARE_TEAM_SIZE}"
        )
    finally:
        conn.close()


def _wait_for_http(url: str, process: subprocess.Popen, timeout: float = 60) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise click.ClickException("the API process exited during start-up")
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310 - our own loopback URL
                return
        except OSError:
            time.sleep(0.3)
    raise click.ClickException(f"the API did not answer at {url} within {timeout:.0f}s")



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
