"""Database errors translated into domain errors, by constraint name: the one place that knows them."""

from __future__ import annotations

import psycopg2
import psycopg2.errors

from chalicelib.domain.errors import (
    Conflict,
    DomainError,
    FieldError,
    ParentNotFound,
    Unavailable,
    ValidationFailed,
)
from chalicelib.domain.identifiers import IDENTIFIED, PASSPORT_PAIRED

_FIELD_CONSTRAINTS = {
    "patient_id_card_num_format": ("idCardNum", "must be exactly 13 digits"),
    "patient_first_name_not_blank": ("firstName", "must not be blank"),
    "patient_last_name_not_blank": ("lastName", "must not be blank"),
    "patient_birth_date_range": ("birthDate", "is too far in the past"),
    "patient_birth_date_not_future": ("birthDate", "must not be in the future"),
    "patient_phone_num_format": ("phoneNum", "must be 1 to 10 digits"),
    "patient_passport_country_format": ("passportCountry", "must be three letters A-Z"),
    "patient_passport_number_format": ("passportNumber", "must be 5 to 20 letters A-Z and digits"),
    "patient_passport_complete": ("passportNumber", PASSPORT_PAIRED),
    "patient_identified": ("idCardNum", IDENTIFIED),
    "medical_record_hospital_name_not_blank": ("hospitalName", "must not be blank"),
    "medical_record_doctor_full_name_not_blank": ("doctorFullName", "must not be blank"),
    "medical_record_treatment_dates": ("treatmentEndDate", "must not be before treatmentStartDate"),
    "prescription_medicine_name_not_blank": ("medicineName", "must not be blank"),
    "prescription_dose_not_blank": ("dose", "must not be blank"),
}
_UNIQUE_CONSTRAINTS = {
    "patient_id_card_num_live_key": "a live patient with this idCardNum already exists",
    "patient_passport_live_key": "a live patient with this passport (passportCountry, passportNumber) already exists",
}


def translate(exc: psycopg2.Error) -> DomainError | None:
    """The domain error a database error means, or None when it is a fault of ours (a bug)."""
    diag = getattr(exc, "diag", None)
    constraint = getattr(diag, "constraint_name", None)
    if isinstance(exc, psycopg2.errors.UniqueViolation) and constraint in _UNIQUE_CONSTRAINTS:
        return Conflict(_UNIQUE_CONSTRAINTS[constraint])
    if isinstance(exc, psycopg2.errors.CheckViolation) and constraint in _FIELD_CONSTRAINTS:
        field, message = _FIELD_CONSTRAINTS[constraint]
        return ValidationFailed("the request body is invalid", [FieldError(field, message)])
    if isinstance(exc, psycopg2.errors.ForeignKeyViolation):
        return ParentNotFound("the parent resource does not exist")
    if isinstance(exc, psycopg2.DataError):  # a value the database cannot hold (out of range, malformed)
        return ValidationFailed("a value is out of range")
    if isinstance(exc, psycopg2.OperationalError | psycopg2.InterfaceError) and not isinstance(
        exc, psycopg2.errors.QueryCanceled
    ):
        return Unavailable("the database is unavailable; retry later")
    return None
