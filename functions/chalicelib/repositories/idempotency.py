"""Stored first responses for POSTs that carry an Idempotency-Key."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the connection layer (and psycopg2) loads with the first connection, not at import
    from chalicelib.db import Transaction



@dataclass(frozen=True)
class StoredResponse:
    request_fingerprint: str
    resource_type: str | None
    resource_json: str | None


def claim(tx: Transaction, actor: str, key: str, fingerprint: str) -> StoredResponse | None:
    """Claim the key for this request; if another request holds it, return what it stored.

    A concurrent request with the same key blocks on the primary key until the first one commits
    (then sees its response) or rolls back (then claims the key itself).
    """
    claimed = tx.fetchone(
        "INSERT INTO medical_app.idempotency_key (actor, idempotency_key, request_fingerprint) "
        "VALUES (%s, %s, %s) ON CONFLICT DO NOTHING RETURNING 1",
        (actor, key, fingerprint),
    )
    if claimed:
        return None
    row = tx.fetchone(
        "SELECT request_fingerprint, resource_type, resource::text FROM medical_app.idempotency_key "
        "WHERE actor = %s AND idempotency_key = %s",
        (actor, key),
    )
    return StoredResponse(*row)


def complete(tx: Transaction, actor: str, key: str, resource_type: str, resource_json: str) -> None:
    tx.execute(
        "UPDATE medical_app.idempotency_key SET resource_type = %s, resource = %s::jsonb "
        "WHERE actor = %s AND idempotency_key = %s",
        (resource_type, resource_json, actor, key),
    )
