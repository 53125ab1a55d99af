"""The FHIR R4 read API under /fhir/R4: the route table.

The same services, access model and audit trail as /v1 answer every request; the handlers here are one line
each and the FHIR work (parameters, Bundles, the mapping) lives in ``chalicelib.fhir``, imported by the first
FHIR request only, so the API's cold start does not pay for it.

API Gateway allows no ``$`` in a resource path, so operations are served through variable segments:
``GET /fhir/R4/{operation}`` (system level), ``GET /fhir/R4/Patient/{id}`` with an id of ``$<name>`` (type
level on Patient) and ``GET /fhir/R4/Patient/{id}/{operation}`` (instance level, ``$everything``). What each
table of operations holds is what is served, and what the CapabilityStatement lists.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chalice import Response

from chalicelib.api.routing import HttpRequest, QueryParam, RouteTable
from chalicelib.domain.errors import DomainError, FieldError, NotFound, ValidationFailed
from chalicelib.domain.services import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE

BASE = "/fhir/R4"
MEDIA_TYPE = "application/fhir+json"
# What a client may ask for (Accept, or _format): FHIR JSON under its names, plain JSON, or anything.
ACCEPTED_MEDIA_TYPES = frozenset({MEDIA_TYPE, "application/json", "application/json+fhir", "application/*", "*/*"})
ACCEPTED_FORMATS = frozenset({"json", MEDIA_TYPE, "application/json", "application/json+fhir"})
RESOURCE_TYPES = ("Patient", "Encounter", "MedicationRequest")


def _components() -> dict[str, dict[str, Any]]:
    from chalicelib.fhir import schemas

    return schemas.COMPONENTS


routes = RouteTable(components=_components)


class NotAcceptable(DomainError):
    """The client accepts no representation this API serves (FHIR JSON only)."""

    audit_outcome = "invalid"


@dataclass(frozen=True)
class SearchParam:
    name: str
    type: str              # the FHIR search parameter type (token, reference, ...)
    documentation: str
    schema: dict[str, Any]

    @property
    def query(self) -> QueryParam:
        return QueryParam(self.name, self.schema, self.documentation)


MAX_TOKEN_LENGTH = 300  # an identifier token (system URI and value): far more than any real one needs
_PATIENT_REFERENCE = {"type": "string", "pattern": "^(Patient/)?[1-9][0-9]{0,17}$"}
# The search parameters each type serves (the CapabilityStatement lists exactly these).
SEARCH_PARAMS: dict[str, tuple[SearchParam, ...]] = {
    "Patient": (
        SearchParam("identifier", "token",
                    "`<system>|<value>` (national ID or passport systems), `|<value>` or `<value>`; an unknown "
                    "system matches nothing (URL-encode `|` as `%7C` through API Gateway)",
                    {"type": "string", "minLength": 1, "maxLength": MAX_TOKEN_LENGTH, "pattern": "^[^,\\x00]+$"}),
    ),
    "Encounter": (
        SearchParam("patient", "reference", "the visits of a patient: `Patient/<id>` or `<id>`", _PATIENT_REFERENCE),
    ),
    "MedicationRequest": (
        SearchParam("patient", "reference", "the prescriptions of a patient: `Patient/<id>` or `<id>`",
                    _PATIENT_REFERENCE),
        SearchParam("encounter", "reference", "the prescriptions of a visit: `Encounter/<id>` or `<id>`",
                    {"type": "string", "pattern": "^(Encounter/)?[1-9][0-9]{0,17}$"}),
    ),
}
FORMAT = QueryParam("_format", {"type": "string", "enum": sorted(ACCEPTED_FORMATS)},
                    "the representation (JSON only; `Accept` works too); anything else is answered with 406")
PAGE = (
    QueryParam("_count", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE},
               f"entries per page (default {DEFAULT_PAGE_SIZE})"),
    QueryParam("_cursor", {"type": "string", "pattern": "^[0-9]{1,19}$"}, "set by the Bundle's `next` link"),
)


@dataclass(frozen=True)
class Operation:
    name: str          # as it appears in the path, e.g. "$everything"
    definition: str    # the canonical URL of its OperationDefinition
    handler: Callable[[HttpRequest], Response]
    query: tuple[QueryParam, ...] = ()  # its query parameters (any other is refused)


# What each operation endpoint serves. The Bulk Data export registers $export in the first two.
SYSTEM_OPERATIONS: dict[str, Operation] = {}          # GET /fhir/R4/{operation}
PATIENT_TYPE_OPERATIONS: dict[str, Operation] = {}    # GET /fhir/R4/Patient/{id}, id = "$<name>"
PATIENT_INSTANCE_OPERATIONS: dict[str, Operation] = {}  # GET /fhir/R4/Patient/{id}/{operation}

# The FHIR interaction each route serves, by operation id: (resource type or None, interaction code).
INTERACTIONS: dict[str, tuple[str | None, str]] = {}


def _schema(name: str) -> dict[str, str]:
    """A FHIR shape of fhir/schemas.py (named Fhir<resource type> in the document)."""
    return {"$ref": f"#/components/schemas/Fhir{name}"}


def fhir_response(body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(body=json.dumps(body, separators=(",", ":"), ensure_ascii=False), status_code=status,
                    headers={"Content-Type": MEDIA_TYPE, **(headers or {})})


def render_error(error: DomainError) -> Response:
    """Every error on /fhir is an OperationOutcome (the status mapping is the API's one, in problems.py)."""
    from chalicelib.api import problems
    from chalicelib.fhir import mapping

    status = 406 if isinstance(error, NotAcceptable) else problems.status_for(error)[0]
    details = [f"{e.field}: {e.message}" for e in getattr(error, "errors", None) or []]
    headers = {"Retry-After": problems.RETRY_AFTER_SECONDS} if status == 503 else None
    return fhir_response(mapping.operation_outcome(status, error.detail, details), status, headers)


def negotiate(request: HttpRequest) -> None:
    """FHIR JSON is the one representation: ``_format`` (when given) or ``Accept`` must allow it."""
    requested = request.query_values("_format")
    if requested:
        # "+" in an unencoded query string arrives as a space.
        if len(requested) > 1 or requested[0].replace(" ", "+") not in ACCEPTED_FORMATS:
            raise NotAcceptable("this server serves FHIR JSON only: use _format=json")
        return
    accept = request.headers.get("accept")
    if not accept or not accept.strip():
        return
    for item in accept.split(","):
        media_type, *parameters = item.split(";")
        quality = next((p.split("=", 1)[1].strip() for p in parameters if p.strip().startswith("q=")), "1")
        if media_type.strip().lower() in ACCEPTED_MEDIA_TYPES and quality not in ("0", "0.0", "0.00", "0.000"):
            return
    raise NotAcceptable(f"this server serves FHIR JSON only: accept {MEDIA_TYPE} or application/json")


def _check_query(request: HttpRequest, allowed: frozenset[str]) -> None:
    unknown = sorted(set(request.query) - allowed)
    if unknown:
        raise ValidationFailed(
            "unsupported query parameters (see /fhir/R4/metadata)",
            [FieldError(name[:40], "is not a parameter of this interaction") for name in unknown[:10]],
        )
    repeated = [name for name in sorted(allowed) if len(request.query_values(name)) > 1]
    if repeated:
        raise ValidationFailed("repeated query parameters", [FieldError(n, "give it once") for n in repeated])


def _route(path: str, resource: str | None, interaction: str, summary: str, *, response: str,
           query: tuple[QueryParam, ...] = (), errors: tuple[int, ...] = (404,), scope: str | None = "read",
           path_schemas: dict[str, dict[str, Any]] | None = None, operations: bool = False,
           bodiless: dict[int, tuple[str, tuple[str, ...]]] | None = None) -> Callable:
    """Declare a GET route of the FHIR API; its handler runs once the representation is agreed and the query
    holds only the route's parameters (an operation's own, for an operation endpoint)."""
    all_query = (*query, FORMAT)
    allowed = frozenset(q.name for q in all_query)

    def register(handler: Callable[[HttpRequest], Response]) -> Callable[[HttpRequest], Response]:
        def view(request: HttpRequest) -> Response:
            negotiate(request)
            if not operations:
                _check_query(request, allowed)
            return handler(request)

        view.__name__ = handler.__name__
        INTERACTIONS[handler.__name__] = (resource, interaction)
        routes.route(
            "GET", f"{BASE}{path}", summary=summary, tag="fhir", scope=scope, query=all_query,
            errors=(400, 406, *errors), response_schema=_schema(response), media_type=MEDIA_TYPE,
            error_schema="OperationOutcome", error_renderer=render_error, path_schemas=path_schemas or {},
            bodiless=bodiless or {},
        )(view)
        return view

    return register


def _rest() -> Any:
    from chalicelib.fhir import rest

    return rest


# --- the server ----------------------------------------------------------------------------------------


@_route("/metadata", None, "capabilities", "The CapabilityStatement: what this FHIR server serves (public)",
        response="CapabilityStatement", errors=(), scope=None)
def fhir_capabilities(request: HttpRequest) -> Response:
    return _rest().capabilities(request)


_OPERATION = {"type": "string", "pattern": "^\\$[A-Za-z][A-Za-z0-9-]{0,63}$"}


# What $export's kick-off answers besides (api/fhir_export.py): 202 + Content-Location, admins only, a reused
# Idempotency-Key, no export runner (make run), the runner unreachable (503, as every route may).
EXPORT_KICK_OFF_STATUSES = (403, 422, 501)
# $export's answer: no body, the job's status URL in Content-Location.
EXPORT_ACCEPTED = {202: ("$export: the export job runs; poll the status URL in Content-Location (no body)",
                         ("Content-Location",))}


@_route("/{operation}", None, "operation", "A system-level operation ($<name>; $export: the Bulk Data kick-off, "
        "202 with Content-Location); 404 for one not served",
        response="Bundle", path_schemas={"operation": _OPERATION}, operations=True,
        errors=(404, *EXPORT_KICK_OFF_STATUSES), bodiless=EXPORT_ACCEPTED)
def fhir_system_operation(request: HttpRequest) -> Response:
    return _operation(SYSTEM_OPERATIONS, request, "operation")


def _operation(table: dict[str, Operation], request: HttpRequest, parameter: str) -> Response:
    from urllib.parse import unquote

    name = unquote(request.path_str(parameter))
    operation = table.get(name)
    if operation is None:
        raise NotFound("this server does not serve that operation here (see /fhir/R4/metadata)")
    _check_query(request, frozenset(q.name for q in (*operation.query, FORMAT)))
    return operation.handler(request)


# --- Patient, Encounter, MedicationRequest: read, vread, history, search ---------------------------------

def _declare(resource_type: str) -> None:
    """read, vread, history-instance and search-type for one resource type."""
    lower = resource_type[0].lower() + resource_type[1:]

    def read(request: HttpRequest) -> Response:
        if resource_type == "Patient":  # Patient/{id} also carries the type-level operations (Patient/$export)
            if request.path_str("id").startswith(("$", "%24")):
                return _operation(PATIENT_TYPE_OPERATIONS, request, "id")
            _check_query(request, frozenset({FORMAT.name}))
        return _rest().read(request, resource_type)

    def vread(request: HttpRequest) -> Response:
        return _rest().vread(request, resource_type)

    def history(request: HttpRequest) -> Response:
        return _rest().history(request, resource_type)

    def search(request: HttpRequest) -> Response:
        return _rest().search(request, resource_type)

    read.__name__, vread.__name__, history.__name__, search.__name__ = (
        f"fhir_read_{lower}", f"fhir_vread_{lower}", f"fhir_history_{lower}", f"fhir_search_{lower}",
    )
    _route(f"/{resource_type}/{{id}}", resource_type, "read", f"Read a {resource_type}",
           response=resource_type, operations=resource_type == "Patient",
           errors=(404, 410, *(EXPORT_KICK_OFF_STATUSES if resource_type == "Patient" else ())),
           bodiless=EXPORT_ACCEPTED if resource_type == "Patient" else None)(read)
    _route(f"/{resource_type}/{{id}}/_history/{{vid}}", resource_type, "vread",
           f"Read one kept version of a {resource_type}", response=resource_type, errors=(404, 410))(vread)
    _route(f"/{resource_type}/{{id}}/_history", resource_type, "history-instance",
           f"Every kept version of a {resource_type}, newest first (a history Bundle)", response="Bundle",
           query=PAGE)(history)
    _route(f"/{resource_type}", resource_type, "search-type",
           f"Search {resource_type} resources (a searchset Bundle; only those the caller may see)",
           response="Bundle", query=(*(p.query for p in SEARCH_PARAMS[resource_type]), *PAGE), errors=())(search)


for _resource_type in RESOURCE_TYPES:
    _declare(_resource_type)


# --- Patient/{id}/$everything -------------------------------------------------------------------------


def _everything(request: HttpRequest) -> Response:
    return _rest().everything(request)


PATIENT_INSTANCE_OPERATIONS["$everything"] = Operation(
    "$everything", "http://hl7.org/fhir/OperationDefinition/Patient-everything", _everything, PAGE
)


@_route("/Patient/{id}/{operation}", "Patient", "operation",
        "A Patient operation: $everything (the patient, their encounters and medication requests, a page of "
        "encounters at a time)", response="Bundle", query=PAGE, errors=(404, 410), operations=True,
        path_schemas={"operation": {"type": "string", "enum": sorted(PATIENT_INSTANCE_OPERATIONS)}})
def fhir_patient_operation(request: HttpRequest) -> Response:
    return _operation(PATIENT_INSTANCE_OPERATIONS, request, "operation")
