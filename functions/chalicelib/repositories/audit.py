"""The append-only audit trail and its read sides (who touched a patient; break-the-glass review)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

_COLUMNS = (
    "audit_event_id", "occurred_at", "actor", "actor_kind", "action", "resource_type",
    "resource_id", "patient_ids", "request_id", "outcome", "reason", "break_glass",
)

if TYPE_CHECKING:  # the connection layer (and psycopg2) loads with the first connection, not at import
    from chalicelib.db import Transaction


def record(
    tx: Transaction,
    *,
    actor: str,
    actor_kind: str,
    action: str,
    resource_type: str,
    resource_id: int | None,
    patient_ids: Sequence[int],
    request_id: str | None,
    outcome: str,
    source_ip: str | None,
    user_agent: str | None,
    reason: str | None,
    break_glass: bool,
) -> None:
    """Queue the event to be sent with COMMIT: it is durable exactly when the data it describes is."""
    tx.execute_at_commit(
        "INSERT INTO medical_app.audit_event (actor, actor_kind, action, resource_type, resource_id, patient_ids, "
        "request_id, outcome, source_ip, user_agent, reason, break_glass) "
        "VALUES (%s, %s, %s, %s, %s, %s::bigint[], %s, %s, %s, %s, %s, %s)",
        (
            actor, actor_kind, action, resource_type, resource_id, sorted(set(patient_ids)),
            request_id, outcome, source_ip, user_agent, reason, break_glass,
        ),
    )


def for_patient(tx: Transaction, patient_id: int, *, before: int | None, limit: int) -> list[dict[str, Any]]:
    """Events naming the patient, newest first, keyset-paginated on the event id."""
    sql = (
        f"SELECT {', '.join(_COLUMNS)} FROM medical_app.audit_event "
        "WHERE patient_ids @> ARRAY[%s]::bigint[] AND (%s::bigint IS NULL OR audit_event_id < %s) "
        "ORDER BY audit_event_id DESC LIMIT %s"
    )
    return [dict(zip(_COLUMNS, r, strict=True)) for r in tx.fetchall(sql, (patient_id, before, before, limit))]


def break_glass_since(tx: Transaction, since: datetime, *, after: int | None, limit: int) -> list[dict[str, Any]]:
    """Break-the-glass accesses at or after ``since``, oldest first (keyset on the event id)."""
    sql = (
        f"SELECT {', '.join(_COLUMNS)} FROM medical_app.audit_event "
        "WHERE break_glass AND occurred_at >= %s AND (%s::bigint IS NULL OR audit_event_id > %s) "
        "ORDER BY audit_event_id LIMIT %s"
    )
    return [dict(zip(_COLUMNS, r, strict=True)) for r in tx.fetchall(sql, (since, after, after, limit))]
