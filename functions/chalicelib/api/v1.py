"""The resource API under /v1."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from chalice import Response

from chalicelib.api.dependencies import services
from chalicelib.api.routing import (
    PAGE_QUERY,
    SUBJECT_IN_PATH,
    HttpRequest,
    QueryParam,
    RouteTable,
    encode_cursor,
    etag,
    json_response,
)
from chalicelib.domain import identifiers, models
from chalicelib.domain.services import ResourceService

routes = RouteTable()

PATIENT_FILTERS = (
    QueryParam("idCardNum", {"type": "string", "pattern": "^[0-9]{13}$"}, "exact Thai national ID"),
    QueryParam("passportNumber", {"type": "string", "pattern": identifiers.PASSPORT_NUMBER_PATTERN},
               "exact passport number (case-insensitive)"),
    QueryParam("passportCountry", {"type": "string", "pattern": "^[A-Za-z]{3}$"},
               "the passport's issuing state (ISO 3166-1 alpha-3, case-insensitive)"),
    QueryParam("lastName", {"type": "string", "minLength": 1, "maxLength": 50, "pattern": "^[^\\x00]*$"},
               "exact last name"),
    QueryParam("birthDate", {"type": "string", "format": "date", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"},
               "exact birth date"),
)
MEMBER_SUB = {"memberSub": {"type": "string", "pattern": f"^{SUBJECT_IN_PATH.pattern}$"}}
NOT_FOUND_GONE = (404, 410)
WRITE_ERRORS = (400, 404, 410, 412)


class PatientFilter(models.ApiModel):
    id_card_num: models.IdCardNum | None = None
    passport_number: models.PassportNumber | None = None
    passport_country: models.PassportCountry | None = None
    last_name: models.NameFilter | None = None
    birth_date: models.IsoDate | None = None


def _page(page: Any, model: type[models.Page]) -> Response:
    return json_response(model.model_construct(items=page.items, next_cursor=encode_cursor(page.next_after)))


def _one(resource: Any, status: int = 200, location: str | None = None) -> Response:
    headers = {"ETag": etag(resource.version)}
    if location:
        headers["Location"] = location
    return json_response(resource, status, headers)


def _created(request: HttpRequest, service: ResourceService, data: Any, parent_key: int | None, path: str) -> Response:
    created = service.create(request.caller, data, parent_key=parent_key, idempotency_key=request.idempotency_key())
    key = getattr(created.resource, service.table.key)
    response = _one(created.resource, 201, f"{path}/{key}")
    if created.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response


# --- patients ---------------------------------------------------------------------------------


@routes.route(
    "POST",
    "/v1/patients",
    summary="Register a patient",
    tag="patients",
    scope="write",
    body=models.PatientWrite,
    response=models.Patient,
    status=201,
    headers=("Idempotency-Key",),
    errors=(400, 409, 422),
)
def create_patient(request: HttpRequest) -> Response:
    data = request.model(models.PatientWrite)
    return _created(request, services().patients, data, None, "/v1/patients")


@routes.route(
    "GET",
    "/v1/patients",
    summary="List patients",
    tag="patients",
    scope="read",
    response=models.PatientPage,
    query=PATIENT_FILTERS + PAGE_QUERY,
    errors=(400,),
)
def list_patients(request: HttpRequest) -> Response:
    page = request.page()
    raw = {k: v for k, v in request.query.items() if k in {q.name for q in PATIENT_FILTERS}}
    filters = request.model(PatientFilter, raw) if raw else PatientFilter()
    conditions = [(name, value) for name, value in filters if value is not None]
    result = services().patients.list(request.caller, page, filters=conditions)
    return _page(result, models.PatientPage)


@routes.route(
    "GET",
    "/v1/patients/{patientId}",
    summary="Read a patient",
    tag="patients",
    scope="read",
    response=models.Patient,
    errors=NOT_FOUND_GONE,
)
def get_patient(request: HttpRequest) -> Response:
    return _one(services().patients.get(request.caller, request.path_id("patientId")))


def _update(request: HttpRequest, service: ResourceService, key: int, model: type, partial: bool) -> Response:
    changes = request.model(model)
    return _one(
        service.update(request.caller, key, changes, partial=partial, expected_version=request.expected_version())
    )


def _delete(request: HttpRequest, service: ResourceService, key: int) -> Response:
    service.delete(request.caller, key, expected_version=request.expected_version())
    return Response(body="", status_code=204)


@routes.route(
    "PUT",
    "/v1/patients/{patientId}",
    summary="Replace a patient",
    tag="patients",
    scope="write",
    body=models.PatientWrite,
    response=models.Patient,
    headers=("If-Match",),
    errors=(*WRITE_ERRORS, 409),
)
def replace_patient(request: HttpRequest) -> Response:
    return _update(request, services().patients, request.path_id("patientId"), models.PatientWrite, False)


@routes.route(
    "PATCH",
    "/v1/patients/{patientId}",
    summary="Change some fields of a patient",
    tag="patients",
    scope="write",
    body=models.PatientPatch,
    response=models.Patient,
    headers=("If-Match",),
    errors=(*WRITE_ERRORS, 409),
)
def patch_patient(request: HttpRequest) -> Response:
    return _update(request, services().patients, request.path_id("patientId"), models.PatientPatch, True)


@routes.route(
    "DELETE",
    "/v1/patients/{patientId}",
    summary="Delete a patient with their records and prescriptions",
    tag="patients",
    scope="write",
    status=204,
    headers=("If-Match",),
    errors=(404, 412),
)
def delete_patient(request: HttpRequest) -> Response:
    return _delete(request, services().patients, request.path_id("patientId"))


@routes.route(
    "GET",
    "/v1/patients/{patientId}/summary",
    summary="A patient with their live visits (a page at a time) and each visit's live prescriptions",
    tag="patients",
    scope="read",
    response=models.PatientSummary,
    query=PAGE_QUERY,
    errors=(400, *NOT_FOUND_GONE),
)
def get_patient_summary(request: HttpRequest) -> Response:
    page = request.page()
    result = services().patients.summary(request.caller, request.path_id("patientId"), page)
    summary = result.items[0]
    summary.next_cursor = encode_cursor(result.next_after)
    return json_response(summary)


@routes.route(
    "GET",
    "/v1/patients/{patientId}/access-log",
    summary="Who accessed this patient's data (admins, and the patient themself)",
    tag="audit",
    scope="read",
    response=models.AuditEventPage,
    query=PAGE_QUERY,
    errors=(400, 404),
)
def get_patient_access_log(request: HttpRequest) -> Response:
    page = request.page()
    result = services().patients.access_log(request.caller, request.path_id("patientId"), page)
    return _page(result, models.AuditEventPage)


# --- care teams and break-the-glass review (admin) --------------------------------------------


@routes.route(
    "GET",
    "/v1/patients/{patientId}/care-team",
    summary="Who is and was on a patient's care team",
    tag="care-team",
    scope="admin",
    response=models.CareTeamMemberPage,
    query=PAGE_QUERY,
    errors=(400, 404),
)
def list_care_team(request: HttpRequest) -> Response:
    page = request.page()
    result = services().care_teams.members(request.caller, request.path_id("patientId"), page)
    return _page(result, models.CareTeamMemberPage)


@routes.route(
    "PUT",
    "/v1/patients/{patientId}/care-team/{memberSub}",
    summary="Put a clinician (by token subject) on a patient's care team",
    tag="care-team",
    scope="admin",
    body=models.CareTeamGrant,
    optional_body=True,
    path_schemas=MEMBER_SUB,
    response=models.CareTeamMember,
    errors=(400, 404, 409, 410),
)
def grant_care_team_member(request: HttpRequest) -> Response:
    patient_id, member_sub = request.path_id("patientId"), request.subject("memberSub")
    grant = request.model(models.CareTeamGrant) if request.has_body else models.CareTeamGrant()
    member, _created = services().care_teams.grant(request.caller, patient_id, member_sub, grant.role)
    return json_response(member)


@routes.route(
    "DELETE",
    "/v1/patients/{patientId}/care-team/{memberSub}",
    summary="Take a member off a patient's care team (effective on their next request; history kept)",
    tag="care-team",
    scope="admin",
    status=204,
    path_schemas=MEMBER_SUB,
    errors=(400, 404),
)
def revoke_care_team_member(request: HttpRequest) -> Response:
    services().care_teams.revoke(request.caller, request.path_id("patientId"), request.subject("memberSub"))
    return Response(body="", status_code=204)


class BreakGlassQuery(models.ApiModel):
    since: models.Timestamp


@routes.route(
    "GET",
    "/v1/audit/break-glass",
    summary="Break-the-glass accesses since a time, oldest first, with their reasons (for review)",
    tag="audit",
    scope="admin",
    response=models.AuditEventPage,
    query=(
        QueryParam("since", {"type": "string", "format": "date-time"}, "RFC 3339 time with a zone", required=True),
        *PAGE_QUERY,
    ),
    errors=(400,),
)
def list_break_glass_accesses(request: HttpRequest) -> Response:
    page = request.page()
    query = request.model(BreakGlassQuery, {"since": request.query.get("since")})
    result = services().audit.break_glass(request.caller, query.since, page)
    return _page(result, models.AuditEventPage)


# --- medical records --------------------------------------------------------------------------


@routes.route(
    "POST",
    "/v1/patients/{patientId}/medical-records",
    summary="Record a visit",
    tag="medical-records",
    scope="write",
    body=models.MedicalRecordWrite,
    response=models.MedicalRecord,
    status=201,
    headers=("Idempotency-Key",),
    errors=(400, 404, 410, 422),
)
def create_medical_record(request: HttpRequest) -> Response:
    patient_id = request.path_id("patientId")
    data = request.model(models.MedicalRecordWrite)
    return _created(request, services().medical_records, data, patient_id, "/v1/medical-records")


@routes.route(
    "GET",
    "/v1/patients/{patientId}/medical-records",
    summary="List a patient's visits",
    tag="medical-records",
    scope="read",
    response=models.MedicalRecordPage,
    query=PAGE_QUERY,
    errors=(400, *NOT_FOUND_GONE),
)
def list_medical_records(request: HttpRequest) -> Response:
    page = request.page()
    result = services().medical_records.list(request.caller, page, parent_key=request.path_id("patientId"))
    return _page(result, models.MedicalRecordPage)


@routes.route(
    "GET",
    "/v1/medical-records/{medicalRecordId}",
    summary="Read a visit",
    tag="medical-records",
    scope="read",
    response=models.MedicalRecord,
    errors=NOT_FOUND_GONE,
)
def get_medical_record(request: HttpRequest) -> Response:
    return _one(services().medical_records.get(request.caller, request.path_id("medicalRecordId")))


@routes.route(
    "PUT",
    "/v1/medical-records/{medicalRecordId}",
    summary="Replace a visit",
    tag="medical-records",
    scope="write",
    body=models.MedicalRecordUpdate,
    response=models.MedicalRecord,
    headers=("If-Match",),
    errors=(*WRITE_ERRORS, 409),  # 409: the change would leave the stored visit invalid
)
def replace_medical_record(request: HttpRequest) -> Response:
    return _update(
        request, services().medical_records, request.path_id("medicalRecordId"), models.MedicalRecordUpdate, False
    )


@routes.route(
    "PATCH",
    "/v1/medical-records/{medicalRecordId}",
    summary="Change some fields of a visit",
    tag="medical-records",
    scope="write",
    body=models.MedicalRecordPatch,
    response=models.MedicalRecord,
    headers=("If-Match",),
    errors=(*WRITE_ERRORS, 409),  # 409: the change would leave the stored visit invalid
)
def patch_medical_record(request: HttpRequest) -> Response:
    return _update(
        request, services().medical_records, request.path_id("medicalRecordId"), models.MedicalRecordPatch, True
    )


@routes.route(
    "DELETE",
    "/v1/medical-records/{medicalRecordId}",
    summary="Delete a visit and its prescriptions",
    tag="medical-records",
    scope="write",
    status=204,
    headers=("If-Match",),
    errors=(404, 412),
)
def delete_medical_record(request: HttpRequest) -> Response:
    return _delete(request, services().medical_records, request.path_id("medicalRecordId"))


# --- prescriptions ----------------------------------------------------------------------------


@routes.route(
    "POST",
    "/v1/medical-records/{medicalRecordId}/prescriptions",
    summary="Prescribe",
    tag="prescriptions",
    scope="write",
    body=models.PrescriptionWrite,
    response=models.Prescription,
    status=201,
    headers=("Idempotency-Key",),
    errors=(400, 404, 410, 422),
)
def create_prescription(request: HttpRequest) -> Response:
    record_id = request.path_id("medicalRecordId")
    data = request.model(models.PrescriptionWrite)
    return _created(request, services().prescriptions, data, record_id, "/v1/prescriptions")


@routes.route(
    "GET",
    "/v1/medical-records/{medicalRecordId}/prescriptions",
    summary="List a visit's prescriptions",
    tag="prescriptions",
    scope="read",
    response=models.PrescriptionPage,
    query=PAGE_QUERY,
    errors=(400, *NOT_FOUND_GONE),
)
def list_prescriptions(request: HttpRequest) -> Response:
    page = request.page()
    result = services().prescriptions.list(request.caller, page, parent_key=request.path_id("medicalRecordId"))
    return _page(result, models.PrescriptionPage)


@routes.route(
    "GET",
    "/v1/prescriptions/{prescriptionId}",
    summary="Read a prescription",
    tag="prescriptions",
    scope="read",
    response=models.Prescription,
    errors=NOT_FOUND_GONE,
)
def get_prescription(request: HttpRequest) -> Response:
    return _one(services().prescriptions.get(request.caller, request.path_id("prescriptionId")))


@routes.route(
    "PUT",
    "/v1/prescriptions/{prescriptionId}",
    summary="Replace a prescription",
    tag="prescriptions",
    scope="write",
    body=models.PrescriptionUpdate,
    response=models.Prescription,
    headers=("If-Match",),
    errors=WRITE_ERRORS,
)
def replace_prescription(request: HttpRequest) -> Response:
    return _update(
        request, services().prescriptions, request.path_id("prescriptionId"), models.PrescriptionUpdate, False
    )


@routes.route(
    "PATCH",
    "/v1/prescriptions/{prescriptionId}",
    summary="Change some fields of a prescription",
    tag="prescriptions",
    scope="write",
    body=models.PrescriptionPatch,
    response=models.Prescription,
    headers=("If-Match",),
    errors=WRITE_ERRORS,
)
def patch_prescription(request: HttpRequest) -> Response:
    return _update(request, services().prescriptions, request.path_id("prescriptionId"), models.PrescriptionPatch, True)


@routes.route(
    "DELETE",
    "/v1/prescriptions/{prescriptionId}",
    summary="Delete a prescription",
    tag="prescriptions",
    scope="write",
    status=204,
    headers=("If-Match",),
    errors=(404, 412),
)
def delete_prescription(request: HttpRequest) -> Response:
    return _delete(request, services().prescriptions, request.path_id("prescriptionId"))


# --- history and restore: every kept version of a patient, visit or prescription ----------------


def _history_routes(
    tag: str, path: str, param: str, noun: str, service: Callable[[], ResourceService],
    response_model: type[models.ApiModel], page_model: type[models.Page], version_model: type[models.ApiModel],
) -> None:
    """``GET {path}/history``, ``GET {path}/history/{version}`` and ``POST {path}/restore`` for one type."""
    name = noun.replace(" ", "_")

    def history(request: HttpRequest) -> Response:
        return _page(service().history(request.caller, request.path_id(param), request.page()), page_model)

    def version(request: HttpRequest) -> Response:
        found = service().version(request.caller, request.path_id(param), request.path_id("version"))
        return json_response(found)

    def restore(request: HttpRequest) -> Response:
        key, expected = request.path_id(param), request.expected_version()
        return _one(service().restore(request.caller, key, expected_version=expected))

    history.__name__, version.__name__, restore.__name__ = (
        f"get_{name}_history", f"get_{name}_version", f"restore_{name}"
    )
    routes.route(
        "GET", f"{path}/history", summary=f"Every kept version of a {noun}, oldest first", tag=tag, scope="read",
        response=page_model, query=PAGE_QUERY, errors=(400, 404),
    )(history)  # fmt: skip
    routes.route(
        "GET", f"{path}/history/{{version}}", summary=f"One kept version of a {noun}", tag=tag, scope="read",
        response=version_model, errors=(404,),
    )(version)  # fmt: skip
    routes.route(
        "POST", f"{path}/restore", summary=f"Restore a deleted {noun}, with what its delete cascaded", tag=tag,
        scope="write", response=response_model, headers=("If-Match",), errors=(404, 409, 412),
    )(restore)  # fmt: skip


_history_routes("patients", "/v1/patients/{patientId}", "patientId", "patient", lambda: services().patients,
                models.Patient, models.PatientVersionPage, models.PatientVersion)
_history_routes("medical-records", "/v1/medical-records/{medicalRecordId}", "medicalRecordId", "medical record",
                lambda: services().medical_records, models.MedicalRecord, models.MedicalRecordVersionPage,
                models.MedicalRecordVersion)
_history_routes("prescriptions", "/v1/prescriptions/{prescriptionId}", "prescriptionId", "prescription",
                lambda: services().prescriptions, models.Prescription, models.PrescriptionVersionPage,
                models.PrescriptionVersion)
