"""The CapabilityStatement, derived from what the route table serves (never written by hand).

Each FHIR route declares the interaction it serves (``api/fhir.py``: ``INTERACTIONS``); the search parameters
and the operations come from the same tables the handlers dispatch on. A route added or removed changes the
statement with it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from chalicelib.fhir.mapping import FHIR_VERSION

# When the statement's content last changed (CapabilityStatement.date); bump it with the route table.
STATEMENT_DATE = "2026-11-30"
_INTERACTION_ORDER = ("read", "vread", "update", "patch", "delete", "history-instance", "history-type", "create",
                      "search-type")


def capability_statement(
    base_url: str,
    served: Iterable[tuple[str | None, str]],
    search_params: Mapping[str, Iterable[Any]],
    *,
    system_operations: Mapping[str, Any],
    type_operations: Mapping[str, Mapping[str, Any]],
) -> dict[str, Any]:
    """``served``: (resource type, interaction) per route; ``search_params``: per type, objects with ``name``,
    ``type`` and ``documentation``; operations: name -> object with ``definition``."""
    interactions: dict[str, set[str]] = {}
    for resource_type, interaction in served:
        if resource_type is not None and interaction in _INTERACTION_ORDER:
            interactions.setdefault(resource_type, set()).add(interaction)
    resources = []
    for resource_type in sorted(interactions):
        entry: dict[str, Any] = {
            "type": resource_type,
            "interaction": [{"code": code} for code in _INTERACTION_ORDER if code in interactions[resource_type]],
            "versioning": "versioned",
            "readHistory": "vread" in interactions[resource_type],
        }
        if "search-type" in interactions[resource_type]:
            entry["searchParam"] = [
                {"name": p.name, "type": p.type, "documentation": p.documentation}
                for p in search_params.get(resource_type, ())
            ]
        operations = type_operations.get(resource_type) or {}
        if operations:
            entry["operation"] = [
                {"name": name.lstrip("$"), "definition": operations[name].definition} for name in sorted(operations)
            ]
        resources.append(entry)
    rest: dict[str, Any] = {
        "mode": "server",
        "documentation": "Read-only FHIR R4 view of the medical records, on the same access model and audit trail "
                         "as the /v1 API.",
        "security": {
            "cors": False,
            "description": "A bearer JWT (Authorization: Bearer ...) with the `read` scope. Admins see every patient; "
                           "clinicians their care teams' patients (others with a `Break-Glass: <reason>` header, "
                           "audited); a token with a `patient_id` claim sees that patient's own records only.",
        },
        "resource": resources,
    }
    if system_operations:
        rest["operation"] = [
            {"name": name.lstrip("$"), "definition": system_operations[name].definition}
            for name in sorted(system_operations)
        ]
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": STATEMENT_DATE,
        "publisher": "Medical records",
        "kind": "instance",
        "implementation": {"description": "Medical records FHIR R4 API", "url": base_url},
        "fhirVersion": FHIR_VERSION,
        "format": ["json"],
        "rest": [rest],
    }
