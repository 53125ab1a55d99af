-- Reconciliation: the analytic table must hold exactly the rows the landing tables imply.
SELECT (SELECT count(*) FROM analytic.medical_record_denormalized) AS analytic_rows,
       (SELECT count(*) FROM analytic.medical_record_denormalized_source) AS expected_rows;
