-- The rows the affected visits and prescriptions should have, computed once from the landing tables for
-- the merge and its check. Each kind of row is filtered by the affected keys on its own, so the planner
-- reads only those by index (a filter on the union of both would make it compute the whole union).
CREATE TEMP TABLE desired_row ON COMMIT DROP AS
SELECT * FROM analytic.denormalized_prescription_rows
WHERE medical_record_id IN (SELECT medical_record_id FROM affected_record)
UNION ALL
SELECT * FROM analytic.denormalized_visit_rows
WHERE medical_record_id IN (SELECT medical_record_id FROM affected_record)
UNION ALL
SELECT * FROM analytic.denormalized_prescription_rows
WHERE prescription_id IN (SELECT prescription_id FROM affected_prescription);
CREATE UNIQUE INDEX ON desired_row (row_key);
ANALYZE desired_row;
