-- What the landing changes since the last good run affect, at two grains.
--
-- Prescriptions whose own analytic row is the only one they affect (affected_prescription): changed
-- in content only, still live, under the same visit as their current analytic row. The visit keeps
-- the same live prescriptions, so no other row of it changes (a changed visit or patient puts the
-- whole visit in affected_record below, and the row is then recomputed with it).
INSERT INTO affected_prescription (prescription_id)
SELECT x.prescription_id
FROM stg.prescription x
JOIN analytic.medical_record_denormalized d
  ON d.prescription_id = x.prescription_id AND d.medical_record_id = x.medical_record_id
WHERE x.change_seq > %(watermark)s AND x.deleted_timestamp IS NULL;

-- Visits whose analytic rows may all differ (affected_record): changed visits, visits of changed
-- patients, visits gaining or losing a changed prescription (including the visit a moved
-- prescription left, and a visit whose last live prescription was deleted), and visits touched by
-- hard deletes (added before this, by the key reconciliation).
INSERT INTO affected_record (medical_record_id)
SELECT medical_record_id FROM stg.medical_record WHERE change_seq > %(watermark)s
UNION
SELECT r.medical_record_id
FROM stg.patient p JOIN stg.medical_record r ON r.patient_id = p.patient_id
WHERE p.change_seq > %(watermark)s
UNION
SELECT x.medical_record_id FROM stg.prescription x
WHERE x.change_seq > %(watermark)s
  AND NOT EXISTS (SELECT 1 FROM affected_prescription a WHERE a.prescription_id = x.prescription_id)
UNION
SELECT d.medical_record_id
FROM stg.prescription x JOIN analytic.medical_record_denormalized d ON d.prescription_id = x.prescription_id
WHERE x.change_seq > %(watermark)s
  AND NOT EXISTS (SELECT 1 FROM affected_prescription a WHERE a.prescription_id = x.prescription_id)
ON CONFLICT DO NOTHING;

-- A prescription in a visit recomputed whole is recomputed with it (the two sets stay disjoint).
DELETE FROM affected_prescription a
USING stg.prescription x, affected_record r
WHERE x.prescription_id = a.prescription_id AND r.medical_record_id = x.medical_record_id;
