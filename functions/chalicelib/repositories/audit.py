"""The append-only audit trail and its read side (who touched a patient)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from chalicelib.db import Transaction

_COLUMNS = (
    "audit_event_id", "occurred_at", "actor", "action", "resource_type",
    "resource_id", "patient_ids", "request_id", "outcome",
)


def record(
    tx: Transaction,
    *,
    actor: str,
    action: str,
    resource_type: str,
    resource_id: int | None,
    patient_ids: Sequence[int],
    request_id: str | None,
    outcome: str,
) -> None:
    tx.execute_at_commit(
        "INSERT INTO medical_app.audit_event "
        "(actor, action, resource_type, resource_id, patient_ids, request_id, outcome) "
        "VALUES (%s, %s, %s, %s, %s::bigint[], %s, %s)",
        (actor, action, resource_type, resource_id, sorted(set(patient_ids)), request_id, outcome),
    )


def for_patient(tx: Transaction, patient_id: int, *, before: int | None, limit: int) -> list[dict[str, Any]]:
    """Events naming the patient, newest first, keyset-paginated on the event id."""
    sql = (
        f"SELECT {', '.join(_COLUMNS)} FROM medical_app.audit_event "
        "WHERE patient_ids @> ARRAY[%s]::bigint[] AND (%s::bigint IS NULL OR audit_event_id < %s) "
        "ORDER BY audit_event_id DESC LIMIT %s"
    )
    return [dict(zip(_COLUMNS, r, strict=True)) for r in tx.fetchall(sql, (patient_id, before, before, limit))]

