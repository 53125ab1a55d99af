-- Patients registered with a passport: the landing table replicates the passport columns of
-- medical_app.patient (application migration 0008), and the identified table carries them next to the
-- national ID (null for a patient who has none of that kind). The de-identified table carries neither:
-- both are direct identifiers (Safe Harbor).
ALTER TABLE stg.patient
    ADD COLUMN passport_country char(3),
    ADD COLUMN passport_number  varchar(20);

ALTER TABLE analytic.medical_record_denormalized
    ADD COLUMN passport_country char(3),
    ADD COLUMN passport_number  varchar(20);

-- The row definitions gain the two columns (and the content hash covers them). A row's hash changes
-- with its definition, so the first refresh after this migration rewrites each row once.
DROP VIEW analytic.medical_record_denormalized_source;
DROP VIEW analytic.denormalized_prescription_rows;
DROP VIEW analytic.denormalized_visit_rows;

CREATE VIEW analytic.denormalized_prescription_rows AS
SELECT q.*,
       md5(ROW(q.row_key, q.patient_id, q.id_card_num, q.passport_country, q.passport_number,
               q.first_name, q.last_name, q.birth_date, q.phone_num,
               q.medical_record_id, q.hospital_name, q.doctor_full_name, q.diagnosis, q.symptom,
               q.treatment_start_date, q.treatment_end_date, q.prescription_id, q.medicine_name, q.dose,
               q.patient_updated_timestamp, q.medical_record_updated_timestamp,
               q.prescription_updated_timestamp)::text)::uuid AS row_hash
FROM (
    SELECT 'prescription:' || x.prescription_id AS row_key,
           p.patient_id, p.id_card_num, p.passport_country, p.passport_number,
           p.first_name, p.last_name, p.birth_date, p.phone_num,
           r.medical_record_id, r.hospital_name, r.doctor_full_name, r.diagnosis, r.symptom,
           r.treatment_start_date, r.treatment_end_date,
           x.prescription_id, x.medicine_name, x.dose,
           p.updated_timestamp AS patient_updated_timestamp,
           r.updated_timestamp AS medical_record_updated_timestamp,
           x.updated_timestamp AS prescription_updated_timestamp
    FROM stg.prescription x
    JOIN stg.medical_record r ON r.medical_record_id = x.medical_record_id
    JOIN stg.patient p ON p.patient_id = r.patient_id
    WHERE x.deleted_timestamp IS NULL AND r.deleted_timestamp IS NULL AND p.deleted_timestamp IS NULL
) q;

-- A live visit with no live prescription still gets one row (prescription columns null).
CREATE VIEW analytic.denormalized_visit_rows AS
SELECT q.*,
       md5(ROW(q.row_key, q.patient_id, q.id_card_num, q.passport_country, q.passport_number,
               q.first_name, q.last_name, q.birth_date, q.phone_num,
               q.medical_record_id, q.hospital_name, q.doctor_full_name, q.diagnosis, q.symptom,
               q.treatment_start_date, q.treatment_end_date, q.prescription_id, q.medicine_name, q.dose,
               q.patient_updated_timestamp, q.medical_record_updated_timestamp,
               q.prescription_updated_timestamp)::text)::uuid AS row_hash
FROM (
    SELECT 'medical_record:' || r.medical_record_id AS row_key,
           p.patient_id, p.id_card_num, p.passport_country, p.passport_number,
           p.first_name, p.last_name, p.birth_date, p.phone_num,
           r.medical_record_id, r.hospital_name, r.doctor_full_name, r.diagnosis, r.symptom,
           r.treatment_start_date, r.treatment_end_date,
           NULL::bigint AS prescription_id, NULL::varchar(50) AS medicine_name, NULL::varchar(50) AS dose,
           p.updated_timestamp AS patient_updated_timestamp,
           r.updated_timestamp AS medical_record_updated_timestamp,
           NULL::timestamptz AS prescription_updated_timestamp
    FROM stg.medical_record r
    JOIN stg.patient p ON p.patient_id = r.patient_id
    WHERE r.deleted_timestamp IS NULL AND p.deleted_timestamp IS NULL
      AND NOT EXISTS (
          SELECT 1 FROM stg.prescription x
          WHERE x.medical_record_id = r.medical_record_id AND x.deleted_timestamp IS NULL
      )
) q;

CREATE VIEW analytic.medical_record_denormalized_source AS
SELECT * FROM analytic.denormalized_prescription_rows
UNION ALL
SELECT * FROM analytic.denormalized_visit_rows;
