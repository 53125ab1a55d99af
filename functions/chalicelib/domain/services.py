"""The rules of the service: who may read and change what, in which transaction, and how it is audited.

Every public method takes the ``Caller`` (who, in which context, with which request id), asks
``access`` before it returns or changes patient data, and writes exactly one audit event: in the
same transaction as the data on success, or after the rollback when the request fails for a reason
tied to a resource (denied, not found, gone, stale version, conflict). Either way the event is
committed durably before the answer leaves.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from pydantic.alias_generators import to_camel

from chalicelib.domain import access, identifiers, models
from chalicelib.domain.access import ActorKind, Caller
from chalicelib.domain.errors import (
    Conflict,
    DomainError,
    FieldError,
    Forbidden,
    Gone,
    IdempotencyKeyReused,
    InvalidResult,
    NotFound,
    ParentGone,
    ParentNotFound,
    PreconditionFailed,
    ValidationFailed,
)
from chalicelib.domain.validation import field_errors
from chalicelib.repositories import audit, care_team, idempotency
from chalicelib.repositories.history import HistoryRepository, StoredVersion
from chalicelib.repositories.resources import (
    ResourceRepository,
    StoredRow,
    cascade_restore_medical_record,
    cascade_restore_patient,
    cascade_soft_delete_medical_record,
    cascade_soft_delete_patient,
    medical_records,
    patients,
    prescriptions,
)

if TYPE_CHECKING:  # the connection layer (and psycopg2) loads with the first connection, not at import
    from chalicelib.db import Database, Transaction

# Page sizes of every list: what a caller gets without asking, and the most it may ask for (a Lambda
# response is capped at 6 MB; see the README's capacity model).
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 100
# A summary page stops after the visit that brings it to this many prescriptions (≈ 0.8 KB of JSON each
# at the longest field values: ≈ 1 MB, against Lambda's 6 MB response limit).
SUMMARY_MAX_PRESCRIPTIONS = 1000


@dataclass(frozen=True)
class PageRequest:
    after: int | None = None
    limit: int = DEFAULT_PAGE_SIZE


@dataclass(frozen=True)
class Page:
    items: list[Any]
    next_after: int | None
    owners: list[int] = field(default_factory=list)  # the patient each item belongs to (same order)


@dataclass(frozen=True)
class Created:
    resource: Any
    replayed: bool


def _one_page(rows: list[Any], limit: int, key: Callable[[Any], int]) -> tuple[list[Any], int | None]:
    """A page of ``rows`` (read with one row more than ``limit``) and where the next one starts, if any."""
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    return rows, key(rows[-1])


@dataclass(frozen=True)
class Owned:
    """A resource (or a kept version) with the patient it belongs to, for surfaces that name the patient."""

    resource: Any
    patient_id: int


@dataclass
class _AuditNote:
    action: str
    resource_type: str
    resource_id: int | None = None
    patient_ids: list[int] = field(default_factory=list)
    reason: str | None = None
    break_glass: bool = False


_AUDITED_FAILURES = (NotFound, Gone, PreconditionFailed, Conflict, IdempotencyKeyReused, Forbidden)

# Told of every audit event once its COMMIT has succeeded, with its outcome and whether it was a
# break-the-glass access (the API counts them in its metrics). An observer must not raise.
audit_observers: list[Callable[[str, bool], None]] = []


def _audit_committed(outcome: str, note: _AuditNote) -> None:
    for observe in audit_observers:
        observe(outcome, note.break_glass)


class _UnitOfWork:
    def __init__(self, db: Database) -> None:
        self._db = db

    @contextmanager
    def __call__(
        self, caller: Caller, action: str, resource_type: str, resource_id: int | None = None
    ) -> Iterator[tuple[Transaction, _AuditNote]]:
        note = _AuditNote(action, resource_type, resource_id)
        try:
            with self._db.transaction(actor=caller.subject) as tx:
                yield tx, note
                self._record(tx, caller, note, "success")
        except _AUDITED_FAILURES as exc:
            note.reason = access.denial_reason(exc) or note.reason
            with self._db.transaction(actor=caller.subject) as tx:
                self._record(tx, caller, note, exc.audit_outcome)
            _audit_committed(exc.audit_outcome, note)
            raise
        _audit_committed("success", note)

    @staticmethod
    def _record(tx: Transaction, caller: Caller, note: _AuditNote, outcome: str) -> None:
        audit.record(
            tx,
            actor=caller.subject,
            actor_kind=caller.kind.value,
            action=note.action,
            resource_type=note.resource_type,
            resource_id=note.resource_id,
            patient_ids=note.patient_ids,
            request_id=caller.request_id,
            outcome=outcome,
            source_ip=caller.source_ip,
            user_agent=caller.user_agent,
            reason=note.reason,
            break_glass=note.break_glass,
        )


def _check(
    caller: Caller, note: _AuditNote, row: StoredRow, *, write: bool, not_found: str
) -> None:
    """Ask ``access`` about the row's patient; note a break-the-glass access for the trail and the answer."""
    decision = access.decide(caller, row.patient_id, on_team=row.on_team, write=write, not_found=not_found)
    if decision.break_glass:
        note.break_glass = True
        note.reason = decision.reason
        caller.break_glass_used = True


def _missing(resource: str, key: int) -> str:
    return f"{resource} {key} does not exist"


def _found(row: StoredRow | None, resource: str, key: int, note: _AuditNote) -> StoredRow:
    if row is None:
        raise NotFound(_missing(resource, key))
    note.patient_ids.append(row.patient_id)
    return row


def _live(row: StoredRow, resource: str, key: int) -> StoredRow:
    if row.deleted:
        raise Gone(f"{resource} {key} has been deleted")
    return row


def _check_version(row: StoredRow, expected_version: int | None, resource: str, key: int) -> None:
    if expected_version is not None and row.values["version"] != expected_version:
        raise PreconditionFailed(
            f"{resource} {key} is at version {row.values['version']}, not {expected_version}; re-read it and retry"
        )


class ResourceService:
    """Create, read, list, update and delete for one resource type with a parent (or none)."""

    def __init__(
        self,
        db: Database,
        repository: ResourceRepository,
        write_model: type[models.ApiModel],
        output_model: type[models.ApiModel],
        version_model: type[models.ApiModel],
        parent: ResourceService | None = None,
    ) -> None:
        self._unit = _UnitOfWork(db)
        self.repository = repository
        self.table = repository.table
        self.resource = repository.table.resource
        self._write_model = write_model
        self._output_model = output_model
        self._version_model = version_model
        self.history_repository = HistoryRepository(repository.table)
        self.parent = parent

    def to_model(self, row: StoredRow) -> Any:
        return self._output_model.model_construct(**row.values)

    def _get_checked(
        self, tx: Transaction, caller: Caller, note: _AuditNote, key: int, *, write: bool, lock: str | None = None
    ) -> StoredRow:
        """The row, once ``caller`` may act on it (live or not: callers decide what a deleted row means)."""
        row = _found(self.repository.get(tx, key, lock=lock, member_sub=caller.member_sub), self.resource, key, note)
        _check(caller, note, row, write=write, not_found=_missing(self.resource, key))
        return row

    # -- reads ----------------------------------------------------------------------------------

    def get(self, caller: Caller, key: int) -> Any:
        return self.get_owned(caller, key).resource

    def get_owned(self, caller: Caller, key: int) -> Owned:
        with self._unit(caller, "read", self.resource, key) as (tx, note):
            row = self._get_checked(tx, caller, note, key, write=False)
            return Owned(self.to_model(_live(row, self.resource, key)), row.patient_id)

    def history(self, caller: Caller, key: int, page: PageRequest, *, newest_first: bool = False) -> Page:
        """The kept versions, oldest first (or newest first: ``page.after`` is then the version to go below);
        readable once deleted too (the history outlives the row)."""
        with self._unit(caller, "read_history", self.resource, key) as (tx, note):
            row = self._get_checked(tx, caller, note, key, write=False)
            kept = self.history_repository.list(
                tx, key, after=page.after, limit=page.limit + 1, newest_first=newest_first
            )
            versions, next_after = _one_page(kept, page.limit, lambda v: v.version)
            return Page([self._version(v) for v in versions], next_after, [row.patient_id] * len(versions))

    def version(self, caller: Caller, key: int, version: int) -> Any:
        return self.version_owned(caller, key, version).resource

    def version_owned(self, caller: Caller, key: int, version: int) -> Owned:
        with self._unit(caller, "read_history", self.resource, key) as (tx, note):
            row = self._get_checked(tx, caller, note, key, write=False)
            found = self.history_repository.get(tx, key, version)
            if found is None:
                raise NotFound(f"{self.resource} {key} has no version {version}")
            return Owned(self._version(found), row.patient_id)

    def _version(self, stored: StoredVersion) -> Any:
        return self._version_model.model_construct(
            version=stored.version, recorded_at=stored.recorded_at, actor=stored.actor, change=stored.change,
            changed_fields=[to_camel(f) for f in stored.changed_fields], deleted=stored.deleted,
            resource=self._output_model.model_construct(**stored.values),
        )

    def list(
        self,
        caller: Caller,
        page: PageRequest,
        *,
        parent_key: int | None = None,
        filters: Sequence[tuple[str, Any]] = (),
    ) -> Page:
        """A page of live rows: under one parent (which the caller must be allowed to see), or of
        every patient the caller may see."""
        with self._unit(caller, "list", self.resource, parent_key) as (tx, note):
            conditions = list(filters)
            visibility = access.list_visibility(caller)
            if parent_key is not None:
                note.resource_type = f"{self.parent.resource}.{self.resource}"
                parent_row = self.parent._get_checked(tx, caller, note, parent_key, write=False)
                _live(parent_row, self.parent.resource, parent_key)
                conditions.append((self.table.parent_key, parent_key))
                visibility = None  # decided above, for the one patient the parent belongs to
            rows, next_after = self._live_page(
                self.repository.list_live(
                    tx, conditions=conditions, after=page.after, limit=page.limit + 1, visibility=visibility
                ),
                page,
            )
            note.patient_ids.extend(r.patient_id for r in rows)
            return Page([self.to_model(r) for r in rows], next_after, [r.patient_id for r in rows])

    def _live_page(self, rows: list[StoredRow], page: PageRequest) -> tuple[list[StoredRow], int | None]:
        return _one_page(rows, page.limit, lambda r: r.values[self.table.key])

    def list_for_patient(self, caller: Caller, patient_id: int, page: PageRequest) -> Page:
        """A page of the live rows of one patient (a visit's prescriptions across all their visits, say),
        audited like a list under a parent."""
        owner = self
        while owner.parent is not None:
            owner = owner.parent
        with self._unit(caller, "list", f"{owner.resource}.{self.resource}", patient_id) as (tx, note):
            row = owner._get_checked(tx, caller, note, patient_id, write=False)
            _live(row, owner.resource, patient_id)
            rows, next_after = self._live_page(
                self.repository.list_live(
                    tx, after=page.after, limit=page.limit + 1, visibility=access.Visibility(patient_id=patient_id)
                ),
                page,
            )
            return Page([self.to_model(r) for r in rows], next_after, [r.patient_id for r in rows])

    # -- writes ---------------------------------------------------------------------------------

    def create(
        self,
        caller: Caller,
        data: models.ApiModel,
        *,
        parent_key: int | None = None,
        idempotency_key: str | None = None,
    ) -> Created:
        values = data.model_dump(include=set(self.table.writable), by_alias=False)
        self._check_new_values(values, None)
        with self._unit(caller, "create", self.resource) as (tx, note):
            access.may_write(caller)
            if idempotency_key is not None:
                fingerprint = _fingerprint(self.resource, parent_key, data)
                stored = idempotency.claim(tx, caller.subject, idempotency_key, fingerprint)
                if stored is not None:
                    return self._replay(tx, caller, stored, fingerprint, note)
            if self.parent is not None:
                if self._new_parent(tx, caller, note, parent_key).deleted:
                    raise ParentGone(f"{self.parent.resource} {parent_key} has been deleted")
                values[self.table.parent_key] = parent_key
            row = self.repository.insert(tx, values)
            note.resource_id = row.values[self.table.key]
            note.patient_ids.append(row.patient_id)
            self._after_create(tx, caller, row)
            resource = self.to_model(row)
            if idempotency_key is not None:
                idempotency.complete(tx, caller.subject, idempotency_key, self.resource, resource.model_dump_json())
            return Created(resource, replayed=False)

    def _after_create(self, tx: Transaction, caller: Caller, row: StoredRow) -> None:
        pass

    def _new_parent(self, tx: Transaction, caller: Caller, note: _AuditNote, key: int) -> StoredRow:
        """The parent a row is written under, locked against deletion meanwhile (FOR SHARE), once the
        caller may write to its patient; deleted or not (the caller decides what that means)."""
        row = self.parent.repository.get(tx, key, lock="share", member_sub=caller.member_sub)
        if row is None:
            raise ParentNotFound(_missing(self.parent.resource, key))
        note.patient_ids.append(row.patient_id)
        _check(caller, note, row, write=True, not_found=_missing(self.parent.resource, key))
        return row

    def _replay(
        self, tx: Transaction, caller: Caller, stored: idempotency.StoredResponse, fingerprint: str, note: _AuditNote
    ) -> Created:
        if stored.request_fingerprint != fingerprint or stored.resource_type != self.resource:
            raise IdempotencyKeyReused("this Idempotency-Key was already used for a different request")
        resource = self._output_model.model_validate_json(stored.resource_json)
        note.resource_id = getattr(resource, self.table.key)
        # The first response is replayed only while the caller may still see what it created.
        self._get_checked(tx, caller, note, note.resource_id, write=False)
        return Created(resource, replayed=True)

    def update(
        self,
        caller: Caller,
        key: int,
        changes: models.ApiModel,
        *,
        partial: bool,
        expected_version: int | None = None,
    ) -> Any:
        """PUT (``partial=False``: every field replaced) or PATCH (only the fields sent)."""
        provided = changes.model_fields_set if partial else set(type(changes).model_fields)
        with self._unit(caller, "update", self.resource, key) as (tx, note):
            access.may_write(caller)
            row = _live(self._get_checked(tx, caller, note, key, write=True, lock="update"), self.resource, key)
            _check_version(row, expected_version, self.resource, key)
            values = {name: getattr(changes, name) for name in provided if name in self.table.writable}
            self._validate_merged(row, values)
            self._check_new_values(values, row.values)
            new_parent = getattr(changes, self.table.parent_key, None) if self.table.parent_key else None
            if new_parent is not None and new_parent != row.values[self.table.parent_key]:
                # Moving a row writes to both patients: the caller must be allowed on the new one too.
                if self._new_parent(tx, caller, note, new_parent).deleted:
                    raise ParentNotFound(_missing(self.parent.resource, new_parent))
                values[self.table.parent_key] = new_parent
            if not values:  # nothing to change: no write, no new version
                return self.to_model(row)
            updated = self.repository.update(tx, key, values)
            note.patient_ids.append(updated.patient_id)
            return self.to_model(updated)

    def _validate_merged(self, row: StoredRow, values: dict[str, Any]) -> None:
        """Rules that span fields (e.g. end date not before start) hold for the row as it will be."""
        merged = {name: row.values[name] for name in self.table.writable} | values
        try:
            self._write_model.model_validate(merged, by_name=True, by_alias=False, strict=False)
        except ValidationError as exc:
            raise InvalidResult("the change would leave the resource invalid", field_errors(exc)) from None

    def _check_new_values(self, values: dict[str, Any], stored: dict[str, Any] | None) -> None:
        """Rules for values a write brings in (``stored``: the row before an update, None on create)."""

    def delete(self, caller: Caller, key: int, *, expected_version: int | None = None) -> bool:
        """Soft delete; deleting what is already deleted succeeds and changes nothing (returns False)."""
        with self._unit(caller, "delete", self.resource, key) as (tx, note):
            access.may_write(caller)
            row = self._get_checked(tx, caller, note, key, write=True, lock="update")
            if row.deleted:
                return False
            _check_version(row, expected_version, self.resource, key)
            self.repository.soft_delete(tx, key)
            self._cascade(tx, key)
            return True

    def _cascade(self, tx: Transaction, key: int) -> None:
        pass

    def restore(self, caller: Caller, key: int, *, expected_version: int | None = None) -> Any:
        """Bring a deleted resource back, with what its own delete cascaded (a new version of each).
        Restoring a live resource changes nothing. Refused while its parent is deleted."""
        with self._unit(caller, "restore", self.resource, key) as (tx, note):
            access.may_write(caller)
            row = self._get_checked(tx, caller, note, key, write=True, lock="update")
            if not row.deleted:
                return self.to_model(row)
            _check_version(row, expected_version, self.resource, key)
            if self.parent is not None:
                parent_key = row.values[self.table.parent_key]
                # FOR SHARE: the parent cannot be deleted before this restore commits.
                parent = self.parent.repository.get(tx, parent_key, lock="share")
                if parent is None or parent.deleted:
                    raise Conflict(
                        f"{self.resource} {key} belongs to {self.parent.resource} {parent_key}, which is deleted: "
                        f"restore the {self.parent.resource} first"
                    )
            self._cascade_restore(tx, key)
            return self.to_model(self.repository.restore(tx, key))

    def _cascade_restore(self, tx: Transaction, key: int) -> None:
        pass


class PatientService(ResourceService):
    def _check_new_values(self, values: dict[str, Any], stored: dict[str, Any] | None) -> None:
        card = values.get("id_card_num")
        if card is None or (stored is not None and stored["id_card_num"] == card):
            return
        if not identifiers.is_national_id(card):
            error = FieldError("idCardNum", identifiers.NATIONAL_ID_CHECK)
            raise ValidationFailed("the request body is invalid", [error])

    def _cascade(self, tx: Transaction, key: int) -> None:
        cascade_soft_delete_patient(tx, key)

    def _cascade_restore(self, tx: Transaction, key: int) -> None:
        cascade_restore_patient(tx, key)

    def _after_create(self, tx: Transaction, caller: Caller, row: StoredRow) -> None:
        """Whoever registers a patient joins their care team (a patient-context caller cannot register)."""
        care_team.grant(tx, row.patient_id, caller.subject, CREATOR_ROLE, caller.subject)

    def get_by_card_number(self, caller: Caller, id_card_num: str) -> Any:
        with self._unit(caller, "read", self.resource) as (tx, note):
            rows = self.repository.list_live(
                tx, conditions=[("id_card_num", id_card_num)], after=None, limit=1, member_sub=caller.member_sub
            )
            if not rows:
                raise NotFound("no live patient has this card number")
            note.resource_id = rows[0].values["patient_id"]
            note.patient_ids.append(rows[0].patient_id)
            _check(caller, note, rows[0], write=False, not_found="no live patient has this card number")
            return self.to_model(rows[0])

    def summary(self, caller: Caller, patient_id: int, page: PageRequest) -> models.PatientSummary:
        """The patient with a page of their live visits (in key order), each with its live prescriptions."""
        with self._unit(caller, "read", "patient_summary", patient_id) as (tx, note):
            row = _live(self._get_checked(tx, caller, note, patient_id, write=False), self.resource, patient_id)
            patient = self.to_model(row)
            records = medical_records.list_live(
                tx, conditions=[("patient_id", patient_id)], after=page.after, limit=page.limit + 1
            )
            has_more = len(records) > page.limit
            records = records[: page.limit]
            record_ids = [r.values["medical_record_id"] for r in records]
            by_record: dict[int, list[models.Prescription]] = {k: [] for k in record_ids}
            for p in prescriptions.live_children(tx, record_ids):
                by_record[p.values["medical_record_id"]].append(models.Prescription.model_construct(**p.values))
            # A page ends early, after a whole visit, once it holds SUMMARY_MAX_PRESCRIPTIONS: the answer
            # stays far below Lambda's 6 MB response limit however many prescriptions visits carry.
            held = 0
            for index, record_id in enumerate(record_ids):
                held += len(by_record[record_id])
                if held >= SUMMARY_MAX_PRESCRIPTIONS and index < len(records) - 1:
                    records, has_more = records[: index + 1], True
                    record_ids = record_ids[: index + 1]
                    break
            summary = models.PatientSummary.model_construct(
                patient=patient,
                medical_records=[
                    models.MedicalRecordWithPrescriptions.model_construct(
                        **r.values, prescriptions=by_record[r.values["medical_record_id"]]
                    )
                    for r in records
                ],
            )
            return Page([summary], record_ids[-1] if has_more else None)

    def access_log(self, caller: Caller, patient_id: int, page: PageRequest) -> Page:
        """Who touched this patient, newest first (deleted patients included: the trail outlives them)."""
        with self._unit(caller, "read", "access_log", patient_id) as (tx, note):
            _found(patients.get(tx, patient_id), self.resource, patient_id, note)
            access.may_read_access_log(caller, patient_id, not_found=_missing(self.resource, patient_id))
            events, next_after = _one_page(
                audit.for_patient(tx, patient_id, before=page.after, limit=page.limit + 1),
                page.limit, lambda e: e["audit_event_id"],
            )
            return Page([models.AuditEvent.model_construct(**e) for e in events], next_after)


class MedicalRecordService(ResourceService):
    def _cascade(self, tx: Transaction, key: int) -> None:
        cascade_soft_delete_medical_record(tx, key)

    def _cascade_restore(self, tx: Transaction, key: int) -> None:
        cascade_restore_medical_record(tx, key)


CREATOR_ROLE = "creator"


class CareTeamService:
    """Admins manage who is on a patient's care team; every change and read is audited."""

    def __init__(self, db: Database) -> None:
        self._unit = _UnitOfWork(db)

    def _patient(self, tx: Transaction, caller: Caller, note: _AuditNote, patient_id: int) -> StoredRow:
        access.must_be_admin(caller, "managing care teams")
        return _found(patients.get(tx, patient_id), "patient", patient_id, note)

    def members(self, caller: Caller, patient_id: int, page: PageRequest) -> Page:
        """Every membership, active and revoked (the history of who could see the patient)."""
        with self._unit(caller, "read", "care_team", patient_id) as (tx, note):
            self._patient(tx, caller, note, patient_id)
            rows, next_after = _one_page(
                care_team.for_patient(tx, patient_id, after=page.after, limit=page.limit + 1),
                page.limit, lambda r: r["care_team_member_id"],
            )
            return Page([models.CareTeamMember.model_construct(**r) for r in rows], next_after)

    def grant(self, caller: Caller, patient_id: int, member_sub: str, role: str) -> tuple[Any, bool]:
        """Put ``member_sub`` on the team with ``role``; (member, created). A new role is a new grant."""
        with self._unit(caller, "grant", "care_team", patient_id) as (tx, note):
            row = self._patient(tx, caller, note, patient_id)
            _live(row, "patient", patient_id)
            current = care_team.active(tx, patient_id, member_sub, lock=True)
            if current is not None and current["role"] == role:
                return models.CareTeamMember.model_construct(**current), False
            if current is not None:
                care_team.revoke(tx, current["care_team_member_id"], caller.subject)
            granted = care_team.grant(tx, patient_id, member_sub, role, caller.subject)
            if granted is None:  # a concurrent grant of the same member committed first
                raise Conflict("this member was granted concurrently; retry")
            return models.CareTeamMember.model_construct(**granted), current is None

    def revoke(self, caller: Caller, patient_id: int, member_sub: str) -> bool:
        """End the membership; takes effect on the member's next request. False when there was none."""
        with self._unit(caller, "revoke", "care_team", patient_id) as (tx, note):
            self._patient(tx, caller, note, patient_id)
            current = care_team.active(tx, patient_id, member_sub, lock=True)
            if current is None:
                return False
            care_team.revoke(tx, current["care_team_member_id"], caller.subject)
            return True


class AuditReviewService:
    def __init__(self, db: Database) -> None:
        self._unit = _UnitOfWork(db)

    def break_glass(self, caller: Caller, since: Any, page: PageRequest) -> Page:
        """Every break-the-glass access since ``since``, oldest first, with its reason (admins only)."""
        with self._unit(caller, "list", "break_glass_access") as (tx, note):
            access.must_be_admin(caller, "reviewing break-the-glass accesses")
            # UTC before it reaches the database: RFC 3339 allows offsets PostgreSQL does not (e.g. -20:43).
            events, next_after = _one_page(
                audit.break_glass_since(tx, since.astimezone(UTC), after=page.after, limit=page.limit + 1),
                page.limit, lambda e: e["audit_event_id"],
            )
            for e in events:
                note.patient_ids.extend(e["patient_ids"])
            return Page([models.AuditEvent.model_construct(**e) for e in events], next_after)

    def refuse(self, caller: Caller, action: str, resource_type: str, resource_id: int | None, reason: str) -> None:
        """Refuse a request before it reaches any data (a token without the route's scope): audited, then raised."""
        with self._unit(caller, action, resource_type, resource_id) as (_tx, note):
            note.reason = reason
            raise Forbidden(reason)


def _fingerprint(resource: str, parent_key: int | None, data: models.ApiModel) -> str:
    payload = json.dumps([resource, parent_key, data.model_dump(mode="json")], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


@dataclass(frozen=True)
class Services:
    patients: PatientService
    medical_records: MedicalRecordService
    prescriptions: ResourceService
    care_teams: CareTeamService
    audit: AuditReviewService


def build_services(db: Database) -> Services:
    patient_service = PatientService(db, patients, models.PatientWrite, models.Patient, models.PatientVersion)
    record_service = MedicalRecordService(
        db, medical_records, models.MedicalRecordWrite, models.MedicalRecord, models.MedicalRecordVersion,
        parent=patient_service,
    )
    prescription_service = ResourceService(
        db, prescriptions, models.PrescriptionWrite, models.Prescription, models.PrescriptionVersion,
        parent=record_service,
    )
    return Services(patient_service, record_service, prescription_service, CareTeamService(db), AuditReviewService(db))


__all__ = ["ActorKind", "Caller", "Created", "DomainError", "Page", "PageRequest", "Services", "build_services"]
