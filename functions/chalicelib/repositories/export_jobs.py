"""Bulk export jobs, their per-type progress and their files (migration 0009); SQL for the export only."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the connection layer (and psycopg2) loads with the first connection, not at import
    from chalicelib.db import Transaction
    from chalicelib.domain.export import ExportRequest

_JOB_COLUMNS = (
    "export_job_id, requested_by, export_level, resource_types, since, transaction_time, status, "
    "execution_arn, error"
)


@dataclass(frozen=True)
class ExportJob:
    job_id: int
    requested_by: str
    level: str
    resource_types: tuple[str, ...]
    since: datetime | None
    transaction_time: datetime
    status: str
    execution_arn: str | None
    error: str | None


@dataclass(frozen=True)
class Progress:
    resource_type: str
    last_key: int
    parts: int
    resources: int
    done: bool


@dataclass(frozen=True)
class StoredFile:
    resource_type: str
    part: int
    object_key: str
    resources: int


def _job(row: tuple | None) -> ExportJob | None:
    if row is None:
        return None
    return ExportJob(row[0], row[1], row[2], tuple(row[3]), row[4], row[5], row[6], row[7], row[8])


def insert(tx: Transaction, requested_by: str, request_id: str | None, request: ExportRequest) -> int | None:
    """A new job with a progress row per type; None when the same request (key, or active fingerprint) exists."""
    row = tx.fetchone(
        "INSERT INTO medical_app.export_job (requested_by, request_id, export_level, resource_types, since, "
        "idempotency_key, request_fingerprint) VALUES (%s, %s, %s, %s::text[], %s, %s, %s) "
        "ON CONFLICT DO NOTHING RETURNING export_job_id",
        (requested_by, request_id, request.level, list(request.resource_types), request.since,
         request.idempotency_key, request.fingerprint),
    )
    if row is None:
        return None
    tx.execute(
        "INSERT INTO medical_app.export_progress (export_job_id, resource_type) SELECT %s, unnest(%s::text[])",
        (row[0], list(request.resource_types)),
    )
    return row[0]


def find_retry(tx: Transaction, requested_by: str, request: ExportRequest) -> tuple[int, str] | None:
    """The job a retried kick-off started, and that job's request fingerprint: by the Idempotency-Key, else
    the same request still active."""
    if request.idempotency_key is not None:
        row = tx.fetchone(
            "SELECT export_job_id, request_fingerprint FROM medical_app.export_job "
            "WHERE requested_by = %s AND idempotency_key = %s",
            (requested_by, request.idempotency_key),
        )
        if row is not None:
            return row[0], row[1]
    row = tx.fetchone(
        "SELECT export_job_id, request_fingerprint FROM medical_app.export_job "
        "WHERE requested_by = %s AND request_fingerprint = %s AND status IN ('accepted', 'running')",
        (requested_by, request.fingerprint),
    )
    return None if row is None else (row[0], row[1])


def get(tx: Transaction, job_id: int, *, lock: bool = False) -> ExportJob | None:
    # FOR SHARE: a worker recording a file waits for a cancel that is committing, and then sees it.
    suffix = " FOR SHARE" if lock else ""
    return _job(tx.fetchone(
        f"SELECT {_JOB_COLUMNS} FROM medical_app.export_job WHERE export_job_id = %s{suffix}", (job_id,)
    ))


def set_handle(tx: Transaction, job_id: int, execution_arn: str) -> None:
    tx.execute(
        "UPDATE medical_app.export_job SET execution_arn = %s, updated_at = now() WHERE export_job_id = %s",
        (execution_arn, job_id),
    )


def mark_running(tx: Transaction, job_id: int) -> None:
    tx.execute(
        "UPDATE medical_app.export_job SET status = 'running', updated_at = now() "
        "WHERE export_job_id = %s AND status = 'accepted'",
        (job_id,),
    )


def finish(tx: Transaction, job_id: int, status: str, error: str | None) -> bool:
    """End an active job (completed, failed, cancelled); a job that has ended stays as it ended, except that a
    completed one may still be cancelled (its files are then deleted)."""
    ended_from = ("accepted", "running", "completed") if status == "cancelled" else ("accepted", "running")
    tx.execute(
        "UPDATE medical_app.export_job SET status = %s, error = %s, updated_at = now(), finished_at = now() "
        "WHERE export_job_id = %s AND status = ANY(%s::text[])",
        (status, error, job_id, list(ended_from)),
    )
    return tx.rowcount == 1


def writers_started_before(tx: Transaction, instant: datetime) -> int:
    """Other transactions of this database still open that began before ``instant``. A row such a
    transaction writes is stamped with its start (``updated_timestamp = now()``), before ``instant``, yet
    becomes visible only when it commits. PostgreSQL shows a session's transaction start to sessions of
    the same login: the API's writers are."""
    row = tx.fetchone(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
        "AND xact_start < %s",
        (instant,),
    )
    return row[0]


def progress(tx: Transaction, job_id: int) -> list[Progress]:
    rows = tx.fetchall(
        "SELECT resource_type, last_key, parts, resources, done FROM medical_app.export_progress "
        "WHERE export_job_id = %s",
        (job_id,),
    )
    return [Progress(*row) for row in rows]


def progress_text(tx: Transaction, job: ExportJob) -> str:
    """X-Progress: per type, resources written so far (counts only)."""
    by_type = {p.resource_type: p for p in progress(tx, job.job_id)}
    parts = []
    for name in job.resource_types:
        p = by_type.get(name)
        if p is None:
            continue
        parts.append(f"{name} {'done' if p.done else 'in progress'}, {p.resources} written")
    return "; ".join(parts) or job.status


def record_file(tx: Transaction, job_id: int, resource_type: str, part: int, object_key: str, resources: int,
                last_key: int, done: bool) -> None:
    """A complete file and the checkpoint after it, in one transaction: a resumed worker starts after it."""
    if resources:
        tx.execute(
            "INSERT INTO medical_app.export_file (export_job_id, resource_type, part, object_key, resources) "
            "VALUES (%s, %s, %s, %s, %s)",
            (job_id, resource_type, part, object_key, resources),
        )
    tx.execute(
        "UPDATE medical_app.export_progress SET last_key = %s, parts = parts + %s, resources = resources + %s, "
        "done = %s WHERE export_job_id = %s AND resource_type = %s",
        (last_key, 1 if resources else 0, resources, done, job_id, resource_type),
    )


def files(tx: Transaction, job_id: int) -> list[StoredFile]:
    rows = tx.fetchall(
        "SELECT f.resource_type, f.part, f.object_key, f.resources FROM medical_app.export_file f "
        "JOIN medical_app.export_job j USING (export_job_id) "
        "WHERE f.export_job_id = %s "
        "ORDER BY array_position(j.resource_types, f.resource_type), f.part",
        (job_id,),
    )
    return [StoredFile(*row) for row in rows]


# --- the rows an export reads: live resources changed in (since, transaction time], in key order ---------

def source_queries() -> dict[str, tuple[str, tuple[str, ...]]]:
    """Per FHIR type: the query (after a key, up to a limit) and the names of the columns it returns. The
    column lists come from the repositories' table definitions: the export reads what the API reads."""
    from chalicelib.repositories.tables import MEDICAL_RECORD, PATIENT, PRESCRIPTION

    window = (
        "t.deleted_timestamp IS NULL AND t.updated_timestamp <= %(until)s "
        "AND (%(since)s::timestamptz IS NULL OR t.updated_timestamp > %(since)s)"
    )
    sources = {}
    for fhir_type, table, join, extra in (
        ("Patient", PATIENT, "", ()),
        ("Encounter", MEDICAL_RECORD, "", ()),
        # A MedicationRequest names its patient, which is the prescription's visit's.
        ("MedicationRequest", PRESCRIPTION,
         " JOIN medical_app.medical_record r ON r.medical_record_id = t.medical_record_id", ("r.patient_id",)),
    ):
        select = ", ".join((*(f"t.{c}" for c in table.columns), *extra))
        sql = (
            f"SELECT {select} FROM {table.name} t{join} "  # names from the table definitions
            f"WHERE t.{table.key} > %(after)s AND {window} ORDER BY t.{table.key} LIMIT %(limit)s"
        )
        names = (*table.columns, *(("owner_patient_id",) if extra else ()))
        sources[fhir_type] = (sql, names)
    return sources


EXPORT_CURSOR = "bulk_export_rows"


def open_rows(tx: Transaction, resource_type: str, job: ExportJob, after: int, limit: int) -> tuple[str, ...]:
    """Declare the server-side cursor over the next rows of ``resource_type``; returns the column names."""
    sql, names = source_queries()[resource_type]
    tx.execute(
        f"DECLARE {EXPORT_CURSOR} NO SCROLL CURSOR FOR {sql}",
        {"after": after, "until": job.transaction_time, "since": job.since, "limit": limit},
    )
    return names


def fetch_rows(tx: Transaction, count: int) -> list[tuple]:
    return tx.fetchall(f"FETCH FORWARD {int(count)} FROM {EXPORT_CURSOR}")
