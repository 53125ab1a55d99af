-- Rebuild the de-identified table from scratch from the identified table: in full mode and on the first
-- run (after rebuild_all.sql), the first run after this table was added, and after PSEUDONYM_KEY changed
-- (every pseudonym changes with the key).
TRUNCATE analytic.medical_record_deidentified;
INSERT INTO analytic.medical_record_deidentified (
    row_pseudonym, patient_pseudonym, visit_pseudonym, birth_year, age_90_or_older, hospital_name, diagnosis,
    symptom, treatment_start_year, treatment_end_year, medicine_name, dose
)
SELECT row_pseudonym, patient_pseudonym, visit_pseudonym, birth_year, age_90_or_older, hospital_name, diagnosis,
       symptom, treatment_start_year, treatment_end_year, medicine_name, dose
FROM analytic.medical_record_deidentified_source;
