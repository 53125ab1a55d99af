-- Bring the analytic rows of the affected visits and prescriptions in line with desired_row (desired_rows.sql),
-- writing only what differs: rows that should no longer exist are deleted, new rows inserted, and rows whose
-- content hash changed updated (unchanged rows keep their updated_timestamp). The keys of the rows written
-- go to written_row: the de-identified table follows exactly those (desired_deidentified_rows.sql).
CREATE TEMP TABLE written_row (row_key text PRIMARY KEY, deleted boolean NOT NULL) ON COMMIT DROP;
WITH deleted AS (
    DELETE FROM analytic.medical_record_denormalized d
    WHERE d.row_key IN (  -- a union, not an OR, so each half is read by its index
        SELECT a.row_key FROM analytic.medical_record_denormalized a
        WHERE a.medical_record_id IN (SELECT medical_record_id FROM affected_record)
        UNION ALL
        SELECT a.row_key FROM analytic.medical_record_denormalized a
        WHERE a.prescription_id IN (SELECT prescription_id FROM affected_prescription)
    )
      AND NOT EXISTS (SELECT 1 FROM desired_row x WHERE x.row_key = d.row_key)
    RETURNING d.row_key
),
upserted AS (
    INSERT INTO analytic.medical_record_denormalized AS d (
        row_key, patient_id, id_card_num, passport_country, passport_number, first_name, last_name, birth_date, phone_num,
        medical_record_id, hospital_name, doctor_full_name, diagnosis, symptom,
        treatment_start_date, treatment_end_date, prescription_id, medicine_name, dose,
        patient_updated_timestamp, medical_record_updated_timestamp, prescription_updated_timestamp, row_hash
    )
    SELECT row_key, patient_id, id_card_num, passport_country, passport_number, first_name, last_name, birth_date, phone_num,
           medical_record_id, hospital_name, doctor_full_name, diagnosis, symptom,
           treatment_start_date, treatment_end_date, prescription_id, medicine_name, dose,
           patient_updated_timestamp, medical_record_updated_timestamp, prescription_updated_timestamp, row_hash
    FROM desired_row
    ON CONFLICT (row_key) DO UPDATE SET
        patient_id = excluded.patient_id, id_card_num = excluded.id_card_num,
        passport_country = excluded.passport_country, passport_number = excluded.passport_number,
        first_name = excluded.first_name, last_name = excluded.last_name,
        birth_date = excluded.birth_date, phone_num = excluded.phone_num,
        medical_record_id = excluded.medical_record_id, hospital_name = excluded.hospital_name,
        doctor_full_name = excluded.doctor_full_name, diagnosis = excluded.diagnosis,
        symptom = excluded.symptom, treatment_start_date = excluded.treatment_start_date,
        treatment_end_date = excluded.treatment_end_date, prescription_id = excluded.prescription_id,
        medicine_name = excluded.medicine_name, dose = excluded.dose,
        patient_updated_timestamp = excluded.patient_updated_timestamp,
        medical_record_updated_timestamp = excluded.medical_record_updated_timestamp,
        prescription_updated_timestamp = excluded.prescription_updated_timestamp,
        row_hash = excluded.row_hash,
        updated_timestamp = now()
    WHERE d.row_hash IS DISTINCT FROM excluded.row_hash
    RETURNING d.row_key, (xmax = 0) AS inserted
),
written AS (
    INSERT INTO written_row (row_key, deleted)
    SELECT row_key, true FROM deleted
    UNION ALL
    SELECT row_key, false FROM upserted
)
SELECT (SELECT count(*) FROM deleted) AS deleted,
       count(*) FILTER (WHERE inserted) AS inserted,
       count(*) FILTER (WHERE NOT inserted) AS updated
FROM upserted;
