"""The one mapping from the application's rows to FHIR R4 resources (and the Bundle / OperationOutcome shapes).

Every FHIR answer of the API and every line of a bulk export is built here, so the two cannot disagree.
A row is given as a mapping of column names (as the repositories and models name them) to values.

- patient -> ``Patient``: national ID and passport -> ``identifier`` (systems below, types v2-0203 ``NI`` and
  ``PPN``); first and last name -> ``name`` (official); ``birthDate``; phone -> ``telecom``.
- medical record (a visit) -> ``Encounter``: ``finished`` once it has a treatment end date (else
  ``in-progress``); class ``AMB``; ``subject``; ``period`` from the treatment dates; symptom -> ``reasonCode``
  text; diagnosis -> a contained ``Condition`` that ``diagnosis`` names; doctor -> ``participant`` (primary
  performer, by name); hospital -> ``serviceProvider`` (by name).
- prescription -> ``MedicationRequest``: status ``active``, intent ``order``, medicine ->
  ``medicationCodeableConcept`` text, ``subject``, ``encounter``, dose -> ``dosageInstruction`` text,
  ``authoredOn`` (when it was recorded).

Every resource carries ``meta.versionId`` (the row's ``version``) and ``meta.lastUpdated``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime
from typing import Any

from chalicelib import config

FHIR_VERSION = "4.0.1"

# Identifier systems and types.
NATIONAL_ID_SYSTEM = config.FHIR_NATIONAL_ID_SYSTEM
PASSPORT_SYSTEM_PREFIX = "http://hl7.org/fhir/sid/passport-"  # HL7's convention: + the issuing state's alpha-3
IDENTIFIER_TYPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/v2-0203"
NATIONAL_ID_TYPE = {"system": IDENTIFIER_TYPE_SYSTEM, "code": "NI", "display": "National unique individual identifier"}
PASSPORT_TYPE = {"system": IDENTIFIER_TYPE_SYSTEM, "code": "PPN", "display": "Passport number"}
ENCOUNTER_CLASS = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB", "display": "ambulatory",
}
PRIMARY_PERFORMER = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "PPRF",
    "display": "primary performer",
}
ENCOUNTER_DIAGNOSIS_ROLE = {
    "system": "http://terminology.hl7.org/CodeSystem/diagnosis-role", "code": "DD", "display": "Discharge diagnosis",
}
DIAGNOSIS_ID = "diagnosis"  # the id of the contained Condition an Encounter's diagnosis points at


def instant(value: Any) -> str:
    """A FHIR instant (UTC, ``Z``) from a timestamp."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _date(value: Any) -> str:
    return value.isoformat() if isinstance(value, date) else str(value)


def meta(values: Mapping[str, Any]) -> dict[str, Any]:
    return {"versionId": str(values["version"]), "lastUpdated": instant(values["updated_timestamp"])}


def passport_system(country: str) -> str:
    return f"{PASSPORT_SYSTEM_PREFIX}{country.upper()}"


def identifiers(values: Mapping[str, Any]) -> list[dict[str, Any]]:
    found = []
    if values.get("id_card_num"):
        found.append({"use": "official", "type": {"coding": [NATIONAL_ID_TYPE]}, "system": NATIONAL_ID_SYSTEM,
                      "value": values["id_card_num"]})
    if values.get("passport_country") and values.get("passport_number"):
        found.append({"use": "official", "type": {"coding": [PASSPORT_TYPE]},
                      "system": passport_system(values["passport_country"]), "value": values["passport_number"]})
    return found


def patient(values: Mapping[str, Any]) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Patient",
        "id": str(values["patient_id"]),
        "meta": meta(values),
        "identifier": identifiers(values),
        "name": [{"use": "official", "family": values["last_name"], "given": [values["first_name"]]}],
        "birthDate": _date(values["birth_date"]),
    }
    if not resource["identifier"]:
        del resource["identifier"]
    if values.get("phone_num"):
        resource["telecom"] = [{"system": "phone", "value": values["phone_num"]}]
    return resource


def encounter_status(end: Any) -> str:
    """``finished`` once the visit has a treatment end date, else ``in-progress`` (a function of the row
    alone, so a version reads the same whenever it is read)."""
    return "finished" if end is not None else "in-progress"


def reference(resource_type: str, key: Any) -> dict[str, str]:
    return {"reference": f"{resource_type}/{key}"}


def encounter(values: Mapping[str, Any]) -> dict[str, Any]:
    subject = reference("Patient", values["patient_id"])
    period = {"start": _date(values["treatment_start_date"])}
    if values.get("treatment_end_date") is not None:
        period["end"] = _date(values["treatment_end_date"])
    resource: dict[str, Any] = {
        "resourceType": "Encounter",
        "id": str(values["medical_record_id"]),
        "meta": meta(values),
        "status": encounter_status(values.get("treatment_end_date")),
        "class": ENCOUNTER_CLASS,
        "subject": subject,
        "participant": [
            {"type": [{"coding": [PRIMARY_PERFORMER]}], "individual": {"display": values["doctor_full_name"]}}
        ],
        "period": period,
        "serviceProvider": {"display": values["hospital_name"]},
    }
    if values.get("symptom"):
        resource["reasonCode"] = [{"text": values["symptom"]}]
    if values.get("diagnosis"):
        # The diagnosis is a condition, not a code: a contained Condition that the Encounter names.
        resource["contained"] = [{
            "resourceType": "Condition", "id": DIAGNOSIS_ID, "code": {"text": values["diagnosis"]}, "subject": subject,
        }]
        resource["diagnosis"] = [
            {"condition": {"reference": f"#{DIAGNOSIS_ID}"}, "use": {"coding": [ENCOUNTER_DIAGNOSIS_ROLE]}}
        ]
    return resource


def medication_request(values: Mapping[str, Any], patient_id: int) -> dict[str, Any]:
    return {
        "resourceType": "MedicationRequest",
        "id": str(values["prescription_id"]),
        "meta": meta(values),
        "status": "active",
        "intent": "order",
        "medicationCodeableConcept": {"text": values["medicine_name"]},
        "subject": reference("Patient", patient_id),
        "encounter": reference("Encounter", values["medical_record_id"]),
        "authoredOn": instant(values["inserted_timestamp"]),
        "dosageInstruction": [{"text": values["dose"]}],
    }


# --- Bundles and OperationOutcomes ------------------------------------------------------------------------


def entry(base_url: str, resource: dict[str, Any], *, mode: str | None = "match") -> dict[str, Any]:
    item: dict[str, Any] = {"fullUrl": f"{base_url}/{resource['resourceType']}/{resource['id']}", "resource": resource}
    if mode is not None:
        item["search"] = {"mode": mode}
    return item


def bundle(
    bundle_type: str,
    entries: Iterable[dict[str, Any]],
    *,
    self_url: str,
    next_url: str | None = None,
    total: int | None = None,
    timestamp: datetime | None = None,
) -> dict[str, Any]:
    links = [{"relation": "self", "url": self_url}]
    if next_url is not None:
        links.append({"relation": "next", "url": next_url})
    document: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": bundle_type,
        "timestamp": instant(timestamp or datetime.now(UTC)),
        "link": links,
    }
    if total is not None:
        document["total"] = total
    document["entry"] = list(entries)
    if not document["entry"]:
        del document["entry"]
    return document


def history_entry(
    base_url: str, resource_type: str, key: int, version: int, change: str, recorded_at: Any,
    resource: dict[str, Any] | None,
) -> dict[str, Any]:
    """One version in a history Bundle: what was done (request) and its result (response)."""
    method = {"create": "POST", "update": "PUT", "restore": "PUT", "delete": "DELETE"}[change]
    url = resource_type if method == "POST" else f"{resource_type}/{key}"
    item: dict[str, Any] = {"fullUrl": f"{base_url}/{resource_type}/{key}"}
    if resource is not None:
        item["resource"] = resource
    item["request"] = {"method": method, "url": url}
    item["response"] = {
        "status": {"POST": "201 Created", "PUT": "200 OK", "DELETE": "204 No Content"}[method],
        "etag": f'W/"{version}"',
        "lastModified": instant(recorded_at),
    }
    return item


# OperationOutcome.issue.code per HTTP status (http://hl7.org/fhir/issue-type).
ISSUE_CODES = {
    400: "invalid", 401: "login", 403: "forbidden", 404: "not-found", 406: "not-supported", 409: "conflict",
    410: "deleted", 412: "conflict", 413: "too-costly", 415: "not-supported", 422: "business-rule",
    500: "exception", 503: "transient",
}


def operation_outcome(status: int, diagnostics: str, details: Iterable[str] = ()) -> dict[str, Any]:
    """An OperationOutcome for an error answer: one issue with the reason, one more per detail (e.g. a field)."""
    code = ISSUE_CODES.get(status, "processing")
    issues = [{"severity": "error", "code": code, "diagnostics": diagnostics}]
    issues += [{"severity": "error", "code": code, "diagnostics": d} for d in details]
    return {"resourceType": "OperationOutcome", "issue": issues}
