"""The deployed stack: ministack (Lambda without Docker) on a free port, the template deployed into it
with the real deploy command, against the suite's PostgreSQL."""

from __future__ import annotations

import contextlib
import io
import json
import os
import secrets
import subprocess
import sys
import time
import urllib.request
from http.client import HTTPConnection
from pathlib import Path

import pytest

from tools import stack
from tools.pgcluster import free_port

ROOT = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def local_api_server(log: Path, *extra_args: str):
    """`python -m tools.local_server` (what `make run` serves with) on a free port, once /health answers:
    yields (process, port). It reads DATABASE_URL and JWT_SECRET from the environment the suite set."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'functions'}:{ROOT}"}
    with open(log, "w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "tools.local_server", "--host", "127.0.0.1", "--port", str(port), *extra_args],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, f"the server exited: {log.read_text()}"
            assert time.monotonic() < deadline, f"no answer within 60 s: {log.read_text()}"
            try:
                probe = HTTPConnection("127.0.0.1", port, timeout=2)
                probe.request("GET", "/health")
                probe.getresponse().read()
                probe.close()
                break
            except OSError:
                time.sleep(0.2)
        yield process, port
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="session")
def ministack(tmp_path_factory):
    if not stack.MINISTACK.exists():
        pytest.fail("ministack is not installed: run `make ministack` (make test does)")
    port = free_port()
    service = stack.ministack(port, tmp_path_factory.mktemp("ministack"))
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        service.stop()


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

@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory):
    """A real Prefect server (with its UI), as the refresh tasks call it."""
    port = free_port()
    service = stack.prefect_server(port, tmp_path_factory.mktemp("prefect"))
    try:
        yield f"http://127.0.0.1:{port}/api"
    finally:
        service.stop()


@pytest.fixture(scope="session")
def analytics(pg_cluster, prefect_api, tmp_path_factory):
    """The analytic database and the served refresh flow (what a Prefect worker would run)."""
    from chalicelib.migrations import migrate
    from pipeline.settings import PIPELINE_DIR
    from tools.cli import create_login

    pg_cluster.create_database("app_e2e")
    pg_cluster.create_database("analytic_e2e")
    migrate(pg_cluster.url("app_e2e"))
    migrate(pg_cluster.url("analytic_e2e"), PIPELINE_DIR / "migrations", "analytic")
    create_login(pg_cluster.url("app_e2e"), "medrec_pipeline_e2e", "pipeline-e2e-pw", "medical_reader")
    service = stack.served_flow(
        prefect_api,
        pg_cluster.url("app_e2e", user="medrec_pipeline_e2e", password="pipeline-e2e-pw"),
        pg_cluster.url("analytic_e2e"),
        tmp_path_factory.mktemp("served-flow"),
    )
    try:
        yield {"analytic_url": pg_cluster.url("analytic_e2e"), "log": service.log_file}
    finally:
        service.stop()
