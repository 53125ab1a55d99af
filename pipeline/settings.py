"""Pipeline configuration, read once from the environment."""

from __future__ import annotations

import hashlib
import hmac
import importlib.util
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

PIPELINE_DIR = Path(__file__).resolve().parent


class PipelineConfigurationError(RuntimeError):
    pass


PSEUDONYM_KEY_MIN_BYTES = 32
_FINGERPRINT_MESSAGE = "medrec/pseudonym-key-fingerprint/v1"


@dataclass(frozen=True)
class PseudonymKey:
    """The secret key of the de-identified table's pseudonyms (HMAC-SHA256, RFC 2104).

    ``PSEUDONYM_KEY``, as its UTF-8 bytes, at least 32 of them (e.g. ``secrets.token_urlsafe(32)``).
    Pseudonyms stay stable only as long as the key does: a new key gives every patient, visit and
    row a new pseudonym (the refresh then rebuilds the de-identified table). The key never leaves
    this object except as HMAC pads for the refresh's own transaction; its repr shows only a
    fingerprint (an HMAC of a constant, which does not reveal the key).
    """

    secret: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.secret) < PSEUDONYM_KEY_MIN_BYTES:
            raise PipelineConfigurationError(
                f"PSEUDONYM_KEY must be at least {PSEUDONYM_KEY_MIN_BYTES} bytes "
                '(python -c "import secrets; print(secrets.token_urlsafe(32))")'
            )

    @classmethod
    def from_text(cls, text: str) -> PseudonymKey:
        return cls(text.encode("utf-8"))

    def __repr__(self) -> str:
        return f"PseudonymKey(fingerprint={self.fingerprint[:12]}…)"

    def pseudonym(self, message: str) -> str:
        """HMAC-SHA256 of ``message`` in hex: what SQL's ``analytic.pseudonym(message)`` returns."""
        return hmac.new(self.secret, message.encode("utf-8"), hashlib.sha256).hexdigest()

    @property
    def fingerprint(self) -> str:
        """Identifies the key in the run log (to notice a new key) without revealing it."""
        return self.pseudonym(_FINGERPRINT_MESSAGE)

    def hmac_pads(self) -> tuple[str, str]:
        """The inner and outer HMAC-SHA256 pads (key xor 0x36…, key xor 0x5c…) in hex, for SQL."""
        block = hashlib.sha256(self.secret).digest() if len(self.secret) > 64 else self.secret
        block = block.ljust(64, b"\0")
        return bytes(b ^ 0x36 for b in block).hex(), bytes(b ^ 0x5C for b in block).hex()


def find_sling_binary() -> str:
    """SLING_BINARY, else the binary shipped in the sling-linux-amd64 wheel, else `sling` on PATH.

    Never downloads: the `sling` Python wrapper fetches a binary at first use, which fails offline.
    """
    explicit = os.environ.get("SLING_BINARY")
    if explicit:
        return explicit
    spec = importlib.util.find_spec("sling_linux_amd64")
    if spec and spec.origin:
        candidate = Path(spec.origin).parent / "bin" / "sling-linux-amd64"
        if candidate.exists():
            return str(candidate)
    on_path = shutil.which("sling")
    if on_path:
        return on_path
    raise PipelineConfigurationError("no Sling binary: pip install sling==1.4.10.post2 or set SLING_BINARY")


@dataclass(frozen=True)
class PipelineSettings:
    app_db_url: str        # the application database, as a read-only (medical_reader) login
    analytic_db_url: str   # the analytic database, as its owner
    sling_home: Path
    lock_timeout_seconds: float = 600.0
    global_check_interval_seconds: float = 3600.0
    pseudonym_key: PseudonymKey | None = None  # required by a refresh; see PseudonymKey

    def require_pseudonym_key(self) -> PseudonymKey:
        if self.pseudonym_key is None:
            raise PipelineConfigurationError(
                "set PSEUDONYM_KEY: the secret key (at least 32 bytes) of the de-identified table's pseudonyms; "
                "keep it stable, a new key changes every pseudonym"
            )
        return self.pseudonym_key

    @classmethod
    def from_env(cls) -> PipelineSettings:
        missing = [name for name in ("APP_DB_URL", "ANALYTIC_DB_URL", "PSEUDONYM_KEY") if not os.environ.get(name)]
        if missing:
            raise PipelineConfigurationError(
                f"set {', '.join(missing)}"
                + (" (PSEUDONYM_KEY: the secret key, at least 32 bytes, of the de-identified table's pseudonyms)"
                   if "PSEUDONYM_KEY" in missing else "")
            )
        return cls(
            app_db_url=_verified(os.environ["APP_DB_URL"]),
            analytic_db_url=_verified(os.environ["ANALYTIC_DB_URL"]),
            sling_home=Path(os.environ.get("SLING_HOME_DIR", Path.home() / ".sling")),
            lock_timeout_seconds=float(os.environ.get("REFRESH_LOCK_TIMEOUT_SECONDS", "600")),
            global_check_interval_seconds=float(os.environ.get("REFRESH_GLOBAL_CHECK_SECONDS", "3600")),
            pseudonym_key=PseudonymKey.from_text(os.environ["PSEUDONYM_KEY"]),
        )


def _verified(url: str) -> str:
    """The URL that verifies a database not on this machine (verify-full, DATABASE_CA_BUNDLE): psycopg2
    and Sling both read it, so both verify the server (chalicelib/transport.py holds the rule)."""
    from chalicelib.transport import InsecureConnection, secure_url

    try:
        return secure_url(url, os.environ.get("DATABASE_CA_BUNDLE") or None)
    except InsecureConnection as exc:
        raise PipelineConfigurationError(str(exc)) from None
