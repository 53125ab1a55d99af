"""Bearer-token (JWT) authentication and the scopes a caller holds.

Tokens are HS256 JWTs signed with a key from configuration (JWT_SECRET locally, a Secrets Manager
secret when deployed), with issuer, audience, expiry and subject required. Scopes travel in the
OAuth-style ``scope`` claim: ``read``, ``write``, ``admin``.
"""

from __future__ import annotations

import sys
import time

from chalicelib.config import get_settings, jwt_secret

SCOPES = ("read", "write", "admin")
_ALGORITHM = "HS256"


class Unauthenticated(Exception):
    """The token is missing, malformed, badly signed or expired."""


def verify(authorization_header: str) -> tuple[str, str]:
    """Return (subject, space-separated scopes) for a valid ``Bearer`` header, or raise Unauthenticated."""
    import jwt  # deferred: only the authorizer pays for it

    scheme, _, token = (authorization_header or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("expected 'Authorization: Bearer <token>'")
    settings = get_settings()
    try:
        claims = jwt.decode(
            token.strip(),
            jwt_secret(),
            algorithms=[_ALGORITHM],
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            leeway=30,
            options={"require": ["exp", "iat", "sub", "iss", "aud"]},
        )
    except jwt.PyJWTError as exc:
        raise Unauthenticated(type(exc).__name__) from None
    scopes = [s for s in str(claims.get("scope", "")).split() if s in SCOPES]
    return str(claims["sub"]), " ".join(scopes)


def mint(
    subject: str, scopes: list[str] | tuple[str, ...], ttl_seconds: int = 3600, *, secret: str | None = None
) -> str:
    """A signed token; used by the dev-token command and the tests."""
    import jwt

    unknown = set(scopes) - set(SCOPES)
    if unknown:
        raise ValueError(f"unknown scopes: {sorted(unknown)}")
    settings = get_settings()
    now = int(time.time())
    claims = {
        "sub": subject,
        "scope": " ".join(scopes),
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "iat": now,
        "exp": now + ttl_seconds,
    }
    return jwt.encode(claims, secret or jwt_secret(), algorithm=_ALGORITHM)


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

    return LocalUnauthorized(
        {"x-amzn-ErrorType": "UnauthorizedException", "Content-Type": "application/json"},
        b'{"message":"Unauthorized"}',
    )
