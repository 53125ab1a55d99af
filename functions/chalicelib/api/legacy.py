"""The original system's routes, kept so its clients keep working.

Same paths, field names (``patientID``, ``symtom``...) and status codes as the original, served by
the same services as /v1. Errors are JSON ``{"error": ...}`` as the original's clients expect.
Because API Gateway allows one parameter name per path level, ``/patient/{key}`` is a card number
for GET and a patient id for PUT/DELETE, as in the original (likewise for the other two).

The original identifies a patient by national ID only: these routes register and change national IDs,
never passports (/v1 does both), and show ``idCardNum: null`` for a patient who has only a passport.
"""

from __future__ import annotations

import copy
import json
from functools import partial
from typing import Any

from chalice import Response
from pydantic import Field, create_model
from pydantic.alias_generators import to_camel

from chalicelib.api import problems
from chalicelib.api.dependencies import services
from chalicelib.api.routing import PAGE_QUERY, HttpRequest, RouteTable, encode_cursor, json_response
from chalicelib.domain import models
from chalicelib.domain.errors import (
    Conflict,
    DomainError,
    FieldError,
    Forbidden,
    Gone,
    IdempotencyKeyReused,
    InvalidResult,
    NotFound,
    ParentGone,
    ParentNotFound,
    TooLarge,
    Unavailable,
    Unexpected,
    UnsupportedContent,
    ValidationFailed,
)
from chalicelib.domain.services import ResourceService

routes = RouteTable()

# The one table of names that differ from the /v1 camelCase names.
_LEGACY_NAMES = {
    "patient_id": "patientID",
    "medical_record_id": "medicalRecordID",
    "prescription_id": "prescriptionID",
    "symptom": "symtom",
}
_ACCEPTED_ALIASES = {"symptom": "symptom"}  # input also accepts the correct spelling


def legacy_name(field: str) -> str:
    return _LEGACY_NAMES.get(field) or to_camel(field)


def _fields(key: str, parent_key: str | None, write_model: type[models.ApiModel]) -> tuple[str, ...]:
    return (key, *((parent_key,) if parent_key else ()), *write_model.model_fields)


# The original's patient body: /v1's fields without the passport, the national ID required.
LegacyPatientWrite = create_model(
    "LegacyPatientWrite",
    __base__=models.ApiModel,
    __doc__="A patient as the original API registers it: by Thai national ID.",
    id_card_num=(models.IdCardNum, Field(description=models.PatientWrite.model_fields["id_card_num"].description)),
    **{
        name: (info.annotation, copy.copy(info))
        for name, info in models.PatientWrite.model_fields.items()
        if name not in ("id_card_num", "passport_country", "passport_number")
    },
)
LegacyPatientPatch = models.partial_model(LegacyPatientWrite, "LegacyPatientPatch")
PATIENT_FIELDS = _fields("patient_id", None, LegacyPatientWrite)
RECORD_FIELDS = _fields("medical_record_id", "patient_id", models.MedicalRecordWrite)
PRESCRIPTION_FIELDS = _fields("prescription_id", "medical_record_id", models.PrescriptionWrite)


def to_legacy(resource: Any, fields: tuple[str, ...]) -> dict[str, Any]:
    dumped = resource.model_dump(mode="json", by_alias=False)
    return {legacy_name(f): dumped[f] for f in fields}


def _from_legacy(body: dict[str, Any], model: type[models.ApiModel]) -> dict[str, Any]:
    """Rename legacy keys to the model's JSON names; unknown keys pass through and are rejected."""
    by_legacy = {legacy_name(f): info.alias or f for f, info in model.model_fields.items()}
    by_legacy.update({k: model.model_fields[v].alias for k, v in _ACCEPTED_ALIASES.items() if v in model.model_fields})
    renamed: dict[str, Any] = {}
    for key, value in body.items():
        target = by_legacy.get(key, key)
        if target in renamed:
            raise ValidationFailed("the request body is invalid", [FieldError(key, "is given twice")])
        renamed[target] = value
    return renamed


_ID_SCHEMA = {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}


def _body_schema(model: type[models.ApiModel], *, parent: str | None = None) -> dict[str, Any]:
    """The request body the original routes accept, from the same model /v1 validates with (legacy names)."""
    schema = model.model_json_schema(by_alias=True)
    properties: dict[str, Any] = {}
    required: list[str] = [parent] if parent else []
    for name, info in model.model_fields.items():
        properties[legacy_name(name)] = schema["properties"][info.alias or name]
        if info.is_required():
            required.append(legacy_name(name))
    if parent:
        properties[parent] = _ID_SCHEMA
    body: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        body["required"] = required
    for accepted in _ACCEPTED_ALIASES.values():  # either spelling, not both
        if accepted in model.model_fields:
            body["properties"][accepted] = properties[legacy_name(accepted)]
            body["not"] = {"required": [legacy_name(accepted), accepted]}
    return body


_OUTPUT_SCHEMAS = {
    "id_card_num": {
        "type": ["string", "null"],
        "description": "the Thai national ID; null for a patient registered with a passport only (through /v1)",
    },
}


def _legacy_schema(fields: tuple[str, ...]) -> dict[str, Any]:
    return {"type": "object", "properties": {legacy_name(f): _OUTPUT_SCHEMAS.get(f, {}) for f in fields}}


def _list_schema(key: str, fields: tuple[str, ...]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            key: {"type": "array", "items": _legacy_schema(fields)},
            "nextCursor": {"type": ["string", "null"]},
        },
    }


def _error(status: int, message: str, errors: list[FieldError] | None = None) -> Response:
    body: dict[str, Any] = {"error": message}
    if errors:
        body["errors"] = [{"field": e.field, "message": e.message} for e in errors]
    headers = {"Content-Type": "application/json"}
    if status == 503:
        headers["Retry-After"] = problems.RETRY_AFTER_SECONDS
    return Response(body=json.dumps(body), status_code=status, headers=headers)


def _renderer(not_found: str, *, missing_parent: tuple[int, str] | None = None, conflict: str | None = None):
    """The original's error answers for one route."""

    def render(exc: DomainError) -> Response:
        if isinstance(exc, ValidationFailed):
            return _error(400, exc.detail, exc.errors)
        if missing_parent and isinstance(exc, ParentNotFound | ParentGone):
            return _error(*missing_parent)
        if isinstance(exc, NotFound | Gone):
            return _error(404, not_found)
        if isinstance(exc, InvalidResult):
            return _error(400, exc.detail, exc.errors)
        if isinstance(exc, Conflict):
            return _error(400, conflict or exc.detail)
        if isinstance(exc, Forbidden):
            return _error(403, exc.detail)
        if isinstance(exc, Unavailable):
            return _error(503, exc.detail)
        if isinstance(exc, TooLarge):
            return _error(413, exc.detail)
        if isinstance(exc, UnsupportedContent):
            return _error(415, exc.detail)
        if isinstance(exc, Unexpected):
            return _error(500, exc.detail)
        if isinstance(exc, IdempotencyKeyReused):
            return _error(422, exc.detail)
        return _error(400, exc.detail)

    return render


def _list(request: HttpRequest, service: ResourceService, key: str, fields: tuple[str, ...], **kwargs: Any) -> Any:
    """A page of the original's list shape; with ``empty_is_404`` an empty first page answers 404."""
    empty_message = kwargs.pop("empty_is_404", None)
    page_request = request.page()
    page = service.list(request.caller, page_request, **kwargs)
    if empty_message and not page.items and page_request.after is None:
        return _error(404, empty_message)
    return json_response(
        {key: [to_legacy(item, fields) for item in page.items], "nextCursor": encode_cursor(page.next_after)}
    )


PATIENT_NOT_FOUND = "Patient not found"
RECORD_NOT_FOUND = "Medical record not found"
PRESCRIPTION_NOT_FOUND = "Prescription not found"


# --- /patient -------------------------------------------------------------------------------------


@routes.route(
    "GET",
    "/patient",
    summary="List patients (original API)",
    tag="original-api",
    scope="read",
    query=PAGE_QUERY,
    response_schema=_list_schema("patients", PATIENT_FIELDS),
    error_renderer=_renderer(PATIENT_NOT_FOUND),
)
def legacy_list_patients(request: HttpRequest) -> Response:
    return _list(request, services().patients, "patients", PATIENT_FIELDS)


@routes.route(
    "GET",
    "/patient/{key}",
    summary="Read a patient by card number (original API)",
    tag="original-api",
    scope="read",
    path_schemas={"key": {"type": "string", "pattern": "^[0-9]{13}$", "description": "a 13-digit card number"}},
    response_schema={"type": "object", "properties": {"patient": _legacy_schema(PATIENT_FIELDS)}},
    errors=(404,),
    error_renderer=_renderer(PATIENT_NOT_FOUND),
)
def legacy_get_patient(request: HttpRequest) -> Response:
    card_number = request.path_str("key")
    if not card_number.isascii() or not card_number.isdigit() or len(card_number) != 13:
        raise NotFound("no patient has this card number")  # cannot exist; no need to ask the database
    patient = services().patients.get_by_card_number(request.caller, card_number)
    return json_response({"patient": to_legacy(patient, PATIENT_FIELDS)})


@routes.route(
    "POST",
    "/patient",
    summary="Register a patient (original API)",
    tag="original-api",
    scope="write",
    status=201,
    headers=("Idempotency-Key",),
    errors=(400,),
    response_schema={"type": "object", "properties": {"message": {"type": "string"}, "patientID": {}}},
    request_schema=partial(_body_schema, LegacyPatientWrite),
    error_renderer=_renderer(PATIENT_NOT_FOUND, conflict="Patient with id_card_num already exists"),
)
def legacy_create_patient(request: HttpRequest) -> Response:
    legacy = request.model(LegacyPatientWrite, _from_legacy(request.json_object(), LegacyPatientWrite))
    data = models.PatientWrite.model_validate(legacy.model_dump(by_alias=False), by_name=True, by_alias=False)
    created = services().patients.create(request.caller, data, idempotency_key=request.idempotency_key())
    return json_response({"message": "Patient registered successfully", "patientID": created.resource.patient_id}, 201)


@routes.route(
    "PUT",
    "/patient/{key}",
    summary="Update a patient by id (original API)",
    tag="original-api",
    scope="write",
    request_schema=partial(_body_schema, LegacyPatientPatch),
    errors=(400, 404),
    error_renderer=_renderer(PATIENT_NOT_FOUND, conflict="Patient with id_card_num already exists"),
)
def legacy_update_patient(request: HttpRequest) -> Response:
    key = request.path_id("key")
    body = _without_own_id(request.json_object(), "patientID", key)
    changes = request.model(LegacyPatientPatch, _from_legacy(body, LegacyPatientPatch))
    services().patients.update(request.caller, key, changes, partial=True)
    return json_response({"message": "Patient updated successfully"})


@routes.route(
    "DELETE",
    "/patient/{key}",
    summary="Delete a patient by id (original API)",
    tag="original-api",
    scope="write",
    errors=(404,),
    error_renderer=_renderer(PATIENT_NOT_FOUND),
)
def legacy_delete_patient(request: HttpRequest) -> Response:
    if not services().patients.delete(request.caller, request.path_id("key")):
        raise NotFound("already deleted")  # the original answered 404 for what it no longer had
    return json_response({"message": "Patient deleted successfully"})


# --- /medicalrecord -------------------------------------------------------------------------------


@routes.route(
    "GET",
    "/medicalrecord",
    summary="List medical records (original API)",
    tag="original-api",
    scope="read",
    query=PAGE_QUERY,
    response_schema=_list_schema("medicalRecords", RECORD_FIELDS),
    error_renderer=_renderer(RECORD_NOT_FOUND),
)
def legacy_list_medical_records(request: HttpRequest) -> Response:
    return _list(request, services().medical_records, "medicalRecords", RECORD_FIELDS)


@routes.route(
    "GET",
    "/medicalrecord/{key}",
    summary="A patient's medical records (original API)",
    tag="original-api",
    scope="read",
    query=PAGE_QUERY,
    errors=(404,),
    response_schema=_list_schema("medicalRecords", RECORD_FIELDS),
    error_renderer=_renderer("No medical records found for this patient"),
)
def legacy_patient_medical_records(request: HttpRequest) -> Response:
    return _list(
        request,
        services().medical_records,
        "medicalRecords",
        RECORD_FIELDS,
        parent_key=request.path_id("key"),
        empty_is_404="No medical records found for this patient",
    )


@routes.route(
    "POST",
    "/medicalrecord",
    summary="Record a visit (original API)",
    tag="original-api",
    scope="write",
    status=201,
    headers=("Idempotency-Key",),
    errors=(400, 404),
    response_schema={"type": "object", "properties": {"message": {"type": "string"}, "medicalRecordID": {}}},
    request_schema=partial(_body_schema, models.MedicalRecordWrite, parent="patientID"),
    error_renderer=_renderer(RECORD_NOT_FOUND, missing_parent=(404, PATIENT_NOT_FOUND)),
)
def legacy_create_medical_record(request: HttpRequest) -> Response:
    body = request.json_object()
    patient_id = _parent_id(body, "patientID")
    data = request.model(models.MedicalRecordWrite, _from_legacy(body, models.MedicalRecordWrite))
    created = services().medical_records.create(
        request.caller, data, parent_key=patient_id, idempotency_key=request.idempotency_key()
    )
    return json_response(
        {"message": "Medical record created successfully", "medicalRecordID": created.resource.medical_record_id},
        201,
    )


def _without_own_id(body: dict[str, Any], name: str, key: int) -> dict[str, Any]:
    """The original's clients may echo the resource's own id in a PUT body: accepted when it is the path's."""
    if name in body:
        value = body.pop(name)
        if isinstance(value, bool) or value != key:
            raise ValidationFailed("the request body is invalid", [FieldError(name, "must equal the id in the path")])
    return body


def _parent_id(body: dict[str, Any], name: str) -> int:
    value = body.pop(name, None)
    if value is None:
        raise ValidationFailed("the request body is invalid", [FieldError(name, "is required")])
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 2**63:
        raise ValidationFailed("the request body is invalid", [FieldError(name, "must be a positive integer")])
    return value


@routes.route(
    "PUT",
    "/medicalrecord/{key}",
    summary="Update a medical record by id (original API)",
    tag="original-api",
    scope="write",
    request_schema=partial(_body_schema, models.MedicalRecordPatch),
    errors=(400, 404),
    error_renderer=_renderer(RECORD_NOT_FOUND, missing_parent=(404, PATIENT_NOT_FOUND)),
)
def legacy_update_medical_record(request: HttpRequest) -> Response:
    key = request.path_id("key")
    body = _without_own_id(request.json_object(), "medicalRecordID", key)
    changes = request.model(models.MedicalRecordPatch, _from_legacy(body, models.MedicalRecordPatch))
    services().medical_records.update(request.caller, key, changes, partial=True)
    return json_response({"message": "Medical record updated successfully"})


@routes.route(
    "DELETE",
    "/medicalrecord/{key}",
    summary="Delete a medical record by id (original API)",
    tag="original-api",
    scope="write",
    errors=(404,),
    error_renderer=_renderer(RECORD_NOT_FOUND),
)
def legacy_delete_medical_record(request: HttpRequest) -> Response:
    if not services().medical_records.delete(request.caller, request.path_id("key")):
        raise NotFound("already deleted")  # the original answered 404 for what it no longer had
    return json_response({"message": "Medical record deleted successfully"})


# --- /prescription --------------------------------------------------------------------------------


@routes.route(
    "GET",
    "/prescription",
    summary="List prescriptions (original API)",
    tag="original-api",
    scope="read",
    query=PAGE_QUERY,
    response_schema=_list_schema("prescriptions", PRESCRIPTION_FIELDS),
    error_renderer=_renderer(PRESCRIPTION_NOT_FOUND),
)
def legacy_list_prescriptions(request: HttpRequest) -> Response:
    return _list(request, services().prescriptions, "prescriptions", PRESCRIPTION_FIELDS)


@routes.route(
    "GET",
    "/prescription/{key}",
    summary="A medical record's prescriptions (original API)",
    tag="original-api",
    scope="read",
    query=PAGE_QUERY,
    errors=(404,),
    response_schema=_list_schema("prescriptions", PRESCRIPTION_FIELDS),
    error_renderer=_renderer("No prescriptions found for this medical record"),
)
def legacy_record_prescriptions(request: HttpRequest) -> Response:
    return _list(
        request,
        services().prescriptions,
        "prescriptions",
        PRESCRIPTION_FIELDS,
        parent_key=request.path_id("key"),
        empty_is_404="No prescriptions found for this medical record",
    )


@routes.route(
    "POST",
    "/prescription",
    summary="Prescribe (original API)",
    tag="original-api",
    scope="write",
    status=201,
    headers=("Idempotency-Key",),
    errors=(400,),
    response_schema={"type": "object", "properties": {"message": {"type": "string"}, "prescriptionID": {}}},
    request_schema=partial(_body_schema, models.PrescriptionWrite, parent="medicalRecordID"),
    error_renderer=_renderer(PRESCRIPTION_NOT_FOUND, missing_parent=(400, RECORD_NOT_FOUND)),
)
def legacy_create_prescription(request: HttpRequest) -> Response:
    body = request.json_object()
    record_id = _parent_id(body, "medicalRecordID")
    data = request.model(models.PrescriptionWrite, _from_legacy(body, models.PrescriptionWrite))
    created = services().prescriptions.create(
        request.caller, data, parent_key=record_id, idempotency_key=request.idempotency_key()
    )
    return json_response(
        {"message": "Prescription created successfully", "prescriptionID": created.resource.prescription_id}, 201
    )


@routes.route(
    "PUT",
    "/prescription/{key}",
    summary="Update a prescription by id (original API)",
    tag="original-api",
    scope="write",
    request_schema=partial(_body_schema, models.PrescriptionPatch),
    errors=(400, 404),
    error_renderer=_renderer(PRESCRIPTION_NOT_FOUND, missing_parent=(400, RECORD_NOT_FOUND)),
)
def legacy_update_prescription(request: HttpRequest) -> Response:
    key = request.path_id("key")
    body = _without_own_id(request.json_object(), "prescriptionID", key)
    changes = request.model(models.PrescriptionPatch, _from_legacy(body, models.PrescriptionPatch))
    services().prescriptions.update(request.caller, key, changes, partial=True)
    return json_response({"message": "Prescription updated successfully"})


@routes.route(
    "DELETE",
    "/prescription/{key}",
    summary="Delete a prescription by id (original API)",
    tag="original-api",
    scope="write",
    errors=(404,),
    error_renderer=_renderer(PRESCRIPTION_NOT_FOUND),
)
def legacy_delete_prescription(request: HttpRequest) -> Response:
    if not services().prescriptions.delete(request.caller, request.path_id("key")):
        raise NotFound("already deleted")  # the original answered 404 for what it no longer had
    return json_response({"message": "Prescription deleted successfully"})
