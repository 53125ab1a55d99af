"""The Chalice application: wiring only. Routes, rules and SQL live in chalicelib/."""

from chalice import AuthResponse, Chalice

from chalicelib.api import auth, routing
from chalicelib.api.meta import ALL_ROUTES
from chalicelib.observability import logger
from chalicelib.orchestration import tasks

# Logging goes through the structured, PII-free logger only (see chalicelib/observability.py).
app = Chalice(app_name="medical-records", configure_logs=False)

# A start with configuration that could never verify a token (say, a short JWT_SECRET) fails here.
auth.check_configuration()


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
