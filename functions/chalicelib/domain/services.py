"""The rules of the service: what may be read and changed, in which transaction, and how it is audited.

Every public method takes the ``Caller`` (who, with which request id) and writes exactly one audit
event: in the same transaction as the data on success, or after the rollback when the request
fails for a reason tied to a resource (not found, gone, stale version, conflict).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from chalicelib.db import Database, Transaction
from chalicelib.domain import models
from chalicelib.domain.errors import (
    Conflict,
    DomainError,
    Gone,
    IdempotencyKeyReused,
    NotFound,
    ParentGone,
    ParentNotFound,
    PreconditionFailed,
    ValidationFailed,
)
from chalicelib.domain.validation import field_errors
from chalicelib.repositories import audit, idempotency
from chalicelib.repositories.resources import (
    ResourceRepository,
    StoredRow,
    cascade_soft_delete_medical_record,
    cascade_soft_delete_patient,
    medical_records,
    patients,
    prescriptions,
)


@dataclass(frozen=True)
class Caller:
    subject: str
    request_id: str | None = None


@dataclass(frozen=True)
class PageRequest:
    after: int | None = None
    limit: int = 50


@dataclass(frozen=True)
class Page:
    items: list[Any]
    next_after: int | None


@dataclass(frozen=True)
class Created:
    resource: Any
    replayed: bool


@dataclass
class _AuditNote:
    action: str
    resource_type: str
    resource_id: int | None = None
    patient_ids: list[int] = field(default_factory=list)


class _UnitOfWork:
    def __init__(self, db: Database) -> None:
        self._db = db

    @contextmanager
    def __call__(
        self, caller: Caller, action: str, resource_type: str, resource_id: int | None = None, *, durable: bool
    ) -> Iterator[tuple[Transaction, _AuditNote]]:
        note = _AuditNote(action, resource_type, resource_id)
        try:
            with self._db.transaction(durable=durable) as tx:
                yield tx, note
                self._record(tx, caller, note, "success")
        except (NotFound, Gone, PreconditionFailed, Conflict, IdempotencyKeyReused) as exc:
            with self._db.transaction(durable=False) as tx:
                self._record(tx, caller, note, exc.audit_outcome)
            raise

    @staticmethod
    def _record(tx: Transaction, caller: Caller, note: _AuditNote, outcome: str) -> None:
        audit.record(
            tx,
            actor=caller.subject,
            action=note.action,
            resource_type=note.resource_type,
            resource_id=note.resource_id,
            patient_ids=note.patient_ids,
            request_id=caller.request_id,
            outcome=outcome,
        )


def _live(row: StoredRow | None, resource: str, key: int) -> StoredRow:
    if row is None:
        raise NotFound(f"{resource} {key} does not exist")
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
        parent: ResourceService | None = None,
    ) -> None:
        self._unit = _UnitOfWork(db)
        self.repository = repository
        self.table = repository.table
        self.resource = repository.table.resource
        self._write_model = write_model
        self._output_model = output_model
        self.parent = parent

    def to_model(self, row: StoredRow) -> Any:
        return self._output_model.model_construct(**row.values)

    # -- reads ----------------------------------------------------------------------------------

    def get(self, caller: Caller, key: int) -> Any:
        with self._unit(caller, "read", self.resource, key, durable=False) as (tx, note):
            row = self.repository.get(tx, key)
            if row is not None:
                note.patient_ids.append(row.patient_id)
            return self.to_model(_live(row, self.resource, key))

    def list(
        self,
        caller: Caller,
        page: PageRequest,
        *,
        parent_key: int | None = None,
        filters: Sequence[tuple[str, Any]] = (),
    ) -> Page:
        with self._unit(caller, "list", self.resource, parent_key, durable=False) as (tx, note):
            conditions = list(filters)
            if parent_key is not None:
                parent_row = self.parent.repository.get(tx, parent_key)
                if parent_row is not None:
                    note.patient_ids.append(parent_row.patient_id)
                _live(parent_row, self.parent.resource, parent_key)
                note.resource_type = f"{self.parent.resource}.{self.resource}"
                conditions.append((self.table.parent_key, parent_key))
            rows = self.repository.list_live(tx, conditions=conditions, after=page.after, limit=page.limit + 1)
            has_more = len(rows) > page.limit
            rows = rows[: page.limit]
            note.patient_ids.extend(r.patient_id for r in rows)
            next_after = rows[-1].values[self.table.key] if has_more else None
            return Page([self.to_model(r) for r in rows], next_after)

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
        with self._unit(caller, "create", self.resource, durable=True) as (tx, note):
            if idempotency_key is not None:
                fingerprint = _fingerprint(self.resource, parent_key, data)
                stored = idempotency.claim(tx, caller.subject, idempotency_key, fingerprint)
                if stored is not None:
                    return self._replay(tx, stored, fingerprint, note)
            if self.parent is not None:
                parent_row = self.parent.repository.get(tx, parent_key, lock="share")
                if parent_row is None:
                    raise ParentNotFound(f"{self.parent.resource} {parent_key} does not exist")
                if parent_row.deleted:
                    raise ParentGone(f"{self.parent.resource} {parent_key} has been deleted")
                values[self.table.parent_key] = parent_key
            row = self.repository.insert(tx, values)
            note.resource_id = row.values[self.table.key]
            note.patient_ids.append(row.patient_id)
            resource = self.to_model(row)
            if idempotency_key is not None:
                idempotency.complete(tx, caller.subject, idempotency_key, self.resource, resource.model_dump_json())
            return Created(resource, replayed=False)

    def _replay(
        self, tx: Transaction, stored: idempotency.StoredResponse, fingerprint: str, note: _AuditNote
    ) -> Created:
        if stored.request_fingerprint != fingerprint or stored.resource_type != self.resource:
            raise IdempotencyKeyReused("this Idempotency-Key was already used for a different request")
        resource = self._output_model.model_validate_json(stored.resource_json)
        note.resource_id = getattr(resource, self.table.key)
        current = self.repository.get(tx, note.resource_id)
        if current is not None:
            note.patient_ids.append(current.patient_id)
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
        with self._unit(caller, "update", self.resource, key, durable=True) as (tx, note):
            row = self.repository.get(tx, key, lock="update")
            if row is not None:
                note.patient_ids.append(row.patient_id)
            row = _live(row, self.resource, key)
            _check_version(row, expected_version, self.resource, key)
            values = {name: getattr(changes, name) for name in provided if name in self.table.writable}
            self._validate_merged(row, values)
            new_parent = getattr(changes, self.table.parent_key, None) if self.table.parent_key else None
            if new_parent is not None and new_parent != row.values[self.table.parent_key]:
                parent_row = self.parent.repository.get(tx, new_parent, lock="share")
                if parent_row is None or parent_row.deleted:
                    raise ParentNotFound(f"{self.parent.resource} {new_parent} does not exist")
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
            raise ValidationFailed("the resulting resource would be invalid", field_errors(exc)) from None

    def delete(self, caller: Caller, key: int, *, expected_version: int | None = None) -> bool:
        """Soft delete; deleting what is already deleted succeeds and changes nothing (returns False)."""
        with self._unit(caller, "delete", self.resource, key, durable=True) as (tx, note):
            row = self.repository.get(tx, key, lock="update")
            if row is None:
                raise NotFound(f"{self.resource} {key} does not exist")
            note.patient_ids.append(row.patient_id)
            if row.deleted:
                return False
            _check_version(row, expected_version, self.resource, key)
            self.repository.soft_delete(tx, key)
            self._cascade(tx, key)
            return True

    def _cascade(self, tx: Transaction, key: int) -> None:
        pass


class PatientService(ResourceService):
    def _cascade(self, tx: Transaction, key: int) -> None:
        cascade_soft_delete_patient(tx, key)

    def get_by_card_number(self, caller: Caller, id_card_num: str) -> Any:
        with self._unit(caller, "read", self.resource, durable=False) as (tx, note):
            rows = self.repository.list_live(tx, conditions=[("id_card_num", id_card_num)], after=None, limit=1)
            if not rows:
                raise NotFound("no live patient has this card number")
            note.resource_id = rows[0].values["patient_id"]
            note.patient_ids.append(rows[0].patient_id)
            return self.to_model(rows[0])

    def summary(self, caller: Caller, patient_id: int) -> models.PatientSummary:
        with self._unit(caller, "read", "patient_summary", patient_id, durable=False) as (tx, note):
            row = patients.get(tx, patient_id)
            if row is not None:
                note.patient_ids.append(patient_id)
            patient = self.to_model(_live(row, self.resource, patient_id))
            records = medical_records.list_live(tx, conditions=[("patient_id", patient_id)], after=None, limit=10_000)
            record_ids = [r.values["medical_record_id"] for r in records]
            by_record: dict[int, list[models.Prescription]] = {k: [] for k in record_ids}
            for p in prescriptions.live_children(tx, record_ids):
                by_record[p.values["medical_record_id"]].append(models.Prescription.model_construct(**p.values))
            return models.PatientSummary.model_construct(
                patient=patient,
                medical_records=[
                    models.MedicalRecordWithPrescriptions.model_construct(
                        **r.values, prescriptions=by_record[r.values["medical_record_id"]]
                    )
                    for r in records
                ],
            )

    def access_log(self, caller: Caller, patient_id: int, page: PageRequest) -> Page:
        """Who touched this patient, newest first (deleted patients included: the trail outlives them)."""
        with self._unit(caller, "read", "access_log", patient_id, durable=False) as (tx, note):
            row = patients.get(tx, patient_id)
            if row is None:
                raise NotFound(f"patient {patient_id} does not exist")
            note.patient_ids.append(patient_id)
            events = audit.for_patient(tx, patient_id, before=page.after, limit=page.limit + 1)
            has_more = len(events) > page.limit
            events = events[: page.limit]
            items = [models.AuditEvent.model_construct(**e) for e in events]
            return Page(items, events[-1]["audit_event_id"] if has_more else None)


class MedicalRecordService(ResourceService):
    def _cascade(self, tx: Transaction, key: int) -> None:
        cascade_soft_delete_medical_record(tx, key)


def _fingerprint(resource: str, parent_key: int | None, data: models.ApiModel) -> str:
    payload = json.dumps([resource, parent_key, data.model_dump(mode="json")], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


@dataclass(frozen=True)
class Services:
    patients: PatientService
    medical_records: MedicalRecordService
    prescriptions: ResourceService


def build_services(db: Database) -> Services:
    patient_service = PatientService(db, patients, models.PatientWrite, models.Patient)
    record_service = MedicalRecordService(
        db, medical_records, models.MedicalRecordWrite, models.MedicalRecord, parent=patient_service
    )
    prescription_service = ResourceService(
        db, prescriptions, models.PrescriptionWrite, models.Prescription, parent=record_service
    )
    return Services(patient_service, record_service, prescription_service)


__all__ = ["Caller", "Created", "DomainError", "Page", "PageRequest", "Services", "build_services"]
