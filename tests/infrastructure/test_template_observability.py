"""Tracing, alarms and the dashboard in the generated template, consistent with what the code emits."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from chalicelib import metrics

ROOT = Path(__file__).resolve().parents[2]
FUNCTIONS = ("APIHandler", "JwtAuthorizer", "StartRefresh", "RefreshStatus", "SealAudit", "ExportWorker")
ROLES = {"APIHandler": "ApiHandlerRole", "JwtAuthorizer": "JwtAuthorizerRole", "StartRefresh": "StartRefreshRole",
         "RefreshStatus": "RefreshStatusRole", "SealAudit": "SealAuditRole", "ExportWorker": "ExportWorkerRole"}
NOTIFIES = {"Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]}


@pytest.fixture(scope="module")
def chalice_config() -> dict:
    return json.loads((ROOT / "functions" / ".chalice" / "config.json").read_text())


@pytest.fixture(scope="module")
def alarms(template) -> dict[str, dict]:
    return {name: r["Properties"] for name, r in template["Resources"].items() if r["Type"] == "AWS::CloudWatch::Alarm"}


def test_tracing_is_one_parameter_that_switches_functions_stage_code_and_permissions(template):
    parameter = template["Parameters"]["Tracing"]
    assert parameter["AllowedValues"] == ["true", "false"] and parameter["Default"] == "false"
    assert template["Conditions"]["TracingOn"] == {"Fn::Equals": [{"Ref": "Tracing"}, "true"]}
    resources = template["Resources"]
    for name in FUNCTIONS:
        assert resources[name]["Properties"]["Tracing"] == {"Fn::If": ["TracingOn", "Active", "PassThrough"]}, name
        statements = resources[ROLES[name]]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
        traced = [s for s in statements if "Fn::If" in s and s["Fn::If"][0] == "TracingOn"]
        assert len(traced) == 1, name
        allowed, otherwise = traced[0]["Fn::If"][1:]
        assert allowed["Action"] == ["xray:PutTraceSegments", "xray:PutTelemetryRecords"]
        assert otherwise == {"Ref": "AWS::NoValue"}
    assert resources["RestAPI"]["Properties"]["TracingEnabled"] == {"Fn::If": ["TracingOn", True, False]}
    # The switch the code reads (chalicelib/observability.py), set for every function.
    from chalicelib.observability import TRACING_SWITCH

    variables = template["Globals"]["Function"]["Environment"]["Variables"]
    assert variables[TRACING_SWITCH] == {"Fn::If": ["TracingOn", "false", "true"]}


def test_alarms_cover_the_api_every_function_the_refresh_and_the_database(alarms, chalice_config):
    stage = chalice_config["stages"]["dev"]["api_gateway_stage"]
    api_dimensions = [{"Name": "ApiName", "Value": chalice_config["app_name"]}, {"Name": "Stage", "Value": stage}]

    five = alarms["ApiServerErrorRateAlarm"]
    assert (five["Namespace"], five["MetricName"], five["Statistic"]) == ("AWS/ApiGateway", "5XXError", "Average")
    assert five["Dimensions"] == api_dimensions and five["Threshold"] == {"Ref": "ApiErrorRateThreshold"}
    latency = alarms["ApiLatencyP99Alarm"]
    assert (latency["MetricName"], latency["ExtendedStatistic"]) == ("Latency", "p99")
    assert latency["Dimensions"] == api_dimensions and latency["Threshold"] == {"Ref": "ApiLatencyP99ThresholdMs"}

    def lambda_alarms(metric: str) -> set[str]:
        return {a["Dimensions"][0]["Value"]["Ref"] for a in alarms.values()
                if a.get("Namespace") == "AWS/Lambda" and a["MetricName"] == metric}

    assert lambda_alarms("Errors") == set(FUNCTIONS)  # the authorizer's is AuthorizerErrorsAlarm
    assert lambda_alarms("Throttles") == set(FUNCTIONS)
    authorizer = [{"Name": "FunctionName", "Value": {"Ref": "JwtAuthorizer"}}]
    assert alarms["AuthorizerErrorsAlarm"]["Dimensions"] == authorizer

    machine = [{"Name": "StateMachineArn", "Value": {"Ref": "RefreshStateMachine"}}]
    assert (alarms["RefreshFailedAlarm"]["MetricName"], alarms["RefreshFailedAlarm"]["Dimensions"]) == (
        "ExecutionsFailed", machine)
    assert (alarms["RefreshTimedOutAlarm"]["MetricName"], alarms["RefreshTimedOutAlarm"]["Dimensions"]) == (
        "ExecutionsTimedOut", machine)

    database = alarms["DatabaseConnectionsAlarm"]
    assert (database["Namespace"], database["MetricName"]) == ("AWS/RDS", "DatabaseConnections")
    assert database["Dimensions"] == [{"Name": "DBInstanceIdentifier", "Value": {"Ref": "DatabaseInstanceId"}}]


def test_the_staleness_alarm_reads_the_metric_the_status_task_emits(template, alarms, chalice_config):
    stale = alarms["AnalyticsStaleAlarm"]
    service = chalice_config["environment_variables"]["POWERTOOLS_SERVICE_NAME"]
    assert (stale["Namespace"], stale["MetricName"]) == (metrics.NAMESPACE, metrics.REFRESH_SUCCEEDED)
    assert stale["Dimensions"] == [{"Name": metrics.SERVICE, "Value": service}]
    # No success in any minute of the window (and no data at all) is an alarm.
    assert (stale["Statistic"], stale["Period"], stale["ComparisonOperator"], stale["Threshold"]) == (
        "Sum", 60, "LessThanThreshold", 1)
    assert stale["EvaluationPeriods"] == stale["DatapointsToAlarm"] == {"Ref": "AnalyticsMaxAgeMinutes"}
    assert stale["TreatMissingData"] == "breaching"
    # Twice the default schedule.
    schedule = re.fullmatch(r"rate\((\d+) minutes\)", template["Parameters"]["RefreshSchedule"]["Default"])
    assert template["Parameters"]["AnalyticsMaxAgeMinutes"]["Default"] == 2 * int(schedule.group(1))


def test_every_alarm_notifies_the_topic_when_one_is_given(template, alarms):
    assert template["Parameters"]["AlarmTopicArn"]["Default"] == ""
    assert template["Conditions"]["HasAlarmTopic"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "AlarmTopicArn"}, ""]}]}
    assert len(alarms) >= 15
    for name, alarm in alarms.items():
        assert alarm["AlarmActions"] == NOTIFIES and alarm["OKActions"] == NOTIFIES, name
        assert "runbook in README" in alarm["AlarmDescription"], name
    assert template["Resources"]["DatabaseConnectionsAlarm"]["Condition"] == "HasDatabaseInstanceId"


def _dashboard_json(template: dict, with_database: bool) -> dict:
    body_sub = template["Resources"]["OperationsDashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    text, variables = body_sub
    values: dict[str, str] = {"AWS::Region": "us-east-1", "DatabaseInstanceId": "medrec-db",
                              "DatabaseConnectionsAlarmThreshold": "80"}
    for name, value in variables.items():
        branch = value["Fn::If"][1 if with_database else 2]
        values[name] = branch["Fn::Sub"] if isinstance(branch, dict) else branch
    for _ in range(2):  # the variables' own ${...}
        text = re.sub(r"\$\{([A-Za-z0-9:.]+)\}", lambda m: values.get(m.group(1), f"ref-{m.group(1)}"), text)
    return json.loads(text)


@pytest.mark.parametrize("with_database", [True, False])
def test_the_dashboard_is_valid_json_showing_every_alarm_and_the_emitted_metrics(template, alarms, with_database):
    body = _dashboard_json(template, with_database)
    (alarm_widget,) = [w for w in body["widgets"] if w["type"] == "alarm"]
    shown = {arn.removeprefix("ref-").removesuffix(".Arn") for arn in alarm_widget["properties"]["alarms"]}
    expected = set(alarms) if with_database else set(alarms) - {"DatabaseConnectionsAlarm"}
    assert shown == expected
    custom = set()
    for widget in body["widgets"]:
        namespace = name = None
        for line in widget["properties"].get("metrics", []):
            # CloudWatch's shorthand: "." repeats the item above, "..." every leading item of the line above.
            if line[0] != "...":
                namespace = namespace if line[0] == "." else line[0]
                name = name if line[1] == "." else line[1]
            if namespace == metrics.NAMESPACE:
                custom.add(name)
    emitted = {metrics.REQUESTS, metrics.LATENCY, metrics.AUDIT_EVENTS_WRITTEN, metrics.ACCESS_DENIED,
               metrics.BREAK_GLASS_ACCESS, metrics.REFRESH_SUCCEEDED, metrics.REFRESH_FAILED, metrics.REFRESH_DURATION,
               metrics.REFRESH_ROWS_CHANGED, metrics.ANALYTIC_DATA_AGE}
    assert custom <= emitted and {metrics.REQUESTS, metrics.AUDIT_EVENTS_WRITTEN, metrics.ACCESS_DENIED,
                                  metrics.BREAK_GLASS_ACCESS, metrics.REFRESH_ROWS_CHANGED,
                                  metrics.ANALYTIC_DATA_AGE} <= custom
    assert any("AWS/RDS" in json.dumps(w) for w in body["widgets"]) is with_database


def test_every_alarm_has_a_runbook_line_in_the_readme(alarms):
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Operating it: metrics, alarms, runbook", 1)[1].split("\n## ", 1)[0]
    for name in alarms:
        assert f"`{name}`" in section, f"{name} has no runbook line"
