"""docker-compose.yml, checked without Docker: its schema is checked by `make check-infra`; here,
that everything it refers to exists and every variable it uses is in the example env file."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_build_contexts_and_dockerfiles_exist():
    for name, service in compose()["services"].items():
        build = service.get("build")
        if build:
            context = ROOT / build["context"]
            assert context.is_dir(), name
            assert (context / build.get("dockerfile", "Dockerfile")).is_file(), name


def test_every_variable_is_in_the_example_env_file():
    text = (ROOT / "docker-compose.yml").read_text()
    used = set(re.findall(r"\$\{(\w+)\}", text)) | set(re.findall(r"\$\$\{(\w+)\}", text))
    example = (ROOT / ".env.example").read_text()
    defined = set(re.findall(r"^(\w+)=", example, flags=re.MULTILINE))
    assert used <= defined, used - defined
    assert (ROOT / ".gitignore").read_text().count(".env") >= 1  # the real .env is never committed


def test_services_wait_for_what_they_need():
    services = compose()["services"]
    for name, service in services.items():
        for dependency, condition in (service.get("depends_on") or {}).items():
            assert dependency in services, (name, dependency)
            wanted = condition["condition"]
            if wanted == "service_healthy":
                assert "healthcheck" in services[dependency], (name, dependency)
    assert services["deployer"]["restart"] == "no"
    assert services["pipeline"]["depends_on"]["deployer"]["condition"] == "service_completed_successfully"
    assert services["localstack"]["image"] == "localstack/localstack:4.14.0"  # needs no auth token
    # the Lambda containers must reach the databases by service name
    assert services["localstack"]["environment"]["LAMBDA_DOCKER_NETWORK"] == "medical-records_default"
    assert compose()["name"] == "medical-records"


def test_the_deploy_command_accepts_what_compose_passes():
    """The deployer's arguments parse (an unknown or malformed option exits 2), and with the environment
    compose gives the deployer, every value the command needs is there."""
    import pytest

    from infra.localstack.deploy import build_parser

    deployer = compose()["services"]["deployer"]
    command = deployer["command"]
    assert command[:3] == ["python", "-m", "infra.localstack.deploy"]
    args = build_parser().parse_args(command[3:])
    assert args.create_logins
    with pytest.raises(SystemExit) as refused:  # the check above can fail: a wrong option is refused
        build_parser().parse_args([*command[3:], "--no-such-option"])
    assert refused.value.code == 2
    environment = deployer["environment"]
    for needed in ("API_DATABASE_URL", "MIGRATION_DATABASE_URL", "AWS_ENDPOINT_URL"):
        assert environment.get(needed), needed
    assert deployer["env_file"] == ".env" and re.search(r"^JWT_SECRET=.+", (ROOT / ".env.example").read_text(),
                                                         flags=re.MULTILINE)


def test_the_databases_speak_tls_and_every_client_verifies_them():
    """In compose the databases are other hosts: their clients must use verify-full with the stack's CA."""
    services = compose()["services"]
    for name in ("app-db", "analytic-db"):
        command = services[name]["command"]
        assert "ssl=on" in command and "ssl_cert_file=/certs/server.crt" in command, name
        assert services[name]["depends_on"]["certs"]["condition"] == "service_completed_successfully", name
        assert "certs:/certs:ro" in services[name]["volumes"], name
    script = services["certs"]["command"][0]
    assert "subjectAltName=DNS:app-db,DNS:analytic-db" in script and "rm -f ca.key" in script
    for name in ("deployer", "pipeline"):
        assert services[name]["environment"]["DATABASE_CA_BUNDLE"] == "/certs/ca.crt", name
        assert "certs:/certs:ro" in services[name]["volumes"], name
