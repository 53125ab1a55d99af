"""Service configuration, read once from the environment and typed.

Secrets come either straight from the environment (local runs, tests) or from AWS Secrets Manager
when an ``*_SECRET_ARN`` variable names one (deployed Lambdas), through Powertools Parameters; the
database DSN made from the secret is kept for ``SECRET_MAX_AGE_SECONDS`` and dropped at once when the
database refuses its password, so a rotated password is picked up by the next connection (see
``forget_database_credentials``). Powertools' parameters and boto3 are imported only then. Behind RDS
Proxy with IAM authentication (``DATABASE_IAM_AUTH``), the password is a signed RDS auth token, made
with boto3 and reused until shortly before it expires.
Settings that could never work (a short signing key, half an OIDC issuer) fail here, with a message
naming the variable, rather than as a stream of 401s later.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit

# --- Operational facts, one definition each: the deploy command, the CLI, the pipeline and the Lambda
# tasks import them; the template's parameter defaults are checked against them (tests/infrastructure).
STACK_NAME = "medical-records"  # the CloudFormation stack `make up` and the deploy command create
REFRESH_FLOW = "refresh-analytics"  # the Prefect flow, served under a deployment of the same name
REFRESH_DEPLOYMENT = f"{REFRESH_FLOW}/{REFRESH_FLOW}"  # <flow>/<deployment>, what the refresh task starts
REFRESH_SUMMARY_ARTIFACT = "refresh-summary"  # the key of the summary each run writes (its rows changed)
REFRESH_SCHEDULE = "rate(15 minutes)"  # EventBridge expression that starts the refresh state machine
AUDIT_SEAL_SCHEDULE = "rate(5 minutes)"  # how often the audit trail is sealed (template: AuditSealSchedule)
REFRESH_INCREMENTAL = "incremental"  # the refresh's two modes: only what changed ...
REFRESH_FULL = "full"  # ... or everything, from scratch
REFRESH_MODES = (REFRESH_INCREMENTAL, REFRESH_FULL)

# HS256 keys shorter than the hash output (RFC 7518 §3.2) are refused.
MIN_HS256_KEY_BYTES = 32
# The variable the AWS Parameters and Secrets Lambda Extension reads its port from; the template sets it
# only on functions that carry the extension's layer, so it also says the extension is there.
SECRETS_EXTENSION_PORT_VARIABLE = "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT"
SECRETS_EXTENSION_TIMEOUT_SECONDS = 5
# A cached secret is fetched again after this long (a rotated database password is picked up).
SECRET_MAX_AGE_SECONDS = 300
# After the database refuses a password, the secret is read afresh at most this often.
SECRET_REFETCH_INTERVAL_SECONDS = 30
# RDS auth tokens live 15 minutes; a new one is signed this long before that.
IAM_TOKEN_LIFETIME_SECONDS = 900
IAM_TOKEN_RENEW_MARGIN_SECONDS = 180
_LOOPBACK_HOSTS = {"127.0.0.1", "::1", "localhost"}

# FHIR: the identifier system of a Thai national ID (FHIR Patient.identifier.system). HL7 registers none for
# it, so the default is this product's own URI; an operator sets their jurisdiction's (e.g. the national
# exchange's implementation guide) in FHIR_NATIONAL_ID_SYSTEM.
DEFAULT_FHIR_NATIONAL_ID_SYSTEM = "urn:medical-records:sid:th-national-id"
FHIR_NATIONAL_ID_SYSTEM = os.environ.get("FHIR_NATIONAL_ID_SYSTEM") or DEFAULT_FHIR_NATIONAL_ID_SYSTEM
# The public base of the FHIR API (e.g. https://api.example.org/fhir/R4), for the absolute URLs in Bundles;
# unset, it is derived from each request (its Host and API Gateway stage).
FHIR_BASE_URL = (os.environ.get("FHIR_BASE_URL") or "").rstrip("/") or None


class ConfigurationError(RuntimeError):
    pass


@dataclass(frozen=True)
class Settings:
    database_url: str | None
    database_secret_arn: str | None
    jwt_secret: str | None
    jwt_secret_arn: str | None
    jwt_issuer: str
    jwt_audience: str
    service_name: str
    database_ca_bundle: str | None = None  # CA that signed a non-loopback database's certificate
    # RDS Proxy: connect to this host instead of the secret's, with an IAM auth token as the password.
    database_proxy_endpoint: str | None = None
    database_iam_auth: bool = False
    aws_region: str | None = None
    # Tokens whose exp - iat exceeds this are refused, whoever issued them (12 h by default).
    max_token_lifetime_seconds: int = 43200
    # An OIDC issuer whose tokens (RS256/ES256) are verified with the keys its JWKS URL serves.
    oidc_issuer: str | None = None
    # The audience its tokens must carry (for Amazon Cognito access tokens: the app client id).
    oidc_audience: str | None = None
    oidc_jwks_url: str | None = None
    # Cognito-style custom scopes "<prefix>/read" count as "read" only under this resource-server prefix.
    oidc_scope_prefix: str | None = None
    # The AWS Parameters and Secrets Lambda Extension's local port, when the function carries that layer:
    # secrets are then read from it over loopback HTTP, without importing the AWS SDK.
    secrets_extension_port: int | None = None

    @property
    def oidc_enabled(self) -> bool:
        return bool(self.oidc_issuer and self.oidc_jwks_url)

    @property
    def dev_tokens_enabled(self) -> bool:
        """HS256 dev tokens are accepted only when a signing key is configured."""
        return bool(self.jwt_secret or self.jwt_secret_arn)


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ConfigurationError(f"{name} must be an integer") from exc


def _env_bool(name: str) -> bool:
    raw = (os.environ.get(name) or "false").strip().lower()
    if raw not in ("true", "false", "1", "0"):
        raise ConfigurationError(f"{name} must be true or false")
    return raw in ("true", "1")


def _check_oidc(settings: Settings) -> None:
    names = {"OIDC_ISSUER": settings.oidc_issuer, "OIDC_AUDIENCE": settings.oidc_audience,
             "OIDC_JWKS_URL": settings.oidc_jwks_url}
    missing = [name for name, value in names.items() if not value]
    if len(missing) == len(names):
        return
    if missing:
        raise ConfigurationError(f"OIDC_ISSUER, OIDC_AUDIENCE and OIDC_JWKS_URL go together; missing {missing}")
    url = urlsplit(settings.oidc_jwks_url or "")
    # Keys fetched over plain HTTP could be swapped in transit; loopback is allowed for local issuers.
    if not url.hostname or not (url.scheme == "https" or (url.scheme == "http" and url.hostname in _LOOPBACK_HOSTS)):
        raise ConfigurationError("OIDC_JWKS_URL must be an https:// URL (http:// only for a loopback issuer)")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    settings = Settings(
        database_url=os.environ.get("DATABASE_URL") or None,
        database_secret_arn=os.environ.get("DATABASE_SECRET_ARN") or None,
        database_ca_bundle=os.environ.get("DATABASE_CA_BUNDLE") or None,
        jwt_secret=os.environ.get("JWT_SECRET") or None,
        jwt_secret_arn=os.environ.get("JWT_SECRET_ARN") or None,
        jwt_issuer=os.environ.get("JWT_ISSUER", "medical-records"),
        jwt_audience=os.environ.get("JWT_AUDIENCE", "medical-records-api"),
        service_name=os.environ.get("POWERTOOLS_SERVICE_NAME", "medical-records"),
        database_proxy_endpoint=os.environ.get("DATABASE_PROXY_ENDPOINT") or None,
        database_iam_auth=_env_bool("DATABASE_IAM_AUTH"),
        aws_region=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None,
        max_token_lifetime_seconds=_env_int("MAX_TOKEN_LIFETIME_SECONDS", 43200),
        oidc_issuer=os.environ.get("OIDC_ISSUER") or None,
        oidc_audience=os.environ.get("OIDC_AUDIENCE") or None,
        oidc_jwks_url=os.environ.get("OIDC_JWKS_URL") or None,
        oidc_scope_prefix=os.environ.get("OIDC_SCOPE_PREFIX") or None,
        secrets_extension_port=_env_int(SECRETS_EXTENSION_PORT_VARIABLE, 0) or None,
    )
    if settings.max_token_lifetime_seconds <= 0:
        raise ConfigurationError("MAX_TOKEN_LIFETIME_SECONDS must be a positive number of seconds")
    _check_oidc(settings)
    if settings.database_iam_auth and not settings.aws_region:
        raise ConfigurationError("DATABASE_IAM_AUTH needs AWS_REGION (the region that signs the RDS auth token)")
    return settings


def _read_secret(arn: str, *, fresh: bool = False) -> str:
    """The secret's string; ``fresh``: not from a cache (after the database refused what the cache held)."""
    port = get_settings().secrets_extension_port
    if port:
        return _read_secret_from_extension(arn, port)
    # Deferred: only deployed Lambdas read Secrets Manager (Powertools' parameters and the AWS SDK cost
    # ≈ 0.3 s of a cold start to import and set up; the extension spares a function that).
    from aws_lambda_powertools.utilities import parameters

    return parameters.get_secret(arn, max_age=SECRET_MAX_AGE_SECONDS, force_fetch=fresh)


def _read_secret_from_extension(arn: str, port: int) -> str:
    """GET /secretsmanager/get from the Parameters and Secrets extension, which caches the secret itself
    (its own TTL) and authenticates the call with the function's session token."""
    import urllib.error
    import urllib.parse
    import urllib.request

    url = f"http://localhost:{port}/secretsmanager/get?secretId={urllib.parse.quote(arn, safe='')}"
    token = os.environ.get("AWS_SESSION_TOKEN", "")
    request = urllib.request.Request(url, headers={"X-Aws-Parameters-Secrets-Token": token})
    try:
        with urllib.request.urlopen(request, timeout=SECRETS_EXTENSION_TIMEOUT_SECONDS) as response:  # noqa: S310
            return json.loads(response.read())["SecretString"]
    except urllib.error.HTTPError as exc:
        raise ConfigurationError(f"the Parameters and Secrets extension refused the secret: HTTP {exc.code}") from None
    except (OSError, ValueError, KeyError):
        raise ConfigurationError(f"the Parameters and Secrets extension did not answer on port {port}") from None


class _DsnCache:
    """The DSN, made once from DATABASE_URL; made from the secret again once it is older than
    ``SECRET_MAX_AGE_SECONDS`` or after the database refused its password (a rotation)."""

    def __init__(self, clock=None) -> None:
        import time

        self._clock = clock or time.monotonic
        self._dsn: str | None = None
        self._expires_at = 0.0
        self._fresh = False
        self._last_forgotten = float("-inf")

    def __call__(self) -> str:
        from chalicelib.transport import InsecureConnection, secure_dsn

        now = self._clock()
        if self._dsn is not None and now < self._expires_at:
            return self._dsn
        try:
            dsn = secure_dsn(_configured_dsn(fresh=self._fresh), get_settings().database_ca_bundle)
        except InsecureConnection as exc:
            raise ConfigurationError(str(exc)) from None
        from_secret = not get_settings().database_url
        self._dsn, self._fresh = dsn, False
        self._expires_at = now + SECRET_MAX_AGE_SECONDS if from_secret else float("inf")
        return dsn

    def forget(self) -> None:
        """Drop the DSN; the next one is made from the secret as Secrets Manager holds it now (at most once
        per ``SECRET_REFETCH_INTERVAL_SECONDS``: a password that is simply wrong must not turn every
        request into a Secrets Manager call)."""
        now = self._clock()
        if now - self._last_forgotten < SECRET_REFETCH_INTERVAL_SECONDS:
            return
        self._last_forgotten = now
        self._dsn, self._fresh = None, True

    def cache_clear(self) -> None:
        self._dsn, self._fresh, self._last_forgotten = None, False, float("-inf")


_database_dsn = _DsnCache()


def forget_database_credentials() -> None:
    """The database refused the password: it was rotated. The next connection reads the secret afresh."""
    _database_dsn.forget()


def database_dsn() -> str:
    """The application database DSN, from DATABASE_URL or an RDS-style secret; verifying the server
    (TLS, verify-full) whenever the database is not on this machine (see transport.py). Behind RDS Proxy
    with IAM authentication, the password is a current RDS auth token (this is called at every connect)."""
    dsn = _database_dsn()
    if not get_settings().database_iam_auth:
        return dsn
    from psycopg2.extensions import make_dsn, parse_dsn

    params = parse_dsn(dsn)
    return make_dsn(dsn, password=_iam_tokens.token(params["host"], int(params.get("port") or 5432), params["user"]))


database_dsn.cache_clear = _database_dsn.cache_clear  # type: ignore[attr-defined]  # what the tests reset


class _IamTokens:
    """RDS auth tokens, signed locally by boto3 (no network call), reused until shortly before expiry."""

    def __init__(self, clock=None) -> None:
        import time

        self._clock = clock or time.monotonic
        self._cached: tuple[tuple[str, int, str], str, float] | None = None
        self._client = None

    def token(self, host: str, port: int, user: str) -> str:
        key = (host, port, user)
        now = self._clock()
        if self._cached is not None and self._cached[0] == key and now < self._cached[2]:
            return self._cached[1]
        if self._client is None:
            import boto3

            self._client = boto3.client("rds", region_name=get_settings().aws_region)
        token = self._client.generate_db_auth_token(DBHostname=host, Port=port, DBUsername=user)
        self._cached = (key, token, now + IAM_TOKEN_LIFETIME_SECONDS - IAM_TOKEN_RENEW_MARGIN_SECONDS)
        return token


_iam_tokens = _IamTokens()


def _configured_dsn(*, fresh: bool = False) -> str:
    settings = get_settings()
    if settings.database_url:
        return settings.database_url
    if settings.database_secret_arn:
        secret = json.loads(_read_secret(settings.database_secret_arn, fresh=fresh))
        from psycopg2.extensions import make_dsn

        iam = settings.database_iam_auth
        if iam and not settings.database_proxy_endpoint:
            raise ConfigurationError("DATABASE_IAM_AUTH needs DATABASE_PROXY_ENDPOINT (the RDS Proxy endpoint)")
        return make_dsn(
            host=settings.database_proxy_endpoint or secret["host"],
            port=secret.get("port", 5432),
            dbname=secret.get("dbname", "app"),
            user=secret["username"],
            # With IAM authentication the password is a token signed at connect time (database_dsn).
            **({} if iam else {"password": secret["password"]}),
            **({"sslmode": secret["sslmode"]} if secret.get("sslmode") else {}),
        )
    raise ConfigurationError("set DATABASE_URL or DATABASE_SECRET_ARN")


@lru_cache(maxsize=1)
def jwt_secret() -> str:
    """The HS256 dev-token key, refused when shorter than MIN_HS256_KEY_BYTES."""
    settings = get_settings()
    if settings.jwt_secret:
        key, source = settings.jwt_secret, ""
    elif settings.jwt_secret_arn:
        key, source = _read_secret(settings.jwt_secret_arn), ", here the secret JWT_SECRET_ARN names"
    else:
        raise ConfigurationError("set JWT_SECRET or JWT_SECRET_ARN")
    if len(key.encode()) < MIN_HS256_KEY_BYTES:
        raise ConfigurationError(
            f"JWT_SECRET must be at least {MIN_HS256_KEY_BYTES} bytes (an HS256 key{source}); generate one with "
            "python -c 'import secrets; print(secrets.token_urlsafe(48))'"
        )
    return key
