-- Inside the merge transaction: the affected visits' analytic rows must now equal, row for row,
-- what the landing tables imply (cost proportional to the change, not to the table).
WITH expected AS (
    SELECT row_key, row_hash FROM analytic.denormalized_prescription_rows
    WHERE medical_record_id IN (SELECT medical_record_id FROM affected_record)
    UNION ALL
    SELECT row_key, row_hash FROM analytic.denormalized_visit_rows
    WHERE medical_record_id IN (SELECT medical_record_id FROM affected_record)
),
actual AS (
    SELECT row_key, row_hash FROM analytic.medical_record_denormalized
    WHERE medical_record_id IN (SELECT medical_record_id FROM affected_record)
)
SELECT (SELECT count(*) FROM (SELECT * FROM expected EXCEPT SELECT * FROM actual) missing)
     + (SELECT count(*) FROM (SELECT * FROM actual EXCEPT SELECT * FROM expected) extra) AS differences;
