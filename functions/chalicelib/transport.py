"""Transport security of database connections: every connection that leaves the machine verifies the server.

A connection to a loopback host (or a Unix socket) stays as configured. Any other host gets
``sslmode=verify-full`` with the CA bundle from configuration; a connection string that asks for less
(``disable``, ``allow``, ``prefer``, ``require``, ``verify-ca``) is refused with a message saying what to
set, rather than quietly sending patient data in clear text or to an unverified server. Used by the API,
the audit sealer, the analytics pipeline (psycopg2 and Sling) and the deploy command alike.
"""

from __future__ import annotations

import hashlib
import ipaddress
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

VERIFY_FULL = "verify-full"


class InsecureConnection(ValueError):
    """A connection string that would not verify a non-loopback server."""


def is_loopback(host: str | None) -> bool:
    """True for no host / a Unix socket directory / localhost / 127.0.0.0/8 / ::1 (every host of a list)."""
    if not host:
        return True
    for name in host.split(","):
        name = name.strip().strip("[]")
        if not name or name.startswith("/") or name == "localhost":
            continue
        try:
            if not ipaddress.ip_address(name).is_loopback:
                return False
        except ValueError:  # a host name other than localhost
            return False
    return True


def ca_bundle_file(ca_bundle: str | None) -> str | None:
    """A path for ``ca_bundle``: a path is used as is; PEM text (a small bundle passed as a template
    parameter, as the compose stack does) is written once to a file that libpq can read."""
    if not ca_bundle or not ca_bundle.lstrip().startswith("-----BEGIN"):
        return ca_bundle
    path = Path(tempfile.gettempdir()) / f"database-ca-{hashlib.sha256(ca_bundle.encode()).hexdigest()[:16]}.pem"
    if not path.exists():
        path.write_text(ca_bundle, encoding="ascii")
    return str(path)


def _secure(params: dict[str, Any], ca_bundle: str | None, verify_loopback: bool) -> dict[str, Any]:
    if is_loopback(params.get("host")) and not verify_loopback:
        return params
    mode = params.get("sslmode")
    if mode not in (None, VERIFY_FULL):
        raise InsecureConnection(
            f"sslmode={mode} is refused for a database that is not on this machine: "
            f"use sslmode={VERIFY_FULL} (or leave sslmode out) with the CA bundle in DATABASE_CA_BUNDLE"
        )
    secured = {**params, "sslmode": VERIFY_FULL}
    if not secured.get("sslrootcert"):
        if not ca_bundle:
            raise InsecureConnection(
                "set DATABASE_CA_BUNDLE to the CA bundle that signed the database's certificate "
                "(for Amazon RDS: the global bundle), or name it as sslrootcert in the connection string"
            )
        secured["sslrootcert"] = ca_bundle_file(ca_bundle)
    return secured


def secure_dsn(dsn: str, ca_bundle: str | None, *, verify_loopback: bool = False) -> str:
    """``dsn`` (URL or key=value) made to verify the server when it is not on this machine."""
    from psycopg2.extensions import make_dsn, parse_dsn

    params = parse_dsn(dsn)
    secured = _secure(params, ca_bundle, verify_loopback)
    return dsn if secured is params else make_dsn(**secured)


def secure_url(url: str, ca_bundle: str | None, *, verify_loopback: bool = False) -> str:
    """The same for a ``postgresql://`` URL kept as a URL (Sling reads connections as URLs)."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    params = {**query, "host": parts.hostname or query.get("host")}
    secured = _secure(params, ca_bundle, verify_loopback)
    if secured is params:
        return url
    query.update({k: secured[k] for k in ("sslmode", "sslrootcert")})
    return urlunsplit(parts._replace(query=urlencode(query)))


def connect(dsn: str, **kwargs: Any):
    """psycopg2.connect for the operator's commands (migrate, create-login, seal, verify), same rule.

    The CA bundle is read from DATABASE_CA_BUNDLE here, not from the API's cached settings: a command
    may set other configuration (a dev key) only after it has migrated."""
    import os

    import psycopg2

    return psycopg2.connect(secure_dsn(dsn, os.environ.get("DATABASE_CA_BUNDLE") or None), **kwargs)
