"""The deployable template: derived from the Chalice app, complete, and consistent with the state machine."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


class _Loader(yaml.SafeLoader):
    pass


# CloudFormation short-form tags (!Ref, !Sub, ...) as plain values: enough to inspect the structure.
_Loader.add_multi_constructor("!", lambda loader, suffix, node: loader.construct_yaml_str(node)
                              if isinstance(node, yaml.ScalarNode) else None)


@pytest.fixture(scope="module")
def template() -> dict:
    return yaml.load((ROOT / "template.yaml").read_text(), Loader=_Loader)  # noqa: S506 - safe loader subclass


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
    assert template["Parameters"]["RefreshSchedule"]["Default"] == "rate(15 minutes)"
    for function in ("APIHandler", "JwtAuthorizer"):
        assert "JWT_SECRET_ARN" in resources[function]["Properties"]["Environment"]["Variables"]


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
