"""Bearer-token (JWT) authentication: who the caller is and which scopes they hold.

Two kinds of issuer, enabled by configuration and told apart by the token header's ``alg``:

* ``HS256`` dev tokens, signed with a key from configuration (JWT_SECRET locally, a Secrets Manager
  secret named by JWT_SECRET_ARN when deployed; at least 32 bytes). Refused when no key is configured.
* ``RS256``/``ES256`` tokens of an OIDC issuer (OIDC_ISSUER, OIDC_AUDIENCE, OIDC_JWKS_URL), verified
  with the keys its JWKS URL serves (jwks.py); Amazon Cognito access tokens included. Refused when
  no issuer is configured.

Each path accepts one algorithm family with its own kind of key, so a token can never be checked
with the other path's key (an HS256 token "signed" with the issuer's public key is just a bad dev
token). Header parameters that point at keys (jku, x5u, jwk) are ignored: keys come from
configuration only. Whoever issued it, the payload then passes the same claim checks (claims.py).

Scopes travel in the OAuth-style ``scope`` claim: ``read``, ``write``, ``admin``. A token with a
``patient_id`` claim is a patient's.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from typing import Any

from chalicelib.api import claims
from chalicelib.config import Settings, get_settings, jwt_secret

SCOPES = ("read", "write", "admin")
LEEWAY_SECONDS = 30
# Far above any real token; keeps parsing cheap for whatever an anonymous caller sends.
MAX_TOKEN_LENGTH = 8192
_DEV_ALGORITHM = "HS256"
_OIDC_ALGORITHMS = ("RS256", "ES256")
# The JWT library checks the signature only; every claim is checked by claims.check, with exact types.
_SIGNATURE_ONLY = {
    "verify_signature": True, "verify_exp": False, "verify_nbf": False, "verify_iat": False,
    "verify_aud": False, "verify_iss": False, "verify_sub": False, "verify_jti": False, "require": [],
}


class Unauthenticated(Exception):
    """The token is missing, malformed, badly signed, expired or makes claims that are not accepted.

    The message is a short fixed reason, safe to log: never the token or a claim value.
    """


@dataclass(frozen=True)
class Identity:
    """What a valid token establishes, passed on by the authorizer."""

    subject: str
    scopes: str  # space-separated, only scopes from SCOPES
    patient_id: int | None  # set for a patient's token
    expires_at: int  # the token's exp: nothing derived from the token is to be trusted after it


def verify(authorization_header: str) -> Identity:
    """The identity a valid ``Bearer`` header carries, or raise Unauthenticated."""
    import jwt  # deferred: only the authorizer pays for it

    token = _bearer_token(authorization_header)
    try:
        header = jwt.get_unverified_header(token)
    except (jwt.PyJWTError, ValueError, TypeError, RecursionError):
        raise Unauthenticated("malformed token") from None
    alg = header.get("alg")
    settings = get_settings()
    if alg == _DEV_ALGORITHM:
        if not settings.dev_tokens_enabled:
            raise Unauthenticated("dev tokens not accepted")
        key: Any = jwt_secret()
        expected = _dev_expectations(settings)
    elif alg in _OIDC_ALGORITHMS:
        if not settings.oidc_enabled:
            raise Unauthenticated("oidc tokens not accepted")
        key = _oidc_key(header, alg, settings)
        expected = _oidc_expectations(settings)
    else:
        raise Unauthenticated("algorithm not accepted")
    try:
        payload = jwt.decode(token, key, algorithms=[alg], options=_SIGNATURE_ONLY)
    except (jwt.PyJWTError, ValueError, TypeError, RecursionError) as exc:
        raise Unauthenticated(type(exc).__name__) from None
    try:
        checked = claims.check(payload, expected, SCOPES, time.time())
    except claims.ClaimError as exc:
        raise Unauthenticated(str(exc)) from None
    return Identity(
        subject=checked.subject,
        scopes=" ".join(checked.scopes),
        patient_id=checked.patient_id,
        expires_at=checked.expires_at,
    )


def _bearer_token(authorization_header: str) -> str:
    scheme, _, token = (authorization_header or "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated("expected 'Authorization: Bearer <token>'")
    if len(token) > MAX_TOKEN_LENGTH:
        raise Unauthenticated("token too long")
    return token


def _dev_expectations(settings: Settings) -> claims.Expected:
    return claims.Expected(
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        max_lifetime_seconds=settings.max_token_lifetime_seconds,
        leeway_seconds=LEEWAY_SECONDS,
    )


def _oidc_expectations(settings: Settings) -> claims.Expected:
    return claims.Expected(
        issuer=settings.oidc_issuer or "",
        audience=settings.oidc_audience or "",
        max_lifetime_seconds=settings.max_token_lifetime_seconds,
        leeway_seconds=LEEWAY_SECONDS,
        allow_cognito_access_tokens=True,
        scope_prefix=settings.oidc_scope_prefix,
    )


def _oidc_key(header: dict[str, Any], alg: str, settings: Settings) -> Any:
    from chalicelib.api import jwks  # deferred: only containers that see OIDC tokens fetch keys

    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise Unauthenticated("missing kid")
    try:
        return jwks.key_set(settings.oidc_jwks_url or "").key_for(kid, alg)
    except jwks.KeyUnavailable as exc:
        raise Unauthenticated(str(exc)) from None


def check_configuration() -> None:
    """Fail at once, with a message naming the variable, on configuration that could never work.

    Settings are validated as they are read. The dev key is loaded here only when it is given
    directly in the environment: reading Secrets Manager at import would slow every cold start.
    """
    if get_settings().jwt_secret:
        jwt_secret()


def mint(
    subject: str,
    scopes: list[str] | tuple[str, ...],
    ttl_seconds: int = 3600,
    *,
    secret: str | None = None,
    patient_id: int | None = None,
) -> str:
    """A signed dev token; used by the dev-token command and the tests.

    ``patient_id`` makes it a patient's token. A lifetime the verifier would refuse is refused here.
    """
    import jwt

    unknown = set(scopes) - set(SCOPES)
    if unknown:
        raise ValueError(f"unknown scopes: {sorted(unknown)}")
    settings = get_settings()
    if ttl_seconds > settings.max_token_lifetime_seconds:
        raise ValueError(
            f"ttl_seconds must be at most {settings.max_token_lifetime_seconds} (MAX_TOKEN_LIFETIME_SECONDS)"
        )
    now = int(time.time())
    payload: dict[str, Any] = {
        "sub": subject,
        "scope": " ".join(scopes),
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "iat": now,
        "exp": now + ttl_seconds,
    }
    if patient_id is not None:
        try:
            payload["patient_id"] = claims.patient_id(patient_id)
        except claims.ClaimError:
            raise ValueError("patient_id must be a positive integer") from None
    return jwt.encode(payload, secret or jwt_secret(), algorithm=_DEV_ALGORITHM)


def unauthorized_error() -> Exception:
    """What a Lambda authorizer raises for 401.

    API Gateway answers 401 when the authorizer fails with the message "Unauthorized"; the local
    gateway of ``chalice local`` and its test client need their own exception type for the same answer.
    """
    local = sys.modules.get("chalice.local")
    if local is None:
        return Exception("Unauthorized")

    class LocalUnauthorized(local.NotAuthorizedError):
        def __str__(self) -> str:
            return "Unauthorized"

    from chalicelib.api.problems import UNAUTHENTICATED

    return LocalUnauthorized(
        {"x-amzn-ErrorType": "UnauthorizedException", "Content-Type": "application/json", "WWW-Authenticate": "Bearer"},
        json.dumps(UNAUTHENTICATED).encode(),
    )
