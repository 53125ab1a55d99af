"""One repository shape for the three application tables (see ``tables.py``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chalicelib.domain.access import Visibility
from chalicelib.repositories.tables import MEDICAL_RECORD, PATIENT, PRESCRIPTION, Table

if TYPE_CHECKING:  # the connection layer (and psycopg2) loads with the first connection, not at import
    from chalicelib.db import Transaction


@dataclass(frozen=True)
class StoredRow:
    values: dict[str, Any]  # the resource's columns, named as in the model
    patient_id: int  # the patient the row belongs to (for access decisions and the audit trail)
    deleted: bool
    on_team: bool = False  # whether the subject asked about is on that patient's care team


class ResourceRepository:
    def __init__(self, table: Table) -> None:
        self.table = table
        t = table
        self._returning = f"{t.select_list}, {t.patient_id_sql}, t.deleted_timestamp IS NOT NULL"
        # One probe of the care team's unique index, answered with the row itself (no extra round trip).
        self._on_team = (
            "EXISTS (SELECT 1 FROM medical_app.care_team_member m "
            f"WHERE m.patient_id = {t.patient_id_sql} AND m.member_sub = %s AND m.revoked_at IS NULL)"
        )
        insert_columns = ((t.parent_key,) if t.parent_key else ()) + t.writable
        self._insert_columns = insert_columns
        self._insert = (
            f"INSERT INTO {t.name} AS t ({', '.join(insert_columns)}) "
            f"VALUES ({', '.join(['%s'] * len(insert_columns))}) RETURNING {self._returning}"
        )
        self._soft_delete = (
            f"UPDATE {t.name} AS t SET deleted_timestamp = now() "
            f"WHERE t.{t.key} = %s AND t.deleted_timestamp IS NULL RETURNING {self._returning}"
        )

    def _select(self, member_sub: str | None) -> tuple[str, list[Any]]:
        """The select list, with the care-team flag for ``member_sub`` when one is given."""
        if member_sub is None:
            return self._returning, []
        return f"{self._returning}, {self._on_team}", [member_sub]

    def _row(self, raw: Sequence[Any]) -> StoredRow:
        n = len(self.table.columns)
        on_team = bool(raw[n + 2]) if len(raw) > n + 2 else False
        return StoredRow(dict(zip(self.table.columns, raw[:n], strict=True)), raw[n], raw[n + 1], on_team)

    def get(
        self, tx: Transaction, key: int, *, lock: str | None = None, member_sub: str | None = None
    ) -> StoredRow | None:
        """``lock``: None, "update" (to change it) or "share" (to keep it alive while adding children).
        ``member_sub``: also tell whether that subject is on the owning patient's care team."""
        suffix = {None: "", "update": " FOR UPDATE OF t", "share": " FOR SHARE OF t"}[lock]
        select, params = self._select(member_sub)
        sql = f"SELECT {select} FROM {self.table.name} t WHERE t.{self.table.key} = %s{suffix}"
        raw = tx.fetchone(sql, (*params, key))
        return self._row(raw) if raw else None

    def insert(self, tx: Transaction, values: dict[str, Any]) -> StoredRow:
        return self._row(tx.fetchone(self._insert, [values[c] for c in self._insert_columns]))

    def update(self, tx: Transaction, key: int, values: dict[str, Any]) -> StoredRow:
        columns = [c for c in values if c in self.table.writable or c == self.table.parent_key]
        assignments = ", ".join(f"{c} = %s" for c in columns)
        sql = (
            f"UPDATE {self.table.name} AS t SET {assignments} WHERE t.{self.table.key} = %s RETURNING {self._returning}"
        )
        return self._row(tx.fetchone(sql, [*(values[c] for c in columns), key]))

    def restore(self, tx: Transaction, key: int) -> StoredRow:
        sql = (
            f"UPDATE {self.table.name} AS t SET deleted_timestamp = NULL "
            f"WHERE t.{self.table.key} = %s AND t.deleted_timestamp IS NOT NULL RETURNING {self._returning}"
        )
        return self._row(tx.fetchone(sql, (key,)))

    def soft_delete(self, tx: Transaction, key: int) -> StoredRow | None:
        raw = tx.fetchone(self._soft_delete, (key,))
        return self._row(raw) if raw else None

    def list_live(
        self,
        tx: Transaction,
        *,
        conditions: Sequence[tuple[str, Any]] = (),
        after: int | None,
        limit: int,
        visibility: Visibility | None = None,
        member_sub: str | None = None,
    ) -> list[StoredRow]:
        """Live rows in key order after ``after``; ``conditions`` are (column, value) equalities.

        ``visibility`` limits the rows to those of a clinician's care-team patients or of one patient.
        It is walked patient by patient (an index range per patient, then a top-N merge), so the cost
        follows the patients visible, not the size of the table.
        """
        t = self.table
        where: list[str] = ["r.deleted_timestamp IS NULL"]
        params: list[Any] = []
        for column, value in conditions:
            if column not in t.columns:
                raise ValueError(f"unknown column {column}")
            where.append(f"r.{column} = %s")
            params.append(value)
        if after is not None:
            where.append(f"r.{t.key} > %s")
            params.append(after)
        select, select_params = self._select(member_sub)
        if visibility is None:
            keys = f"SELECT r.{t.key} FROM {t.name} r WHERE {' AND '.join(where)} ORDER BY r.{t.key} LIMIT %s"
            keys_params = [*params, limit]
        else:
            if visibility.member_sub is not None:
                patients_sql = (
                    "SELECT m.patient_id FROM medical_app.care_team_member m "
                    "WHERE m.member_sub = %s AND m.revoked_at IS NULL"
                )
                patients_params: list[Any] = [visibility.member_sub]
            else:
                patients_sql = "SELECT %s::bigint AS patient_id"
                patients_params = [visibility.patient_id]
            keys = (
                f"SELECT x.k FROM ({patients_sql}) v CROSS JOIN LATERAL ("
                f"SELECT r.{t.key} FROM {t.name} r {t.patient_join} "
                f"WHERE {' AND '.join(where)} AND {t.patient_column} = v.patient_id ORDER BY r.{t.key} LIMIT %s"
                ") x(k) ORDER BY x.k LIMIT %s"
            )
            keys_params = [*patients_params, *params, limit, limit]
        # = ANY(ARRAY(...)) rather than IN (...): the keys are computed first, then probed by primary key,
        # whatever the table's size (IN lets the planner pick a hash join over the whole table).
        sql = f"SELECT {select} FROM {t.name} t WHERE t.{t.key} = ANY(ARRAY({keys})) ORDER BY t.{t.key}"
        return [self._row(r) for r in tx.fetchall(sql, [*select_params, *keys_params])]

    def live_children(self, tx: Transaction, parent_keys: Sequence[int]) -> list[StoredRow]:
        sql = (
            f"SELECT {self._returning} FROM {self.table.name} t "
            f"WHERE t.{self.table.parent_key} = ANY(%s) AND t.deleted_timestamp IS NULL ORDER BY t.{self.table.key}"
        )
        return [self._row(r) for r in tx.fetchall(sql, (list(parent_keys),))]


patients = ResourceRepository(PATIENT)
medical_records = ResourceRepository(MEDICAL_RECORD)
prescriptions = ResourceRepository(PRESCRIPTION)


def cascade_soft_delete_patient(tx: Transaction, patient_id: int) -> None:
    """Soft-delete a patient's live visits and their live prescriptions (same transaction as the patient).

    Visits first: updating them waits for any writer that holds a visit (a prescription being created
    or moved under it locks it FOR SHARE), and the prescriptions statement that follows then sees what
    such a writer committed. The other order would miss it and leave a live prescription under a
    deleted visit.
    """
    tx.execute(
        "UPDATE medical_app.medical_record SET deleted_timestamp = now() "
        "WHERE patient_id = %s AND deleted_timestamp IS NULL",
        (patient_id,),
    )
    tx.execute(
        "UPDATE medical_app.prescription p SET deleted_timestamp = now() "
        "FROM medical_app.medical_record r "
        "WHERE p.medical_record_id = r.medical_record_id AND r.patient_id = %s AND p.deleted_timestamp IS NULL",
        (patient_id,),
    )


def cascade_soft_delete_medical_record(tx: Transaction, medical_record_id: int) -> None:
    tx.execute(
        "UPDATE medical_app.prescription SET deleted_timestamp = now() "
        "WHERE medical_record_id = %s AND deleted_timestamp IS NULL",
        (medical_record_id,),
    )


# A restore brings back exactly what the resource's own delete cascaded: the rows that transaction
# deleted carry its timestamp (now() is fixed per transaction). Rows deleted before, on their own, carry
# another and stay deleted. Run before the resource itself is restored, while its timestamp is still set.


def cascade_restore_patient(tx: Transaction, patient_id: int) -> None:
    deleted_at = "(SELECT deleted_timestamp FROM medical_app.patient WHERE patient_id = %s)"
    tx.execute(
        "UPDATE medical_app.medical_record SET deleted_timestamp = NULL "
        f"WHERE patient_id = %s AND deleted_timestamp = {deleted_at}",
        (patient_id, patient_id),
    )
    tx.execute(
        "UPDATE medical_app.prescription p SET deleted_timestamp = NULL "
        "FROM medical_app.medical_record r "
        f"WHERE p.medical_record_id = r.medical_record_id AND r.patient_id = %s AND p.deleted_timestamp = {deleted_at}",
        (patient_id, patient_id),
    )


def cascade_restore_medical_record(tx: Transaction, medical_record_id: int) -> None:
    tx.execute(
        "UPDATE medical_app.prescription SET deleted_timestamp = NULL WHERE medical_record_id = %s AND "
        "deleted_timestamp = (SELECT deleted_timestamp FROM medical_app.medical_record WHERE medical_record_id = %s)",
        (medical_record_id, medical_record_id),
    )
