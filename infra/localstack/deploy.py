"""Deploy template.yaml to an AWS endpoint: LocalStack, ministack (Lambda without Docker), or AWS.

    python -m infra.localstack.deploy --endpoint-url http://127.0.0.1:4566 \\
        --database-url postgresql://medrec_api:...@db:5432/app \\
        --migration-database-url postgresql://postgres:...@db:5432/app \\
        --prefect-api-url http://prefect:4200/api

Steps: build the bundle and template (infra/build_template.py); upload the bundle; store the
database and token secrets in Secrets Manager (as medical-records/...); create the stack or update
it in place; apply the database migrations; print the API URL. Running it twice updates in place.
Secrets are read from the environment (JWT_SECRET) or the options, never from the repository.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "functions"), str(ROOT)]

from chalicelib.config import REFRESH_SCHEDULE, STACK_NAME  # noqa: E402 - after the path set-up above

BUCKET = f"{STACK_NAME}-deployments"
SECRET_PREFIX = STACK_NAME
_DONE = {"CREATE_COMPLETE", "UPDATE_COMPLETE"}
_FAILED = {"CREATE_FAILED", "ROLLBACK_COMPLETE", "ROLLBACK_FAILED", "UPDATE_ROLLBACK_COMPLETE",
           "UPDATE_ROLLBACK_FAILED", "UPDATE_FAILED", "DELETE_COMPLETE"}


class DeployError(RuntimeError):
    pass


def clients(endpoint_url: str | None, region: str, localstack: bool = False):
    if localstack:
        # localstack-client knows LocalStack's endpoints (LOCALSTACK_HOST, default localhost:4566).
        from localstack_client.session import Session

        session = Session(region_name=region)
        return session.client("s3"), session.client("cloudformation"), session.client("secretsmanager")
    import boto3

    session = boto3.session.Session(
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "test" if endpoint_url else None),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "test" if endpoint_url else None),
        region_name=region,
    )
    make = lambda name: session.client(name, endpoint_url=endpoint_url)  # noqa: E731
    return make("s3"), make("cloudformation"), make("secretsmanager")


def rds_secret(database_url: str) -> str:
    """An RDS-style secret (what DATABASE_SECRET_ARN points at) from a postgresql:// URL. Its sslmode is the
    URL's, if any: the functions verify any database that is not on their machine (chalicelib/transport.py)."""
    parts = urlsplit(database_url)
    secret = {
        "engine": "postgres",
        "host": parts.hostname,
        "port": parts.port or 5432,
        "dbname": parts.path.lstrip("/") or "app",
        "username": unquote(parts.username or ""),
        "password": unquote(parts.password or ""),
    }
    sslmode = dict(parse_qsl(parts.query)).get("sslmode")
    if sslmode:
        secret["sslmode"] = sslmode
    return json.dumps(secret)


def put_secret(secrets, name: str, value: str) -> str:
    try:
        return secrets.create_secret(Name=name, SecretString=value)["ARN"]
    except secrets.exceptions.ResourceExistsException:
        secrets.put_secret_value(SecretId=name, SecretString=value)
        return secrets.describe_secret(SecretId=name)["ARN"]


def upload(s3, path: Path, prefix: str) -> str:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    key = f"{prefix}-{digest}{path.suffix}"
    try:
        s3.head_bucket(Bucket=BUCKET)
    except Exception:
        s3.create_bucket(Bucket=BUCKET)
    s3.upload_file(str(path), BUCKET, key)
    return key


def deployable_template(code_key: str) -> str:
    """template.yaml with the bundle in S3 and the state machine definition inlined."""
    template = yaml.safe_load((ROOT / "template.yaml").read_text())
    for resource in template["Resources"].values():
        props = resource.get("Properties", {})
        if resource["Type"] == "AWS::Serverless::Function":
            props["CodeUri"] = f"s3://{BUCKET}/{code_key}"
        if resource["Type"] == "AWS::Serverless::StateMachine" and "DefinitionUri" in props:
            props["Definition"] = json.loads((ROOT / props.pop("DefinitionUri")).read_text())
    return json.dumps(template, separators=(",", ":"))


def wait(cloudformation, stack: str, timeout: float = 600) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        description = cloudformation.describe_stacks(StackName=stack)["Stacks"][0]
        status = description["StackStatus"]
        if status in _DONE:
            return description
        if status in _FAILED:
            reason = description.get("StackStatusReason") or ""
            raise DeployError(f"stack {stack} ended in {status} {reason}".strip())
        time.sleep(1)
    raise DeployError(f"stack {stack} did not finish within {timeout:.0f}s")


# CloudFormation takes at most this much as TemplateBody; a larger template goes through S3 (TemplateURL).
MAX_TEMPLATE_BODY = 51_200


def template_source(s3, body: str, endpoint_url: str | None, region: str) -> dict[str, str]:
    """``TemplateBody`` when it fits, else the template uploaded next to the bundle as ``TemplateURL``."""
    if len(body.encode()) <= MAX_TEMPLATE_BODY:
        return {"TemplateBody": body}
    key = f"template-{hashlib.sha256(body.encode()).hexdigest()[:16]}.json"
    s3.put_object(Bucket=BUCKET, Key=key, Body=body.encode())
    if endpoint_url:
        return {"TemplateURL": f"{endpoint_url.rstrip('/')}/{BUCKET}/{key}"}
    return {"TemplateURL": f"https://{BUCKET}.s3.{region}.amazonaws.com/{key}"}


def deploy_stack(cloudformation, stack: str, template: dict[str, str], parameters: dict[str, str]) -> dict:
    """Create the stack or update it in place; ``template`` is TemplateBody or TemplateURL (template_source)."""
    params = [{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()]
    caps = ["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND"]
    try:
        cloudformation.describe_stacks(StackName=stack)
        exists = True
    except cloudformation.exceptions.ClientError:
        exists = False
    if exists:
        try:
            cloudformation.update_stack(StackName=stack, **template, Parameters=params, Capabilities=caps)
        except cloudformation.exceptions.ClientError as exc:
            if "No updates" not in str(exc):
                raise
    else:
        cloudformation.create_stack(StackName=stack, **template, Parameters=params, Capabilities=caps)
    return wait(cloudformation, stack)


def _parameter(stack: dict, key: str) -> str | None:
    return next((p.get("ParameterValue") for p in stack.get("Parameters", []) if p["ParameterKey"] == key), None)


def api_url(endpoint_url: str | None, outputs: dict[str, str]) -> str:
    if endpoint_url:  # LocalStack and ministack serve a REST API under this path
        return f"{endpoint_url.rstrip('/')}/restapis/{outputs['RestAPIId']}/api/_user_request_"
    return outputs["EndpointURL"].rstrip("/")


def migrate_databases(args: argparse.Namespace) -> None:
    """Application migrations, then the least-privilege logins, then the analytic migrations."""
    from tools import provisioning

    applied = provisioning.migrate_application(args.migration_database_url)
    print(f"application migrations applied: {', '.join(applied) or 'none pending'}", file=sys.stderr)
    if args.create_logins:
        # The API's login: the one in --api-login-url when the API reaches the database through a pooler.
        provisioning.create_logins_from_urls(args.migration_database_url, (
            (args.api_login_url or args.database_url, provisioning.API_ROLE),
            (args.pipeline_database_url, provisioning.READER_ROLE),
        ))
    if args.analytic_database_url:
        applied = provisioning.migrate_analytic(args.analytic_database_url)
        print(f"analytic migrations applied: {', '.join(applied) or 'none pending'}", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m infra.localstack.deploy", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--endpoint-url", default=os.environ.get("AWS_ENDPOINT_URL"),
                        help="AWS endpoint (default $AWS_ENDPOINT_URL; unset = real AWS)")
    parser.add_argument("--localstack", action="store_true",
                        help="target LocalStack through localstack-client (LOCALSTACK_HOST, default localhost:4566)")
    parser.add_argument("--region", default=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))
    parser.add_argument("--stack-name", default=STACK_NAME)
    parser.add_argument("--database-url", default=os.environ.get("API_DATABASE_URL"),
                        help="the API login's URL, stored as the medical-records/database secret")
    parser.add_argument("--migration-database-url", default=os.environ.get("MIGRATION_DATABASE_URL"),
                        help="owner URL to apply migrations with (skipped when not given)")
    parser.add_argument("--analytic-database-url", default=os.environ.get("ANALYTIC_DATABASE_URL"),
                        help="owner URL of the analytic database, to apply the pipeline's migrations")
    parser.add_argument("--api-login-url", default=os.environ.get("API_LOGIN_URL"),
                        help="with --create-logins: the API login's URL on the database itself, when --database-url "
                             "points at a pooler in front of it (default: --database-url)")
    parser.add_argument("--pipeline-database-url", default=os.environ.get("PIPELINE_DATABASE_URL"),
                        help="the pipeline's read-only login URL (created with --create-logins)")
    parser.add_argument("--create-logins", action="store_true",
                        help="create/refresh the API and pipeline logins named in their URLs (needs the owner URL)")
    parser.add_argument("--prefect-api-url", default=os.environ.get("PREFECT_API_URL", "http://127.0.0.1:4200/api"))
    parser.add_argument("--refresh-schedule", default=os.environ.get("REFRESH_SCHEDULE", REFRESH_SCHEDULE))
    parser.add_argument("--refresh-poll-seconds", default=os.environ.get("REFRESH_POLL_SECONDS", "10"))
    parser.add_argument("--skip-build", action="store_true", help="use the existing template.yaml and bundle")
    parser.add_argument("--database-ca-bundle", default=os.environ.get("DATABASE_CA_BUNDLE"),
                        help="CA bundle (a PEM file) of a database that is not on the functions' machine; its text "
                             "becomes the DatabaseCaBundle parameter")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    jwt_secret = os.environ.get("JWT_SECRET")
    if not args.database_url or not jwt_secret:
        parser.error("needs --database-url (or API_DATABASE_URL) and JWT_SECRET in the environment")
    try:
        if not args.skip_build:
            from infra.build_template import build

            if build(check=False) != 0:
                return 1
        if args.localstack and not args.endpoint_url:
            args.endpoint_url = f"http://{os.environ.get('LOCALSTACK_HOST', 'localhost:4566')}"
        s3, cloudformation, secrets = clients(args.endpoint_url, args.region, args.localstack)
        code_key = upload(s3, ROOT / ".build" / "deployment.zip", "deployment")
        parameters = {
            "DatabaseSecretArn": put_secret(secrets, f"{SECRET_PREFIX}/database", rds_secret(args.database_url)),
            "JwtSecretArn": put_secret(secrets, f"{SECRET_PREFIX}/jwt", jwt_secret),
            "PrefectApiUrl": args.prefect_api_url,
            "RefreshSchedule": args.refresh_schedule,
            "RefreshPollSeconds": str(args.refresh_poll_seconds),
        }
        if args.database_ca_bundle:
            parameters["DatabaseCaBundle"] = Path(args.database_ca_bundle).read_text(encoding="ascii")
        template = template_source(s3, deployable_template(code_key), args.endpoint_url, args.region)
        stack = deploy_stack(cloudformation, args.stack_name, template, parameters)
        outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
        if args.endpoint_url:
            # The emulator serves the API under a URL form of its own (/restapis/<id>/...), which no request
            # tells the functions: give them the FHIR API's base once the API's id is known.
            fhir_base = f"{api_url(args.endpoint_url, outputs)}/fhir/R4"
            if _parameter(stack, "FhirBaseUrl") != fhir_base:
                stack = deploy_stack(cloudformation, args.stack_name, template, parameters | {"FhirBaseUrl": fhir_base})
                outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
        if args.migration_database_url:
            migrate_databases(args)
    except Exception as exc:
        print(f"deploy failed: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({
        "stack": args.stack_name,
        "api_url": api_url(args.endpoint_url, outputs),
        "state_machine_arn": outputs.get("RefreshStateMachineArn"),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
