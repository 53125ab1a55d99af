"""Metrics in the deployed stack: EMF lines in the functions' CloudWatch log groups of the emulator, and the
alarms and dashboard the template creates. The emulator runs each Lambda as a process and writes what it
prints to the function's log group (its LoggingConfig), as Lambda does; CloudWatch extracts EMF from there."""

from __future__ import annotations

import json
import time
from typing import Any

import boto3

from chalicelib import metrics
from tests.helpers import card_number, record_body

from .conftest import http
from .test_deployed_api import token
from .test_refresh_orchestration import _run

STACK = "medrec-e2e"  # the e2e deployment's --stack-name (tests/e2e/conftest.py)
FIRST, LAST, REASON = "Mimsyanna", "Outgrabeworth", "Vorpal injury in the Tumtum ward"


def _client(service: str, deployed: dict) -> Any:
    return boto3.client(service, endpoint_url=deployed["endpoint"], region_name="us-east-1",
                        aws_access_key_id="test", aws_secret_access_key="test")


def _emf_lines(deployed: dict, function: str) -> list[dict[str, Any]]:
    logs = _client("logs", deployed)
    group = f"/aws/lambda/{STACK}/{function}"
    documents, kwargs = [], {"logGroupName": group}
    while True:
        page = logs.filter_log_events(**kwargs)
        for event in page["events"]:
            message = event["message"].strip()
            if message.startswith("{") and '"_aws"' in message:
                documents.append(json.loads(message))
        if not page.get("nextToken"):
            return documents
        kwargs["nextToken"] = page["nextToken"]


def _wait_for(deployed: dict, function: str, predicate, timeout: float = 30) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        documents = _emf_lines(deployed, function)
        if predicate(documents) or time.monotonic() > deadline:
            return documents
        time.sleep(1)


def test_api_requests_leave_emf_lines_with_their_metrics_and_no_personal_data(deployed):
    api, secret = deployed["api_url"], deployed["jwt_secret"]
    card = card_number()
    clinician, outsider = token(secret, "read write", sub="metrics-doctor"), token(secret, "read", sub="metrics-other")
    body = {"idCardNum": card, "firstName": FIRST, "lastName": LAST, "birthDate": "1931-07-04"}
    status, _, patient = http("POST", f"{api}/v1/patients", body, clinician)
    assert status == 201, patient
    pid = patient["patientId"]
    assert http("POST", f"{api}/v1/patients/{pid}/medical-records", record_body(), clinician)[0] == 201
    assert http("GET", f"{api}/v1/patients/{pid}", token=outsider)[0] == 403
    assert http("GET", f"{api}/v1/patients/{pid}", token=outsider, headers={"Break-Glass": REASON})[0] == 200

    def seen(documents: list[dict[str, Any]]) -> bool:
        return sum(d.get(metrics.BREAK_GLASS_ACCESS) == [1.0] for d in documents) >= 1

    documents = _wait_for(deployed, "APIHandler", seen)
    by_outcome = {(d["route"], d["statusCode"]): d for d in documents}
    created = by_outcome[("POST /v1/patients", 201)]
    (directive,) = created["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == metrics.NAMESPACE
    assert ["service", "route", "statusClass"] in directive["Dimensions"]
    assert created[metrics.REQUESTS] == [1.0] and created[metrics.AUDIT_EVENTS_WRITTEN] == [1.0]
    denied = by_outcome[("GET /v1/patients/{patientId}", 403)]
    assert denied[metrics.ACCESS_DENIED] == [1.0] and denied["statusClass"] == "4xx"
    glass = by_outcome[("GET /v1/patients/{patientId}", 200)]
    assert any(d[metrics.BREAK_GLASS_ACCESS] == [1.0] for d in documents if d is glass or d["route"] == glass["route"])
    text = json.dumps(documents)
    assert not [s for s in (FIRST, LAST, REASON, card, "metrics-doctor", "metrics-other") if s in text]


def test_a_finished_refresh_leaves_its_metrics_in_the_status_task_log(deployed, analytics):
    execution = _run(deployed, {"mode": "incremental", "pollIntervalSeconds": 1})
    assert execution["status"] == "SUCCEEDED", execution

    def succeeded(documents: list[dict[str, Any]]) -> bool:
        return any(d.get(metrics.REFRESH_SUCCEEDED) == [1.0] for d in documents)

    documents = [d for d in _wait_for(deployed, "RefreshStatus", succeeded) if succeeded([d])]
    assert documents, "no refresh metrics in RefreshStatus's log group"
    latest = documents[-1]
    assert latest["_aws"]["CloudWatchMetrics"][0]["Namespace"] == metrics.NAMESPACE
    assert latest[metrics.REFRESH_FAILED] == [0.0]
    assert latest[metrics.REFRESH_DURATION][0] > 0
    assert latest[metrics.REFRESH_ROWS_CHANGED][0] >= 0  # read from the run's summary artifact
    assert 0 <= latest[metrics.ANALYTIC_DATA_AGE][0] < 600


def test_the_alarms_and_the_dashboard_are_deployed(deployed):
    cloudwatch = _client("cloudwatch", deployed)
    names = {a["AlarmName"] for a in cloudwatch.describe_alarms(AlarmNamePrefix=f"{STACK}-")["MetricAlarms"]}
    assert {f"{STACK}-api-5xx-rate", f"{STACK}-api-latency-p99", f"{STACK}-authorizer-errors",
            f"{STACK}-refresh-failed", f"{STACK}-analytics-stale"} <= names
    assert f"{STACK}-database-connections" not in names  # no DatabaseInstanceId given
    dashboard = cloudwatch.get_dashboard(DashboardName=f"{STACK}-operations")
    assert len(json.loads(dashboard["DashboardBody"])["widgets"]) >= 8
