"""The kept versions of the application tables (``medical_app.resource_version``, migration 0006).

A version row holds the whole row as JSON; it is read back through ``jsonb_populate_record`` with the
table's own row type, so each version comes out with the same columns, types and names as the live row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from chalicelib.repositories.tables import Table

if TYPE_CHECKING:  # the connection layer (and psycopg2) loads with the first connection, not at import
    from chalicelib.db import Transaction


@dataclass(frozen=True)
class StoredVersion:
    version: int
    recorded_at: datetime
    actor: str
    change: str                     # create, update, delete or restore
    changed_fields: list[str]       # column names
    values: dict[str, Any]          # the row as it was, named as in the model
    deleted: bool


class HistoryRepository:
    def __init__(self, table: Table) -> None:
        self.table = table
        columns = ", ".join(f"r.{c}" for c in table.columns)
        self._select = (
            "SELECT v.version, v.recorded_at, v.actor, v.change, v.changed_fields, "
            f"{columns}, r.deleted_timestamp IS NOT NULL "
            "FROM medical_app.resource_version v "
            f"CROSS JOIN LATERAL jsonb_populate_record(NULL::{table.name}, v.data) r "
            "WHERE v.resource_type = %s AND v.resource_id = %s"
        )

    def _version(self, raw: Sequence[Any]) -> StoredVersion:
        n = len(self.table.columns)
        values = dict(zip(self.table.columns, raw[5:5 + n], strict=True))
        return StoredVersion(raw[0], raw[1], raw[2], raw[3], list(raw[4]), values, bool(raw[5 + n]))

    def list(
        self, tx: Transaction, key: int, *, after: int | None, limit: int, newest_first: bool = False
    ) -> list[StoredVersion]:
        """Versions in order, oldest first, after version ``after``; or newest first, below version ``after``."""
        if newest_first:
            sql = f"{self._select} AND v.version < %s ORDER BY v.version DESC LIMIT %s"
            bound = after if after is not None else 2**31 - 1
        else:
            sql = f"{self._select} AND v.version > %s ORDER BY v.version LIMIT %s"
            bound = after or 0
        return [self._version(r) for r in tx.fetchall(sql, (self.table.resource, key, bound, limit))]

    def get(self, tx: Transaction, key: int, version: int) -> StoredVersion | None:
        raw = tx.fetchone(f"{self._select} AND v.version = %s", (self.table.resource, key, version))
        return self._version(raw) if raw else None
