"""A declarative route table: each route states its method, path, scope and models once.

``install`` turns the table into Chalice routes (with the JWT authorizer on every non-public
route); ``openapi.py`` turns the same table into the OpenAPI document, so the two cannot drift.
Every handler runs inside one wrapper that authorises the scope, maps domain errors to problem
responses, turns unexpected errors into a 500 without leaking detail, and writes one log line.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from chalice import Response
from pydantic import ValidationError

from chalicelib import metrics
from chalicelib.api import problems
from chalicelib.api.dependencies import services
from chalicelib.config import ConfigurationError
from chalicelib.domain import access, models
from chalicelib.domain import services as domain_services
from chalicelib.domain.access import Caller
from chalicelib.domain.errors import (
    DomainError,
    FieldError,
    TooLarge,
    Unexpected,
    UnsupportedContent,
    ValidationFailed,
)
from chalicelib.domain.services import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, PageRequest
from chalicelib.domain.validation import field_errors
from chalicelib.observability import logger

# Audit events committed during a request count towards its metrics (see chalicelib/metrics.py).
if metrics.audit_event_committed not in domain_services.audit_observers:
    domain_services.audit_observers.append(metrics.audit_event_committed)

JSON = "application/json"
MAX_ID = 2**63 - 1
IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")
# A token subject named in a path: what identity providers use (UUIDs, e-mails, "auth0|123"), URL-safe.
SUBJECT_IN_PATH = re.compile(r"[A-Za-z0-9._~@|:+=,-]{1,255}")
# Only ASCII digits are numbers here: str.isdigit() also accepts "²" and "١٢", which int() reads or chokes on.
_ASCII_NUMBER = re.compile(r"[0-9]{1,19}")


def ascii_int(raw: str | None) -> int | None:
    """The value of a string of 1 to 19 ASCII digits (a bigint fits), else None."""
    if raw is None or not _ASCII_NUMBER.fullmatch(raw):
        return None
    return int(raw)


@dataclass(frozen=True)
class QueryParam:
    name: str
    schema: dict[str, Any]
    description: str = ""
    required: bool = False


@dataclass(frozen=True)
class RouteSpec:
    method: str
    path: str
    handler: Callable[[HttpRequest], Response]
    summary: str
    tag: str
    scope: str | None                      # None: public
    body: type[models.ApiModel] | None = None
    optional_body: bool = False            # the body may be omitted (its model's defaults apply)
    response: type[models.ApiModel] | None = None
    status: int = 200
    query: tuple[QueryParam, ...] = ()
    headers: tuple[str, ...] = ()          # request headers the route honours (If-Match, Idempotency-Key)
    errors: tuple[int, ...] = ()
    # For shapes not modelled as classes (legacy, FHIR); a function is called only when the document is built.
    response_schema: dict[str, Any] | Callable[[], dict[str, Any]] | None = None
    # Likewise, for legacy request bodies; a function is called only when the OpenAPI document is built, so
    # a cold start does not pay for JSON schemas it never serves.
    request_schema: dict[str, Any] | Callable[[], dict[str, Any]] | None = None
    error_renderer: Callable[[DomainError], Response] | None = None  # default: problem+json
    path_schemas: dict[str, dict[str, Any]] = field(default_factory=dict)  # default: a resource id
    media_type: str = "application/json"   # of the success answer (FHIR: application/fhir+json)
    error_schema: str | None = None        # the component of error bodies (default: Problem, or LegacyError)
    # Answers without a body besides the success one: status -> (what it means, the headers it carries).
    bodiless: dict[int, tuple[str, tuple[str, ...]]] = field(default_factory=dict)

    @property
    def operation_id(self) -> str:
        return self.handler.__name__

    def request_body_schema(self) -> dict[str, Any] | None:
        return self.request_schema() if callable(self.request_schema) else self.request_schema

    def response_body_schema(self) -> dict[str, Any] | None:
        return self.response_schema() if callable(self.response_schema) else self.response_schema


@dataclass
class RouteTable:
    routes: list[RouteSpec] = field(default_factory=list)
    # Schemas the table's routes refer to by name (#/components/schemas/...), built with the document only.
    components: Callable[[], dict[str, dict[str, Any]]] | None = None

    def route(self, method: str, path: str, **kwargs: Any) -> Callable:
        def register(handler: Callable[[HttpRequest], Response]) -> Callable:
            self.routes.append(RouteSpec(method=method, path=path, handler=handler, **kwargs))
            return handler

        return register


PAGE_QUERY = (
    QueryParam("limit", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE},
               f"page size (default {DEFAULT_PAGE_SIZE})"),
    QueryParam("cursor", {"type": "string", "pattern": "^[0-9]{1,19}$"}, "the nextCursor of the previous page"),
)


class HttpRequest:
    """What a handler may read from the request, already checked."""

    def __init__(self, chalice_request: Any, caller: Caller) -> None:
        self._request = chalice_request
        self.caller = caller

    @property
    def headers(self) -> Any:
        return self._request.headers

    @property
    def query(self) -> dict[str, str]:
        return self._request.query_params or {}

    def path_id(self, name: str) -> int:
        value = ascii_int((self._request.uri_params or {}).get(name))
        if value is None or not 0 < value <= MAX_ID:
            raise ValidationFailed(
                "invalid path parameter", [FieldError(name, f"must be an integer from 1 to {MAX_ID} (ASCII digits)")]
            )
        return value

    def path_str(self, name: str) -> str:
        return (self._request.uri_params or {}).get(name, "")

    def query_values(self, name: str) -> list[str]:
        """Every value of a query parameter (a repeated parameter has several)."""
        params = self._request.query_params
        return list(params.getlist(name)) if params and name in params else []

    @property
    def context(self) -> dict[str, Any]:
        """API Gateway's request context (domain, stage, path as the client sent it)."""
        return self._request.context or {}

    def subject(self, name: str) -> str:
        """A token subject named in the path (percent-decoded once: the pattern admits no "%")."""
        raw = unquote(self.path_str(name))
        if not SUBJECT_IN_PATH.fullmatch(raw):
            raise ValidationFailed(
                "invalid path parameter",
                [FieldError(name, "must be 1 to 255 letters, digits or ._~@|:+=,- characters")],
            )
        return raw

    @property
    def has_body(self) -> bool:
        return bool(self._request.raw_body)

    def raw_body(self) -> bytes:
        body = self._request.raw_body
        if not body:
            raise ValidationFailed("a JSON request body is required")
        return body

    def json_object(self) -> dict[str, Any]:
        """The body as a JSON object (for adapters that rename fields before validation)."""
        try:
            value = json.loads(self.raw_body())
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise ValidationFailed("the request body is not valid JSON") from None
        if not isinstance(value, dict):
            raise ValidationFailed("the request body must be a JSON object")
        return value

    def model(self, model: type[models.ApiModel], data: dict[str, Any] | None = None) -> Any:
        """Validate the body (or ``data``) into ``model``; every bad field is reported at once."""
        try:
            if data is None:
                return model.model_validate_json(self.raw_body())
            return model.model_validate_json(json.dumps(data))
        except ValidationError as exc:
            errors = exc.errors(include_url=False)
            if any(e["type"] == "json_invalid" for e in errors):
                raise ValidationFailed("the request body is not valid JSON") from None
            raise ValidationFailed("the request body is invalid", field_errors(exc)) from None

    def page(
        self,
        max_limit: int = MAX_PAGE_SIZE,
        default_limit: int = DEFAULT_PAGE_SIZE,
        *,
        limit_param: str = "limit",
        cursor_param: str = "cursor",
        decode: Callable[[str], int | None] | None = None,
    ) -> PageRequest:
        """The page asked for: a size (``limit_param``) and the cursor a previous page gave (``cursor_param``,
        read by ``decode``; /v1's opaque cursors by default)."""
        errors = []
        raw_limit = self.query.get(limit_param)
        limit = default_limit
        if raw_limit is not None:
            value = ascii_int(raw_limit)
            if value is None or not 1 <= value <= max_limit:
                errors.append(FieldError(limit_param, f"must be an integer from 1 to {max_limit}"))
            else:
                limit = value
        after = None
        cursor = self.query.get(cursor_param)
        if cursor is not None:
            after = (decode or decode_cursor)(cursor)
            if after is None:
                errors.append(FieldError(cursor_param, "is not a cursor this API issued"))
        if errors:
            raise ValidationFailed("invalid query parameters", errors)
        return PageRequest(after=after, limit=limit)

    def expected_version(self) -> int | None:
        """The version named by If-Match (None when absent or ``*``); an unknown tag can never match."""
        header = self.headers.get("if-match")
        if header is None or header.strip() == "*":
            return None
        for tag in header.split(","):
            match = re.fullmatch(r'\s*(?:W/)?"([0-9]{1,9})"\s*', tag)  # ASCII digits only
            if match:
                return int(match.group(1))
        return -1

    def idempotency_key(self) -> str | None:
        key = self.headers.get("idempotency-key")
        if key is None:
            return None
        if not IDEMPOTENCY_KEY.fullmatch(key):
            raise ValidationFailed(
                "invalid Idempotency-Key header",
                [FieldError("Idempotency-Key", "must be 1 to 255 visible ASCII characters")],
            )
        return key


def encode_cursor(after: int | None) -> str | None:
    """The position after the last row of a page (a key; ids are in the answers anyway)."""
    return None if after is None else str(after)


def decode_cursor(cursor: str) -> int | None:
    value = ascii_int(cursor)
    return None if value is None else min(value, MAX_ID)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    if isinstance(body, models.ApiModel):
        text = body.model_dump_json()
    else:
        text = json.dumps(body, separators=(",", ":"), default=str)
    return Response(body=text, status_code=status, headers={"Content-Type": JSON, **(headers or {})})


def etag(version: int) -> str:
    return f'"{version}"'


_ACTIONS = {"GET": "read", "POST": "create", "PUT": "update", "PATCH": "update", "DELETE": "delete"}
# Every answer of a protected route may carry patient data: never stored by a browser or a proxy.
_PRIVATE_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


class _Unauthenticated(Exception):
    """The authorizer's decision no longer holds (its token has expired since it was cached)."""


def _caller(app: Any, protected: bool) -> tuple[Caller, frozenset[str]]:
    """Who is calling, from the authorizer's context (values are strings, as API Gateway passes them)."""
    request = app.current_request
    context = request.context or {}
    authorizer = context.get("authorizer") or {}
    if protected:
        # API Gateway caches an authorizer's answer per token for minutes: a token that expired since
        # must not ride on that cache, so the expiry the authorizer saw is checked on every request.
        expires_at = ascii_int(str(authorizer.get("exp", "")))
        if not authorizer.get("principalId") or expires_at is None or expires_at <= time.time():
            raise _Unauthenticated
    # API Gateway's request id when present (it is what the client sees), else the Lambda invocation's.
    request_id = context.get("requestId") or getattr(app.lambda_context, "aws_request_id", None) or str(uuid.uuid4())
    scopes = frozenset(str(authorizer.get("scope", "")).split())
    patient_id = ascii_int(str(authorizer.get("patient_id") or ""))
    user_agent = (request.headers.get("user-agent") or "")[:512] or None
    caller = Caller(
        subject=authorizer.get("principalId", "anonymous"),
        kind=access.actor_kind(scopes, patient_id),
        request_id=request_id,
        patient_id=patient_id,
        source_ip=(context.get("identity") or {}).get("sourceIp"),
        user_agent=user_agent,
    )
    return caller, scopes


def _unauthorized() -> Response:
    """The same answer API Gateway gives when the authorizer refuses a token."""
    return Response(
        body=json.dumps(problems.UNAUTHENTICATED),
        status_code=401,
        headers={"Content-Type": JSON, "WWW-Authenticate": "Bearer"},
    )


BODY_MEDIA_TYPES = (JSON, "application/merge-patch+json")
MAX_BODY_BYTES = 1_000_000  # far above any valid request; API Gateway itself allows 10 MB
_REPLACEMENT_CHARACTER = "\ufffd".encode()


def _check_body(request: Any) -> None:
    """A body must be JSON in UTF-8 and of a sane size, checked before anything parses it.

    Chalice is told to accept any media type (``*/*``) so that this check, not the framework,
    answers: in the API's own error format, on both surfaces.
    """
    body = request.raw_body or b""
    if not body:
        return  # nothing to check (an optional body left out; a required one is refused when parsed)
    media_type, *parameters = (request.headers.get("content-type") or JSON).split(";")
    if media_type.strip().lower() not in BODY_MEDIA_TYPES:
        raise UnsupportedContent(f"send the body as {JSON} (UTF-8)")
    for parameter in parameters:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in ("utf-8", "utf8"):
            raise UnsupportedContent("the body must be encoded in UTF-8")
    if len(body) > MAX_BODY_BYTES:
        raise TooLarge(f"the request body must be at most {MAX_BODY_BYTES} bytes")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ValidationFailed("the request body is not valid UTF-8") from None
    # A gateway that received bytes which were not UTF-8 passes them on as U+FFFD: refuse rather than store it.
    if _REPLACEMENT_CHARACTER in body or "\x00" in text:
        raise ValidationFailed("the request body is not valid UTF-8 text (it contains U+FFFD or NUL)")


def install(app: Any, table: RouteTable, authorizer: Any) -> None:
    """Register every route of ``table`` on the Chalice ``app``."""
    for spec in table.routes:
        app.route(
            spec.path,
            methods=[spec.method],
            authorizer=None if spec.scope is None else authorizer,
            content_types=["*/*"],  # checked by _check_body, which answers in the API's own format
            name=spec.operation_id,
        )(_wrap(app, spec))


def _first_path_id(request: Any) -> int | None:
    for raw in (request.uri_params or {}).values():
        value = ascii_int(raw)
        if value is not None and 0 < value <= MAX_ID:
            return value
    return None


def _wrap(app: Any, spec: RouteSpec) -> Callable[..., Response]:
    route_name = f"{spec.method} {spec.path}"
    protected = spec.scope is not None
    takes_body = spec.method in ("POST", "PUT", "PATCH")

    def view(**_uri_params: str) -> Response:
        tally = metrics.request_started()
        request = app.current_request
        try:
            caller, scopes = _caller(app, protected)
        except _Unauthenticated:
            metrics.request_finished(tally, route_name, 401)
            logger.info("request", extra={"route": route_name, "status": 401, "reason": "token expired"})
            return _unauthorized()
        try:
            if takes_body:
                _check_body(request)
            if protected:
                caller.break_glass_reason = access.break_glass_reason(request.headers.get("break-glass"))
                if spec.scope not in scopes:
                    services().audit.refuse(
                        caller,
                        _ACTIONS[spec.method],
                        spec.operation_id,
                        _first_path_id(request),
                        f"this route needs the '{spec.scope}' scope",
                    )
            response = spec.handler(HttpRequest(request, caller))
        except DomainError as exc:
            response = _domain_error_response(spec, exc)
        except ConfigurationError as exc:  # e.g. an insecure database URL: the operator needs the reason
            logger.error("configuration error", extra={"route": route_name, "detail": str(exc)})
            response = _domain_error_response(spec, Unexpected(problems.INTERNAL_ERROR_DETAIL))
        except Exception as exc:  # a bug or an unexpected dependency failure: no detail to the caller
            logger.error("unhandled error", extra={"route": route_name, "error_type": type(exc).__name__})
            response = _domain_error_response(spec, Unexpected(problems.INTERNAL_ERROR_DETAIL))
        if protected:
            response.headers.update(_PRIVATE_HEADERS)
            if caller.break_glass_used:
                response.headers["Break-Glass-Used"] = "true"
        duration_ms = metrics.request_finished(tally, route_name, response.status_code)
        logger.info(
            "request",
            extra={
                "route": route_name,
                "status": response.status_code,
                "request_id": caller.request_id,
                "actor": caller.subject,
                "actor_kind": caller.kind.value,
                "break_glass": caller.break_glass_used,
                "duration_ms": duration_ms,
            },
        )
        return response

    view.__name__ = spec.operation_id
    return view


def _domain_error_response(spec: RouteSpec, exc: DomainError) -> Response:
    return spec.error_renderer(exc) if spec.error_renderer else problems.from_domain_error(exc)
