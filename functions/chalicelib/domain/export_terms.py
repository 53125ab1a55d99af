"""The terms of a FHIR bulk export that its routes declare (types, formats, link lifetime, levels) and its two
errors: light enough to load with the API, which declares the routes at import; the export's rules
(``chalicelib.domain.export``) load with the first export request."""

from __future__ import annotations

from chalicelib.domain.errors import DomainError

# --- one definition of each fact of the export (the template's parameters are checked against these) ---
RESOURCE_TYPES = ("Patient", "Encounter", "MedicationRequest")
NDJSON = "application/fhir+ndjson"
# What `_outputFormat` may say: the IG's media type and its two abbreviations; the files are always NDJSON.
OUTPUT_FORMATS = (NDJSON, "application/ndjson", "ndjson")
SUPPORTED_PARAMETERS = ("_outputFormat", "_since", "_type")
# A download link works this long after the manifest that carries it was read; read the manifest again
# for fresh links (requiresAccessToken is false: the link itself is the short-lived credential).
LINK_SECONDS = 600
# A job's files are deleted this long after they were written (the bucket's lifecycle rule,
# template parameter ExportRetentionDays, defaults to this).
RETENTION_DAYS = 1
# What a client polling a running job is asked to wait between polls.
POLL_AFTER_SECONDS = 5
# A file holds at most this many resources; a larger type is split into numbered parts.
FILE_MAX_RESOURCES = 250_000

LEVEL_SYSTEM = "system"    # GET /fhir/R4/$export
LEVEL_PATIENT = "patient"  # GET /fhir/R4/Patient/$export: every patient's compartment


class ExportNotConfigured(DomainError):
    """This deployment has no export runner (no state machine or bucket): `make run` serves no exports."""


class ExportFailed(DomainError):
    """The job ended in failure; the detail is a fixed reason."""
