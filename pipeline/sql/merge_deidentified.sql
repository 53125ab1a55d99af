-- Bring the de-identified table in line with the identified merge (desired_deidentified_rows.sql), writing
-- only what differs, as merge_affected.sql does for the identified table: rows of deleted identified rows
-- are deleted, new rows inserted, rows whose content changed updated (unchanged rows keep their
-- updated_timestamp). An identified change that touches no de-identified column (a name, a phone number, a
-- source timestamp) writes nothing here.
WITH deleted AS (
    DELETE FROM analytic.medical_record_deidentified d
    WHERE d.row_pseudonym IN (SELECT row_pseudonym FROM removed_deidentified_row)
    RETURNING 1
),
upserted AS (
    INSERT INTO analytic.medical_record_deidentified AS d (
        row_pseudonym, patient_pseudonym, visit_pseudonym, birth_year, age_90_or_older, hospital_name, diagnosis,
        symptom, treatment_start_year, treatment_end_year, medicine_name, dose
    )
    SELECT row_pseudonym, patient_pseudonym, visit_pseudonym, birth_year, age_90_or_older, hospital_name, diagnosis,
           symptom, treatment_start_year, treatment_end_year, medicine_name, dose
    FROM desired_deidentified_row
    ON CONFLICT (row_pseudonym) DO UPDATE SET
        patient_pseudonym = excluded.patient_pseudonym, visit_pseudonym = excluded.visit_pseudonym,
        birth_year = excluded.birth_year, age_90_or_older = excluded.age_90_or_older,
        hospital_name = excluded.hospital_name, diagnosis = excluded.diagnosis, symptom = excluded.symptom,
        treatment_start_year = excluded.treatment_start_year, treatment_end_year = excluded.treatment_end_year,
        medicine_name = excluded.medicine_name, dose = excluded.dose,
        updated_timestamp = now()
    WHERE (d.patient_pseudonym, d.visit_pseudonym, d.birth_year, d.age_90_or_older, d.hospital_name, d.diagnosis,
           d.symptom, d.treatment_start_year, d.treatment_end_year, d.medicine_name, d.dose)
          IS DISTINCT FROM
          (excluded.patient_pseudonym, excluded.visit_pseudonym, excluded.birth_year, excluded.age_90_or_older,
           excluded.hospital_name, excluded.diagnosis, excluded.symptom, excluded.treatment_start_year,
           excluded.treatment_end_year, excluded.medicine_name, excluded.dose)
    RETURNING (xmax = 0) AS inserted
)
SELECT (SELECT count(*) FROM deleted) AS deleted,
       count(*) FILTER (WHERE inserted) AS inserted,
       count(*) FILTER (WHERE NOT inserted) AS updated
FROM upserted;
