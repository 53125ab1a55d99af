"""Operational metrics: CloudWatch embedded metric format (EMF) through Powertools Metrics.

Each API request and each finished analytics refresh prints one EMF document to stdout, at the end
of its Lambda invocation; CloudWatch Logs turns it into metrics of ``NAMESPACE``. Dimensions are
bounded, and never personal: the service, a route template with its method, a status class. Ids,
names, tokens, paths and anything a caller sent never become a dimension or a property.

A metric that cannot be recorded is dropped with a log line: metrics never fail a request.
The names below are the one definition the alarms and the dashboard of infra/template.merge.yaml
refer to (tests/infrastructure/test_template_observability.py checks that they agree).
"""

from __future__ import annotations

import time
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from chalicelib.config import get_settings
from chalicelib.observability import logger

NAMESPACE = "MedicalRecords"

# --- API (one document per request) ---------------------------------------------------------------------
REQUESTS = "Requests"                      # Count, 1 per request
LATENCY = "Latency"                        # Milliseconds, the handler's time for the request
AUDIT_EVENTS_WRITTEN = "AuditEventsWritten"  # Count of audit events committed by the request
ACCESS_DENIED = "AccessDenied"             # Count of those recording a refusal by access control
BREAK_GLASS_ACCESS = "BreakGlassAccess"    # Count of those allowed only by a break-the-glass reason

# --- analytics refresh (one document per finished run, from the state machine's status task) -------------
REFRESH_SUCCEEDED = "RefreshSucceeded"     # Count, 1 per run that completed
REFRESH_FAILED = "RefreshFailed"           # Count, 1 per run that failed, crashed or was cancelled
REFRESH_DURATION = "RefreshDuration"       # Milliseconds, the Prefect flow run's run time
REFRESH_ROWS_CHANGED = "RefreshRowsChanged"  # Count, analytic rows inserted + updated + deleted
ANALYTIC_DATA_AGE = "AnalyticDataAge"      # Seconds since the data of the last completed run was read

# Dimension names (values: route templates such as "GET /v1/patients/{patientId}", "2xx".."5xx").
SERVICE = "service"
ROUTE = "route"
STATUS_CLASS = "statusClass"

# The audit outcome that records a refusal by access control (403, or 404 for a hidden patient).
DENIED_OUTCOME = "denied"


def status_class(status: int) -> str:
    return f"{status // 100}xx" if 100 <= status <= 599 else "other"


# CloudWatch units, as Powertools accepts them.
COUNT, MILLISECONDS, SECONDS = "Count", "Milliseconds", "Seconds"


def _document(service: str) -> Any:
    """A metrics document of its own (EphemeralMetrics keeps no state shared between instances or threads)."""
    # Imported on the first request, not with the app: `import app` is the cold start's first cost.
    from aws_lambda_powertools.metrics import EphemeralMetrics

    return EphemeralMetrics(namespace=NAMESPACE, service=service)


@dataclass
class RequestTally:
    """What one request did that is worth counting, gathered while it runs."""

    started: float
    audit_events: int = 0
    denied: int = 0
    break_glass: int = 0


_current: ContextVar[RequestTally | None] = ContextVar("medical_records_request_tally", default=None)


def request_started() -> RequestTally:
    """Start counting for the request this thread (or Lambda invocation) serves."""
    tally = RequestTally(started=time.perf_counter())
    _current.set(tally)
    return tally


def audit_event_committed(outcome: str, break_glass: bool) -> None:
    """An audit event is durable (told by the services after its COMMIT)."""
    tally = _current.get()
    if tally is None:
        return  # not inside an API request (a command, a test calling the services directly)
    tally.audit_events += 1
    tally.denied += outcome == DENIED_OUTCOME
    tally.break_glass += bool(break_glass)


def request_finished(tally: RequestTally, route: str, status: int) -> float:
    """Print the request's EMF document; returns the request's duration in milliseconds."""
    duration_ms = round((time.perf_counter() - tally.started) * 1000, 3)
    _current.set(None)
    try:
        service = get_settings().service_name
        metrics = _document(service)
        cls = status_class(status)
        # Three views of the same numbers: the whole API, by status class, by route and status class.
        metrics.add_dimensions(**{SERVICE: service, STATUS_CLASS: cls})
        metrics.add_dimensions(**{SERVICE: service, ROUTE: route, STATUS_CLASS: cls})
        metrics.add_metric(name=REQUESTS, unit=COUNT, value=1)
        metrics.add_metric(name=LATENCY, unit=MILLISECONDS, value=duration_ms)
        metrics.add_metric(name=AUDIT_EVENTS_WRITTEN, unit=COUNT, value=tally.audit_events)
        metrics.add_metric(name=ACCESS_DENIED, unit=COUNT, value=tally.denied)
        metrics.add_metric(name=BREAK_GLASS_ACCESS, unit=COUNT, value=tally.break_glass)
        metrics.add_metadata(key="statusCode", value=status)  # searchable in Logs Insights, not a dimension
        metrics.flush_metrics()
    except Exception as exc:  # never fail the request for a metric
        logger.warning("metrics not recorded", extra={"route": route, "error_type": type(exc).__name__})
    return duration_ms


@dataclass(frozen=True)
class RefreshOutcome:
    """A finished refresh run, as the status task learned it from Prefect."""

    succeeded: bool
    duration_ms: float | None = None
    rows_changed: int | None = None
    data_age_seconds: float | None = None


def refresh_finished(outcome: RefreshOutcome) -> None:
    """Print the EMF document of a finished analytics refresh."""
    try:
        metrics = _document(get_settings().service_name)
        metrics.add_metric(name=REFRESH_SUCCEEDED, unit=COUNT, value=int(outcome.succeeded))
        metrics.add_metric(name=REFRESH_FAILED, unit=COUNT, value=int(not outcome.succeeded))
        optional: list[tuple[str, str, float | None]] = [
            (REFRESH_DURATION, MILLISECONDS, outcome.duration_ms),
            (REFRESH_ROWS_CHANGED, COUNT, outcome.rows_changed),
            (ANALYTIC_DATA_AGE, SECONDS, outcome.data_age_seconds),
        ]
        for name, unit, value in optional:
            if value is not None:
                metrics.add_metric(name=name, unit=unit, value=value)
        metrics.flush_metrics()
    except Exception as exc:  # never fail the state machine's task for a metric
        logger.warning("refresh metrics not recorded", extra={"error_type": type(exc).__name__})
