"""Care-team memberships: who may see a patient. Revocations keep their row (history of access rights)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the connection layer (and psycopg2) loads with the first connection, not at import
    from chalicelib.db import Transaction


_COLUMNS = ("care_team_member_id", "patient_id", "member_sub", "role", "granted_by", "granted_at",
            "revoked_by", "revoked_at")
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM medical_app.care_team_member"


def _member(raw: tuple | None) -> dict[str, Any] | None:
    return dict(zip(_COLUMNS, raw, strict=True)) if raw else None


def active(tx: Transaction, patient_id: int, member_sub: str, *, lock: bool = False) -> dict[str, Any] | None:
    suffix = " FOR UPDATE" if lock else ""
    return _member(
        tx.fetchone(
            f"{_SELECT} WHERE patient_id = %s AND member_sub = %s AND revoked_at IS NULL{suffix}",
            (patient_id, member_sub),
        )
    )


def grant(tx: Transaction, patient_id: int, member_sub: str, role: str, granted_by: str) -> dict[str, Any] | None:
    """Add an active membership; None when one already exists (a concurrent grant won)."""
    return _member(
        tx.fetchone(
            "INSERT INTO medical_app.care_team_member (patient_id, member_sub, role, granted_by) "
            "VALUES (%s, %s, %s, %s) ON CONFLICT (patient_id, member_sub) WHERE revoked_at IS NULL DO NOTHING "
            f"RETURNING {', '.join(_COLUMNS)}",
            (patient_id, member_sub, role, granted_by),
        )
    )


def revoke(tx: Transaction, care_team_member_id: int, revoked_by: str) -> None:
    tx.execute(
        "UPDATE medical_app.care_team_member SET revoked_at = now(), revoked_by = %s "
        "WHERE care_team_member_id = %s AND revoked_at IS NULL",
        (revoked_by, care_team_member_id),
    )


def for_patient(tx: Transaction, patient_id: int, *, after: int | None, limit: int) -> list[dict[str, Any]]:
    """Every membership of the patient, active and revoked, oldest first (keyset on the id)."""
    return [
        _member(r)
        for r in tx.fetchall(
            f"{_SELECT} WHERE patient_id = %s AND (%s::bigint IS NULL OR care_team_member_id > %s) "
            "ORDER BY care_team_member_id LIMIT %s",
            (patient_id, after, after, limit),
        )
    ]
