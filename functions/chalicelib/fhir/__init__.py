"""HL7 FHIR R4: the mapping of the records to FHIR resources, and the documents the FHIR API serves.

Loaded only by the FHIR routes (and the bulk export), never on the API's cold path.
"""
