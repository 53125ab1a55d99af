"""The resource models: the single definition of every field, its JSON name and its rules.

Request validation, response shapes, the OpenAPI document and the repositories' column lists are
all derived from these classes.
"""

from __future__ import annotations

import copy
import re
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import InitErrorDetails, PydanticCustomError

from chalicelib.domain import identifiers


def _today() -> date:
    return datetime.now(UTC).date()


def _not_in_future(value: date) -> date:
    if value > _today():
        raise ValueError("must not be in the future")
    return value


def _digits(count: str, label: str, example: str) -> Any:
    """A string of digits, documented as a pattern and rejected with a message a person can act on."""
    pattern = rf"^[0-9]{{{count}}}$"
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if not compiled.fullmatch(value):
            raise ValueError(f"must be {label}")
        return value

    return Annotated[str, AfterValidator(check), Field(json_schema_extra={"pattern": pattern}, examples=[example])]


def _no_nul(value: str) -> str:
    # PostgreSQL text cannot hold NUL; refuse it as bad input rather than fail at the database.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


# What str.strip() removes (str.isspace), spelled out: "\s" means a smaller set in ECMA-262 regexes,
# which is what the OpenAPI document's patterns are read as.
WHITESPACE_CLASS = r"\t-\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"


def _text(max_length: int, *, required: bool) -> Any:
    """Text as the document states it: the length is that of what was sent (then stored trimmed), no NUL,
    and for a required field not blank. The pattern says the same to a client (or a request generator)."""
    pattern = rf"^[^\x00]*[^\x00{WHITESPACE_CLASS}][^\x00]*$" if required else r"^[^\x00]*$"
    checks = (AfterValidator(_no_nul), AfterValidator(_not_blank)) if required else (AfterValidator(_no_nul),)
    return Annotated[
        str,
        StringConstraints(min_length=1 if required else 0, max_length=max_length),
        *checks,
        AfterValidator(str.strip),
        Field(json_schema_extra={"pattern": pattern}),
    ]


Name = _text(50, required=True)
Note = _text(255, required=False)
# A search term: matched exactly against stored (trimmed) names, so it is not trimmed itself.
NameFilter = Annotated[str, StringConstraints(min_length=1, max_length=50), AfterValidator(_no_nul)]
IdCardNum = _digits("13", "exactly 13 digits", "1101700230708")
PassportCountry = Annotated[
    str,
    StringConstraints(min_length=3, max_length=3),
    AfterValidator(identifiers.passport_issuer),
    Field(json_schema_extra={"pattern": "^[A-Za-z]{3}$"}, examples=["GBR"],
          description="the issuing state, ISO 3166-1 alpha-3 (or an ICAO code for a non-state issuer); "
                      "stored upper-case"),
]
PassportNumber = Annotated[
    str,
    StringConstraints(min_length=5, max_length=20),
    AfterValidator(identifiers.passport_number),
    Field(json_schema_extra={"pattern": identifiers.PASSPORT_NUMBER_PATTERN}, examples=["AB1234567"],
          description="the document number as printed (letters and digits); stored upper-case"),
]
PhoneNum = _digits("1,10", "1 to 10 digits", "0812345678")
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _iso_date_text(value: Any) -> Any:
    # Without this, a string of digits is read as a Unix timestamp ("0" is 1970-01-01).
    if not isinstance(value, str):
        return value
    if not _ISO_DATE.fullmatch(value):
        raise ValueError("must be a date (YYYY-MM-DD)")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ValueError("must be a valid date (YYYY-MM-DD)") from None


IsoDate = Annotated[date, BeforeValidator(_iso_date_text)]
EARLIEST_BIRTH_DATE = date(1850, 1, 1)


def _not_too_early(value: date) -> date:
    if value < EARLIEST_BIRTH_DATE:
        raise ValueError(f"must not be before {EARLIEST_BIRTH_DATE.isoformat()}")
    return value


# JSON Schema cannot bound a date; the description says what the validators check.
BirthDate = Annotated[
    IsoDate,
    AfterValidator(_not_too_early),
    AfterValidator(_not_in_future),
    Field(description=f"from {EARLIEST_BIRTH_DATE.isoformat()} up to today"),
]
def _whole_number(value: Any) -> Any:
    # JSON Schema counts 7.0 as an integer; so does this API (7.5 and "7" are still refused).
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


ResourceId = Annotated[Annotated[int, Field(ge=1, le=2**63 - 1)], BeforeValidator(_whole_number)]
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})"
)


def _rfc3339_text(value: Any) -> Any:
    # As for dates: without this, "0.5" would be read as a Unix timestamp.
    if not isinstance(value, str):
        return value
    if not _RFC3339.fullmatch(value):
        raise ValueError("must be an RFC 3339 date-time with a zone, e.g. 2026-11-01T00:00:00Z")
    try:
        return datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError("must be a valid RFC 3339 date-time") from None


Timestamp = Annotated[AwareDatetime, BeforeValidator(_rfc3339_text)]


class ApiModel(BaseModel):
    """camelCase on the wire, snake_case in Python and SQL; unknown fields and type coercion refused."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_alias=True,
        validate_by_name=False,
        serialize_by_alias=True,
        extra="forbid",
        strict=True,
        field_title_generator=lambda name, _info: name.replace("_", " ").capitalize(),
        defer_build=True,
    )


# --- patients -------------------------------------------------------------------------------------

def rule_error(field: str, message: str) -> ValidationError:
    """A rule across fields (raised from a model validator), reported on the field a client has to change."""
    detail = InitErrorDetails(type=PydanticCustomError("rule", message), loc=(field,), input=None)
    return ValidationError.from_exception_data("rule", [detail])


class PatientWrite(ApiModel):
    """The fields a client sets on a patient (POST and PUT bodies). A patient is identified by a Thai
    national ID, a passport, or both; each identifies one live patient."""

    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [
                {"required": ["idCardNum"], "properties": {"idCardNum": {"type": "string"}}},
                {"required": ["passportCountry", "passportNumber"],
                 "properties": {"passportCountry": {"type": "string"}, "passportNumber": {"type": "string"}}},
            ],
            "allOf": [  # the passport's two parts together
                {"if": {"required": [a], "properties": {a: {"type": "string"}}},
                 "then": {"required": [b], "properties": {b: {"type": "string"}}}}
                for a, b in (("passportCountry", "passportNumber"), ("passportNumber", "passportCountry"))
            ],
        }
    )

    id_card_num: IdCardNum | None = Field(
        default=None,
        description="Thai national ID: 13 digits, the last the check digit of the first 12 "
                    "(a number stored before check digits were enforced is kept while unchanged)",
    )
    passport_country: PassportCountry | None = None
    passport_number: PassportNumber | None = None
    first_name: Name
    last_name: Name
    birth_date: BirthDate
    phone_num: PhoneNum | None = None

    @model_validator(mode="after")
    def _identified(self) -> PatientWrite:
        if (self.passport_country is None) != (self.passport_number is None):
            missing = "passport_number" if self.passport_number is None else "passport_country"
            raise rule_error(missing, identifiers.PASSPORT_PAIRED)
        if self.id_card_num is None and self.passport_number is None:
            raise rule_error("id_card_num", identifiers.IDENTIFIED)
        return self


def resource_model(name: str, write_model: type[ApiModel], **identity: Any) -> type[ApiModel]:
    """A stored resource: its ids first, then the writable fields, then the database's bookkeeping."""
    fields: dict[str, Any] = {key: (annotation, ...) for key, annotation in identity.items()}
    fields.update({n: (info.annotation, copy.copy(info)) for n, info in write_model.model_fields.items()})
    fields.update(inserted_timestamp=(datetime, ...), updated_timestamp=(datetime, ...), version=(int, ...))
    return create_model(name, __base__=ApiModel, __doc__=f"A stored {name}.", **fields)


Patient = resource_model("Patient", PatientWrite, patient_id=int)


# --- medical records (visits) ---------------------------------------------------------------------

class MedicalRecordWrite(ApiModel):
    """The fields a client sets on a visit. ``patientId`` on an update moves it to another patient."""

    hospital_name: Name
    doctor_full_name: Name
    diagnosis: Note | None = None
    symptom: Note | None = None
    treatment_start_date: IsoDate
    treatment_end_date: IsoDate | None = Field(default=None, description="not before treatmentStartDate")

    @field_validator("treatment_end_date")
    @classmethod
    def _end_not_before_start(cls, end: date | None, info: ValidationInfo) -> date | None:
        start = info.data.get("treatment_start_date")
        if start is not None and end is not None and end < start:
            raise ValueError("must not be before treatmentStartDate")
        return end


class MedicalRecordUpdate(MedicalRecordWrite):
    patient_id: ResourceId | None = None


MedicalRecord = resource_model("MedicalRecord", MedicalRecordWrite, medical_record_id=int, patient_id=int)


# --- prescriptions --------------------------------------------------------------------------------

class PrescriptionWrite(ApiModel):
    medicine_name: Name
    dose: Name


class PrescriptionUpdate(PrescriptionWrite):
    """``medicalRecordId`` on an update moves the prescription to another visit."""

    medical_record_id: ResourceId | None = None


Prescription = resource_model("Prescription", PrescriptionWrite, prescription_id=int, medical_record_id=int)


# --- partial updates ------------------------------------------------------------------------------

def _without_default(extra: Any) -> Any:
    """An omitted PATCH field means "unchanged", not null: keep null out of the documented default."""

    def apply(schema: dict[str, Any]) -> None:
        if isinstance(extra, dict):
            schema.update(extra)
        schema.pop("default", None)

    return apply


def partial_model(model: type[ApiModel], name: str) -> type[ApiModel]:
    """The same fields, all optional: for PATCH. An explicit null is accepted only where the full
    model accepts null, so a required field cannot be cleared."""
    fields: dict[str, Any] = {}
    for field_name, info in model.model_fields.items():
        optional = copy.copy(info)
        optional.default = None
        optional.default_factory = None
        optional.json_schema_extra = _without_default(info.json_schema_extra)
        fields[field_name] = (info.annotation, optional)
    return create_model(name, __base__=ApiModel, __doc__=f"Partial update of {model.__name__}.", **fields)


PatientPatch = partial_model(PatientWrite, "PatientPatch")
MedicalRecordPatch = partial_model(MedicalRecordUpdate, "MedicalRecordPatch")
PrescriptionPatch = partial_model(PrescriptionUpdate, "PrescriptionPatch")


# --- composites -----------------------------------------------------------------------------------

class MedicalRecordWithPrescriptions(MedicalRecord):
    prescriptions: list[Prescription]


class PatientSummary(ApiModel):
    """A patient with a page of their visits; follow ``nextCursor`` for the rest."""

    patient: Patient
    medical_records: list[MedicalRecordWithPrescriptions]
    next_cursor: str | None = Field(
        default=None, description="Pass as `cursor` to get the next page of visits; null on the last page."
    )


# --- history ---------------------------------------------------------------------------------------

ChangeKind = Literal["create", "update", "delete", "restore"]


def version_model(resource: type[ApiModel]) -> type[ApiModel]:
    """One kept version of ``resource``: who changed what, when, and the resource as it then was."""
    name = resource.__name__
    return create_model(
        f"{name}Version",
        __base__=ApiModel,
        __doc__=f"One kept version of a {name}.",
        version=(int, Field(description="1 for the create, then one more for every change")),
        recorded_at=(datetime, Field(description="when the change was made")),
        actor=(str, Field(description="the token subject that made the change; database:<login> for SQL")),
        change=(ChangeKind, Field(description="what the change was")),
        changed_fields=(list[str], Field(description="the fields this version changed (every field set, "
                                                     "for a create); a delete or restore lists none")),
        deleted=(bool, Field(description="whether the resource was deleted at this version")),
        resource=(resource, Field(description=f"the {name} as it was at this version")),
    )


PatientVersion = version_model(Patient)
MedicalRecordVersion = version_model(MedicalRecord)
PrescriptionVersion = version_model(Prescription)


class AuditEvent(ApiModel):
    """One access decision on patient data (where it came from is kept in the trail, not served here)."""

    audit_event_id: int
    occurred_at: datetime
    actor: str
    actor_kind: str | None = Field(description="admin, clinician or patient")
    action: str
    resource_type: str
    resource_id: int | None
    patient_ids: list[int]
    request_id: str | None
    outcome: str = Field(description="success, denied, not_found, gone, conflict, precondition_failed, ...")
    reason: str | None = Field(description="the break-the-glass reason, or why the access was denied")
    break_glass: bool


# --- care teams -----------------------------------------------------------------------------------

CareTeamRole = Annotated[
    str,
    StringConstraints(pattern=r"^[a-z][a-z0-9_-]{0,49}$"),
    Field(examples=["attending"], description="lower-case word: attending, nurse, pharmacist, ..."),
]


class CareTeamGrant(ApiModel):
    """The body of a care-team PUT (optional: the role defaults to ``member``)."""

    role: CareTeamRole = "member"


class CareTeamMember(ApiModel):
    care_team_member_id: int
    patient_id: int
    member_sub: str = Field(description="the member's token subject")
    role: str
    granted_by: str
    granted_at: datetime
    revoked_by: str | None
    revoked_at: datetime | None


class Page(ApiModel):
    items: list[Any]
    next_cursor: str | None = Field(description="Pass as `cursor` to get the next page; null on the last page.")


def page_model(item: type[ApiModel]) -> type[Page]:
    return create_model(
        f"{item.__name__}Page",
        __base__=Page,
        items=(list[item], ...),
    )


PatientPage = page_model(Patient)
MedicalRecordPage = page_model(MedicalRecord)
PrescriptionPage = page_model(Prescription)
AuditEventPage = page_model(AuditEvent)
CareTeamMemberPage = page_model(CareTeamMember)
PatientVersionPage = page_model(PatientVersion)
MedicalRecordVersionPage = page_model(MedicalRecordVersion)
PrescriptionVersionPage = page_model(PrescriptionVersion)
