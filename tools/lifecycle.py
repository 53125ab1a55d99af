"""The local stack's lifecycle: what `make run`, `make up` and `make down` start, watch and stop.

`run`: the embedded PostgreSQL and the API under the local server. `up`: PostgreSQL, the AWS emulator,
Prefect and the served refresh flow, with template.yaml deployed into the emulator as on AWS. Either can
put PgBouncer in transaction mode between the API and PostgreSQL (``pooler="pgbouncer"``), as RDS Proxy
sits on AWS. Failures are raised as ``stack.StackError`` with a one-line reason (and the log to read).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from chalicelib.config import STACK_NAME
from tools import stack
from tools.demo_data import MINTING_HINT, admin_token, load_demo_data
from tools.local_state import LOCAL, PID_FILE, PIPELINE_ENV, STACK_FILE, local_secrets
from tools.provisioning import API_ROLE, READER_ROLE, create_login, migrate_analytic, migrate_application

API_LOGIN = "medrec_api"
PIPELINE_LOGIN = "medrec_pipeline"
POOLERS = ("none", "pgbouncer")
# `up` is ready once this many concurrent authenticated requests (each with a token the authorizer has not
# seen) all answer within WARM_LATENCY_SECONDS: the emulator has started its API and authorizer workers
# (one per concurrent caller, each taking 1-10 s to start depending on the machine's load).
WARM_CONCURRENCY = 8
WARM_LATENCY_SECONDS = 1.0  # a cold worker takes 1-2 s to answer; a warm one well under this
WARM_TIMEOUT_SECONDS = 300

Say = Callable[[str], None]


def start_databases(cluster, values: dict[str, str], sample_patients: int, say: Say) -> None:
    """The embedded PostgreSQL with both databases migrated, the least-privilege logins and demo data."""
    from chalicelib.migrations import MigrationError

    cluster.ensure_initialized()
    try:
        cluster.start()
    except RuntimeError as exc:
        raise stack.StackError(f"PostgreSQL did not start: {exc}") from None
    try:
        cluster.create_database("app")
        admin_url = cluster.url("app")
        migrate_application(admin_url)
        create_login(admin_url, API_LOGIN, values["api_password"], API_ROLE)
        _prepare_analytics(cluster, values)
        loaded = load_demo_data(admin_url, sample_patients)
    except MigrationError as exc:
        raise stack.StackError(f"{exc}: the local data predates this version; `make reset` starts over") from None
    if loaded:
        say(loaded)


def _prepare_analytics(cluster, values: dict[str, str]) -> None:
    """The analytic database, its migrations, the pipeline's read-only login and .local/pipeline.env."""
    cluster.create_database("analytic")
    migrate_analytic(cluster.url("analytic"))
    create_login(cluster.url("app"), PIPELINE_LOGIN, values["pipeline_password"], READER_ROLE)
    PIPELINE_ENV.write_text(
        f"APP_DB_URL={cluster.url('app', user=PIPELINE_LOGIN, password=values['pipeline_password'])}\n"
        f"ANALYTIC_DB_URL={cluster.url('analytic')}\n"
        f"SLING_HOME_DIR={LOCAL / 'sling'}\n"
        f"PSEUDONYM_KEY={values['pseudonym_key']}\n"
    )
    PIPELINE_ENV.chmod(0o600)


def api_database_url(cluster, values: dict[str, str], pooler: str, services: list) -> str:
    """The API login's URL: PostgreSQL itself, or PgBouncer (started here, added to ``services``) in front."""
    if pooler not in POOLERS:
        raise stack.StackError(f"unknown pooler {pooler!r}: one of {', '.join(POOLERS)}")
    if pooler == "none":
        return cluster.url("app", user=API_LOGIN, password=values["api_password"])
    from tools.pooler import PgBouncer, PoolerError

    try:
        bouncer = PgBouncer(LOCAL / "pgbouncer", server_port=cluster.port,
                            users={API_LOGIN: values["api_password"]}).start()
    except PoolerError as exc:
        raise stack.StackError(f"PgBouncer: {exc}") from None
    services.append(bouncer)
    return bouncer.url("app", API_LOGIN, values["api_password"])


def _stop_on_signals() -> None:
    def interrupt(*_args: object) -> None:
        raise KeyboardInterrupt

    # Ctrl-C, and `make down` (SIGTERM), end the wait even where SIGINT was inherited as ignored
    # (a shell's background job).
    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)


def _watch(services: list) -> None:
    """Until Ctrl-C / SIGTERM, or until a part stops on its own (then a StackError naming it)."""
    while all(s.alive() for s in services):
        time.sleep(0.5)
    dead = next(s for s in services if not s.alive())
    raise stack.StackError(f"{dead.name} stopped unexpectedly; last lines of {dead.log_file}:\n{dead.tail()}")


def run_api(port: int, db_port: int | None, sample_patients: int, pooler: str, say: Say) -> None:
    """PostgreSQL (optionally behind PgBouncer) and the API under the local server, until Ctrl-C."""
    from tools.pgcluster import PostgresCluster

    values = local_secrets()
    say("starting PostgreSQL ...")
    cluster = PostgresCluster(LOCAL / "pg", port=db_port)
    services: list = []
    _stop_on_signals()
    try:
        start_databases(cluster, values, sample_patients, say)
        database_url = api_database_url(cluster, values, pooler, services)
        say("starting the API ...")
        env = {**os.environ, "DATABASE_URL": database_url, "JWT_SECRET": values["jwt_secret"]}
        api = stack.Service("API (local server)", [sys.executable, "-m", "tools.local_server", "--port", str(port)],
                            LOCAL / "api.log", env)
        api.start()
        services.append(api)
        api.wait_until(lambda: stack.answers(f"http://127.0.0.1:{port}/health"), 60, "did not answer")
        os.environ["JWT_SECRET"] = values["jwt_secret"]
        say(f"\nAPI:       http://127.0.0.1:{port}  (OpenAPI at /openapi.json; its log: {api.log_file})")
        say(f"database:  {cluster.url('app', user=API_LOGIN, password='***')}"  # noqa: S106
            + ("  (through PgBouncer, transaction mode)" if pooler == "pgbouncer" else ""))
        say(f"dev token: {admin_token()}  (admin)")
        say(f"           other callers: {MINTING_HINT}")
        say("refresh:   make refresh   (analytic table: analytic.medical_record_denormalized)")
        say("ready. Ctrl-C stops everything.")
        _watch(services)
    except KeyboardInterrupt:
        say("\nstopping ...")
    finally:
        for service in reversed(services):
            service.stop()
        cluster.stop()
        say("stopped.")


def warm_api(api_url: str, concurrency: int = WARM_CONCURRENCY, timeout: float = WARM_TIMEOUT_SECONDS) -> float:
    """Bring up the emulator's API and authorizer workers: rounds of 1, 2, 4 ... ``concurrency`` concurrent
    authenticated requests, each with a token the authorizer has not seen (so it runs too), every round
    waiting for all its answers — a request abandoned while its worker still starts would make the
    emulator start yet another one — until a whole round at ``concurrency`` answers 200 within
    WARM_LATENCY_SECONDS. Returns the seconds it took; raises StackError if not warm within ``timeout``."""
    from chalicelib.api import auth

    started = time.monotonic()
    counter = iter(range(1_000_000))
    lock = threading.Lock()

    def call(_: int) -> tuple[int, float]:
        with lock:
            n = next(counter)
        token = auth.mint(f"warm-up-{n}", ["read"], 300)
        request = urllib.request.Request(f"{api_url}/v1/patients?limit=1",  # noqa: S310 - our own API
                                         headers={"Authorization": f"Bearer {token}"})
        begun = time.monotonic()
        remaining = max(timeout - (begun - started), 1)
        try:
            with urllib.request.urlopen(request, timeout=remaining) as response:  # noqa: S310
                status = response.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        except OSError:
            status = 0
        return status, time.monotonic() - begun

    width = 1
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        while time.monotonic() - started < timeout:
            answers = list(pool.map(call, range(width)))
            if any(status not in (0, 200, 502, 503, 504) for status, _ in answers):
                raise stack.StackError(f"the deployed API answered {sorted({s for s, _ in answers})} while warming")
            warm = all(status == 200 and took <= WARM_LATENCY_SECONDS for status, took in answers)
            if warm and width == concurrency:
                return time.monotonic() - started
            if all(status == 200 for status, _ in answers):
                width = min(width * 2, concurrency)
    raise stack.StackError(f"the deployed API was not warm within {timeout:.0f}s")


def run_stack(aws_port: int, prefect_port: int, db_port: int | None, sample_patients: int, schedule: str,
              pooler: str, say: Say) -> None:
    """The whole system, deployed as it is on AWS, without Docker, until Ctrl-C / `make down`."""
    from tools.pgcluster import PostgresCluster

    started_at = time.monotonic()
    values = local_secrets()
    services: list = []
    cluster = None

    def step(message: str) -> None:
        say(f"[{time.monotonic() - started_at:5.1f}s] {message}")

    _stop_on_signals()
    try:
        LOCAL.mkdir(exist_ok=True)
        PID_FILE.write_text(str(os.getpid()))
        stack.require_free(aws_port, "AWS emulator")
        stack.require_free(prefect_port, "Prefect server")
        step("starting PostgreSQL (app + analytic databases, data kept in .local/pg) ...")
        cluster = PostgresCluster(LOCAL / "pg", port=db_port)
        start_databases(cluster, values, sample_patients, say)
        if pooler != "none":
            step(f"starting {pooler} (transaction mode) between the functions and PostgreSQL ...")
        database_url = api_database_url(cluster, values, pooler, services)
        step("starting the AWS emulator (ministack) ...")
        services.append(stack.ministack(aws_port, LOCAL / "ministack"))
        step("starting the Prefect server and UI ...")
        prefect_api = f"http://127.0.0.1:{prefect_port}/api"
        services.append(stack.prefect_server(prefect_port, LOCAL / "prefect"))
        step("serving the refresh flow ...")
        pipeline_env = dict(line.split("=", 1) for line in PIPELINE_ENV.read_text().splitlines())
        os.environ["PSEUDONYM_KEY"] = pipeline_env["PSEUDONYM_KEY"]  # the served flow inherits it
        services.append(stack.served_flow(prefect_api, pipeline_env["APP_DB_URL"], pipeline_env["ANALYTIC_DB_URL"],
                                          LOCAL / "flow"))
        step("packaging the Chalice app and deploying template.yaml into the emulator ...")
        deployed = deploy(f"http://127.0.0.1:{aws_port}", database_url, cluster.url("app"), prefect_api, schedule,
                          values["jwt_secret"])
        api = deployed["api_url"]
        step("warming the API and the authorizer ...")
        warmed = warm_api(api)
        STACK_FILE.write_text(json.dumps({**deployed, "prefect_ui": f"http://127.0.0.1:{prefect_port}",
                                          "aws_endpoint": f"http://127.0.0.1:{aws_port}", "pooler": pooler}))
        step(f"ready (warm: {WARM_CONCURRENCY} concurrent requests answered within "
             f"{WARM_LATENCY_SECONDS * 1000:.0f} ms after {warmed:.1f}s of warming)")
        lines = [
            "",
            f"  API           {api}",
            f'                (e.g. curl -H "Authorization: Bearer $TOKEN" {api}/v1/patients)',
            f"  OpenAPI       {api}/openapi.json",
            f"  dev token     {admin_token()}  (admin)",
            f"                other callers: {MINTING_HINT}",
            f"  Prefect UI    http://127.0.0.1:{prefect_port}",
            f"  refresh       scheduled {schedule}; by hand: make start-refresh (the state machine) or make refresh",
            "  analytics     make psql-analytic, then: select * from analytic.medical_record_denormalized limit 5;",
            "  logs          .local/ministack, .local/prefect, .local/flow, .local/pg/postgres.log"
            + (", .local/pgbouncer" if pooler == "pgbouncer" else ""),
            "",
            "Ctrl-C stops everything.",
        ]
        say("\n".join(lines))
        _watch(services)
    except KeyboardInterrupt:
        say("\nstopping ...")
    finally:
        for service in reversed(services):
            service.stop()
        if cluster is not None:
            cluster.stop()
        PID_FILE.unlink(missing_ok=True)
        say("stopped.")


def deploy(endpoint: str, database_url: str, owner_url: str, prefect_api: str, schedule: str,
           jwt_secret: str) -> dict:
    """The deploy command (infra/localstack/deploy.py), as on LocalStack; its JSON summary."""
    from infra.localstack import deploy as deploy_command

    os.environ["JWT_SECRET"] = jwt_secret
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = deploy_command.main([
            "--endpoint-url", endpoint, "--stack-name", STACK_NAME, "--database-url", database_url,
            "--migration-database-url", owner_url, "--prefect-api-url", prefect_api, "--refresh-schedule", schedule,
        ])
    if code != 0:
        raise stack.StackError(f"deploy failed: {out.getvalue().strip()}")
    return json.loads(out.getvalue().strip().splitlines()[-1])


def stop_stack(say: Say) -> None:
    """Stop the stack `make up` started (as Ctrl-C in its terminal would)."""
    if not PID_FILE.exists():
        say("nothing to stop: make up is not running")
        return
    pid = int(PID_FILE.read_text())
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        PID_FILE.unlink(missing_ok=True)
        say("nothing to stop: make up is not running")
        return
    deadline = time.monotonic() + 60
    while PID_FILE.exists() and time.monotonic() < deadline:
        time.sleep(0.3)
    say("stopped." if not PID_FILE.exists() else f"process {pid} is still stopping")


def start_refresh(mode: str, say: Say) -> bool:
    """Start the refresh state machine of the stack `make up` runs and wait for it; True when it succeeded."""
    import boto3

    info = json.loads(STACK_FILE.read_text())
    sfn = boto3.client("stepfunctions", endpoint_url=info["aws_endpoint"], region_name="us-east-1",
                       aws_access_key_id="test", aws_secret_access_key="test")  # noqa: S106 - emulator
    arn = sfn.start_execution(stateMachineArn=info["state_machine_arn"],
                              input=json.dumps({"mode": mode, "pollIntervalSeconds": 2}))["executionArn"]
    say(f"started {arn}")
    while (execution := sfn.describe_execution(executionArn=arn))["status"] == "RUNNING":
        time.sleep(1)
    say(execution["status"])
    return execution["status"] == "SUCCEEDED"

