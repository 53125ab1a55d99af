"""The deployed stack: ministack (Lambda without Docker) on a free port, the template deployed into it
with the real deploy command, against the suite's PostgreSQL."""

from __future__ import annotations

import contextlib
import io
import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import psycopg2
import pytest

ROOT = Path(__file__).resolve().parents[2]
MINISTACK = ROOT / ".venv-ministack" / "bin" / "ministack"


def _free_port() -> int:
    from tools.pgcluster import free_port

    return free_port()


@pytest.fixture(scope="session")
def ministack():
    if not MINISTACK.exists():
        pytest.fail("ministack is not installed: run `make ministack` (make test does)")
    port = _free_port()
    state = Path(tempfile.mkdtemp(prefix="ministack-"))
    # A clean environment: ministack passes its own environment on to the Lambdas it runs.
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(state),
        "GATEWAY_PORT": str(port),
        "MINISTACK_HOST": "127.0.0.1",
        "MINISTACK_REGION": "us-east-1",
        "TMPDIR": str(state),
    }
    log = open(state / "ministack.log", "w")  # noqa: SIM115 - closed below
    process = subprocess.Popen([str(MINISTACK)], env=env, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{endpoint}/_ministack/health", timeout=1)  # noqa: S310
            break
        except urllib.error.HTTPError:
            break  # it answers: up
        except OSError:
            if process.poll() is not None:
                pytest.fail(f"ministack exited: {(state / 'ministack.log').read_text()[-2000:]}")
            time.sleep(0.2)
    try:
        yield endpoint
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        log.close()
        shutil.rmtree(state, ignore_errors=True)


def http(method: str, url: str, body=None, token: str | None = None, headers=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    for key, value in (headers or {}).items():
        request.add_header(key, value)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
            text = response.read().decode()
            return response.status, dict(response.headers), json.loads(text) if text else None
    except urllib.error.HTTPError as exc:
        text = exc.read().decode()
        try:
            payload = json.loads(text) if text else None
        except ValueError:
            payload = text
        return exc.code, dict(exc.headers), payload


@pytest.fixture(scope="session")
def deployed(ministack, pg_cluster, prefect_api, analytics):
    """Deploy with the real deploy command: API, authorizer, refresh tasks, state machine, 1-minute schedule."""
    from infra.localstack import deploy
    from tools.cli import create_login

    owner_url = pg_cluster.url("app_e2e")
    create_login(owner_url, "medrec_api_e2e", "api-e2e-password", "medical_api")
    api_db_url = pg_cluster.url("app_e2e", user="medrec_api_e2e", password="api-e2e-password")
    jwt_secret = secrets.token_urlsafe(32)
    args = ["--endpoint-url", ministack, "--stack-name", "medrec-e2e", "--database-url", api_db_url,
            "--migration-database-url", owner_url, "--prefect-api-url", prefect_api,
            "--refresh-schedule", "rate(1 minute)", "--refresh-poll-seconds", "1"]
    old = os.environ.get("JWT_SECRET")
    os.environ["JWT_SECRET"] = jwt_secret
    try:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = deploy.main(args)
        assert code == 0, out.getvalue()
    finally:
        os.environ["JWT_SECRET"] = old or ""
    result = json.loads(out.getvalue().strip().splitlines()[-1])
    return {"api_url": result["api_url"], "state_machine_arn": result["state_machine_arn"],
            "jwt_secret": jwt_secret, "owner_url": owner_url, "endpoint": ministack, "deploy_args": args,
            "deployed_at": time.time()}

def _wait_http(url: str, process: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"process exited: {log.read_text()[-3000:]}")
        try:
            urllib.request.urlopen(url, timeout=2)  # noqa: S310
            return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"{url} did not answer within {timeout:.0f}s: {log.read_text()[-3000:]}")


def _stop(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory):
    """A real Prefect server (with its UI), as the refresh tasks call it."""
    import sys

    home = tmp_path_factory.mktemp("prefect")
    port = _free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "DO_NOT_TRACK": "1", "PREFECT_API_URL": ""}
    env.pop("PREFECT_API_URL")
    log = home / "server.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "prefect"), "server", "start",
             "--host", "127.0.0.1", "--port", str(port)],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}/api"
    try:
        _wait_http(f"{url}/health", process, log, 90)
        yield url
    finally:
        _stop(process)


@pytest.fixture(scope="session")
def analytics(pg_cluster, prefect_api, tmp_path_factory):
    """The analytic database and the served refresh flow (what a Prefect worker would run)."""
    import sys

    from chalicelib.migrations import apply_migrations
    from pipeline.settings import PIPELINE_DIR
    from tools.cli import create_login

    pg_cluster.create_database("app_e2e")
    pg_cluster.create_database("analytic_e2e")
    conn = psycopg2.connect(pg_cluster.url("app_e2e"))
    try:
        apply_migrations(conn)
    finally:
        conn.close()
    conn = psycopg2.connect(pg_cluster.url("analytic_e2e"))
    try:
        apply_migrations(conn, PIPELINE_DIR / "migrations", "analytic")
    finally:
        conn.close()
    create_login(pg_cluster.url("app_e2e"), "medrec_pipeline_e2e", "pipeline-e2e-pw", "medical_reader")
    work = tmp_path_factory.mktemp("served-flow")
    env = {
        **os.environ,
        "PREFECT_API_URL": prefect_api,
        "PREFECT_HOME": str(work),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "APP_DB_URL": pg_cluster.url("app_e2e", user="medrec_pipeline_e2e", password="pipeline-e2e-pw"),
        "ANALYTIC_DB_URL": pg_cluster.url("analytic_e2e"),
        "SLING_HOME_DIR": str(work / "sling"),
        "PYTHONPATH": f"{ROOT / 'functions'}:{ROOT}",
    }
    log = work / "serve.log"
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, "-m", "pipeline.flow", "--serve", "--interval", "0"],
                                   cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 90
    try:
        while time.monotonic() < deadline:
            status, _, _ = http("GET", f"{prefect_api}/deployments/name/refresh-analytics/refresh-analytics")
            if status == 200:
                break
            if process.poll() is not None:
                pytest.fail(f"served flow exited: {log.read_text()[-3000:]}")
            time.sleep(0.5)
        else:
            pytest.fail(f"the refresh deployment did not appear: {log.read_text()[-3000:]}")
        yield {"analytic_url": pg_cluster.url("analytic_e2e"), "log": log}
    finally:
        _stop(process)
