"""The bulk export kick-off's parameters (no I/O): what is accepted, what is refused and how it is named."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from chalicelib.domain import export, export_terms
from chalicelib.domain.errors import ValidationFailed
from chalicelib.export.worker import object_key
from chalicelib.repositories.export_jobs import ExportJob

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def parse(query: dict[str, str], prefer: str | None = "respond-async", key: str | None = None):
    return export.parse_request(export.LEVEL_SYSTEM, query, prefer, key, now=NOW)


def refused(query: dict[str, str], prefer: str | None = "respond-async") -> dict[str, str]:
    with pytest.raises(ValidationFailed) as caught:
        parse(query, prefer)
    return {e.field: e.message for e in caught.value.errors}


def test_defaults_every_type_ndjson_and_no_since():
    request = parse({})
    assert request.resource_types == export.RESOURCE_TYPES
    assert request.since is None and request.output_format == export.NDJSON


@pytest.mark.parametrize("prefer", [None, "", "return=minimal", "respond-sync"])
def test_prefer_respond_async_is_required(prefer):
    assert "Prefer" in refused({}, prefer)


def test_prefer_may_carry_other_preferences():
    assert parse({}, "handling=strict, respond-async").level == export.LEVEL_SYSTEM


def test_types_are_a_subset_in_the_servers_order_each_once():
    request = parse({"_type": "MedicationRequest,Patient,Patient"})
    assert request.resource_types == ("Patient", "MedicationRequest")


@pytest.mark.parametrize("types", ["Observation", "Patient,Observation", "", ",", "patient"])
def test_an_unknown_type_is_refused(types):
    assert "_type" in refused({"_type": types})


def test_a_refused_type_is_named_only_when_it_looks_like_a_type():
    assert "Observation" in refused({"_type": "Patient,Observation"})["_type"]
    assert "<script>" not in refused({"_type": "<script>"})["_type"]


@pytest.mark.parametrize("since", ["2026-11-01T00:00:00Z", "2026-11-01T07:00:00+07:00",
                                   "2026-11-01T00:00:00.123456789Z"])
def test_since_is_a_fhir_instant(since):
    assert parse({"_since": since}).since == datetime(2026, 11, 1, tzinfo=UTC).replace(
        microsecond=123456 if "." in since else 0)


@pytest.mark.parametrize("since", ["2026-11-01", "2026-11-01T00:00:00", "yesterday", "2026-13-01T00:00:00Z",
                                   "2026-12-01T00:00:00Z"])
def test_since_without_a_zone_malformed_or_in_the_future_is_refused(since):
    assert "_since" in refused({"_since": since})


@pytest.mark.parametrize("output_format", export.OUTPUT_FORMATS)
def test_the_ndjson_output_formats_are_accepted(output_format):
    assert parse({"_outputFormat": output_format}).output_format == output_format


def test_every_bad_parameter_is_reported_at_once():
    errors = refused({"_outputFormat": "text/csv", "_typeFilter": "Patient?active=true", "_type": "Foo"}, None)
    assert set(errors) == {"Prefer", "_outputFormat", "_typeFilter", "_type"}


def test_the_same_request_has_the_same_fingerprint_whatever_its_spelling():
    a = parse({"_type": "Encounter,Patient", "_since": "2026-11-01T07:00:00+07:00"})
    b = parse({"_type": "Patient,Encounter", "_since": "2026-11-01T00:00:00Z"}, key="k")
    assert a.fingerprint == b.fingerprint
    assert parse({}).fingerprint != a.fingerprint
    patient_level = export.parse_request(export_terms.LEVEL_PATIENT, {}, "respond-async", None, now=NOW)
    assert patient_level.fingerprint != parse({}).fingerprint


def test_the_manifest_request_is_rebuilt_from_the_job():
    job = ExportJob(7, "admin", export_terms.LEVEL_PATIENT, ("Patient",), datetime(2026, 11, 1, tzinfo=UTC), NOW,
                    "completed", None, None)
    assert export.request_url("https://api.example/fhir/R4", job) == (
        "https://api.example/fhir/R4/Patient/$export?_type=Patient&_since=2026-11-01T00:00:00Z")
    every = ExportJob(7, "admin", export.LEVEL_SYSTEM, export.RESOURCE_TYPES, None, NOW, "completed", None, None)
    assert export.request_url("https://api.example/fhir/R4", every) == "https://api.example/fhir/R4/$export"


def test_the_manifest_shape():
    manifest = export.Manifest(NOW, "r", [export.OutputFile("Patient", "https://x", 3)])
    assert manifest.as_json() == {"transactionTime": "2026-11-30T12:00:00Z", "request": "r",
                                  "requiresAccessToken": False,
                                  "output": [{"type": "Patient", "url": "https://x", "count": 3}], "error": []}
    assert object_key(7, "Patient", 2) == "exports/7/Patient-2.ndjson"


def test_the_export_rules_load_with_the_first_export_request_not_at_start():
    """The API declares the export's routes at import from its terms alone; its rules, job repository, worker
    and AWS adapters load with the first export request."""
    import subprocess
    import sys
    from pathlib import Path

    functions = Path(__file__).resolve().parents[2] / "functions"
    script = (
        "import sys, app; deferred = ('chalicelib.domain.export', 'chalicelib.repositories.export_jobs'); "
        "print(sorted(m for m in sys.modules if m in deferred or m.startswith('chalicelib.export')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=functions,
        env={"PYTHONPATH": str(functions), "JWT_SECRET": "x" * 48, "AWS_DEFAULT_REGION": "us-east-1"},
    )
    assert result.stdout.strip().splitlines()[-1] == "[]"
