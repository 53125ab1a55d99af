"""The generated template, parsed once per module for the infrastructure tests."""

from __future__ import annotations

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
