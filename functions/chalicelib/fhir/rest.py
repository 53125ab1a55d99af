"""The FHIR RESTful interactions (read, vread, history, search, $everything, capabilities) over the services.

Each one asks the same service method as its /v1 equivalent (so access and audit are the same), then maps
what it returns with ``mapping``. Pages are the services' keyset pages: ``_count`` is the page size and the
``next`` link carries the cursor (``_cursor``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from email.utils import format_datetime
from typing import Any
from urllib.parse import urlencode

from chalice import Response

from chalicelib import config
from chalicelib.api.dependencies import services
from chalicelib.api.fhir import (
    BASE,
    INTERACTIONS,
    MAX_TOKEN_LENGTH,
    PATIENT_INSTANCE_OPERATIONS,
    PATIENT_TYPE_OPERATIONS,
    SEARCH_PARAMS,
    SYSTEM_OPERATIONS,
    fhir_response,
    routes,
)
from chalicelib.api.routing import MAX_ID, HttpRequest, ascii_int
from chalicelib.domain.errors import FieldError, Gone, NotFound, ValidationFailed
from chalicelib.domain.services import Page, PageRequest, ResourceService
from chalicelib.fhir import mapping
from chalicelib.repositories.tables import PATIENT

_HOST = re.compile(r"[A-Za-z0-9.-]{1,253}(:[0-9]{1,5})?")
_NATIONAL_ID = re.compile(r"[0-9]{13}")
_PASSPORT_NUMBER = re.compile(r"[A-Za-z0-9]{1,20}")
_COUNTRY = re.compile(r"[A-Za-z]{3}")
PASSPORTS_STORED = "passport_number" in PATIENT.columns


def _service(resource_type: str) -> ResourceService:
    found = services()
    return {"Patient": found.patients, "Encounter": found.medical_records,
            "MedicationRequest": found.prescriptions}[resource_type]


def to_resource(resource_type: str, values: dict[str, Any], patient_id: int) -> dict[str, Any]:
    if resource_type == "Patient":
        return mapping.patient(values)
    if resource_type == "Encounter":
        return mapping.encounter(values)
    return mapping.medication_request(values, patient_id)


def _values(model: Any) -> dict[str, Any]:
    return dict(model)


# --- where the API is, for absolute URLs ---------------------------------------------------------------


def base_url(request: HttpRequest) -> str:
    """``FHIR_BASE_URL`` when set; else this request's scheme, host and API Gateway stage, then /fhir/R4."""
    if config.FHIR_BASE_URL:
        return config.FHIR_BASE_URL
    context = request.context
    host = request.headers.get("host") or context.get("domainName") or ""
    if not _HOST.fullmatch(host):
        host = "localhost"
    scheme = (request.headers.get("x-forwarded-proto") or "").lower()
    if scheme not in ("http", "https"):
        scheme = "https" if context.get("domainName") else "http"
    # The client's path (the stage first, on API Gateway's own domain) ends with the route's concrete path.
    client_path = context.get("path") or ""
    route_path = re.sub(r"{(\w+)}", lambda m: request.path_str(m.group(1)), context.get("resourcePath") or "")
    prefix = client_path[: -len(route_path)] if route_path and client_path.endswith(route_path) else ""
    return f"{scheme}://{host}{prefix}{BASE}"


def _link(base: str, path: str, params: Sequence[tuple[str, Any]]) -> str:
    query = urlencode([(k, v) for k, v in params if v is not None])
    return f"{base}/{path}" + (f"?{query}" if query else "")


# --- parameters --------------------------------------------------------------------------------------------


def _key_cursor(raw: str) -> int | None:
    """A FHIR page's ``_cursor``: the last key of the page before (a bigint at most)."""
    after = ascii_int(raw)
    return None if after is None else min(after, MAX_ID)


def _page(request: HttpRequest) -> PageRequest:
    return request.page(limit_param="_count", cursor_param="_cursor", decode=_key_cursor)


def _id(request: HttpRequest, name: str = "id") -> int:
    value = ascii_int(request.path_str(name))
    if value is None or not 0 < value <= MAX_ID:
        raise ValidationFailed("invalid resource id", [FieldError(name, f"must be an integer from 1 to {MAX_ID}")])
    return value


_REFERENCE = re.compile(r"(?:(?P<type>[A-Za-z]+)/)?(?P<id>[1-9][0-9]{0,17})")


def _reference(raw: str, resource_type: str, name: str) -> int:
    """The id in ``<Type>/<id>`` or ``<id>`` (as documented: up to 18 digits, so always a valid key)."""
    match = _REFERENCE.fullmatch(raw)
    if match is None or match.group("type") not in (None, resource_type):
        raise ValidationFailed("invalid search parameter", [FieldError(name, f"must be {resource_type}/<id> or <id>")])
    return int(match.group("id"))


def identifier_conditions(raw: str) -> list[tuple[str, str]] | None:
    """The patient columns a token ``[system]|value`` (or a bare value) matches; None when it can match no
    patient (an unknown system, a value no identifier of that kind can have)."""
    if not 0 < len(raw) <= MAX_TOKEN_LENGTH or "," in raw or "\x00" in raw:
        raise ValidationFailed("invalid search parameter", [FieldError(
            "identifier", f"must be one token of 1 to {MAX_TOKEN_LENGTH} characters (no comma: one value at a time)"
        )])
    if "|" in raw:
        system, value = raw.split("|", 1)
    else:
        system, value = "", raw
    if not value:
        raise ValidationFailed(
            "invalid search parameter", [FieldError("identifier", "give a value: <system>|<value> or <value>")]
        )
    if system == mapping.NATIONAL_ID_SYSTEM or (not system and _NATIONAL_ID.fullmatch(value)):
        return [("id_card_num", value)] if _NATIONAL_ID.fullmatch(value) else None
    if not PASSPORTS_STORED or not _PASSPORT_NUMBER.fullmatch(value):
        return None
    if not system:
        return [("passport_number", value.upper())]
    if system.startswith(mapping.PASSPORT_SYSTEM_PREFIX):
        country = system.removeprefix(mapping.PASSPORT_SYSTEM_PREFIX)
        if _COUNTRY.fullmatch(country):
            return [("passport_country", country.upper()), ("passport_number", value.upper())]
    return None


# --- answers -------------------------------------------------------------------------------------------------


def _resource_response(resource: dict[str, Any], updated: Any) -> Response:
    headers = {"ETag": f'W/"{resource["meta"]["versionId"]}"'}
    if updated is not None:
        headers["Last-Modified"] = format_datetime(updated, usegmt=True) if not isinstance(updated, str) else updated
    return fhir_response(resource, headers=headers)


def _bundle(
    request: HttpRequest, bundle_type: str, path: str, params: list[tuple[str, Any]], page: PageRequest,
    entries: list[dict[str, Any]], next_after: int | None,
) -> Response:
    """A page as a Bundle: ``self`` names this page, ``next`` the following one (the keyset cursor)."""
    base = base_url(request)
    paging = [("_count", page.limit if request.query.get("_count") else None)]
    self_url = _link(base, path, [*params, *paging, ("_cursor", page.after)])
    next_url = _link(base, path, [*params, *paging, ("_cursor", next_after)]) if next_after is not None else None
    # The total is exact and free only when the first page is also the last.
    total = len(entries) if page.after is None and next_after is None else None
    return fhir_response(mapping.bundle(bundle_type, entries, self_url=self_url, next_url=next_url, total=total))


def _empty(request: HttpRequest, resource_type: str, params: list[tuple[str, Any]], page: PageRequest) -> Response:
    return _bundle(request, "searchset", resource_type, params, page, [], None)


def _page_of(request: HttpRequest, resource_type: str, params: list[tuple[str, Any]], page: PageRequest,
             result: Page) -> Response:
    base = base_url(request)
    entries = [
        mapping.entry(base, to_resource(resource_type, _values(item), owner))
        for item, owner in zip(result.items, result.owners, strict=True)
    ]
    return _bundle(request, "searchset", resource_type, params, page, entries, result.next_after)


# --- interactions ------------------------------------------------------------------------------------------------


def read(request: HttpRequest, resource_type: str) -> Response:
    owned = _service(resource_type).get_owned(request.caller, _id(request))
    values = _values(owned.resource)
    return _resource_response(to_resource(resource_type, values, owned.patient_id), values["updated_timestamp"])


def vread(request: HttpRequest, resource_type: str) -> Response:
    key, version = _id(request), _id(request, "vid")
    owned = _service(resource_type).version_owned(request.caller, key, version)
    kept = owned.resource
    if kept.deleted:
        raise Gone(f"{resource_type}/{key} version {version} is its deletion")
    values = _values(kept.resource)
    return _resource_response(to_resource(resource_type, values, owned.patient_id), kept.recorded_at)


def history(request: HttpRequest, resource_type: str) -> Response:
    key, page = _id(request), _page(request)
    result = _service(resource_type).history(request.caller, key, page, newest_first=True)
    base = base_url(request)
    entries = []
    for kept, owner in zip(result.items, result.owners, strict=True):
        resource = None if kept.change == "delete" else to_resource(resource_type, _values(kept.resource), owner)
        entries.append(mapping.history_entry(base, resource_type, key, kept.version, kept.change, kept.recorded_at,
                                             resource))
    return _bundle(request, "history", f"{resource_type}/{key}/_history", [], page, entries, result.next_after)


def search(request: HttpRequest, resource_type: str) -> Response:
    return _SEARCHES[resource_type](request)


def _search_patients(request: HttpRequest) -> Response:
    page = _page(request)
    raw = request.query.get("identifier")
    params = [("identifier", raw)]
    conditions: list[tuple[str, str]] | None = []
    if raw is not None:
        conditions = identifier_conditions(raw)
    if conditions is None:
        return _empty(request, "Patient", params, page)
    result = services().patients.list(request.caller, page, filters=conditions)
    return _page_of(request, "Patient", params, page, result)


def _search_encounters(request: HttpRequest) -> Response:
    page = _page(request)
    raw = request.query.get("patient")
    if raw is None:
        return _page_of(request, "Encounter", [], page, services().medical_records.list(request.caller, page))
    params = [("patient", raw)]
    patient_id = _reference(raw, "Patient", "patient")
    return _in_compartment(request, "Encounter", params, page,
                           lambda: services().medical_records.list(request.caller, page, parent_key=patient_id))


def _search_medication_requests(request: HttpRequest) -> Response:
    page = _page(request)
    by_patient, by_encounter = request.query.get("patient"), request.query.get("encounter")
    service = services().prescriptions
    if by_patient is None and by_encounter is None:
        return _page_of(request, "MedicationRequest", [], page, service.list(request.caller, page))
    params = [(name, value) for name, value in (("patient", by_patient), ("encounter", by_encounter)) if value]
    patient_id = None if by_patient is None else _reference(by_patient, "Patient", "patient")
    if by_encounter is None:
        return _in_compartment(request, "MedicationRequest", params, page,
                               lambda: service.list_for_patient(request.caller, patient_id, page))
    encounter_id = _reference(by_encounter, "Encounter", "encounter")

    def of_encounter() -> Page:
        found = service.list(request.caller, page, parent_key=encounter_id)
        if patient_id is None or all(owner == patient_id for owner in found.owners):
            return found
        return Page([], None)  # both given: the visit's prescriptions only if it is that patient's visit

    return _in_compartment(request, "MedicationRequest", params, page, of_encounter)


def _in_compartment(request: HttpRequest, resource_type: str, params: list[tuple[str, Any]], page: PageRequest,
                    search_page: Callable[[], Page]) -> Response:
    """A search within one patient's or visit's records: one that does not exist, is deleted, or is hidden from
    the caller matches nothing (audited as its /v1 list is); a clinician outside the care team is told to
    break the glass (403), as on /v1."""
    try:
        result = search_page()
    except (NotFound, Gone):
        return _empty(request, resource_type, params, page)
    return _page_of(request, resource_type, params, page, result)


_SEARCHES: dict[str, Callable[[HttpRequest], Response]] = {
    "Patient": _search_patients,
    "Encounter": _search_encounters,
    "MedicationRequest": _search_medication_requests,
}


def everything(request: HttpRequest) -> Response:
    """The patient (on the first page), then a page of their visits, each followed by its prescriptions."""
    patient_id, page = _id(request), _page(request)
    result = services().patients.summary(request.caller, patient_id, page)
    summary = result.items[0]
    base = base_url(request)
    entries = []
    if page.after is None:
        entries.append(mapping.entry(base, mapping.patient(_values(summary.patient)), mode=None))
    for record in summary.medical_records:
        entries.append(mapping.entry(base, mapping.encounter(_values(record)), mode=None))
        entries += [mapping.entry(base, mapping.medication_request(_values(p), patient_id), mode=None)
                    for p in record.prescriptions]
    return _bundle(request, "searchset", f"Patient/{patient_id}/$everything", [], page, entries, result.next_after)


# --- the CapabilityStatement ---------------------------------------------------------------------------------


def capabilities(request: HttpRequest) -> Response:
    from chalicelib.fhir.capability import capability_statement

    served = [INTERACTIONS[spec.operation_id] for spec in routes.routes]
    document = capability_statement(
        base_url(request), served, SEARCH_PARAMS,
        system_operations=SYSTEM_OPERATIONS, type_operations={"Patient": {**PATIENT_TYPE_OPERATIONS,
                                                                          **PATIENT_INSTANCE_OPERATIONS}},
    )
    return fhir_response(document)
