"""The OpenAPI document (SPEC §3.1): valid OpenAPI 3.1, complete, and derived from the validating models.

No database: the document is built from the route tables and the pydantic models only.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate
from pydantic import ValidationError

from chalicelib.api import auth
from chalicelib.api.meta import ALL_ROUTES, openapi_document
from chalicelib.domain import models

PUBLIC = {("/health", "GET"), ("/openapi.json", "GET"), ("/fhir/R4/metadata", "GET")}
METHODS = {"get", "put", "post", "delete", "patch", "options", "head", "trace"}
REF = "#/components/schemas/{model}"


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return openapi_document()


def specs() -> dict[tuple[str, str], Any]:
    return {(spec.path, spec.method): spec for table in ALL_ROUTES for spec in table.routes}


def registered() -> set[tuple[str, str]]:
    from app import app

    return {(path, method) for path, methods in app.routes.items() for method in methods}


def operations(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (path, method.upper()): operation
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    }


def resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema["$ref"]
    assert ref.startswith("#/components/schemas/"), ref
    return document["components"]["schemas"][ref.rsplit("/", 1)[1]]


def schema_validator(document: dict[str, Any], name: str) -> OAS31Validator:
    """A validator for one component schema, resolving $refs against the whole document."""
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    registry = Registry().with_resource("urn:doc", Resource.from_contents(document, default_specification=DRAFT202012))
    return OAS31Validator({"$ref": f"urn:doc#/components/schemas/{name}"}, registry=registry)


# --- the document as a whole ----------------------------------------------------------------------


def test_document_is_valid_openapi_3_1(document):
    assert document["openapi"] == "3.1.0"
    validate(document)  # raises on any violation of the OpenAPI 3.1 schema


def test_document_is_plain_json(document):
    assert json.loads(json.dumps(document)) == document


def test_document_is_what_the_openapi_route_serves(document):
    from chalicelib.api import meta

    response = meta.openapi(None)
    assert response.status_code == 200
    assert json.loads(response.body) == document


def test_paths_are_exactly_the_registered_routes(document):
    documented = set(operations(document))
    chalice = registered()
    assert documented - chalice == set(), "documented but not served"
    assert chalice - documented == set(), "served but not documented"
    assert len(chalice) >= 30


def test_operation_ids_are_unique_and_name_the_chalice_views(document):
    from app import app

    ops = operations(document)
    ids = [op["operationId"] for op in ops.values()]
    assert len(ids) == len(set(ids))
    for (path, method), op in ops.items():
        assert app.routes[path][method].view_name == op["operationId"]


def test_every_path_parameter_is_documented(document):
    for (path, method), op in operations(document).items():
        in_path = set(re.findall(r"{(\w+)}", path))
        documented = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
        assert documented == in_path, (method, path)
        assert all(p["required"] for p in op.get("parameters", []) if p["in"] == "path")


def test_query_parameters_match_the_route_table(document):
    ops = operations(document)
    for key, spec in specs().items():
        documented = {p["name"]: p["schema"] for p in ops[key].get("parameters", []) if p["in"] == "query"}
        assert documented == {q.name: q.schema for q in spec.query}, key
    limit = next(p for p in ops[("/v1/patients", "GET")]["parameters"] if p["name"] == "limit")
    assert limit["schema"]["minimum"] == 1 and limit["schema"]["maximum"] == 100


# --- security ------------------------------------------------------------------------------------


def test_bearer_security_scheme(document):
    scheme = document["components"]["securitySchemes"]["bearerAuth"]
    assert scheme == {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}


def test_every_protected_operation_requires_the_bearer_token_and_documents_401_403(document):
    for key, op in operations(document).items():
        if key in PUBLIC:
            continue
        security = op.get("security", document.get("security"))
        assert security, key
        assert all("bearerAuth" in requirement for requirement in security), key
        assert {"401", "403"} <= op["responses"].keys(), key
        scope = specs()[key].scope
        assert scope in auth.SCOPES and scope in op["description"], key


def test_public_operations_need_no_token(document):
    ops = operations(document)
    for key in PUBLIC:
        assert ops[key]["security"] == [], key
        assert "401" not in ops[key]["responses"] and "403" not in ops[key]["responses"]


def test_documented_401_matches_what_the_gateway_sends(document):
    """A 401 comes from the authorizer (API Gateway), not from a handler: its body is
    {"message": "Unauthorized"}. The document must describe that body, not a problem+json."""
    import chalice.local  # noqa: F401  (makes unauthorized_error build the local gateway's exception)

    error = auth.unauthorized_error()
    sent = json.loads(error.body)
    assert sent["message"] == "Unauthorized" and sent["status"] == 401
    wrong = []
    for key, op in operations(document).items():
        if key in PUBLIC:
            continue
        content = op["responses"]["401"].get("content", {})
        if "application/json" not in content:
            wrong.append(f"{key}: 401 documented as {sorted(content)}")
            continue
        name = content["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
        if not schema_validator(document, name).is_valid(sent):
            wrong.append(f"{key}: 401 body does not match {name}")
    assert not wrong, [*wrong[:3], f"... {len(wrong)} operations in all"]


# --- derived from the validating models -----------------------------------------------------------


def test_request_bodies_reference_the_route_models(document):
    ops = operations(document)
    with_body = 0
    for key, spec in specs().items():
        op = ops[key]
        if spec.body is None:
            if key[1] in ("GET", "DELETE"):
                assert "requestBody" not in op, key
            continue
        with_body += 1
        body = op["requestBody"]
        assert body["required"] is not spec.optional_body
        assert body["content"]["application/json"]["schema"] == {"$ref": REF.format(model=spec.body.__name__)}, key
    assert with_body == 10  # POST, PUT and PATCH for each of the three resources, and a care-team grant


def test_success_responses_reference_the_route_models(document):
    ops = operations(document)
    for key, spec in specs().items():
        response = ops[key]["responses"][str(spec.status)]
        if spec.response is not None:
            schema = response["content"]["application/json"]["schema"]
            assert schema == {"$ref": REF.format(model=spec.response.__name__)}, key
        if spec.status == 204:
            assert "content" not in response, key


def _without_defs(schema: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in schema.items() if k != "$defs"}


@pytest.mark.parametrize(
    "model",
    sorted({s.body for s in specs().values() if s.body} | {s.response for s in specs().values() if s.response},
           key=lambda m: m.__name__),
    ids=lambda m: m.__name__,
)
def test_component_schema_is_the_models_own_json_schema(document, model):
    """The component is exactly what pydantic derives from the class that validates requests."""
    component = document["components"]["schemas"][model.__name__]
    assert component == _without_defs(model.model_json_schema(mode="validation", ref_template=REF))


def test_patient_write_schema_carries_the_validation_rules(document):
    schema = document["components"]["schemas"]["PatientWrite"]
    props = schema["properties"]
    card = next(s for s in props["idCardNum"]["anyOf"] if s.get("type") == "string")
    assert card["pattern"] == "^[0-9]{13}$"
    passport = next(s for s in props["passportNumber"]["anyOf"] if s.get("type") == "string")
    assert passport["pattern"] == "^[A-Za-z0-9]{5,20}$"
    # one identifier at least, the passport's two parts together
    assert {tuple(branch["required"]) for branch in schema["anyOf"]} == {
        ("idCardNum",), ("passportCountry", "passportNumber")
    }
    assert [(rule["if"]["required"], rule["then"]["required"]) for rule in schema["allOf"]] == [
        (["passportCountry"], ["passportNumber"]), (["passportNumber"], ["passportCountry"])
    ]
    assert props["firstName"]["maxLength"] == 50 and props["firstName"]["minLength"] == 1
    assert props["lastName"]["maxLength"] == 50
    assert props["birthDate"]["format"] == "date"
    phone = next(s for s in props["phoneNum"]["anyOf"] if s.get("type") == "string")
    assert phone["pattern"] == "^[0-9]{1,10}$"
    assert set(schema["required"]) == {"firstName", "lastName", "birthDate"}
    assert schema["additionalProperties"] is False


def test_other_write_schemas_carry_the_validation_rules(document):
    schemas = document["components"]["schemas"]
    record = schemas["MedicalRecordWrite"]
    assert record["properties"]["hospitalName"]["maxLength"] == 50
    assert record["properties"]["doctorFullName"]["maxLength"] == 50
    for note in ("diagnosis", "symptom"):
        assert next(s for s in record["properties"][note]["anyOf"] if s.get("type") == "string")["maxLength"] == 255
    assert set(record["required"]) == {"hospitalName", "doctorFullName", "treatmentStartDate"}
    prescription = schemas["PrescriptionWrite"]
    assert prescription["properties"]["medicineName"]["maxLength"] == 50
    assert prescription["properties"]["dose"]["maxLength"] == 50
    assert set(prescription["required"]) == {"medicineName", "dose"}
    for name in ("PatientPatch", "MedicalRecordPatch", "PrescriptionPatch"):
        assert "required" not in schemas[name] or schemas[name]["required"] == [], name
        assert schemas[name]["additionalProperties"] is False


VALID_PATIENT = {"idCardNum": "1234567890123", "firstName": "Somchai", "lastName": "Jaidee", "birthDate": "1980-04-12"}
VALID_RECORD = {"hospitalName": "Siriraj", "doctorFullName": "Dr. Malee", "treatmentStartDate": "2024-01-10"}
VALID_PRESCRIPTION = {"medicineName": "Oseltamivir", "dose": "75 mg"}

# (model, body): bodies whose acceptance by the document's schema and by the model must agree.
AGREEMENT = [
    (models.PatientWrite, VALID_PATIENT),
    (models.PatientWrite, VALID_PATIENT | {"phoneNum": "0812345678"}),
    (models.PatientWrite, VALID_PATIENT | {"phoneNum": None}),
    (models.PatientWrite, VALID_PATIENT | {"idCardNum": "123456789012"}),
    (models.PatientWrite, VALID_PATIENT | {"idCardNum": 1234567890123}),
    (models.PatientWrite, VALID_PATIENT | {"idCardNum": None}),
    (models.PatientWrite, VALID_PATIENT | {"idCardNum": None, "passportCountry": "GBR", "passportNumber": "AB12345"}),
    (models.PatientWrite, VALID_PATIENT | {"passportCountry": "tha", "passportNumber": "ab12345"}),
    (models.PatientWrite, VALID_PATIENT | {"idCardNum": None, "passportNumber": "AB12345"}),
    (models.PatientWrite, VALID_PATIENT | {"passportCountry": "GBR"}),
    (models.PatientWrite, VALID_PATIENT | {"passportCountry": "GBR", "passportNumber": "AB-12345"}),
    (models.PatientWrite, VALID_PATIENT | {"passportCountry": "GB", "passportNumber": "AB12345"}),
    (models.PatientWrite, {k: v for k, v in VALID_PATIENT.items() if k != "idCardNum"}),
    (models.PatientWrite, VALID_PATIENT | {"firstName": "N" * 50}),
    (models.PatientWrite, VALID_PATIENT | {"firstName": "N" * 51}),
    (models.PatientWrite, VALID_PATIENT | {"firstName": ""}),
    (models.PatientWrite, VALID_PATIENT | {"phoneNum": "08123456789"}),
    (models.PatientWrite, VALID_PATIENT | {"nickname": "x"}),
    (models.PatientWrite, {k: v for k, v in VALID_PATIENT.items() if k != "lastName"}),
    (models.PatientPatch, {}),
    (models.PatientPatch, {"lastName": "Wongsakul"}),
    (models.PatientPatch, {"lastName": "L" * 51}),
    (models.PatientPatch, {"first_name": "snake"}),
    (models.MedicalRecordWrite, VALID_RECORD),
    (models.MedicalRecordWrite, VALID_RECORD | {"diagnosis": "D" * 255, "symptom": None}),
    (models.MedicalRecordWrite, VALID_RECORD | {"diagnosis": "D" * 256}),
    (models.MedicalRecordWrite, VALID_RECORD | {"hospitalName": 5}),
    (models.MedicalRecordWrite, VALID_RECORD | {"symtom": "legacy spelling"}),
    (models.MedicalRecordUpdate, VALID_RECORD | {"patientId": 3}),
    (models.MedicalRecordUpdate, VALID_RECORD | {"patientId": 0}),
    (models.MedicalRecordUpdate, VALID_RECORD | {"patientId": "3"}),
    (models.PrescriptionWrite, VALID_PRESCRIPTION),
    (models.PrescriptionWrite, VALID_PRESCRIPTION | {"dose": "X" * 51}),
    (models.PrescriptionWrite, {"dose": "1 tablet"}),
    (models.PrescriptionUpdate, VALID_PRESCRIPTION | {"medicalRecordId": 2**63}),
    (models.PrescriptionPatch, {"medicalRecordId": 7}),
]


@pytest.mark.parametrize(("model", "body"), AGREEMENT, ids=[f"{m.__name__}-{i}" for i, (m, _) in enumerate(AGREEMENT)])
def test_document_schema_and_model_agree(document, model, body):
    """What the document allows, the API accepts, and what it forbids, the API rejects."""
    try:
        model.model_validate_json(json.dumps(body))
        accepted = True
    except ValidationError:
        accepted = False
    assert schema_validator(document, model.__name__).is_valid(body) is accepted


def test_agreement_cases_include_both_outcomes():
    outcomes = set()
    for model, body in AGREEMENT:
        try:
            model.model_validate_json(json.dumps(body))
            outcomes.add(True)
        except ValidationError:
            outcomes.add(False)
    assert outcomes == {True, False}


def test_error_responses_use_the_surface_error_shape(document):
    ops = operations(document)
    for key, spec in specs().items():
        for code, response in ops[key]["responses"].items():
            if int(code) < 400 or code in ("401", "429"):  # answered by API Gateway itself
                continue
            content = response["content"]
            if spec.error_schema is not None:  # FHIR: an OperationOutcome, as FHIR JSON
                assert content == {spec.media_type: {"schema": {"$ref": REF.format(model=spec.error_schema)}}}, key
            elif spec.error_renderer is None:
                assert content == {"application/problem+json": {"schema": {"$ref": REF.format(model="Problem")}}}, key
            else:
                assert content == {"application/json": {"schema": {"$ref": REF.format(model="LegacyError")}}}, key
    problem = document["components"]["schemas"]["Problem"]
    assert set(problem["required"]) == {"type", "title", "status", "detail"}
    assert "errors" in problem["properties"]


def test_answers_without_a_body_are_documented_without_one(document):
    """A bulk export's 202s carry headers, not a body: the document says so rather than naming a schema."""
    ops = operations(document)
    documented = 0
    for key, spec in specs().items():
        for code, (meaning, headers) in spec.bodiless.items():
            response = ops[key]["responses"][str(code)]
            assert "content" not in response and response["description"] == meaning, key
            assert set(response.get("headers", {})) == set(headers), key
            assert code not in spec.errors, key  # not also listed as an error with an error body
            documented += 1
    assert documented >= 3  # $export at system and Patient level, and the status URL while the job runs
