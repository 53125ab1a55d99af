"""The refresh state machine executed by moto's Step Functions interpreter (fast, no emulator).

Its Lambda tasks are the app's own @app.lambda_function handlers, called in-process (moto would run
them in Docker); Prefect is a scripted fake. The real path, with a real Prefect server and Sling, is
tests/e2e/test_refresh_orchestration.py.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import boto3
import pytest
from moto import mock_aws
from moto.stepfunctions.parser.asl.component.state.exec.state_task import lambda_eval_utils

from chalicelib.orchestration import tasks
from chalicelib.orchestration.prefect_api import PrefectUnavailable

ROOT = Path(__file__).resolve().parents[2]
ARN = "arn:aws:lambda:us-east-1:123456789012:function:{}"


class ScriptedPrefect:
    def __init__(self, states: list[tuple[str, str]], start_failures: int = 0) -> None:
        self.states = list(states)
        self.start_failures = start_failures
        self.started: list[dict] = []

    def start_deployment_run(self, deployment: str, parameters: dict) -> str:
        if self.start_failures:
            self.start_failures -= 1
            raise PrefectUnavailable("Prefect API unreachable: ConnectionRefusedError")
        self.started.append(parameters)
        return "run-1"

    def flow_run_state(self, flow_run_id: str) -> tuple[str, str]:
        return self.states.pop(0) if len(self.states) > 1 else self.states[0]


class InProcessLambda:
    """What moto's interpreter calls instead of a Lambda client: the app's handlers, in-process."""

    def __init__(self) -> None:
        from chalice.test import Client

        from app import app

        self.client = Client(app)

    def invoke(self, FunctionName: str, Payload: str | bytes = "{}", **_: object) -> dict:
        name = FunctionName.rsplit(":", 1)[-1]
        try:
            result = self.client.lambda_.invoke(name, json.loads(Payload or "{}"))
            return {"StatusCode": 200, "Payload": io.BytesIO(result.payload if isinstance(result.payload, bytes)
                                                          else json.dumps(result.payload).encode())}
        except Exception as exc:
            body = json.dumps({"errorType": type(exc).__name__, "errorMessage": str(exc)}).encode()
            return {"StatusCode": 200, "FunctionError": "Unhandled", "Payload": io.BytesIO(body)}


@pytest.fixture
def run_machine(monkeypatch):
    definition = (ROOT / "state_machines" / "refresh_analytics.asl.json").read_text()
    definition = definition.replace("${StartRefreshFunctionArn}", ARN.format("start_refresh"))
    definition = definition.replace("${RefreshStatusFunctionArn}", ARN.format("refresh_status"))
    in_process = InProcessLambda()
    monkeypatch.setattr(lambda_eval_utils, "boto_client_for", lambda **_: in_process)

    def run(prefect: ScriptedPrefect, execution_input: dict) -> tuple[dict, list[dict]]:
        monkeypatch.setattr(tasks.PrefectApi, "from_env", classmethod(lambda cls: prefect))
        with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
            sfn = boto3.client("stepfunctions", region_name="us-east-1")
            machine = sfn.create_state_machine(name="refresh", definition=definition,
                                               roleArn="arn:aws:iam::123456789012:role/sfn")["stateMachineArn"]
            arn = sfn.start_execution(stateMachineArn=machine, input=json.dumps(execution_input))["executionArn"]
            deadline = time.monotonic() + 60
            while (execution := sfn.describe_execution(executionArn=arn))["status"] == "RUNNING":
                assert time.monotonic() < deadline, "execution did not finish"
                time.sleep(0.05)
            history = sfn.get_execution_history(executionArn=arn, maxResults=1000)["events"]
        return execution, history

    return run


INPUT = {"mode": "incremental", "pollIntervalSeconds": 0}


def _failure(history: list[dict]) -> dict:
    return next(e for e in history if e["type"] == "ExecutionFailed")["executionFailedEventDetails"]


def test_polls_until_the_run_completes(run_machine):
    prefect = ScriptedPrefect([("PENDING", ""), ("RUNNING", ""), ("RUNNING", ""), ("COMPLETED", "")])
    execution, history = run_machine(prefect, INPUT)
    assert execution["status"] == "SUCCEEDED"
    assert prefect.started == [{"mode": "incremental"}]
    polls = [e for e in history
             if e["type"] == "TaskStateExited" and e["stateExitedEventDetails"]["name"] == "GetRunState"]
    assert len(polls) == 4


def test_a_failed_run_fails_the_execution_with_its_message(run_machine):
    prefect = ScriptedPrefect([("RUNNING", ""), ("FAILED", "Sling replication failed (exit 1): connection refused")])
    execution, history = run_machine(prefect, INPUT)
    assert execution["status"] == "FAILED"
    assert _failure(history) == {"error": "RefreshFailed",
                                 "cause": "Sling replication failed (exit 1): connection refused"}


def test_crashed_and_cancelled_runs_fail_too(run_machine):
    for state in ("CRASHED", "CANCELLED"):
        execution, history = run_machine(ScriptedPrefect([(state, f"the run was {state.lower()}")]), INPUT)
        assert execution["status"] == "FAILED" and _failure(history)["error"] == "RefreshFailed"


def test_polling_is_bounded(run_machine):
    execution, history = run_machine(ScriptedPrefect([("RUNNING", "")]), INPUT)
    assert execution["status"] == "FAILED"
    assert _failure(history)["error"] == "RefreshTimedOut"


def test_a_transient_prefect_outage_is_retried(run_machine):
    prefect = ScriptedPrefect([("COMPLETED", "")], start_failures=2)
    execution, _ = run_machine(prefect, INPUT)
    assert execution["status"] == "SUCCEEDED" and prefect.started == [{"mode": "incremental"}]


def test_prefect_down_for_good_fails_loudly(run_machine):
    execution, history = run_machine(ScriptedPrefect([("COMPLETED", "")], start_failures=100), INPUT)
    assert execution["status"] == "FAILED"
    failure = _failure(history)
    assert failure["error"] == "RefreshNotStarted" and "unreachable" in failure["cause"]
