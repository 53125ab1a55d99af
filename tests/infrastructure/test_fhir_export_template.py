"""The bulk export in the generated template: a private, encrypted bucket whose files expire; a state machine
that runs the worker; and least privilege: the API may only start and stop this machine and link to and
delete these files, the worker may only write them."""

from __future__ import annotations

import json
import re
from pathlib import Path

from chalicelib.domain import export_terms
from chalicelib.export.worker import object_key

ROOT = Path(__file__).resolve().parents[2]
FILES = {"Fn::Sub": "${ExportBucket.Arn}/exports/*"}


def _statements(template: dict, function: str) -> list[dict]:
    role = template["Resources"][function]["Properties"]["Role"]["Fn::GetAtt"][0]
    [policy] = template["Resources"][role]["Properties"]["Policies"]
    return [s for s in policy["PolicyDocument"]["Statement"]
            if "Fn::If" not in s and any(a.split(":")[0] in ("s3", "states") for a in s["Action"])]


def test_the_bucket_is_private_encrypted_and_its_files_expire(template):
    props = template["Resources"]["ExportBucket"]["Properties"]
    assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"] == [
        {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
    assert props["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True, "BlockPublicPolicy": True, "IgnorePublicAcls": True, "RestrictPublicBuckets": True}
    assert props["OwnershipControls"] == {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
    [rule] = props["LifecycleConfiguration"]["Rules"]
    assert rule["Status"] == "Enabled" and object_key(1, "Patient", 1).startswith(rule["Prefix"])
    assert rule["ExpirationInDays"] == {"Ref": "ExportRetentionDays"}
    assert rule["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1}
    assert template["Parameters"]["ExportRetentionDays"]["Default"] == export_terms.RETENTION_DAYS
    # Only over TLS.
    [deny] = template["Resources"]["ExportBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert template["Resources"]["ExportBucketPolicy"]["Properties"]["Bucket"] == {"Ref": "ExportBucket"}
    assert (deny["Effect"], deny["Principal"], deny["Action"]) == ("Deny", "*", "s3:*")
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert deny["Resource"] == [{"Fn::GetAtt": ["ExportBucket", "Arn"]}, {"Fn::Sub": "${ExportBucket.Arn}/*"}]


def test_the_state_machine_runs_the_worker_and_is_well_formed(template):
    machine = template["Resources"]["ExportStateMachine"]["Properties"]
    assert machine["DefinitionUri"] == "state_machines/bulk_export.asl.json"
    assert machine["DefinitionSubstitutions"] == {"ExportWorkerFunctionArn": {"Fn::GetAtt": ["ExportWorker", "Arn"]}}
    assert machine["Policies"] == [{"LambdaInvokePolicy": {"FunctionName": {"Ref": "ExportWorker"}}}]
    definition = json.loads((ROOT / machine["DefinitionUri"]).read_text())
    assert set(re.findall(r"\$\{(\w+)\}", json.dumps(definition))) == set(machine["DefinitionSubstitutions"])
    tasks = {}
    levels = [definition]
    while levels:
        level = levels.pop()
        states = level["States"]
        assert level["StartAt"] in states
        for name, state in states.items():
            targets = [state.get("Next"), state.get("Default"), *(c["Next"] for c in state.get("Choices", [])),
                       *(c["Next"] for c in state.get("Catch", []))]
            assert all(t is None or t in states for t in targets), name
            if state["Type"] == "Task":
                assert state["Retry"], f"{name} has no retries"
                tasks[name] = state
            if state["Type"] == "Map":
                levels.append(state["Iterator"])
    # Every step is an action the worker handles; the types run side by side, one step loop each, and a
    # failure after the retries marks the job failed.
    assert {t["Parameters"]["Payload"]["action"] for t in tasks.values()} == {"export", "finish", "fail"}
    types = definition["States"]["ExportTypes"]
    assert types["Type"] == "Map" and types["MaxConcurrency"] == len(export_terms.RESOURCE_TYPES)
    assert tasks["ExportStep"]["Parameters"]["Payload"]["resourceType.$"] == "$.resourceType"
    assert types["Catch"][0]["Next"] == "MarkFailed"
    assert "CausePath" not in definition["States"]["ExportFailed"]  # a fixed cause, no error text in the output


def test_the_api_may_only_start_and_stop_this_machine_and_link_and_delete_its_files(template):
    machine = template["Resources"]["ExportStateMachine"]["Properties"]
    statements = {tuple(sorted(s["Action"])): s["Resource"] for s in _statements(template, "APIHandler")}
    executions = statements.pop(("states:StopExecution",))["Fn::Sub"]
    # Its executions only: the machine's own name, which the template sets.
    assert executions.endswith(":execution:" + machine["Name"]["Fn::Sub"] + ":*")
    assert statements == {("states:StartExecution",): {"Ref": "ExportStateMachine"},
                          ("s3:DeleteObject", "s3:GetObject"): FILES}
    variables = template["Resources"]["APIHandler"]["Properties"]["Environment"]["Variables"]
    assert variables["EXPORT_BUCKET"] == {"Ref": "ExportBucket"}
    assert variables["EXPORT_STATE_MACHINE_ARN"] == {"Ref": "ExportStateMachine"}


def test_the_worker_may_only_write_the_files(template):
    statements = {tuple(sorted(s["Action"])): s["Resource"] for s in _statements(template, "ExportWorker")}
    assert statements == {("s3:AbortMultipartUpload", "s3:DeleteObject", "s3:PutObject"): FILES}
    worker = template["Resources"]["ExportWorker"]["Properties"]
    assert worker["Environment"]["Variables"]["EXPORT_BUCKET"] == {"Ref": "ExportBucket"}
    assert "EXPORT_STATE_MACHINE_ARN" not in worker["Environment"]["Variables"]
    # Long types continue across invocations: the worker keeps a margin inside the longest Lambda timeout.
    from chalicelib.export.worker import MARGIN_SECONDS

    assert worker["Timeout"] == 900 and worker["Timeout"] / 4 > MARGIN_SECONDS
