-- Global reconciliation: the analytic table holds as many rows as the landing tables imply, and the
-- de-identified table (same grain) as many as the analytic table.
-- Reads every row, so it runs after a full rebuild and at most once per REFRESH_GLOBAL_CHECK_SECONDS.
SELECT (SELECT count(*) FROM analytic.medical_record_denormalized) AS analytic_rows,
       (SELECT count(*) FROM analytic.medical_record_denormalized_source) AS expected_rows,
       (SELECT count(*) FROM analytic.medical_record_deidentified) AS deidentified_rows;
