"""Public routes: health and the OpenAPI document."""

from __future__ import annotations

from functools import lru_cache

from chalice import Response

from chalicelib.api import fhir, fhir_export, legacy, problems, v1
from chalicelib.api.dependencies import database
from chalicelib.api.routing import HttpRequest, RouteTable, json_response
from chalicelib.domain.errors import Unavailable

routes = RouteTable()


@routes.route("GET", "/health", summary="Liveness and database reachability", tag="meta", scope=None,
              response_schema={"type": "object", "properties": {"status": {"type": "string"}}})
def health(_request: HttpRequest) -> Response:
    try:
        with database().transaction() as tx:
            tx.fetchone("SELECT 1")
    except Unavailable:
        return json_response(
            {"status": "unavailable", "database": "unreachable"}, 503, {"Retry-After": problems.RETRY_AFTER_SECONDS}
        )
    return json_response({"status": "ok", "database": "ok"})


@lru_cache(maxsize=1)
def openapi_document() -> dict:
    # Imported here: only this route needs the document builder, so a cold start does not load it.
    from chalicelib.api.openapi import build_document

    return build_document([v1.routes, legacy.routes, fhir.routes, fhir_export.routes, routes],
                          title="Medical records API", version="1.0.0")


@routes.route("GET", "/openapi.json", summary="This document", tag="meta", scope=None,
              response_schema={"type": "object"})
def openapi(_request: HttpRequest) -> Response:
    return json_response(openapi_document())


ALL_ROUTES = [v1.routes, legacy.routes, fhir.routes, fhir_export.routes, routes]
