"""Signing keys of the OIDC issuer, fetched from its JWKS URL and cached for the container's life.

Keys are fetched lazily, on the first OIDC token, so a container that only sees dev tokens never
calls the issuer. A token naming a key id the cache does not hold triggers a refetch: that is how a
key rotation is picked up without a restart. Fetches are throttled to one per
REFETCH_INTERVAL_SECONDS, so tokens with made-up key ids cannot turn the authorizer into a load
generator against the issuer, and a slow issuer costs at most FETCH_TIMEOUT_SECONDS. A failed fetch
counts toward the throttle, keeps the keys already held and is logged by exception class only; the
tokens it leaves unverifiable are refused (401), never an error.

Only public RSA (≥ 2048 bits) and P-256 keys meant for signatures are kept, and a key is used only
for the one algorithm it fits: an RSA key never verifies an ES256 token, and no key here ever
verifies an HS* token.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from typing import Any

REFETCH_INTERVAL_SECONDS = 30.0
FETCH_TIMEOUT_SECONDS = 3.0
MAX_JWKS_BYTES = 256 * 1024
MIN_RSA_KEY_BITS = 2048


class KeyUnavailable(Exception):
    """No usable key for the token; the message is a fixed reason, safe to log."""


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect could lead from https to plain http: the JWKS URL is used as configured or not at all."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


_opener = urllib.request.build_opener(_NoRedirects)


def _fetch(url: str) -> bytes:
    request = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310 - scheme checked in config
    with _opener.open(request, timeout=FETCH_TIMEOUT_SECONDS) as response:
        body = response.read(MAX_JWKS_BYTES + 1)
    if len(body) > MAX_JWKS_BYTES:
        raise ValueError("JWKS document too large")
    return body


def _fits(key: Any, alg: str) -> bool:
    """Whether a parsed key may verify a token of ``alg``: its type, curve, size and declared alg."""
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    if key.algorithm_name != alg:  # the JWK's "alg", or what its kty/crv imply
        return False
    if alg == "RS256":
        return isinstance(key.key, rsa.RSAPublicKey) and key.key.key_size >= MIN_RSA_KEY_BITS
    if alg == "ES256":
        return isinstance(key.key, ec.EllipticCurvePublicKey) and isinstance(key.key.curve, ec.SECP256R1)
    return False


def _parse(document: bytes) -> dict[str, Any]:
    """kid -> PyJWK for the signing keys of a JWKS document (keys of other types or uses are skipped)."""
    import jwt

    data = json.loads(document)
    if not isinstance(data, dict):
        raise ValueError("not a JWK set")
    keys = {}
    for key in jwt.PyJWKSet.from_dict(data):
        if isinstance(key.key_id, str) and key.key_id and key.public_key_use in (None, "sig"):
            keys[key.key_id] = key
    return keys


class KeySet:
    """The issuer's keys, by kid, with throttled refetching."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._keys: dict[str, Any] = {}
        self._attempted_at: float | None = None  # monotonic time of the last fetch, successful or not
        self._lock = threading.Lock()

    def key_for(self, kid: str, alg: str) -> Any:
        """The PyJWK with this kid that fits ``alg``, or raise KeyUnavailable."""
        key = self._keys.get(kid)
        if key is None:
            with self._lock:  # one fetch at a time, even under a threaded local server
                key = self._keys.get(kid)
                if key is None and self._may_fetch():
                    self._refresh()
                    key = self._keys.get(kid)
        if key is None:
            raise KeyUnavailable("unknown kid" if self._keys else "no signing keys")
        if not _fits(key, alg):
            raise KeyUnavailable("key does not fit alg")
        return key

    def _may_fetch(self) -> bool:
        return self._attempted_at is None or time.monotonic() - self._attempted_at >= REFETCH_INTERVAL_SECONDS

    def _refresh(self) -> None:
        from chalicelib.observability import logger

        self._attempted_at = time.monotonic()
        try:
            keys = _parse(_fetch(self.url))
        except Exception as exc:  # any failure to get keys is a 401 for this token, never a crash
            logger.warning("jwks fetch failed", extra={"reason": type(exc).__name__})
            return
        self._keys = keys


_key_set: KeySet | None = None


def key_set(url: str) -> KeySet:
    """The container's key set for this JWKS URL (a new one when the URL changed)."""
    global _key_set
    if _key_set is None or _key_set.url != url:
        _key_set = KeySet(url)
    return _key_set


def reset() -> None:
    """Forget the cached keys (tests; a container otherwise keeps them for its life)."""
    global _key_set
    _key_set = None
