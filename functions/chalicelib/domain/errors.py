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


class InvalidResult(Conflict):
    """A partial change that is valid on its own but would leave the stored resource breaking a rule
    (a treatment end before the stored start): a conflict with the resource's state, with the fields."""

    def __init__(self, detail: str, errors: list[FieldError]) -> None:
        super().__init__(detail)
        self.errors = errors


class PreconditionFailed(DomainError):
    audit_outcome = "precondition_failed"


class IdempotencyKeyReused(DomainError):
    audit_outcome = "rejected"


class Forbidden(DomainError):
    audit_outcome = "denied"


class Unavailable(DomainError):
    """A dependency (the database) cannot be reached; the request may be retried."""

    audit_outcome = "unavailable"


class UnsupportedContent(DomainError):
    """The request body is not JSON in UTF-8 (another media type or charset)."""

    audit_outcome = "invalid"


class TooLarge(DomainError):
    """The request body is larger than any valid request needs."""

    audit_outcome = "invalid"


class Unexpected(DomainError):
    """A failure that is not the caller's (a bug, an unexpected dependency failure): retrying is safe."""

    audit_outcome = "failed"
