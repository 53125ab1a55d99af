"""Turn model validation failures into field errors a client can act on, without echoing input."""

from __future__ import annotations

from pydantic import ValidationError
from pydantic.alias_generators import to_camel

from chalicelib.domain.errors import FieldError

_MESSAGES = {
    "missing": "is required",
    "extra_forbidden": "is not a known field",
    "string_type": "must be a string",
    "int_type": "must be an integer",
    "date_type": "must be a date (YYYY-MM-DD)",
    "date_from_datetime_parsing": "must be a date (YYYY-MM-DD)",
    "date_from_datetime_inexact": "must be a date (YYYY-MM-DD)",
    "date_parsing": "must be a date (YYYY-MM-DD)",
    "model_type": "must be a JSON object",
    "model_attributes_type": "must be a JSON object",
}


def _location(loc: tuple) -> str:
    """The JSON name of the field (validation by Python name reports snake_case)."""
    return ".".join(to_camel(part) if isinstance(part, str) and "_" in part else str(part) for part in loc) or "body"


def _message(error: dict) -> str:
    kind = error["type"]
    if kind in ("string_type", "int_type", "date_type") and error.get("input", ...) is None:
        return "must not be null"
    if kind == "value_error":
        return str(error["msg"]).removeprefix("Value error, ")
    if kind in _MESSAGES:
        return _MESSAGES[kind]
    ctx = error.get("ctx") or {}
    if kind == "string_too_long":
        return f"must be at most {ctx.get('max_length')} characters"
    if kind == "string_too_short":
        return "must not be empty" if ctx.get("min_length") == 1 else f"must be at least {ctx.get('min_length')}"
    if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        return str(error["msg"]).replace("Input should be", "must be")
    return str(error["msg"]).replace("Input should be", "must be")


MAX_FIELD_ERRORS = 50  # a body of 100,000 unknown keys gets a short answer, not a 5 MB one
MAX_FIELD_NAME = 100


def _name(error: dict) -> str:
    # an unknown field is named as the client sent it (shortened: the answer must stay small)
    name = ".".join(map(str, error["loc"])) if error["type"] == "extra_forbidden" else _location(error["loc"])
    return name if len(name) <= MAX_FIELD_NAME else name[: MAX_FIELD_NAME - 1] + "…"


def field_errors(exc: ValidationError) -> list[FieldError]:
    errors = exc.errors(include_url=False)
    listed = [FieldError(_name(e), _message(e)) for e in errors[:MAX_FIELD_ERRORS]]
    if len(errors) > MAX_FIELD_ERRORS:
        listed.append(FieldError("body", f"and {len(errors) - MAX_FIELD_ERRORS} more errors"))
    return listed
