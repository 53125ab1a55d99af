"""The OpenAPI 3.1 document, generated from the route tables and the same models that validate
requests, so the document and the behaviour cannot drift."""

from __future__ import annotations

import re
from typing import Any

from pydantic.json_schema import models_json_schema

from chalicelib.api.routing import RouteSpec, RouteTable

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
_HEADER_DOCS = {
    "If-Match": "the ETag of the version you read; a stale one is answered with 412",
    "Idempotency-Key": "a retried POST with the same key creates nothing new and returns the first response",
    "Break-Glass": (
        "an emergency reason (10 to 500 characters) from a clinician outside the patient's care team: "
        "the access is allowed, audited with the reason, marked with `Break-Glass-Used: true` and reviewed"
    ),
}
_STATUS_TEXT = {
    200: "OK", 201: "Created", 204: "No content", 400: "Invalid request", 401: "Not authenticated",
    403: "Missing scope, or not allowed on this patient", 404: "Not found", 409: "Conflict", 410: "Deleted",
    412: "Stale version",
    422: "Idempotency key reused", 503: "Database unavailable",
}


def build_document(tables: list[RouteTable], *, title: str, version: str) -> dict[str, Any]:
    specs = [spec for table in tables for spec in table.routes]
    models = {m for s in specs for m in (s.body, s.response) if m is not None}
    _, schema = models_json_schema(
        [(m, "validation") for m in sorted(models, key=lambda m: m.__name__)],
        ref_template="#/components/schemas/{model}",
    )
    components = schema.get("$defs", {})
    components["Problem"] = _PROBLEM
    components["LegacyError"] = _LEGACY_ERROR
    components["GatewayError"] = {"type": "object", "properties": {"message": {"type": "string"}}}
    paths: dict[str, dict[str, Any]] = {}
    for spec in specs:
        paths.setdefault(spec.path, {})[spec.method.lower()] = _operation(spec)
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


def _operation(spec: RouteSpec) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in re.findall(r"{(\w+)}", spec.path)
    ]
    parameters += [
        {"name": q.name, "in": "query", "required": False, "schema": q.schema, "description": q.description}
        for q in spec.query
    ]
    headers = (*spec.headers, "Break-Glass") if spec.scope is not None else spec.headers
    parameters += [
        {"name": h, "in": "header", "required": False, "schema": {"type": "string"}, "description": _HEADER_DOCS[h]}
        for h in headers
    ]
    operation: dict[str, Any] = {
        "operationId": spec.operation_id,
        "summary": spec.summary,
        "tags": [spec.tag],
        "parameters": parameters,
        "responses": _responses(spec),
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
    elif spec.method in ("POST", "PUT") and spec.tag == "original-api":
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}}
    return operation


def _responses(spec: RouteSpec) -> dict[str, Any]:
    success: dict[str, Any] = {"description": _STATUS_TEXT.get(spec.status, "OK")}
    schema = _ref(spec.response) if spec.response is not None else spec.response_schema
    if schema is not None and spec.status != 204:
        success["content"] = {"application/json": {"schema": schema}}
    responses: dict[str, Any] = {str(spec.status): success}
    legacy = spec.error_renderer is not None
    error_content = (
        {"application/json": {"schema": {"$ref": "#/components/schemas/LegacyError"}}}
        if legacy
        else {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    )
    codes = set(spec.errors) | ({403} if spec.scope else set()) | {503}
    for code in sorted(codes):
        responses[str(code)] = {"description": _STATUS_TEXT.get(code, "Error"), "content": error_content}
    if spec.scope:
        # 401 comes from the authorizer through API Gateway, before any handler runs.
        responses["401"] = {
            "description": _STATUS_TEXT[401],
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/GatewayError"}}},
        }
    return responses
