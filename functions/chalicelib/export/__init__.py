"""The bulk export job's worker (run by state_machines/bulk_export.asl.json) and its AWS adapters."""
