"""Who may see which patient: the one place where access decisions are made.

Every surface (``/v1``, the original routes) reaches patient data through the services, and the
services ask this module before they return or change anything:

| caller    | recognised by                      | may access                                              |
|-----------|------------------------------------|---------------------------------------------------------|
| admin     | the ``admin`` scope                | every patient                                           |
| clinician | a user token without ``patient_id`` | patients whose care team lists them; others only with a |
|           |                                    | break-the-glass reason (allowed, flagged, audited)       |
| patient   | a ``patient_id`` claim             | read only: their own record, visits, prescriptions and   |
|           |                                    | access log; any other patient reads as "does not exist"  |

Scopes (``read``/``write``/``admin``) are what a token may do at all; the context above is whose
data it may do it to. A decision is returned (and audited by the caller) or raised as a domain error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum

from chalicelib.domain.errors import DomainError, FieldError, Forbidden, NotFound, ValidationFailed

# A reason of 10 to 500 visible ASCII characters and spaces, not starting or ending with a space.
BREAK_GLASS = re.compile(r"[\x21-\x7e][\x20-\x7e]{8,498}[\x21-\x7e]")


class ActorKind(StrEnum):
    ADMIN = "admin"
    CLINICIAN = "clinician"
    PATIENT = "patient"


def actor_kind(scopes: frozenset[str], patient_id: int | None) -> ActorKind:
    """A patient-context token stays a patient whatever scopes it carries (least privilege wins)."""
    if patient_id is not None:
        return ActorKind.PATIENT
    return ActorKind.ADMIN if "admin" in scopes else ActorKind.CLINICIAN


@dataclass
class Caller:
    """Who is asking, in which context, from where; and what access this request was granted."""

    subject: str
    kind: ActorKind
    request_id: str | None = None
    patient_id: int | None = None          # the patient a patient-context token speaks for
    break_glass_reason: str | None = None   # a clinician's emergency reason, when sent
    source_ip: str | None = None
    user_agent: str | None = None
    break_glass_used: bool = field(default=False, compare=False)

    @property
    def member_sub(self) -> str | None:
        """The subject to look up in care teams: only a clinician's access depends on it."""
        return self.subject if self.kind is ActorKind.CLINICIAN else None


def break_glass_reason(header: str | None) -> str | None:
    """The reason of a ``Break-Glass`` header, checked; None when the header is absent."""
    if header is None:
        return None
    if not BREAK_GLASS.fullmatch(header):
        raise ValidationFailed(
            "invalid Break-Glass header",
            [FieldError("Break-Glass", "must be a reason of 10 to 500 visible ASCII characters and spaces")],
        )
    return header


class AccessDenied(Forbidden):
    """The caller may not act on this patient's data (audited as denied)."""


class BreakGlassRequired(AccessDenied):
    """A clinician outside the care team; an emergency access is possible with a reason."""


class Hidden(NotFound):
    """Outside a patient-context caller's own data: answered exactly like a resource that does not exist."""

    audit_outcome = "denied"

    def __init__(self, detail: str, reason: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True)
class Decision:
    """An allowed access; ``break_glass`` when it was allowed only because of an emergency reason."""

    break_glass: bool = False
    reason: str | None = None


ALLOWED = Decision()


def decide(caller: Caller, patient_id: int, *, on_team: bool, write: bool, not_found: str) -> Decision:
    """May ``caller`` read (or change) the data of ``patient_id``?

    ``on_team``: whether the caller's subject is an active member of the patient's care team (looked
    up with the data, in the same query). ``not_found``: the message a missing resource would get,
    so that a hidden one is indistinguishable.
    """
    if caller.kind is ActorKind.ADMIN:
        return ALLOWED
    if caller.kind is ActorKind.PATIENT:
        if caller.patient_id != patient_id:
            raise Hidden(not_found, "outside the patient's own record")
        if write:
            raise AccessDenied("a patient-context token may only read")
        return ALLOWED
    if on_team:
        return ALLOWED
    if caller.break_glass_reason is not None:
        return Decision(break_glass=True, reason=caller.break_glass_reason)
    raise BreakGlassRequired(
        "you are not on this patient's care team; in an emergency, repeat the request with a "
        "'Break-Glass: <reason>' header (at least 10 characters): the access is allowed, audited and reviewed"
    )


def may_write(caller: Caller) -> None:
    """Checked before any lookup, so a patient-context token learns nothing from a refused write."""
    if caller.kind is ActorKind.PATIENT:
        raise AccessDenied("a patient-context token may only read")


def may_read_access_log(caller: Caller, patient_id: int, *, not_found: str) -> None:
    """The accounting of disclosures: admins, and the patient themself."""
    if caller.kind is ActorKind.ADMIN:
        return
    if caller.kind is ActorKind.PATIENT:
        if caller.patient_id != patient_id:
            raise Hidden(not_found, "outside the patient's own record")
        return
    raise AccessDenied("only an admin or the patient themself may read a patient's access log")


def must_be_admin(caller: Caller, what: str) -> None:
    if caller.kind is not ActorKind.ADMIN:
        raise AccessDenied(f"{what} is for admins")


@dataclass(frozen=True)
class Visibility:
    """Which patients a list may return: every one (None), a clinician's team, or one patient."""

    member_sub: str | None = None
    patient_id: int | None = None


def list_visibility(caller: Caller) -> Visibility | None:
    if caller.kind is ActorKind.ADMIN:
        return None
    if caller.kind is ActorKind.PATIENT:
        return Visibility(patient_id=caller.patient_id)
    return Visibility(member_sub=caller.subject)


def denial_reason(error: DomainError) -> str | None:
    """What the audit trail records as the reason of a refused access."""
    if isinstance(error, Hidden):
        return error.reason
    if isinstance(error, Forbidden):
        return error.detail
    return None
