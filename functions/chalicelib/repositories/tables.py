"""What the repositories know about each application table, derived from the domain models."""

from __future__ import annotations

from dataclasses import dataclass

from chalicelib.domain import models

BOOKKEEPING = ("inserted_timestamp", "updated_timestamp", "version")


@dataclass(frozen=True)
class Table:
    resource: str                 # the name used in errors and the audit trail
    name: str                     # qualified table name
    key: str                      # primary key column
    writable: tuple[str, ...]     # columns a client sets, from the model
    parent_key: str | None        # FK column to the parent resource
    parent: Table | None
    patient_id_sql: str           # expression giving the owning patient's id, with the table aliased as t
    patient_join: str = ""        # join that reaches the owning patient's id from the table aliased as r
    patient_column: str = "r.patient_id"  # the owning patient's id once ``patient_join`` is applied

    @property
    def columns(self) -> tuple[str, ...]:
        extra = (self.parent_key,) if self.parent_key else ()
        return (self.key, *extra, *self.writable, *BOOKKEEPING)

    @property
    def select_list(self) -> str:
        return ", ".join(f"t.{c}" for c in self.columns)


def _writable(model: type[models.ApiModel], *exclude: str) -> tuple[str, ...]:
    return tuple(name for name in model.model_fields if name not in exclude)


PATIENT = Table(
    resource="patient",
    name="medical_app.patient",
    key="patient_id",
    writable=_writable(models.PatientWrite),
    parent_key=None,
    parent=None,
    patient_id_sql="t.patient_id",
)
MEDICAL_RECORD = Table(
    resource="medical_record",
    name="medical_app.medical_record",
    key="medical_record_id",
    writable=_writable(models.MedicalRecordWrite),
    parent_key="patient_id",
    parent=PATIENT,
    patient_id_sql="t.patient_id",
)
PRESCRIPTION = Table(
    resource="prescription",
    name="medical_app.prescription",
    key="prescription_id",
    writable=_writable(models.PrescriptionWrite),
    parent_key="medical_record_id",
    parent=MEDICAL_RECORD,
    patient_id_sql=(
        "(SELECT r.patient_id FROM medical_app.medical_record r WHERE r.medical_record_id = t.medical_record_id)"
    ),
    patient_join="JOIN medical_app.medical_record pr ON pr.medical_record_id = r.medical_record_id",
    patient_column="pr.patient_id",
)
