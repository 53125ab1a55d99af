"""RFC 9457 problem details, and the one mapping from domain errors to HTTP status codes."""

from __future__ import annotations

import json

from chalice import Response

from chalicelib.domain.access import BreakGlassRequired
from chalicelib.domain.errors import (
    Conflict,
    DomainError,
    FieldError,
    Forbidden,
    Gone,
    IdempotencyKeyReused,
    NotFound,
    PreconditionFailed,
    TooLarge,
    Unavailable,
    Unexpected,
    UnsupportedContent,
    ValidationFailed,
)

PROBLEM_JSON = "application/problem+json"

# (status, title, type suffix) per domain error class; the first matching base class wins.
_STATUS: list[tuple[type[DomainError], int, str, str]] = [
    (ValidationFailed, 400, "Invalid request", "validation"),
    (BreakGlassRequired, 403, "Not on the patient's care team", "break-glass-required"),
    (Forbidden, 403, "Forbidden", "forbidden"),
    (NotFound, 404, "Not found", "not-found"),
    (Conflict, 409, "Conflict", "conflict"),
    (Gone, 410, "Gone", "gone"),
    (PreconditionFailed, 412, "Precondition failed", "stale-version"),
    (TooLarge, 413, "Request body too large", "too-large"),
    (UnsupportedContent, 415, "Unsupported media type", "unsupported-media-type"),
    (IdempotencyKeyReused, 422, "Idempotency key reused", "idempotency-key-reused"),
    (Unexpected, 500, "Internal error", "internal"),
    (Unavailable, 503, "Service unavailable", "unavailable"),
]
RETRY_AFTER_SECONDS = "1"
# API Gateway's answer to a refused token (its UNAUTHORIZED gateway response in infra/template.merge.yaml,
# checked equal by the template tests): the problem fields, plus the "message" its own format has.
UNAUTHENTICATED = {
    "type": "urn:medical-records:problem:unauthenticated",
    "title": "Not authenticated",
    "status": 401,
    "detail": "a valid bearer token is required",
    "message": "Unauthorized",
}


def status_for(error: DomainError) -> tuple[int, str, str]:
    for cls, status, title, kind in _STATUS:
        if isinstance(error, cls):
            return status, title, kind
    return 400, "Bad request", "bad-request"


def problem(
    status: int,
    title: str,
    detail: str,
    *,
    kind: str = "about:blank",
    errors: list[FieldError] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body: dict = {
        "type": kind if kind == "about:blank" else f"urn:medical-records:problem:{kind}",
        "title": title,
        "status": status,
        "detail": detail,
    }
    if errors:
        body["errors"] = [{"field": e.field, "message": e.message} for e in errors]
    return Response(
        body=json.dumps(body),
        status_code=status,
        headers={"Content-Type": PROBLEM_JSON, **(headers or {})},
    )


def from_domain_error(error: DomainError) -> Response:
    status, title, kind = status_for(error)
    headers = {"Retry-After": RETRY_AFTER_SECONDS} if status == 503 else None
    return problem(status, title, error.detail, kind=kind, errors=getattr(error, "errors", None), headers=headers)


INTERNAL_ERROR_DETAIL = "the request could not be completed; it is safe to retry"
