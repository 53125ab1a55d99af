-- Inside the merge transaction: the analytic rows of the affected visits and prescriptions must now
-- equal, row for row, the rows the landing tables imply (cost proportional to the change, not to the table).
WITH actual AS (
    SELECT row_key, row_hash FROM analytic.medical_record_denormalized
    WHERE medical_record_id IN (SELECT medical_record_id FROM affected_record)
    UNION
    SELECT row_key, row_hash FROM analytic.medical_record_denormalized
    WHERE prescription_id IN (SELECT prescription_id FROM affected_prescription)
),
expected AS (
    SELECT row_key, row_hash FROM desired_row
)
SELECT (SELECT count(*) FROM (SELECT * FROM expected EXCEPT SELECT * FROM actual) missing)
     + (SELECT count(*) FROM (SELECT * FROM actual EXCEPT SELECT * FROM expected) extra) AS differences;
