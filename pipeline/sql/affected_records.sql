-- Visits whose analytic rows may differ from the landing tables since the last good run:
-- changed visits, visits of changed patients, visits gaining or losing a changed prescription
-- (including the visit a moved prescription left), and visits touched by hard deletes.
INSERT INTO affected_record (medical_record_id)
SELECT medical_record_id FROM stg.medical_record WHERE change_seq > %(watermark)s
UNION
SELECT r.medical_record_id
FROM stg.patient p JOIN stg.medical_record r ON r.patient_id = p.patient_id
WHERE p.change_seq > %(watermark)s
UNION
SELECT x.medical_record_id FROM stg.prescription x WHERE x.change_seq > %(watermark)s
UNION
SELECT d.medical_record_id
FROM stg.prescription x JOIN analytic.medical_record_denormalized d ON d.prescription_id = x.prescription_id
WHERE x.change_seq > %(watermark)s
ON CONFLICT DO NOTHING;
