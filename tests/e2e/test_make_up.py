"""`make up` as a user runs it: the whole stack reaches "ready", the printed API answers an
authenticated request, and after Ctrl-C no process of the stack remains and its ports are free."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jwt
import pytest

from tests.e2e.conftest import http
from tools.pgcluster import free_port
from tools.stack import port_is_free

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("stop_with", ["ctrl-c", "make down"])
def test_up_reaches_ready_serves_the_api_and_stops_cleanly(tmp_path, stop_with):
    aws_port, prefect_port = free_port(), free_port()
    env = {**os.environ, "MEDREC_LOCAL_DIR": str(tmp_path / "local"), "PYTHONPATH": f"{ROOT / 'functions'}:{ROOT}"}
    env.pop("JWT_SECRET", None)
    log = tmp_path / "up.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "tools.cli", "up", "--aws-port", str(aws_port), "--prefect-port", str(prefect_port),
             "--sample-patients", "5"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 180
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
    finally:
        if stop_with == "ctrl-c":
            process.send_signal(signal.SIGINT)
        else:
            subprocess.run([sys.executable, "-m", "tools.cli", "down"], cwd=ROOT, env=env, check=True, timeout=90)
        process.wait(timeout=90)
    assert "stopped." in log.read_text()
    time.sleep(1)
    for port in (aws_port, prefect_port, db_port):
        assert port_is_free(port), f"port {port} still in use after Ctrl-C"
    assert not (tmp_path / "local" / "pg" / "pgdata" / "postmaster.pid").exists()
    leftovers = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True).stdout.split()
    assert leftovers == [], f"processes left behind: {leftovers}"
