"""Connection pooling in the generated template: RDS Proxy (create one / use an existing one / none) with
IAM authentication, the functions' right to connect through it only when it is used, reserved concurrency
per function; and the template's defaults are the operational facts the code defines once."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FUNCTIONS = ("APIHandler", "JwtAuthorizer", "StartRefresh", "RefreshStatus", "SealAudit", "ExportWorker")
DATABASE_FUNCTIONS = ("APIHandler", "SealAudit", "ExportWorker")


def test_the_template_defaults_are_the_facts_the_code_defines(template):
    from chalicelib.config import REFRESH_DEPLOYMENT, REFRESH_INCREMENTAL, REFRESH_SCHEDULE

    parameters = template["Parameters"]
    assert parameters["RefreshSchedule"]["Default"] == REFRESH_SCHEDULE
    assert parameters["RefreshDeployment"]["Default"] == REFRESH_DEPLOYMENT
    schedule = template["Resources"]["RefreshStateMachine"]["Properties"]["Events"]["Schedule"]["Properties"]
    assert f'"mode": "{REFRESH_INCREMENTAL}"' in schedule["Input"]["Fn::Sub"]


def test_the_proxy_mode_is_a_parameter_with_three_choices(template):
    parameters = template["Parameters"]
    mode = parameters["DatabaseProxyMode"]
    assert mode["AllowedValues"] == ["create", "existing", "none"] and mode["Default"] == "none"
    for name in ("DatabaseProxyEndpoint", "DatabaseProxyResourceId", "DatabaseLoginName", "DatabaseClusterId"):
        assert name in parameters, name
    conditions = template["Conditions"]
    # a created proxy needs the VPC the functions are in
    assert {"Condition": "InVpc"} in conditions["CreatesDatabaseProxy"]["Fn::And"]
    assert conditions["UsesDatabaseProxy"] == {"Fn::Or": [{"Condition": "CreatesDatabaseProxy"},
                                                          {"Condition": "UsesExistingDatabaseProxy"}]}


def test_a_created_proxy_uses_iam_auth_tls_the_secret_and_the_vpc_parameters(template):
    resources = template["Resources"]
    proxy = resources["DatabaseProxy"]
    assert proxy["Condition"] == "CreatesDatabaseProxy"
    props = proxy["Properties"]
    assert props["EngineFamily"] == "POSTGRESQL" and props["RequireTLS"] is True
    assert props["Auth"] == [{"AuthScheme": "SECRETS", "SecretArn": {"Ref": "DatabaseSecretArn"},
                              "IAMAuth": "REQUIRED"}]
    assert props["VpcSubnetIds"] == {"Ref": "SubnetIds"}
    assert props["VpcSecurityGroupIds"] == {"Ref": "SecurityGroupIds"}
    assert props["RoleArn"] == {"Fn::GetAtt": ["DatabaseProxyRole", "Arn"]}
    target = resources["DatabaseProxyTargetGroup"]
    assert target["Condition"] == "CreatesDatabaseProxy"
    assert target["Properties"]["DBProxyName"] == {"Ref": "DatabaseProxy"}
    # the proxy's role reads exactly the database secret
    role = resources["DatabaseProxyRole"]
    assert role["Condition"] == "CreatesDatabaseProxy"
    trust = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert trust[0]["Principal"] == {"Service": "rds.amazonaws.com"}
    [policy] = role["Properties"]["Policies"]
    [statement] = policy["PolicyDocument"]["Statement"]
    assert statement["Action"] == "secretsmanager:GetSecretValue"
    assert statement["Resource"] == {"Ref": "DatabaseSecretArn"}


def _connect_statements(template: dict, function: str) -> list:
    role_name = template["Resources"][function]["Properties"]["Role"]["Fn::GetAtt"][0]
    [policy] = template["Resources"][role_name]["Properties"]["Policies"]
    return [entry["Fn::If"] for entry in policy["PolicyDocument"]["Statement"]
            if "Fn::If" in entry and "rds-db:connect" in str(entry)]


@pytest.mark.parametrize("function", FUNCTIONS)
def test_only_the_database_functions_may_connect_and_only_through_a_proxy(template, function):
    found = _connect_statements(template, function)
    if function not in DATABASE_FUNCTIONS:
        assert found == []
        return
    [(condition, statement, otherwise)] = found
    assert condition == "UsesDatabaseProxy" and otherwise == {"Ref": "AWS::NoValue"}
    assert statement["Action"] == ["rds-db:connect"]
    arn, values = statement["Resource"]["Fn::Sub"]
    assert arn.endswith(":dbuser:${ProxyResourceId}/${DatabaseLoginName}")  # one proxy, one login
    assert "*" not in arn
    resource_id = values["ProxyResourceId"]["Fn::If"]
    assert resource_id[0] == "CreatesDatabaseProxy" and resource_id[2] == {"Ref": "DatabaseProxyResourceId"}
    assert "DBProxyArn" in str(resource_id[1])


@pytest.mark.parametrize("function", DATABASE_FUNCTIONS)
def test_the_database_functions_learn_the_proxy_endpoint_and_sign_iam_tokens_only_with_a_proxy(template, function):
    variables = template["Resources"][function]["Properties"]["Environment"]["Variables"]
    assert variables["DATABASE_IAM_AUTH"] == {"Fn::If": ["UsesDatabaseProxy", "true", "false"]}
    endpoint = variables["DATABASE_PROXY_ENDPOINT"]["Fn::If"]
    assert endpoint[0] == "CreatesDatabaseProxy"
    assert endpoint[1] == {"Fn::GetAtt": ["DatabaseProxy", "Endpoint"]}
    assert endpoint[2] == {"Fn::If": ["UsesExistingDatabaseProxy", {"Ref": "DatabaseProxyEndpoint"},
                                      {"Ref": "AWS::NoValue"}]}


@pytest.mark.parametrize("function", FUNCTIONS)
def test_each_function_has_a_reserved_concurrency_parameter(template, function):
    parameter = template["Parameters"][f"{function}ReservedConcurrency"]
    assert parameter["Type"] == "Number" and parameter["Default"] == -1
    reserved = template["Resources"][function]["Properties"]["ReservedConcurrentExecutions"]
    assert reserved == {"Fn::If": [f"Reserves{function}Concurrency", {"Ref": f"{function}ReservedConcurrency"},
                                   {"Ref": "AWS::NoValue"}]}
    assert template["Conditions"][f"Reserves{function}Concurrency"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": f"{function}ReservedConcurrency"}, "-1"]}]}
