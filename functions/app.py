"""The Chalice application: wiring only. Routes, rules and SQL live in chalicelib/."""

from chalice import AuthResponse, Chalice

from chalicelib import config, observability
from chalicelib.api import auth, routing
from chalicelib.api.meta import ALL_ROUTES
from chalicelib.observability import logger
from chalicelib.orchestration import tasks

# Logging goes through the structured, PII-free logger only (see chalicelib/observability.py).
app = Chalice(app_name="medical-records", configure_logs=False)

# A start with configuration that could never verify a token (say, a short JWT_SECRET) fails here.
auth.check_configuration()

# X-Ray: a subsegment per invocation, only where the template's Tracing parameter turned tracing on.
if observability.tracing_enabled():
    app.register_middleware(observability.trace_invocation, "all")


@app.authorizer(ttl_seconds=300)
def jwt_authorizer(auth_request):
    try:
        identity = auth.verify(auth_request.token)
    except auth.Unauthenticated as exc:
        logger.info("authentication failed", extra={"reason": str(exc)})  # a fixed reason, never the token
        raise auth.unauthorized_error() from None
    # API Gateway caches this answer for ttl_seconds; "exp" lets the route layer refuse it once the token
    # has expired, so a cached decision never outlives its token.
    context = {
        "scope": identity.scopes,
        "patient_id": str(identity.patient_id or ""),
        "exp": str(identity.expires_at),
    }
    return AuthResponse(routes=["*"], principal_id=identity.subject, context=context)


for table in ALL_ROUTES:
    routing.install(app, table, authorizer=jwt_authorizer)


# --- the analytics refresh's Step Functions tasks (state_machines/refresh_analytics.asl.json) ---------


@app.lambda_function(name="start_refresh")
def start_refresh(event, context):
    return tasks.start_refresh(event)


@app.lambda_function(name="refresh_status")
def refresh_status(event, context):
    return tasks.refresh_status(event)


# --- the FHIR bulk export's worker (state_machines/bulk_export.asl.json; chalicelib/export/worker.py) ------


@app.lambda_function(name="export_worker")
def export_worker(event, context):
    from chalicelib.export import worker  # only this function exports: the API's cold start skips it

    return worker.handle(event, context)


# --- the audit trail's seal (migration 0005; `make verify-audit` checks it) -----------------------------
# The rate is the template's AuditSealSchedule parameter (infra/template.merge.yaml), whose default is this one
# (tests/integration/test_audit_seal.py holds the two together).


@app.schedule(config.AUDIT_SEAL_SCHEDULE, name="seal_audit")
def seal_audit(event):
    # Stop the statement before the function's own timeout does (an interrupted seal rolls back anyway).
    remaining = getattr(event.context, "get_remaining_time_in_millis", None)
    remaining_ms = remaining() if remaining else 300_000
    from chalicelib.repositories import audit_seal  # only this function seals: the API's cold start skips it

    result = audit_seal.seal_database(config.database_dsn(), statement_timeout_ms=max(remaining_ms - 5_000, 1_000))
    if result is None:
        logger.info("audit seal: nothing new to seal")
        return {"sealed": False}
    # The block number and digest in the function's log are an anchor outside the database for
    # `verify-audit --anchor BLOCK:DIGEST`: a chain rewritten by the database owner no longer matches it.
    logger.info("audit seal", extra={"block": result.block_no, "events": result.event_count,
                                     "digest": result.digest, "anchor": result.anchor()})
    return {"sealed": True, "block": result.block_no, "events": result.event_count, "digest": result.digest}
