"""Domain errors. The HTTP adapters map each to a status code in exactly one place."""

from __future__ import annotations

from dataclasses import dataclass


class DomainError(Exception):
    """Base class; ``audit_outcome`` is what the audit trail records when the error ends a request."""

    audit_outcome = "failed"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


@dataclass(frozen=True)
class FieldError:
    field: str
    message: str


class ValidationFailed(DomainError):
    audit_outcome = "invalid"

    def __init__(self, detail: str, errors: list[FieldError] | None = None) -> None:
        super().__init__(detail)
        self.errors = errors or []


class NotFound(DomainError):
    audit_outcome = "not_found"


class Gone(DomainError):
    audit_outcome = "gone"


class ParentNotFound(NotFound):
    """The parent named in a create does not exist (or is deleted)."""


class ParentGone(Gone):
    """The parent named in a create has been deleted."""


class Conflict(DomainError):
    audit_outcome = "conflict"


class PreconditionFailed(DomainError):
    audit_outcome = "precondition_failed"


class IdempotencyKeyReused(DomainError):
    audit_outcome = "rejected"


class Forbidden(DomainError):
    audit_outcome = "denied"


class Unavailable(DomainError):
    """A dependency (the database) cannot be reached; the request may be retried."""

    audit_outcome = "unavailable"
