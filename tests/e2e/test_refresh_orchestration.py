"""The refresh state machine, executed in the emulator: Lambda tasks → a real Prefect server → the
served flow running the real Sling binary → the analytic table."""

from __future__ import annotations

import json
import time
import uuid

import boto3
import psycopg2

from tests.helpers import patient_body, prescription_body, record_body
from tests.pipeline_support import ANALYTIC, REFERENCE

from .conftest import http
from .test_deployed_api import token


def _stepfunctions(endpoint: str):
    return boto3.client("stepfunctions", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="test", aws_secret_access_key="test")


def _rows(url: str, sql: str) -> set[tuple]:
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return set(cur.fetchall())
    finally:
        conn.close()


def _run(deployed, execution_input: dict, timeout: float = 180) -> dict:
    sfn = _stepfunctions(deployed["endpoint"])
    arn = sfn.start_execution(stateMachineArn=deployed["state_machine_arn"], name=f"manual-{uuid.uuid4().hex[:12]}",
                              input=json.dumps(execution_input))["executionArn"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        execution = sfn.describe_execution(executionArn=arn)
        if execution["status"] != "RUNNING":
            return execution
        time.sleep(1)
    raise AssertionError(f"execution still running after {timeout}s")


def test_the_state_machine_refreshes_the_analytic_table(deployed, analytics):
    api, tok = deployed["api_url"], token(deployed["jwt_secret"])
    _, _, patient = http("POST", f"{api}/v1/patients", patient_body(), tok)
    _, _, visit = http("POST", f"{api}/v1/patients/{patient['patientId']}/medical-records", record_body(), tok)
    http("POST", f"{api}/v1/medical-records/{visit['medicalRecordId']}/prescriptions", prescription_body(), tok)

    execution = _run(deployed, {"mode": "incremental", "pollIntervalSeconds": 1})
    assert execution["status"] == "SUCCEEDED", execution
    analytic = _rows(analytics["analytic_url"], ANALYTIC)
    assert analytic == _rows(deployed["owner_url"], REFERENCE)
    assert any(row[14] is not None for row in analytic)  # the prescription row is there


def test_a_failed_prefect_run_fails_the_execution_with_its_reason(deployed, analytics):
    execution = _run(deployed, {"mode": "no-such-mode", "pollIntervalSeconds": 1})
    assert execution["status"] == "FAILED"
    sfn = _stepfunctions(deployed["endpoint"])
    history = sfn.get_execution_history(executionArn=execution["executionArn"], reverseOrder=True)["events"]
    failure = next(e for e in history if e["type"] == "ExecutionFailed")["executionFailedEventDetails"]
    assert failure["error"] == "RefreshFailed"
    assert "mode must be 'incremental' or 'full'" in failure.get("cause", "")


def test_the_schedule_starts_refreshes_on_its_own(deployed, analytics):
    """Deployed with rate(1 minute): a scheduled execution and its Prefect flow run appear unaided."""
    sfn = _stepfunctions(deployed["endpoint"])
    # Three periods of the 1-minute schedule after the stack was last deployed (a busy machine delays them).
    deadline = deployed["deployed_at"] + 180
    while True:  # looked at least once: the tests before this one may have taken longer than the periods
        executions = sfn.list_executions(stateMachineArn=deployed["state_machine_arn"])["executions"]
        scheduled = [e for e in executions if not e["name"].startswith("manual-")]
        if scheduled or time.time() >= deadline:
            break
        time.sleep(3)
    assert scheduled, "no scheduled execution within 180 s of the deploy"

    execution = sfn.describe_execution(executionArn=scheduled[0]["executionArn"])
    assert json.loads(execution["input"]) == {"mode": "incremental", "pollIntervalSeconds": 1}
