"""The deployable template: derived from the Chalice app, complete, and consistent with the state machine."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from chalicelib import config

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def definition() -> dict:
    return json.loads((ROOT / "state_machines" / "refresh_analytics.asl.json").read_text())


def test_template_is_up_to_date_and_drift_is_detected(tmp_path, monkeypatch):
    import infra.build_template as build

    assert build.build(check=True) == 0
    drifted = tmp_path / "template.yaml"
    drifted.write_text((ROOT / "template.yaml").read_text().replace("MemorySize: 512", "MemorySize: 256"))
    monkeypatch.setattr(build, "TEMPLATE", drifted)
    assert build.build(check=True) == 1


def test_every_chalice_function_and_the_orchestration_are_declared(template):
    resources = template["Resources"]
    for name in ("APIHandler", "JwtAuthorizer", "StartRefresh", "RefreshStatus", "RestAPI", "RefreshStateMachine"):
        assert name in resources, name
    machine = resources["RefreshStateMachine"]["Properties"]
    assert machine["DefinitionUri"] == "state_machines/refresh_analytics.asl.json"
    schedule = machine["Events"]["Schedule"]["Properties"]
    assert schedule["Schedule"] == {"Ref": "RefreshSchedule"}
    assert template["Parameters"]["RefreshSchedule"]["Default"] == config.REFRESH_SCHEDULE


def test_the_state_machine_is_well_formed(definition, template):
    states = definition["States"]
    assert definition["StartAt"] in states
    for name, state in states.items():
        for target in [state.get("Next"), state.get("Default")] + [
            c.get("Next") for c in state.get("Choices", [])
        ] + [c.get("Next") for c in state.get("Catch", [])]:
            assert target is None or target in states, f"{name} -> {target}"
    used = set(re.findall(r"\$\{(\w+)\}", json.dumps(definition)))
    declared = set(template["Resources"]["RefreshStateMachine"]["Properties"]["DefinitionSubstitutions"])
    assert used == declared
    # a failed Prefect run fails the execution with the run's message, and polling is bounded
    assert states["RefreshFailed"] == {"Type": "Fail", "Error": "RefreshFailed", "CausePath": "$.run.message"}
    assert any(c.get("NumericGreaterThanEquals") for c in states["RunEnded?"]["Choices"])


# --- least privilege: one role and one policy per function ----------------------------------------------

# What each function reads from Secrets Manager: (parameter, environment variable, condition of the read).
SECRETS = {
    "APIHandler": ("DatabaseSecretArn", "DATABASE_SECRET_ARN", None),
    "SealAudit": ("DatabaseSecretArn", "DATABASE_SECRET_ARN", None),
    "JwtAuthorizer": ("JwtSecretArn", "JWT_SECRET_ARN", "HasJwtSecret"),  # none when only OIDC is configured
    "StartRefresh": None,
    "RefreshStatus": None,
    "ExportWorker": ("DatabaseSecretArn", "DATABASE_SECRET_ARN", None),
}
ENI_ACTIONS = {"ec2:CreateNetworkInterface", "ec2:DescribeNetworkInterfaces", "ec2:DescribeSubnets",
               "ec2:DeleteNetworkInterface", "ec2:AssignPrivateIpAddresses", "ec2:UnassignPrivateIpAddresses"}
NO_VALUE = {"Ref": "AWS::NoValue"}


def _functions(template: dict) -> dict:
    return {name: r for name, r in template["Resources"].items() if r["Type"] == "AWS::Serverless::Function"}


def _role_of(template: dict, function: str) -> tuple[str, dict]:
    role_ref = _functions(template)[function]["Properties"]["Role"]
    name, attribute = role_ref["Fn::GetAtt"]
    assert attribute == "Arn"
    return name, template["Resources"][name]


def _statements(document: dict) -> list[tuple[str | None, dict]]:
    """(condition or None, statement) for each statement, a conditional one under its condition."""
    found = []
    for entry in document["Statement"]:
        if "Fn::If" in entry:
            condition, when_true, when_false = entry["Fn::If"]
            assert when_false == NO_VALUE, entry
            found.append((condition, when_true))
        else:
            found.append((None, entry))
    return found


def _actions(statement: dict) -> set[str]:
    actions = statement["Action"]
    return {actions} if isinstance(actions, str) else set(actions)


def test_every_function_has_a_declared_secret_need(template):
    """A new function must be added to SECRETS (and get its own policy file) before it can deploy."""
    assert set(_functions(template)) == set(SECRETS)


def test_one_role_with_one_policy_per_function(template):
    roles = {function: _role_of(template, function) for function in SECRETS}
    assert len({name for name, _ in roles.values()}) == len(SECRETS), "a role is shared"
    for function, (_, role) in roles.items():
        assert role["Type"] == "AWS::IAM::Role", function
        props = role["Properties"]
        assert [s["Principal"] for s in props["AssumeRolePolicyDocument"]["Statement"]] == [
            {"Service": "lambda.amazonaws.com"}]
        assert len(props["Policies"]) == 1, function
        assert "ManagedPolicyArns" not in props, function  # e.g. AWSLambdaVPCAccessExecutionRole logs to "*"
    # and nothing else attaches permissions to them
    role_names = {name for name, _ in roles.values()}
    for name, resource in template["Resources"].items():
        if resource["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy", "AWS::IAM::RolePolicy"):
            assert not role_names & set(re.findall(r'"Ref": "(\w+)"', json.dumps(resource["Properties"]))), name


@pytest.mark.parametrize("function", sorted(SECRETS))
def test_each_policy_grants_only_what_its_function_uses(template, function):
    function_props = _functions(template)[function]["Properties"]
    _, role = _role_of(template, function)
    statements = _statements(role["Properties"]["Policies"][0]["PolicyDocument"])
    for _, statement in statements:
        assert statement["Effect"] == "Allow"
        assert not any("*" in action for action in _actions(statement)), statement

    logs = [(c, s) for c, s in statements if any(a.startswith("logs:") for a in _actions(s))]
    assert logs == [(None, logs[0][1])]
    assert _actions(logs[0][1]) == {"logs:CreateLogStream", "logs:PutLogEvents"}  # the group exists already
    assert logs[0][1]["Resource"] == {"Fn::GetAtt": [f"{function}LogGroup", "Arn"]}

    secrets = [(c, s) for c, s in statements if any(a.startswith("secretsmanager:") for a in _actions(s))]
    if SECRETS[function] is None:
        assert secrets == []
    else:
        parameter, _, condition = SECRETS[function]
        assert len(secrets) == 1
        read_condition, statement = secrets[0]
        assert read_condition == condition
        assert _actions(statement) == {"secretsmanager:GetSecretValue"}
        assert statement["Resource"] == {"Ref": parameter}  # exactly that secret, never a name pattern

    network = [(c, s) for c, s in statements if any(a.startswith("ec2:") for a in _actions(s))]
    if "VpcConfig" in function_props:
        assert function_props["VpcConfig"]["Fn::If"][0] == "InVpc"
        assert len(network) == 1 and network[0][0] == "InVpc"
        assert _actions(network[0][1]) == ENI_ACTIONS and network[0][1]["Resource"] == "*"
    else:
        assert network == []

    # X-Ray, only when the Tracing parameter is on (tests/infrastructure/test_template_observability.py)
    traces = [(c, s) for c, s in statements if any(a.startswith("xray:") for a in _actions(s))]
    assert [c for c, _ in traces] == ["TracingOn"]

    # RDS Proxy's IAM authentication, only for the database's functions and only with a proxy
    # (tests/infrastructure/test_template_pooling.py)
    proxy = [(c, s) for c, s in statements if any(a.startswith("rds-db:") for a in _actions(s))]
    assert [c for c, _ in proxy] == (["UsesDatabaseProxy"] if SECRETS[function] and
                                     SECRETS[function][0] == "DatabaseSecretArn" else [])

    # The bulk export's state machine and bucket (checked statement by statement in test_fhir_export_template.py)
    export = [(c, s) for c, s in statements if any(a.split(":")[0] in ("states", "s3") for a in _actions(s))]
    assert bool(export) is (function in ("APIHandler", "ExportWorker"))

    assert len(statements) == len(logs) + len(secrets) + len(network) + len(traces) + len(proxy) + len(export), \
        "a statement nobody asked for"


def test_secret_parameters_accept_one_exact_arn(template):
    params = template["Parameters"]
    arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:medical-records/database-AbC123"
    for name in ("DatabaseSecretArn", "JwtSecretArn"):
        pattern = params[name]["AllowedPattern"]
        assert re.fullmatch(pattern, arn), name
        for wildcard in ("*", "arn:aws:secretsmanager:*:*:secret:*",
                         "arn:aws:secretsmanager:eu-west-1:123456789012:secret:medical-records/*"):
            assert not re.fullmatch(pattern, wildcard), (name, wildcard)
    assert "Default" not in params["DatabaseSecretArn"]
    assert params["JwtSecretArn"]["Default"] == ""  # OIDC only: no signing key, nothing to read
    assert re.fullmatch(params["JwtSecretArn"]["AllowedPattern"], "")
    assert template["Conditions"]["HasJwtSecret"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "JwtSecretArn"}, ""]}]}


def test_secret_variables_only_where_the_secret_is_read(template):
    for function, resource in _functions(template).items():
        variables = resource["Properties"]["Environment"]["Variables"]
        named = {k for k in variables if k.endswith("_SECRET_ARN")}
        if SECRETS[function] is None:
            assert named == set(), function
            continue
        parameter, variable, condition = SECRETS[function]
        assert named == {variable}, function
        expected = {"Ref": parameter} if condition is None else {"Fn::If": [condition, {"Ref": parameter}, NO_VALUE]}
        assert variables[variable] == expected, function


def test_each_function_logs_to_its_own_group(template):
    resources = template["Resources"]
    names = set()
    for function, resource in _functions(template).items():
        group = f"{function}LogGroup"
        assert resource["Properties"]["LoggingConfig"] == {"LogGroup": {"Ref": group}}, function
        props = resources[group]["Properties"]
        assert resources[group]["Type"] == "AWS::Logs::LogGroup"
        assert props["RetentionInDays"] == {"Ref": "LogRetentionDays"}
        name = props["LogGroupName"]["Fn::Sub"]
        # named without the function (whose policy names the group: a reference back would be a cycle)
        assert not set(re.findall(r"\$\{(\w+)\}", name)) - {"AWS::StackName"}, name
        names.add(name)
    assert len(names) == len(SECRETS)


# --- API Gateway: access log, throttling, gateway responses ----------------------------------------------

REQUIRED_ACCESS_LOG_VARIABLES = {
    "$context.requestId", "$context.identity.sourceIp", "$context.httpMethod", "$context.resourcePath",
    "$context.status", "$context.authorizer.error", "$context.integrationLatency", "$context.responseLatency",
}


def test_api_access_log_has_its_fields_and_no_personal_data(template):
    api = template["Resources"]["RestAPI"]["Properties"]
    setting = api["AccessLogSetting"]
    assert "${ApiAccessLogGroup}" in setting["DestinationArn"]["Fn::Sub"]
    group = template["Resources"]["ApiAccessLogGroup"]
    assert group["Type"] == "AWS::Logs::LogGroup"
    assert group["Properties"]["RetentionInDays"] == {"Ref": "AccessLogRetentionDays"}
    assert template["Parameters"]["AccessLogRetentionDays"]["Type"] == "Number"
    entry = json.loads(setting["Format"])  # one JSON object per request
    assert set(entry.values()) >= REQUIRED_ACCESS_LOG_VARIABLES
    # the route template, not the raw path (ids); no user agent, principal, token or body
    for variable in re.findall(r"\$[\w.]+", setting["Format"]):
        assert variable.startswith("$context."), variable
        assert variable not in ("$context.path", "$context.identity.userAgent", "$context.authorizer.principalId",
                                "$context.identity.user", "$context.identity.caller"), variable


def test_stage_throttling_comes_from_parameters(template):
    settings = template["Resources"]["RestAPI"]["Properties"]["MethodSettings"]
    assert {"ResourcePath": "/*", "HttpMethod": "*", "ThrottlingRateLimit": {"Ref": "ThrottlingRateLimit"},
            "ThrottlingBurstLimit": {"Ref": "ThrottlingBurstLimit"}} in settings
    params = template["Parameters"]
    assert params["ThrottlingRateLimit"]["Default"] == 100 and params["ThrottlingRateLimit"]["MinValue"] >= 1
    assert params["ThrottlingBurstLimit"]["Default"] == 200 and params["ThrottlingBurstLimit"]["MinValue"] >= 1


GATEWAY_STATUSES = {
    "UNAUTHORIZED": 401, "ACCESS_DENIED": 403, "MISSING_AUTHENTICATION_TOKEN": 404, "RESOURCE_NOT_FOUND": 404,
    "REQUEST_TOO_LARGE": 413, "UNSUPPORTED_MEDIA_TYPE": 415, "THROTTLED": 429, "INTEGRATION_TIMEOUT": 504,
    "DEFAULT_5XX": 500,
}


def test_gateway_responses_answer_in_the_apis_error_format(template):
    from chalicelib.api import problems

    app_kinds: dict[int, set[str]] = {}
    for _, status, _, kind in problems._STATUS:
        app_kinds.setdefault(status, set()).add(kind)
    gateway_error = json.loads((ROOT / "openapi.json").read_text())["components"]["schemas"]["GatewayError"]

    responses = template["Resources"]["RestAPI"]["Properties"]["GatewayResponses"]
    assert set(responses) == set(GATEWAY_STATUSES)
    for response_type, status in GATEWAY_STATUSES.items():
        response = responses[response_type]
        assert response["StatusCode"] == str(status), response_type
        assert set(response["ResponseTemplates"]) == {"application/json"}, response_type
        body = json.loads(response["ResponseTemplates"]["application/json"])
        assert body["status"] == status, response_type
        assert body["type"].startswith("urn:medical-records:problem:"), response_type
        for field in ("title", "detail", "message"):
            assert isinstance(body[field], str) and body[field], (response_type, field)
        assert set(gateway_error["required"]) <= set(body), response_type  # {"message": ...} clients still parse it
        if status in app_kinds:  # the same problem type the app gives for that status
            assert body["type"].rsplit(":", 1)[1] in app_kinds[status], response_type
    assert responses["UNAUTHORIZED"]["ResponseParameters"]["Headers"] == {"WWW-Authenticate": "'Bearer'"}
    # the 401 the app itself gives (a token expired since the authorizer's answer was cached) is the same body
    assert json.loads(responses["UNAUTHORIZED"]["ResponseTemplates"]["application/json"]) == problems.UNAUTHENTICATED
    assert responses["THROTTLED"]["ResponseParameters"]["Headers"] == {"Retry-After": "'1'"}


def test_access_logging_waits_for_the_accounts_logging_role(template):
    resources = template["Resources"]
    assert template["Parameters"]["CreateApiGatewayLoggingRole"]["AllowedValues"] == ["true", "false"]
    for name in ("ApiGatewayLoggingRole", "ApiGatewayAccount"):
        assert resources[name]["Condition"] == "CreatesApiGatewayLoggingRole"
        assert resources[name]["DeletionPolicy"] == "Retain"  # the account setting outlives the stack
    assert resources["ApiGatewayAccount"]["Properties"]["CloudWatchRoleArn"] == {
        "Fn::GetAtt": ["ApiGatewayLoggingRole", "Arn"]}
    assert resources["RestAPI"]["DependsOn"] == "ApiGatewayLoggingRoleReady"
    assert resources["ApiGatewayLoggingRoleReady"]["Metadata"]["AccountSetting"] == {
        "Fn::If": ["CreatesApiGatewayLoggingRole", {"Ref": "ApiGatewayAccount"}, ""]}


def test_no_policy_in_the_template_uses_a_wildcard_for_secrets_or_logs(template):
    for name, resource in template["Resources"].items():
        if resource["Type"] != "AWS::IAM::Role":
            continue
        for policy in resource["Properties"].get("Policies", []):
            for _, statement in _statements(policy["PolicyDocument"]):
                if any(a.split(":")[0] in ("secretsmanager", "logs") for a in _actions(statement)):
                    resources = statement["Resource"] if isinstance(statement["Resource"], list) else [
                        statement["Resource"]]
                    for target in resources:
                        assert isinstance(target, dict), (name, target)  # a reference, never a pattern
