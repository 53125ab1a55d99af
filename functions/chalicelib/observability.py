"""Structured logging and tracing. Log lines carry request ids, route templates, resource ids and outcomes,
never names, card numbers, phones, diagnoses, bodies, query strings or raw paths.

Tracing (AWS X-Ray through Powertools Tracer) is on only where the deployment turns it on: the template's
``Tracing`` parameter sets ``POWERTOOLS_TRACE_DISABLED=false``. Anywhere else (tests, ``make run``, a
function deployed with tracing off) neither the tracer nor the X-Ray SDK is imported: they would cost the
cold start tens of milliseconds for nothing.
"""

from __future__ import annotations

import functools
import os
from typing import Any

from aws_lambda_powertools import Logger

from chalicelib.config import get_settings

logger = Logger(service=get_settings().service_name, log_uncaught_exceptions=False)

TRACING_SWITCH = "POWERTOOLS_TRACE_DISABLED"


def tracing_enabled() -> bool:
    """Only an explicit ``POWERTOOLS_TRACE_DISABLED=false`` turns tracing on (unset means off here)."""
    return os.environ.get(TRACING_SWITCH, "true").strip().lower() in ("false", "0")


@functools.cache
def tracer() -> Any:
    from aws_lambda_powertools import Tracer  # the X-Ray SDK loads with it: only when tracing is on

    # No library patching: a traced database driver would record connection details; the subsegment per
    # invocation (annotated with the route template and status) and Lambda's own segment are enough.
    return Tracer(service=get_settings().service_name, auto_patch=False)


def trace_invocation(event: Any, get_response: Any) -> Any:
    """Chalice middleware: one X-Ray subsegment per invocation, annotated without personal data."""
    name = _invocation_name(event)
    with tracer().provider.in_subsegment(f"## {name}") as subsegment:
        response = get_response(event)
        subsegment.put_annotation("operation", name)
        status = getattr(response, "status_code", None)
        if status is not None:
            subsegment.put_annotation("status", int(status))
        return response


def _invocation_name(event: Any) -> str:
    context = getattr(event, "context", None)
    if isinstance(context, dict):  # an HTTP request: API Gateway's request context
        method, path = context.get("httpMethod"), context.get("resourcePath")
        if method and path:
            return f"{method} {path}"  # the route template, never the request's own path
    # A Step Functions task or a schedule: the Lambda context names the function.
    return str(getattr(context, "function_name", None) or type(event).__name__)
