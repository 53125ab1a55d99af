"""What the generated-request tests tell schemathesis (tests/integration/test_generated_requests.py).

Loaded by the pytest module and, through SCHEMATHESIS_HOOKS, by the schemathesis command.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import schemathesis

from chalicelib.domain import identifiers

# The trail outlives the patient (an accounting of disclosures must), and so does the history of its care
# team: reading either after the patient's delete answers 200 by design, which the stateful phase's
# use-after-free check would count as a failure. The stateful run leaves these two reads out; every other
# phase tests them.
OUTLIVE_THE_PATIENT = "/(access-log|care-team)$"

# A valid request may still meet a state that refuses it: the row is gone (410), the ETag is stale (412),
# the idempotency key was used with another body (422). Those answers are about the data, not the request.
STATE_STATUSES = ["2xx", 401, 403, 404, 409, 410, 412, 422]


def config_toml(token: str) -> str:
    """The configuration, as the schemathesis command reads it."""
    statuses = ", ".join(f'"{s}"' if isinstance(s, str) else str(s) for s in STATE_STATUSES)
    return f"""
[auth.openapi.bearerAuth]
bearer = "{token}"

[checks.positive_data_acceptance]
expected-statuses = [{statuses}]

# A method a path does not define never reaches the app: API Gateway (REST) answers it with its
# MISSING_AUTHENTICATION_TOKEN gateway response, not 405 (and Chalice's local gateway, which stands in
# for it here, cannot answer OPTIONS at all).
[checks.unsupported_method]
enabled = false

# The original API answers 400 for a duplicate card number or a missing visit, as its clients expect;
# its valid bodies can therefore also meet a 400 about the data.
[[operations]]
include-tag = "original-api"
checks.positive_data_acceptance.expected-statuses = [{statuses}, 400]
"""


@schemathesis.hook
def filter_body(_context: Any, body: Any) -> bool:
    """Rules the document states in words because JSON Schema cannot bound a date: a birth date from
    1850-01-01 up to today, a treatment that does not end before it starts. Generated bodies that
    break them are not counted as valid requests."""
    if not isinstance(body, dict):
        return True
    birth = _date(body.get("birthDate"))
    if birth is not None and not date(1850, 1, 1) <= birth <= date.today():
        return False
    start, end = _date(body.get("treatmentStartDate")), _date(body.get("treatmentEndDate"))
    return start is None or end is None or end >= start


def _date(value: Any) -> date | None:
    try:
        return date.fromisoformat(value) if isinstance(value, str) and len(value) == 10 else None
    except ValueError:
        return None


@schemathesis.hook
def map_case(_context: Any, case: Any) -> Any:
    """Rules the document states in words because JSON Schema cannot check them: a national ID ends in the
    check digit of its first 12 digits, and a passport's issuer is a known issuing state. Generated values
    that break them are made to keep them (in bodies and queries, in every phase), so that a valid request
    stays valid; an invalid one stays invalid for its own reason."""
    for values in (case.body, case.query):
        if isinstance(values, dict):
            _keep_identifier_rules(values)
    return case


def _keep_identifier_rules(values: dict[str, Any]) -> None:
    card = values.get("idCardNum")
    if isinstance(card, str) and len(card) == 13 and card.isascii() and card.isdigit():
        values["idCardNum"] = card[:12] + str(identifiers.national_id_check_digit(card[:12]))
    country = values.get("passportCountry")
    well_formed = isinstance(country, str) and len(country) == 3 and country.isascii() and country.isalpha()
    if well_formed and country.upper() not in identifiers.PASSPORT_ISSUERS:
        values["passportCountry"] = "THA"
