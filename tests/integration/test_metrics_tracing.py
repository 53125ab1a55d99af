"""X-Ray tracing through Powertools Tracer and the real aws-xray-sdk, in a process set up as Lambda sets one up.

With tracing on, the SDK sends its subsegments as UDP datagrams to the X-Ray daemon's address: the test
is that daemon, and reads what a real one would forward. With tracing off, neither the tracer nor the
SDK is imported at all.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

from tests.conftest import ROOT
from tests.helpers import card_number

FIRST = "Slithymora"
LAST = "Borogovewell"

PROBE = textwrap.dedent("""
    import json, sys
    import app
    print(json.dumps({"xray_after_import": "aws_xray_sdk" in sys.modules}))
    from chalice.test import Client
    from chalicelib.api import auth
    token = auth.mint("tracing-clinician", ["read", "write"])
    headers = {"Authorization": "Bearer " + token, "Content-Type": "application/json"}
    body = json.dumps({"idCardNum": sys.argv[1], "firstName": sys.argv[2], "lastName": sys.argv[3],
                       "birthDate": "1950-01-01"})
    with Client(app.app) as client:
        created = client.http.post("/v1/patients", headers=headers, body=body)
        pid = json.loads(created.body)["patientId"]
        read = client.http.get(f"/v1/patients/{pid}", headers=headers)
    print(json.dumps({"statuses": [created.status_code, read.status_code],
                      "xray_after_calls": "aws_xray_sdk" in sys.modules}))
""")


def _run_probe(database, extra_env: dict[str, str], card: str) -> tuple[dict, list[str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POWERTOOLS_TRACE", "_X_AMZN", "AWS_XRAY"))}
    env.update({"DATABASE_URL": database[1], "PYTHONPATH": f"{ROOT / 'functions'}:{ROOT}", **extra_env})
    result = subprocess.run([sys.executable, "-c", PROBE, card, FIRST, LAST], env=env, cwd=ROOT / "functions",
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [json.loads(line) for line in result.stdout.splitlines()
             if line.startswith('{"xray_') or line.startswith('{"statuses')]
    merged = {k: v for line in lines for k, v in line.items()}
    return merged, result.stdout.splitlines()


def test_with_tracing_off_the_tracer_is_never_imported(database):
    probe, _ = _run_probe(database, {}, card_number())
    assert probe == {"xray_after_import": False, "statuses": [201, 200], "xray_after_calls": False}


def test_with_tracing_on_each_invocation_sends_a_subsegment_named_by_its_route_template(database):
    card = card_number()
    daemon = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    daemon.bind(("127.0.0.1", 0))
    daemon.settimeout(2)
    try:
        port = daemon.getsockname()[1]
        probe, _ = _run_probe(database, {
            "POWERTOOLS_TRACE_DISABLED": "false",  # what the template's Tracing=true sets
            "LAMBDA_TASK_ROOT": str(ROOT / "functions"),
            "AWS_LAMBDA_FUNCTION_NAME": "medical-records-dev",
            "AWS_XRAY_DAEMON_ADDRESS": f"127.0.0.1:{port}",
            "_X_AMZN_TRACE_ID": "Root=1-6a1b2c3d-0123456789abcdef01234567;Parent=53995c3f42cd8ad8;Sampled=1",
        }, card)
        datagrams = []
        while True:
            try:
                datagrams.append(daemon.recv(65536).decode())
            except TimeoutError:
                break
    finally:
        daemon.close()
    # Imported on the first invocation, not by `import app`: the cold start's import stays as it is.
    assert probe == {"xray_after_import": False, "statuses": [201, 200], "xray_after_calls": True}
    subsegments = []
    for datagram in datagrams:
        header, _, document = datagram.partition("\n")
        assert json.loads(header) == {"format": "json", "version": 1}
        subsegments.append(json.loads(document))
    by_name = {s["name"]: s for s in subsegments}
    assert set(by_name) >= {"## POST /v1/patients", "## GET /v1/patients/{patientId}"}, by_name
    for segment in by_name.values():
        assert segment["trace_id"] == "1-6a1b2c3d-0123456789abcdef01234567"
        assert segment["parent_id"] == "53995c3f42cd8ad8"
        assert segment["end_time"] >= segment["start_time"]
    assert by_name["## POST /v1/patients"]["annotations"] == {"operation": "POST /v1/patients", "status": 201}
    assert by_name["## GET /v1/patients/{patientId}"]["annotations"]["status"] == 200
    sent = "\n".join(datagrams)
    assert not [s for s in (FIRST, LAST, card, "tracing-clinician") if s in sent], sent
