"""The local state of `make run` / `make up`: where it lives and the secrets generated for it.

Everything is kept in ``.local/`` (``MEDREC_LOCAL_DIR`` moves it; the tests run `up` in a temporary
directory), never committed: the embedded PostgreSQL's data, logs, and ``secrets.json`` (the dev-token
signing key, the local logins' passwords, the pseudonym key), generated once and kept between runs.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCAL = Path(os.environ.get("MEDREC_LOCAL_DIR") or ROOT / ".local")
SECRETS_FILE = LOCAL / "secrets.json"
STACK_FILE = LOCAL / "stack.json"  # what `make up` deployed: API URL, state machine, endpoints
PID_FILE = LOCAL / "up.pid"
PIPELINE_ENV = LOCAL / "pipeline.env"
# Generated on first use; a key added by a later version is generated when first missing.
_GENERATED = {
    "jwt_secret": lambda: secrets.token_urlsafe(48),
    "api_password": lambda: secrets.token_urlsafe(24),
    "pipeline_password": lambda: secrets.token_urlsafe(24),
    # The de-identified table's pseudonyms: kept, never rotated by a restart.
    "pseudonym_key": lambda: secrets.token_urlsafe(32),
}


def local_secrets() -> dict[str, str]:
    """The local secrets, created (file mode 0600) or completed on first use."""
    values = json.loads(SECRETS_FILE.read_text()) if SECRETS_FILE.exists() else {}
    missing = {name: make() for name, make in _GENERATED.items() if name not in values}
    if missing:
        values.update(missing)
        LOCAL.mkdir(parents=True, exist_ok=True)
        SECRETS_FILE.write_text(json.dumps(values))
        SECRETS_FILE.chmod(0o600)
    return values
