"""The claim checks every accepted token passes, whoever issued it.

The JWT library verifies the signature; everything the payload says is checked here, with exact
types: a JSON string where a number belongs ("exp": "9999999999") is refused rather than converted,
and booleans, NaN and infinities are not numbers. Keeping these checks free of the JWT library makes
them the same for dev tokens and OIDC tokens, and testable on plain dicts.

Failures raise ClaimError with a short fixed reason naming the claim, never its value, so that the
reason can be logged.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

MAX_SUBJECT_LENGTH = 255
MAX_PATIENT_ID = 2**63 - 1  # a PostgreSQL bigint
_MAX_PATIENT_ID_DIGITS = len(str(MAX_PATIENT_ID))


class ClaimError(Exception):
    """A claim is missing, malformed or out of bounds; the message is a fixed reason."""


@dataclass(frozen=True)
class Expected:
    """What the verifier expects of one issuer's tokens."""

    issuer: str
    audience: str
    max_lifetime_seconds: int
    leeway_seconds: int = 30
    # Cognito access tokens carry no "aud": the app client id travels as "client_id" instead.
    allow_cognito_access_tokens: bool = False
    # Cognito-style "<prefix>/read" scopes count as "read" only under this prefix.
    scope_prefix: str | None = None


@dataclass(frozen=True)
class Checked:
    subject: str
    scopes: tuple[str, ...]
    patient_id: int | None
    expires_at: int


def is_number(value: Any) -> bool:
    """A JSON number: int or finite float, never bool and never a numeric string."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, float) and math.isfinite(value)


def check(claims: dict[str, Any], expected: Expected, known_scopes: Iterable[str], now: float) -> Checked:
    """Return what the authorizer passes on, or raise ClaimError."""
    subject = _subject(claims.get("sub"))
    expires_at = _times(claims, expected, now)
    if claims.get("iss") != expected.issuer:
        raise ClaimError("wrong or missing iss")
    _audience(claims, expected)
    return Checked(
        subject=subject,
        scopes=granted_scopes(claims.get("scope"), known_scopes, expected.scope_prefix),
        patient_id=patient_id(claims["patient_id"]) if "patient_id" in claims else None,
        expires_at=expires_at,
    )


def _subject(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ClaimError("missing or blank sub")
    if len(value) > MAX_SUBJECT_LENGTH:
        raise ClaimError("sub too long")
    return value


def _times(claims: dict[str, Any], expected: Expected, now: float) -> int:
    """Check exp, iat, nbf and the lifetime; return exp floored to whole seconds."""
    exp, iat = claims.get("exp"), claims.get("iat")
    if not is_number(exp):
        raise ClaimError("missing or non-numeric exp")
    if not is_number(iat):
        raise ClaimError("missing or non-numeric iat")
    leeway = expected.leeway_seconds
    if exp <= now - leeway:
        raise ClaimError("expired")
    if iat > now + leeway:
        raise ClaimError("iat in the future")
    if "nbf" in claims:
        nbf = claims["nbf"]
        if not is_number(nbf):
            raise ClaimError("non-numeric nbf")
        if nbf > now + leeway:
            raise ClaimError("not yet valid (nbf)")
    if exp <= iat:
        raise ClaimError("exp not after iat")
    # A bounded lifetime limits what a leaked token is worth.
    if exp - iat > expected.max_lifetime_seconds:
        raise ClaimError("lifetime too long")
    return math.floor(exp)


def _audience(claims: dict[str, Any], expected: Expected) -> None:
    purpose = claims.get("token_use")  # Cognito's: "access" or "id"
    if purpose is not None and purpose != "access":
        raise ClaimError("not an access token")  # e.g. a Cognito ID token: for the client, not for APIs
    if "aud" in claims:
        aud = claims["aud"]
        audiences = [aud] if isinstance(aud, str) else aud
        if not isinstance(audiences, list) or not all(isinstance(a, str) for a in audiences):
            raise ClaimError("malformed aud")
        if expected.audience not in audiences:
            raise ClaimError("wrong aud")
        return
    if not expected.allow_cognito_access_tokens:
        raise ClaimError("missing aud")
    if purpose != "access" or claims.get("client_id") != expected.audience:
        raise ClaimError("missing aud and not an access token of the app client")


def granted_scopes(value: Any, known_scopes: Iterable[str], prefix: str | None = None) -> tuple[str, ...]:
    """The known scopes a space-separated ``scope`` claim grants, in the order of ``known_scopes``.

    Unknown values grant nothing. ``<prefix>/read`` counts as ``read`` only when a prefix is configured
    and matches exactly, so scopes of another resource server on the same issuer grant nothing.
    """
    if value is None:
        return ()
    if not isinstance(value, str):
        raise ClaimError("malformed scope")
    granted = set()
    for item in value.split():
        owner, slash, name = item.rpartition("/")
        if not slash:
            granted.add(item)
        elif prefix and owner == prefix:
            granted.add(name)
    return tuple(s for s in known_scopes if s in granted)


def patient_id(value: Any) -> int:
    """The value of the optional ``patient_id`` claim of a patient-portal token: a positive bigint.

    Accepted as a JSON integer or a string of ASCII digits; anything else (null, a negative or zero id,
    a float, a boolean, non-ASCII digits such as "١") is refused rather than ignored, because ignoring
    it would turn a patient's token into a clinician's.
    """
    if isinstance(value, str):
        if not (value.isascii() and value.isdigit() and len(value) <= _MAX_PATIENT_ID_DIGITS):
            raise ClaimError("malformed patient_id")
        value = int(value)
    elif isinstance(value, bool) or not isinstance(value, int):
        raise ClaimError("malformed patient_id")
    if not 0 < value <= MAX_PATIENT_ID:
        raise ClaimError("patient_id out of range")
    return value
