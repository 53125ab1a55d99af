"""Validate what the FHIR API serves against FHIR R4 models (tests only: never on the Lambda's import path).

fhir.resources 8 carries R5 (its default) and R4B (4.3.0) as pydantic-2 models; R4 (4.0.1) itself is only in
the 6.x line, which needs pydantic 1 and does not import beside the service's pydantic 2. R4B changed none of
the resources served here (Patient, Encounter, MedicationRequest, Bundle, OperationOutcome,
CapabilityStatement) in a way that touches the elements used, so R4B is the closest R4 validation available.
Extra or misspelt elements, wrong types and wrong codes of required bindings fail; nested resources (Bundle
entries, contained) are validated as their own types.
"""

from __future__ import annotations

from typing import Any

from fhir.resources.R4B import get_fhir_model_class


def validate(resource: dict[str, Any]) -> Any:
    """The resource parsed by the FHIR model of its resourceType (raises on any violation)."""
    model = get_fhir_model_class(resource["resourceType"])
    parsed = model.model_validate(resource)
    for entry in resource.get("entry") or []:
        if "resource" in entry:
            validate(entry["resource"])
    for contained in resource.get("contained") or []:
        validate(contained)
    return parsed
