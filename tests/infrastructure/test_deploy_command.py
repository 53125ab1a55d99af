"""The deploy command's pure parts (the whole command runs against ministack in tests/e2e)."""

from __future__ import annotations

import json

from infra.localstack import deploy


def test_database_url_becomes_an_rds_style_secret():
    secret = json.loads(deploy.rds_secret("postgresql://medrec_api:p%40ss@db.internal:6432/app"))
    assert secret == {"engine": "postgres", "host": "db.internal", "port": 6432, "dbname": "app",
                      "username": "medrec_api", "password": "p@ss"}
    with_mode = json.loads(deploy.rds_secret("postgresql://u:p@db.internal/app?sslmode=verify-full"))
    assert with_mode["sslmode"] == "verify-full"


def test_deployable_template_points_at_the_uploaded_bundle_and_inlines_the_state_machine():
    template = json.loads(deploy.deployable_template("deployment-abc.zip"))
    functions = [r for r in template["Resources"].values() if r["Type"] == "AWS::Serverless::Function"]
    assert len(functions) == 6  # API, authorizer, the refresh tasks, the audit sealer, the export worker
    assert {f["Properties"]["CodeUri"] for f in functions} == {f"s3://{deploy.BUCKET}/deployment-abc.zip"}
    machine = template["Resources"]["RefreshStateMachine"]["Properties"]
    assert "DefinitionUri" not in machine and machine["Definition"]["StartAt"] == "StartFlowRun"


def test_the_localstack_path_uses_localstack_client(monkeypatch):
    monkeypatch.setenv("LOCALSTACK_HOST", "localstack.test:4566")
    s3, cloudformation, secrets = deploy.clients(None, "us-east-1", localstack=True)
    for client in (s3, cloudformation, secrets):
        assert client.meta.endpoint_url == "http://localstack.test:4566"


def test_api_url_for_emulators_and_aws():
    outputs = {"RestAPIId": "abc123", "EndpointURL": "https://abc123.execute-api.eu-west-1.amazonaws.com/api/"}
    assert deploy.api_url("http://127.0.0.1:4566", outputs) == "http://127.0.0.1:4566/restapis/abc123/api/_user_request_"
    assert deploy.api_url(None, outputs) == "https://abc123.execute-api.eu-west-1.amazonaws.com/api"
