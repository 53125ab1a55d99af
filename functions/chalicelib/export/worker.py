"""The export worker: one step of a bulk export job, as the export state machine invokes it.

A step writes the job's resource types in order, file after file. A file is the next rows of a type in
key order (at most ``FILE_MAX_RESOURCES``), read through a server-side cursor in batches, mapped to FHIR by
``chalicelib.fhir.mapping`` (the one mapping) and streamed into an S3 multipart upload: neither the table
nor the file is ever held in memory. Once the upload is complete, the file and the checkpoint after it
(the last key written) are recorded in one transaction. A step stops, between files or cutting a file
short, when its time budget runs low, and answers ``done: false``: the state machine invokes the next
step, which resumes after the checkpoint. A step that crashes leaves at most an unrecorded file, which
the next step writes again under the same name: nothing is exported twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from chalicelib.domain.export_terms import FILE_MAX_RESOURCES
from chalicelib.observability import logger
from chalicelib.repositories import export_jobs

if TYPE_CHECKING:
    from chalicelib.db import Database

# Rows fetched from the cursor at a time, and the least time a step keeps in hand to finish a file.
FETCH_ROWS = 2000
MARGIN_SECONDS = 60.0
# Until this long after the job's transaction time, its steps wait for the API's transactions begun before it
# (each is bounded by the API's statement and idle-in-transaction timeouts, 15 and 30 s); how often they look.
WRITERS_WAIT_SECONDS = 120.0
WRITERS_POLL_SECONDS = 0.2
ENDED = ("completed", "failed", "cancelled")


class Upload(Protocol):
    def write(self, data: bytes) -> None: ...
    def complete(self) -> None: ...
    def abort(self) -> None: ...


class ObjectStore(Protocol):
    def upload(self, key: str) -> Upload: ...
    def delete(self, keys: list[str]) -> None: ...


def object_key(job_id: int, resource_type: str, part: int) -> str:
    return f"exports/{job_id}/{resource_type}-{part}.ndjson"


def _mapper(resource_type: str) -> Callable[[dict[str, Any]], dict]:
    from chalicelib.fhir import mapping

    if resource_type == "Patient":
        return mapping.patient
    if resource_type == "Encounter":
        return mapping.encounter
    return lambda values: mapping.medication_request(values, values["owner_patient_id"])


@dataclass
class ExportWorker:
    db: Database
    store: ObjectStore
    file_max_resources: int = FILE_MAX_RESOURCES
    fetch_rows: int = FETCH_ROWS
    margin_seconds: float = MARGIN_SECONDS
    writers_wait_seconds: float = WRITERS_WAIT_SECONDS

    def _wait_for_earlier_writers(self, job: export_jobs.ExportJob) -> None:
        """A transaction that began before the job's transaction time stamps its rows before it but shows
        them only when it commits: read before that, the export would hold the row's previous version and
        the next export (`_since` = this transaction time) would skip the new one. Wait for them to end."""
        # Bounded from the transaction time, not from this step: once it has passed, no step waits again.
        deadline = job.transaction_time + timedelta(seconds=self.writers_wait_seconds)
        waited = False
        while datetime.now(UTC) < deadline:
            with self.db.transaction() as tx:
                if not export_jobs.writers_started_before(tx, job.transaction_time):
                    return
            waited = True
            time.sleep(WRITERS_POLL_SECONDS)
        if waited:
            logger.warning("export continues beside a transaction older than its transaction time",
                           extra={"export_job": job.job_id})

    def step(self, job_id: int, seconds_left: Callable[[], float], resource_type: str | None = None) -> bool:
        """Write files until the job (or only its ``resource_type``) is done (True) or the time budget runs
        low (False). The state machine runs one step loop per type, the types side by side."""
        with self.db.transaction() as tx:
            job = export_jobs.get(tx, job_id)
            if job is None or job.status in ENDED:
                return True
            export_jobs.mark_running(tx, job_id)
        self._wait_for_earlier_writers(job)
        while True:
            with self.db.transaction() as tx:
                pending = {p.resource_type: p for p in export_jobs.progress(tx, job_id) if not p.done}
            todo = [t for t in job.resource_types if t in pending and resource_type in (None, t)]
            if not todo:
                return True
            if seconds_left() < self.margin_seconds:
                return False
            if not self._write_file(job, pending[todo[0]], seconds_left):
                return True  # the job was cancelled meanwhile

    def _write_file(self, job: export_jobs.ExportJob, progress: export_jobs.Progress,
                    seconds_left: Callable[[], float]) -> bool:
        resource_type = progress.resource_type
        to_fhir = _mapper(resource_type)
        part = progress.parts + 1
        key = object_key(job.job_id, resource_type, part)
        upload: Upload | None = None
        count, last_key, exhausted = 0, progress.last_key, False
        try:
            with self.db.transaction() as tx:
                names = export_jobs.open_rows(tx, resource_type, job, progress.last_key, self.file_max_resources)
                while True:
                    rows = export_jobs.fetch_rows(tx, self.fetch_rows)
                    if rows:
                        if upload is None:
                            upload = self.store.upload(key)
                        # One NDJSON line per resource: compact JSON in UTF-8 (orjson writes no newline inside).
                        lines = [orjson.dumps(to_fhir(dict(zip(names, row, strict=True)))) for row in rows]
                        lines.append(b"")
                        upload.write(b"\n".join(lines))
                        count += len(rows)
                        last_key = rows[-1][0]
                    if len(rows) < self.fetch_rows:
                        # The cursor is spent: the type is done unless the file was cut at its size limit.
                        exhausted = count < self.file_max_resources
                        break
                    if seconds_left() < self.margin_seconds:
                        break  # cut the file short here; the next step resumes after last_key
                if upload is not None:
                    upload.complete()
                current = export_jobs.get(tx, job.job_id, lock=True)
                if current is None or current.status in ENDED:
                    if upload is not None:
                        self.store.delete([key])
                    return False
                export_jobs.record_file(tx, job.job_id, resource_type, part, key, count, last_key, exhausted)
        except BaseException:
            if upload is not None:
                upload.abort()
            raise
        logger.info("export file written", extra={"export_job": job.job_id, "resource_type": resource_type,
                                                  "part": part, "resources": count, "type_done": exhausted})
        return True

    def finish(self, job_id: int) -> str:
        with self.db.transaction() as tx:
            export_jobs.finish(tx, job_id, "completed", None)
            job = export_jobs.get(tx, job_id)
        return job.status if job else "missing"

    def fail(self, job_id: int, reason: str) -> None:
        with self.db.transaction() as tx:
            export_jobs.finish(tx, job_id, "failed", reason)


# --- the Lambda function's entry (functions/app.py: export_worker) --------------------------------------
# Its actions, as the state machine sends them: {"action": "export", "jobId": N, "resourceType": T} ->
# {"jobId", "resourceType", "done"} (without resourceType: every type of the job, in order);
# {"action": "finish", "jobId": N} -> {"jobId", "status"}; {"action": "fail", "jobId": N} -> {"jobId", "status"}.
FAILED_REASON = "the export stopped on an error; start a new export"


def handle(event: dict[str, Any], context: Any) -> dict[str, Any]:
    from chalicelib.api.dependencies import database
    from chalicelib.export.aws import configured_files

    job_id = int(event["jobId"])
    store = configured_files()
    if store is None:
        raise RuntimeError("EXPORT_BUCKET is not set")
    worker = ExportWorker(database(), store)
    action = event.get("action", "export")
    if action == "export":
        remaining = getattr(context, "get_remaining_time_in_millis", None)
        seconds_left = (lambda: remaining() / 1000) if remaining else (lambda: float("inf"))
        resource_type = event.get("resourceType")
        return {"jobId": job_id, "resourceType": resource_type,
                "done": worker.step(job_id, seconds_left, resource_type)}
    if action == "finish":
        return {"jobId": job_id, "status": worker.finish(job_id)}
    if action == "fail":
        worker.fail(job_id, FAILED_REASON)  # the cause stays in the execution's history, not in the job
        return {"jobId": job_id, "status": "failed"}
    raise ValueError("unknown export action")
