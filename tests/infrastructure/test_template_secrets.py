"""The Parameters and Secrets extension in the generated template: one parameter puts the layer and its port
on exactly the functions that read a secret, and nothing else."""

from __future__ import annotations

from chalicelib import config

READS_A_SECRET = {"APIHandler", "JwtAuthorizer", "SealAudit", "ExportWorker"}


def test_the_extension_is_one_parameter_on_exactly_the_functions_that_read_a_secret(template):
    parameter = template["Parameters"]["SecretsExtensionLayerArn"]
    assert parameter["Default"] == ""
    assert template["Conditions"]["HasSecretsExtension"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "SecretsExtensionLayerArn"}, ""]}]
    }
    functions = {name: r["Properties"] for name, r in template["Resources"].items()
                 if r["Type"] == "AWS::Serverless::Function"}
    carrying = {name for name, props in functions.items() if "Layers" in props}
    assert carrying == READS_A_SECRET
    for name in READS_A_SECRET:
        props = functions[name]
        assert props["Layers"] == {"Fn::If": ["HasSecretsExtension", [{"Ref": "SecretsExtensionLayerArn"}],
                                              {"Ref": "AWS::NoValue"}]}
        port = props["Environment"]["Variables"][config.SECRETS_EXTENSION_PORT_VARIABLE]
        assert port == {"Fn::If": ["HasSecretsExtension", "2773", {"Ref": "AWS::NoValue"}]}
        secrets = {k for k in props["Environment"]["Variables"] if k.endswith("_SECRET_ARN")}
        assert secrets, f"{name} carries the extension but reads no secret"
    for name in set(functions) - READS_A_SECRET:
        variables = functions[name].get("Environment", {}).get("Variables", {})
        assert not {k for k in variables if k.endswith("_SECRET_ARN")}, f"{name} reads a secret without the layer"
