"""FHIR Bulk Data export (Bulk Data Access IG 2.0) under /fhir/R4: the kick-offs and the job's status URL.

``GET /fhir/R4/$export`` and ``GET /fhir/R4/Patient/$export`` (with ``Prefer: respond-async``) are served
through the FHIR route table's operation segments (API Gateway allows no ``$`` in a resource path): this
module registers ``$export`` in ``fhir.SYSTEM_OPERATIONS`` and ``fhir.PATIENT_TYPE_OPERATIONS``. They answer
``202`` with ``Content-Location``: the job's status URL, ``/fhir/R4/bulk-export/{jobId}``, declared here.
Polling it answers ``202`` with ``X-Progress`` and ``Retry-After`` while the job runs, then ``200`` with the
manifest, whose links download the NDJSON files from S3 for ``LINK_SECONDS``; ``DELETE`` cancels the job
and deletes its files. Admins only; every error is an OperationOutcome.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING

from chalice import Response

from chalicelib.api import fhir
from chalicelib.api.routing import JSON, HttpRequest, QueryParam, RouteTable
from chalicelib.domain import export_terms as terms
from chalicelib.domain.errors import DomainError

if TYPE_CHECKING:
    from chalicelib.domain.export import ExportService

routes = RouteTable()
STATUS_SEGMENT = "/bulk-export"  # under the FHIR base: /fhir/R4/bulk-export/{jobId}
STATUS_PATH = f"{fhir.BASE}{STATUS_SEGMENT}"
_JOB_ID = {"jobId": {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}}
_MANIFEST = {
    "type": "object",
    "required": ["transactionTime", "request", "requiresAccessToken", "output", "error"],
    "properties": {
        "transactionTime": {"type": "string", "format": "date-time"},
        "request": {"type": "string"},
        "requiresAccessToken": {"type": "boolean"},
        "output": {"type": "array", "items": {
            "type": "object", "required": ["type", "url", "count"],
            "properties": {"type": {"type": "string", "enum": list(terms.RESOURCE_TYPES)},
                           "url": {"type": "string"}, "count": {"type": "integer", "minimum": 0}},
        }},
        "error": {"type": "array"},
    },
}


@lru_cache(maxsize=1)
def export_service() -> ExportService:
    from chalicelib.api.dependencies import database
    from chalicelib.domain.export import ExportService
    from chalicelib.export.aws import configured_files, configured_runner

    return ExportService(database(), configured_runner, configured_files)


def _fhir_base(request: HttpRequest) -> str:
    """The FHIR API's absolute base URL (FHIR_BASE_URL, or the request's host and stage): the IG asks for
    absolute URLs in Content-Location and the manifest."""
    from chalicelib.fhir import rest

    return rest.base_url(request)


def _kick_off(request: HttpRequest, level: str) -> Response:
    from chalicelib.domain.export import parse_request  # the export's rules load with its first request

    asked = parse_request(level, request.query, request.headers.get("prefer"), request.idempotency_key())
    try:
        accepted = export_service().kick_off(request.caller, asked)
    except terms.ExportNotConfigured as exc:
        return render_error(exc)
    headers = {"Content-Location": f"{_fhir_base(request)}{STATUS_SEGMENT}/{accepted.job_id}"}
    if accepted.replayed:
        headers["Idempotent-Replayed"] = "true"
    return Response(body="", status_code=202, headers=headers)


def fhir_export_system(request: HttpRequest) -> Response:
    return _kick_off(request, terms.LEVEL_SYSTEM)


def fhir_export_patients(request: HttpRequest) -> Response:
    return _kick_off(request, terms.LEVEL_PATIENT)


# The kick-off's query parameters (fhir.py refuses any other before the handler runs).
EXPORT_QUERY = (
    QueryParam("_outputFormat", {"type": "string", "enum": list(terms.OUTPUT_FORMATS)},
               "the files' format: NDJSON (the default, and the only one)"),
    QueryParam("_since", {"type": "string", "format": "date-time"},
               "a FHIR instant: only resources changed after it (by their last update)"),
    QueryParam("_type", {"type": "string", "pattern": "^[A-Za-z]+(,[A-Za-z]+)*$"},
               f"comma-separated subset of {', '.join(terms.RESOURCE_TYPES)} (default: all)"),
)
fhir.SYSTEM_OPERATIONS["$export"] = fhir.Operation(
    "$export", "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export", fhir_export_system, EXPORT_QUERY)
fhir.PATIENT_TYPE_OPERATIONS["$export"] = fhir.Operation(
    "$export", "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export", fhir_export_patients,
    EXPORT_QUERY)


def render_error(error: DomainError) -> Response:
    """An OperationOutcome, as on the whole FHIR API; with the export's own two statuses."""
    from chalicelib.fhir import mapping

    if isinstance(error, terms.ExportNotConfigured):
        return fhir.fhir_response(mapping.operation_outcome(501, error.detail), 501)
    if isinstance(error, terms.ExportFailed):
        return fhir.fhir_response(mapping.operation_outcome(500, error.detail), 500)
    return fhir.render_error(error)


def render_status_error(error: DomainError) -> Response:
    """The status URL answers in application/json, as the IG has its manifest; its errors too (an
    OperationOutcome), so that one media type describes the route."""
    response = render_error(error)
    response.headers["Content-Type"] = JSON
    return response


@routes.route("GET", f"{STATUS_PATH}/{{jobId}}", tag="fhir", scope="admin", path_schemas=_JOB_ID,
              summary="A bulk export job's status: 202 with X-Progress while it runs, then 200 with the manifest "
                      f"(links valid {terms.LINK_SECONDS} s; read it again for fresh ones)",
              response_schema=_MANIFEST, errors=(403, 404, 500, 501), error_renderer=render_status_error,
              error_schema="OperationOutcome",
              bodiless={202: ("the job runs: how far in X-Progress, when to ask again in Retry-After (no body)",
                              ("X-Progress", "Retry-After"))})
def fhir_export_status(request: HttpRequest) -> Response:
    result = export_service().status(request.caller, request.path_id("jobId"), _fhir_base(request))
    from chalicelib.domain.export import Running

    if isinstance(result, Running):
        return Response(body="", status_code=202, headers={
            "X-Progress": result.progress, "Retry-After": str(terms.POLL_AFTER_SECONDS)})
    from email.utils import format_datetime  # here: it loads the socket and locale modules, not for a cold start

    expires = datetime.now(UTC) + timedelta(seconds=terms.LINK_SECONDS)
    return Response(body=json.dumps(result.as_json(), separators=(",", ":")), status_code=200,
                    headers={"Content-Type": JSON, "Expires": format_datetime(expires, usegmt=True)})


@routes.route("DELETE", f"{STATUS_PATH}/{{jobId}}", tag="fhir", scope="admin", path_schemas=_JOB_ID,
              summary="Cancel a bulk export job and delete its files (its status URL then answers 404)",
              status=202, errors=(403, 404), error_renderer=render_status_error, error_schema="OperationOutcome")
def fhir_export_cancel(request: HttpRequest) -> Response:
    export_service().cancel(request.caller, request.path_id("jobId"))
    return Response(body="", status_code=202, headers={})
