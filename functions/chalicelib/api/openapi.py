"""The OpenAPI 3.1 document, generated from the route tables and the same models that validate
requests, so the document and the behaviour cannot drift."""

from __future__ import annotations

import re
from typing import Any

from pydantic.json_schema import models_json_schema

from chalicelib.api.routing import IDEMPOTENCY_KEY, MAX_ID, RouteSpec, RouteTable
from chalicelib.domain.access import BREAK_GLASS

_PROBLEM = {
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["field", "message"],
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
}
_LEGACY_ERROR = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}
_GATEWAY_ERROR = {"type": "object", "required": ["message"], "properties": {"message": {"type": "string"}}}
_HEADERS: dict[str, tuple[dict[str, Any], str]] = {
    "If-Match": (
        {"type": "string"},
        "the ETag of the version you read (or `*`); a stale or unknown one is answered with 412",
    ),
    "Idempotency-Key": (
        {"type": "string", "pattern": f"^{IDEMPOTENCY_KEY.pattern}$"},
        "a retried POST with the same key creates nothing new and returns the first response",
    ),
    "Break-Glass": (
        {"type": "string", "pattern": f"^{BREAK_GLASS.pattern}$"},
        "an emergency reason (10 to 500 visible ASCII characters and spaces) from a clinician outside the "
        "patient's care team: the access is allowed, audited with the reason, marked with "
        "`Break-Glass-Used: true` and reviewed",
    ),
}
_STATUS_TEXT = {
    200: "OK", 201: "Created", 204: "No content", 400: "Invalid request", 401: "Not authenticated",
    403: "Missing scope, or not allowed on this patient", 404: "Not found", 406: "Not acceptable (FHIR: JSON only)",
    409: "Conflict", 410: "Deleted",
    412: "Stale version", 413: "Request body too large", 415: "Not JSON in UTF-8", 422: "Idempotency key reused",
    429: "Too many requests (API Gateway throttling)", 500: "Internal error (safe to retry)",
    503: "Database unavailable (retry after the Retry-After seconds)",
}
# Answers that API Gateway itself gives, before or instead of a handler, in its own shape.
_GATEWAY_STATUSES = {401, 429}
ID_SCHEMA = {"type": "integer", "minimum": 1, "maximum": MAX_ID}


def build_document(tables: list[RouteTable], *, title: str, version: str) -> dict[str, Any]:
    specs = [spec for table in tables for spec in table.routes]
    models = {m for s in specs for m in (s.body, s.response) if m is not None}
    _, schema = models_json_schema(
        [(m, "validation") for m in sorted(models, key=lambda m: m.__name__)],
        ref_template="#/components/schemas/{model}",
    )
    components = schema.get("$defs", {})
    for table in tables:
        if table.components is not None:
            components.update(table.components())
    components["Problem"] = _PROBLEM
    components["LegacyError"] = _LEGACY_ERROR
    components["GatewayError"] = _GATEWAY_ERROR
    paths: dict[str, dict[str, Any]] = {}
    for spec in specs:
        paths.setdefault(spec.path, {})[spec.method.lower()] = _operation(spec, specs)
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
        "security": [{"bearerAuth": []}],
    }


def _ref(model: type) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def path_parameters(spec: RouteSpec) -> list[str]:
    return re.findall(r"{(\w+)}", spec.path)


def _path_schema(spec: RouteSpec, name: str) -> dict[str, Any]:
    return spec.path_schemas.get(name, ID_SCHEMA)


def _operation(spec: RouteSpec, specs: list[RouteSpec]) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": _path_schema(spec, name)}
        for name in path_parameters(spec)
    ]
    parameters += [
        {"name": q.name, "in": "query", "required": q.required, "schema": q.schema, "description": q.description}
        for q in spec.query
    ]
    headers = (*spec.headers, "Break-Glass") if spec.scope is not None else spec.headers
    parameters += [
        {"name": h, "in": "header", "required": False, "schema": _HEADERS[h][0], "description": _HEADERS[h][1]}
        for h in headers
    ]
    operation: dict[str, Any] = {
        "operationId": spec.operation_id,
        "summary": spec.summary,
        "tags": [spec.tag],
        "parameters": parameters,
        "responses": _responses(spec, specs),
    }
    if spec.scope is None:
        operation["security"] = []
    else:
        operation["description"] = f"Requires the `{spec.scope}` scope."
    if spec.body is not None:
        operation["requestBody"] = {
            "required": not spec.optional_body,
            "content": {"application/json": {"schema": _ref(spec.body)}},
        }
    elif (request_schema := spec.request_body_schema()) is not None:
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": request_schema}}}
    return operation


def error_statuses(spec: RouteSpec) -> set[int]:
    """Every error status the route can answer, whichever layer answers it."""
    codes = set(spec.errors) | {500}
    if spec.scope is not None:
        codes |= {400, 401, 403, 429, 503}  # 400: a malformed Break-Glass header
    if path_parameters(spec):
        codes |= {400, 404}
    if spec.query:
        codes.add(400)
    if spec.method in ("POST", "PUT", "PATCH"):
        codes |= {400, 413, 415}
    if "Idempotency-Key" in spec.headers:
        codes.add(422)  # the key was used with another body
    return codes


def _responses(spec: RouteSpec, specs: list[RouteSpec]) -> dict[str, Any]:
    success: dict[str, Any] = {"description": _STATUS_TEXT.get(spec.status, "OK")}
    schema = _ref(spec.response) if spec.response is not None else spec.response_body_schema()
    if schema is not None and spec.status != 204:
        success["content"] = {spec.media_type: {"schema": schema}}
    links = _links(spec, specs)
    if links:
        success["links"] = links
    responses: dict[str, Any] = {str(spec.status): success}
    for code, (meaning, headers) in spec.bodiless.items():
        responses[str(code)] = {"description": meaning}
        if headers:
            responses[str(code)]["headers"] = {h: {"schema": {"type": "string"}} for h in headers}
    legacy = spec.error_renderer is not None
    error_content = (
        {"application/json": {"schema": {"$ref": "#/components/schemas/LegacyError"}}}
        if legacy
        else {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    )
    if spec.error_schema is not None:
        error_content = {spec.media_type: {"schema": {"$ref": f"#/components/schemas/{spec.error_schema}"}}}
    gateway_content = {"application/json": {"schema": {"$ref": "#/components/schemas/GatewayError"}}}
    for code in sorted(error_statuses(spec)):
        content = gateway_content if code in _GATEWAY_STATUSES else error_content
        responses[str(code)] = {"description": _STATUS_TEXT.get(code, "Error"), "content": content}
    return responses


def _links(spec: RouteSpec, specs: list[RouteSpec]) -> dict[str, Any]:
    """From a created resource to the operations its ids address (for clients and stateful tests)."""
    if spec.status != 201 or spec.response is None:
        return {}
    fields = {info.alias or name for name, info in spec.response.model_fields.items()}
    links = {}
    for other in specs:
        names = path_parameters(other)
        if other is spec or not names or not set(names) <= fields or other.error_renderer is not None:
            continue
        links[other.operation_id] = {
            "operationId": other.operation_id,
            "parameters": {name: f"$response.body#/{name}" for name in names},
        }
    return links
