"""JSON Schemas of what the FHIR API serves, for the OpenAPI document (built with the document only).

They state the shape the mapping produces (``mapping.py``); the tests hold every answer to these and to the
FHIR R4 models.
"""

from __future__ import annotations

from typing import Any

_STRING = {"type": "string"}
_META = {
    "type": "object",
    "required": ["versionId", "lastUpdated"],
    "properties": {"versionId": _STRING, "lastUpdated": {"type": "string", "format": "date-time"}},
}
_REFERENCE = {"type": "object", "required": ["reference"], "properties": {"reference": _STRING}}
_ARRAY_OF_OBJECTS = {"type": "array", "items": {"type": "object"}}


def _resource(name: str, required: list[str], properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "description": f"A FHIR R4 {name} resource",
        "required": ["resourceType", "id", "meta", *required],
        "properties": {"resourceType": {"const": name}, "id": {"type": "string", "pattern": "^[0-9]{1,19}$"},
                       "meta": _META, **properties},
    }


COMPONENTS: dict[str, dict[str, Any]] = {
    "OperationOutcome": {
        "type": "object",
        "description": "A FHIR R4 OperationOutcome: why a request failed",
        "required": ["resourceType", "issue"],
        "properties": {
            "resourceType": {"const": "OperationOutcome"},
            "issue": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["severity", "code"],
                    "properties": {"severity": {"enum": ["fatal", "error", "warning", "information"]},
                                   "code": _STRING, "diagnostics": _STRING},
                },
            },
        },
    },
    "FhirPatient": _resource("Patient", ["name", "birthDate"], {
        "identifier": _ARRAY_OF_OBJECTS, "name": _ARRAY_OF_OBJECTS, "birthDate": {"type": "string", "format": "date"},
        "telecom": _ARRAY_OF_OBJECTS,
    }),
    "FhirEncounter": _resource("Encounter", ["status", "class", "subject", "period"], {
        "status": {"enum": ["in-progress", "finished"]}, "class": {"type": "object"}, "subject": _REFERENCE,
        "period": {"type": "object"}, "participant": _ARRAY_OF_OBJECTS, "reasonCode": _ARRAY_OF_OBJECTS,
        "diagnosis": _ARRAY_OF_OBJECTS, "contained": _ARRAY_OF_OBJECTS, "serviceProvider": {"type": "object"},
    }),
    "FhirMedicationRequest": _resource(
        "MedicationRequest", ["status", "intent", "medicationCodeableConcept", "subject"], {
        "status": _STRING, "intent": {"const": "order"}, "medicationCodeableConcept": {"type": "object"},
        "subject": _REFERENCE, "encounter": _REFERENCE, "authoredOn": {"type": "string", "format": "date-time"},
        "dosageInstruction": _ARRAY_OF_OBJECTS,
        }),
    "FhirBundle": {
        "type": "object",
        "description": "A FHIR R4 Bundle (searchset or history); follow the `next` link for the following page",
        "required": ["resourceType", "type", "link"],
        "properties": {
            "resourceType": {"const": "Bundle"},
            "type": {"enum": ["searchset", "history"]},
            "timestamp": {"type": "string", "format": "date-time"},
            "total": {"type": "integer", "minimum": 0},
            "link": {
                "type": "array",
                "items": {"type": "object", "required": ["relation", "url"],
                          "properties": {"relation": _STRING, "url": _STRING}},
            },
            "entry": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["fullUrl"],
                    "properties": {"fullUrl": _STRING, "resource": {"type": "object", "required": ["resourceType"]},
                                   "search": {"type": "object"}, "request": {"type": "object"},
                                   "response": {"type": "object"}},
                },
            },
        },
    },
    "FhirCapabilityStatement": {
        "type": "object",
        "description": "A FHIR R4 CapabilityStatement: what this server serves",
        "required": ["resourceType", "status", "date", "kind", "fhirVersion", "format", "rest"],
        "properties": {
            "resourceType": {"const": "CapabilityStatement"},
            "status": _STRING, "date": _STRING, "kind": _STRING, "fhirVersion": {"const": "4.0.1"},
            "format": {"type": "array", "items": _STRING}, "rest": _ARRAY_OF_OBJECTS,
        },
    },
}
