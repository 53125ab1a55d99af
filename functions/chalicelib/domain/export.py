"""FHIR Bulk Data export (Bulk Data Access IG 2.0): the rules of a job, without HTTP or AWS types.

A kick-off is checked (admin only, the parameters the IG defines and this server supports), recorded as
one job and one ``bulk_export`` audit event naming the caller, in one transaction, and handed to the
job runner (the export state machine). A retried kick-off finds the job it started: the same
``Idempotency-Key`` from the same caller always does (the same key with a different request is refused),
and without a key the same request from the same caller while its job is still active does. The status of
a job is read by the caller who started it (any other caller is told it does not exist); its files are
handed out as short-lived links.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from chalicelib.domain import access
from chalicelib.domain.access import Caller
from chalicelib.domain.errors import (
    FieldError,
    Forbidden,
    IdempotencyKeyReused,
    NotFound,
    Unavailable,
    ValidationFailed,
)
from chalicelib.domain.export_terms import (  # the terms the routes declare; here, the rules that apply them
    LEVEL_SYSTEM,
    LINK_SECONDS,
    NDJSON,
    OUTPUT_FORMATS,
    RESOURCE_TYPES,
    SUPPORTED_PARAMETERS,
    ExportFailed,
    ExportNotConfigured,
)
from chalicelib.repositories import audit, export_jobs
from chalicelib.repositories.export_jobs import ExportJob

if TYPE_CHECKING:
    from chalicelib.db import Database

# A FHIR instant: a date and time to the second at least, with a time zone.
_INSTANT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})")


# --- ports: what the service needs from the outside (implemented in chalicelib/export/aws.py) ---------


class ExportRunner(Protocol):
    def start(self, job_id: int, resource_types: Sequence[str]) -> str:
        """Start the job's run; return its handle (an execution ARN). Starting twice starts it once."""

    def stop(self, handle: str) -> None:
        """Stop a run that may still be going."""


class ExportFiles(Protocol):
    def link(self, key: str, seconds: int) -> str:
        """A URL that downloads the file for ``seconds``, without further credentials."""

    def delete(self, keys: Sequence[str]) -> None:
        """Remove the files (missing ones are not an error)."""


# --- the request -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportRequest:
    level: str
    resource_types: tuple[str, ...]
    since: datetime | None
    output_format: str = NDJSON
    idempotency_key: str | None = None

    @property
    def fingerprint(self) -> str:
        """What makes two kick-offs the same request (the key aside)."""
        since = self.since.astimezone(UTC).isoformat() if self.since else None
        payload = json.dumps([self.level, list(self.resource_types), since], separators=(",", ":"))
        return hashlib.sha256(payload.encode()).hexdigest()


def parse_instant(raw: str) -> datetime | None:
    if not _INSTANT.fullmatch(raw):
        return None
    text = raw.replace("Z", "+00:00")
    # Python before 3.11 reads at most 6 fraction digits; an instant may carry up to 9.
    text = re.sub(r"\.([0-9]{6})[0-9]+", r".\1", text)
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def parse_request(level: str, query: Mapping[str, str], prefer: str | None,
                  idempotency_key: str | None, now: datetime | None = None) -> ExportRequest:
    """The kick-off's parameters, checked; every bad one is reported at once."""
    errors: list[FieldError] = []
    preferences = {p.strip().lower() for p in (prefer or "").split(",")}
    if "respond-async" not in preferences:
        errors.append(FieldError("Prefer", "must be 'respond-async': a bulk export is always asynchronous"))
    for name in query:
        if name not in SUPPORTED_PARAMETERS:
            errors.append(FieldError(name, f"is not supported here (supported: {', '.join(SUPPORTED_PARAMETERS)})"))
    output_format = query.get("_outputFormat", NDJSON)
    if output_format not in OUTPUT_FORMATS:
        errors.append(FieldError("_outputFormat", f"must be one of {', '.join(OUTPUT_FORMATS)}"))
    since = None
    if "_since" in query:
        since = parse_instant(query["_since"])
        if since is None:
            errors.append(FieldError("_since", "must be a FHIR instant with a time zone, e.g. 2026-11-01T00:00:00Z"))
        elif since > (now or datetime.now(UTC)):
            errors.append(FieldError("_since", "must not be in the future"))
    types: tuple[str, ...] = RESOURCE_TYPES
    if "_type" in query:
        asked = [t.strip() for t in query["_type"].split(",")]
        unknown = [t for t in asked if t not in RESOURCE_TYPES]
        if unknown or not any(asked):
            # The names are echoed only when they are plain resource-type-like words (no personal data).
            shown = [t for t in unknown if re.fullmatch(r"[A-Za-z]{1,64}", t)]
            errors.append(FieldError(
                "_type",
                f"must name one or more of {', '.join(RESOURCE_TYPES)}, comma-separated"
                + (f"; not served here: {', '.join(shown)}" if shown else ""),
            ))
        else:
            types = tuple(t for t in RESOURCE_TYPES if t in asked)  # in the server's order, each once
    if errors:
        raise ValidationFailed("invalid bulk export request", errors)
    return ExportRequest(level, types, since, output_format, idempotency_key)


# --- what the routes answer ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Accepted:
    job_id: int
    replayed: bool  # a retried kick-off: the job already existed


@dataclass(frozen=True)
class OutputFile:
    type: str
    url: str
    count: int


@dataclass(frozen=True)
class Running:
    progress: str  # X-Progress: per type, the resources written so far (no patient data)


@dataclass(frozen=True)
class Manifest:
    transaction_time: datetime
    request: str
    output: list[OutputFile] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "transactionTime": self.transaction_time.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "request": self.request,
            "requiresAccessToken": False,
            "output": [{"type": f.type, "url": f.url, "count": f.count} for f in self.output],
            "error": [],
        }


def request_url(fhir_base: str, job: ExportJob) -> str:
    """The kick-off request as the manifest's ``request`` (``fhir_base``: the FHIR API's absolute base URL),
    rebuilt from what was stored rather than echoed."""
    from urllib.parse import urlencode

    path = "/$export" if job.level == LEVEL_SYSTEM else "/Patient/$export"
    params: dict[str, str] = {}
    if job.resource_types != RESOURCE_TYPES:
        params["_type"] = ",".join(job.resource_types)
    if job.since is not None:
        params["_since"] = job.since.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return fhir_base + path + (f"?{urlencode(params, safe=',:')}" if params else "")


class ExportService:
    """Kick-off, status and cancel of bulk export jobs."""

    def __init__(self, db: Database, runner: Callable[[], ExportRunner | None],
                 files: Callable[[], ExportFiles | None]) -> None:
        self._db = db
        self._runner = runner
        self._files = files

    def _audit(self, tx: Any, caller: Caller, *, job_id: int | None, outcome: str, reason: str | None) -> None:
        audit.record(
            tx, actor=caller.subject, actor_kind=caller.kind.value, action="bulk_export",
            resource_type="export_job", resource_id=job_id, patient_ids=(), request_id=caller.request_id,
            outcome=outcome, source_ip=caller.source_ip, user_agent=caller.user_agent, reason=reason,
            break_glass=False,
        )

    def _admin_only(self, caller: Caller) -> None:
        try:
            access.must_be_admin(caller, "bulk export")
        except Forbidden as exc:
            with self._db.transaction(actor=caller.subject) as tx:
                self._audit(tx, caller, job_id=None, outcome="denied", reason=exc.detail)
            raise

    def kick_off(self, caller: Caller, request: ExportRequest) -> Accepted:
        """Record the job (or find the one this retried request started) and start its run."""
        self._admin_only(caller)
        runner = self._runner()
        if runner is None:
            raise ExportNotConfigured(
                "bulk export runs on the deployed stack (an export state machine and bucket): start it with `make up`"
            )
        with self._db.transaction(actor=caller.subject) as tx:
            job_id = export_jobs.insert(tx, caller.subject, caller.request_id, request)
            replayed = job_id is None
            if replayed:
                found = export_jobs.find_retry(tx, caller.subject, request)
                if found is not None and found[1] != request.fingerprint:
                    raise IdempotencyKeyReused("this Idempotency-Key was already used for a different export request")
                job_id = found[0] if found else None
                if job_id is None:  # the job it collided with ended just now: a new request after all
                    job_id = export_jobs.insert(tx, caller.subject, caller.request_id, request)
                    replayed = job_id is None
            if not replayed:
                # One bulk access, naming its caller, durable with the job itself.
                self._audit(tx, caller, job_id=job_id, outcome="success", reason=None)
        assert job_id is not None
        if not replayed:
            self._start(runner, job_id, request.resource_types)
        return Accepted(job_id, replayed)

    def _start(self, runner: ExportRunner, job_id: int, resource_types: Sequence[str]) -> None:
        try:
            handle = runner.start(job_id, resource_types)
        except Exception as exc:  # the runner's service (Step Functions) refused or could not be reached
            with self._db.transaction() as tx:
                export_jobs.finish(tx, job_id, "failed", "the export could not be started")
            raise Unavailable("the export could not be started; kick it off again (with a new Idempotency-Key)") \
                from exc
        with self._db.transaction() as tx:
            export_jobs.set_handle(tx, job_id, handle)

    def _own_job(self, tx: Any, caller: Caller, job_id: int) -> ExportJob:
        job = export_jobs.get(tx, job_id)
        # Another caller's job, and a cancelled one, do not exist for this caller (the IG: 404 after DELETE).
        if job is None or job.requested_by != caller.subject or job.status == "cancelled":
            raise NotFound(f"bulk export job {job_id} does not exist")
        return job

    def status(self, caller: Caller, job_id: int, fhir_base: str) -> Running | Manifest:
        self._admin_only(caller)
        with self._db.transaction() as tx:
            job = self._own_job(tx, caller, job_id)
            if job.status in ("accepted", "running"):
                return Running(export_jobs.progress_text(tx, job))
            if job.status == "failed":
                raise ExportFailed(job.error or "the export failed")
            stored = export_jobs.files(tx, job_id)
        files = self._files()
        if files is None:
            raise ExportNotConfigured("this deployment has no export bucket")
        output = [OutputFile(f.resource_type, files.link(f.object_key, LINK_SECONDS), f.resources) for f in stored]
        return Manifest(job.transaction_time, request_url(fhir_base, job), output)

    def cancel(self, caller: Caller, job_id: int) -> None:
        """Stop the job and delete its files; a cancelled job no longer exists for its caller."""
        self._admin_only(caller)
        with self._db.transaction(actor=caller.subject) as tx:
            job = self._own_job(tx, caller, job_id)
            export_jobs.finish(tx, job_id, "cancelled", None)
            keys = [f.object_key for f in export_jobs.files(tx, job_id)]
        runner, files = self._runner(), self._files()
        if runner is not None and job.execution_arn and job.status in ("accepted", "running"):
            runner.stop(job.execution_arn)
        if files is not None and keys:
            files.delete(keys)
