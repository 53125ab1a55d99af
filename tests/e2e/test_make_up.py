"""`make up` as a user runs it: the whole stack reaches "ready" once the deployed API answers warm, the
printed API answers an authenticated request, and after Ctrl-C no process of the stack remains and its
ports are free. `make up POOLER=pgbouncer`: the deployed stack reaches PostgreSQL through PgBouncer in
transaction mode, and many concurrent clients over HTTP use no more server connections than its pool."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jwt
import psycopg2
import pytest

from tests.e2e.conftest import http
from tests.helpers import patient_body
from tools.pgcluster import free_port
from tools.stack import port_is_free

ROOT = Path(__file__).resolve().parents[2]


def _check_the_pooled_path(local: Path, api: str, token: str) -> int:
    """Concurrent writers and readers over HTTP through API Gateway, Lambda, PgBouncer: all served, PostgreSQL
    sessions of the API's login within the pool. Returns PgBouncer's port."""
    from tools.pooler import DEFAULT_POOL_SIZE

    ini = (local / "pgbouncer" / "pgbouncer.ini").read_text()
    pooler_port = int(ini.split("listen_port = ")[1].split()[0])
    state = json.loads((local / "pg" / "state.json").read_text())
    owner = psycopg2.connect(host="127.0.0.1", port=state["port"], dbname="app", user="postgres",
                             password=state["password"])
    owner.autocommit = True
    peak = 0

    def create(_: int) -> int:
        nonlocal peak
        status = http("POST", f"{api}/v1/patients", patient_body(), token)[0]
        with owner.cursor() as cur:  # (psycopg2 connections are thread-safe)
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = 'medrec_api'")
            peak = max(peak, cur.fetchone()[0])
        return status

    try:
        with ThreadPoolExecutor(max_workers=16) as pool:
            statuses = list(pool.map(create, range(48)))
        assert statuses == [201] * 48
        assert 1 <= peak <= DEFAULT_POOL_SIZE, peak
        with owner.cursor() as cur:  # and every one of those writes committed with its audit event
            cur.execute("SELECT count(*) FROM medical_app.audit_event WHERE actor = 'newcomer' AND action = 'create'")
            assert cur.fetchone()[0] == 48
    finally:
        owner.close()
    return pooler_port


@pytest.mark.parametrize(("stop_with", "pooler"), [("ctrl-c", "none"), ("make down", "pgbouncer")])
def test_up_reaches_ready_serves_the_api_and_stops_cleanly(tmp_path, stop_with, pooler):
    aws_port, prefect_port = free_port(), free_port()
    env = {**os.environ, "MEDREC_LOCAL_DIR": str(tmp_path / "local"), "PYTHONPATH": f"{ROOT / 'functions'}:{ROOT}"}
    env.pop("JWT_SECRET", None)
    log = tmp_path / "up.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "tools.cli", "up", "--aws-port", str(aws_port), "--prefect-port", str(prefect_port),
             "--sample-patients", "5", "--pooler", pooler],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 420  # warming the emulator's workers takes long on a busy machine
        while "Ctrl-C stops everything" not in log.read_text():
            assert process.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        local = tmp_path / "local"
        stack = json.loads((local / "stack.json").read_text())
        secret = json.loads((local / "secrets.json").read_text())["jwt_secret"]
        now = int(time.time())
        token = jwt.encode({"sub": "newcomer", "scope": "read write admin", "iss": "medical-records",
                            "aud": "medical-records-api", "iat": now, "exp": now + 600}, secret, algorithm="HS256")
        status, _, page = http("GET", f"{stack['api_url']}/v1/patients?limit=3", token=token)
        assert status == 200 and len(page["items"]) == 3  # the fixture's and the generated demo patients
        assert http("GET", f"{stack['api_url']}/v1/patients")[0] == 401
        assert http("GET", f"http://127.0.0.1:{prefect_port}/api/health")[0] == 200
        db_port = json.loads((local / "pg" / "state.json").read_text())["port"]
        # "ready" came only after the deployed API and its authorizer answered warm
        text = log.read_text()
        assert text.index("warming the API and the authorizer") < text.index("] ready")
        ports = [aws_port, prefect_port, db_port]
        if pooler == "pgbouncer":
            assert stack["pooler"] == "pgbouncer"
            ports.append(_check_the_pooled_path(local, stack["api_url"], token))
    finally:
        if stop_with == "ctrl-c":
            process.send_signal(signal.SIGINT)
        else:
            subprocess.run([sys.executable, "-m", "tools.cli", "down"], cwd=ROOT, env=env, check=True, timeout=90)
        process.wait(timeout=90)
    assert "stopped." in log.read_text()
    time.sleep(1)
    for port in ports:
        assert port_is_free(port), f"port {port} still in use after Ctrl-C"
    assert not (tmp_path / "local" / "pg" / "pgdata" / "postmaster.pid").exists()
    leftovers = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True).stdout.split()
    assert leftovers == [], f"processes left behind: {leftovers}"
