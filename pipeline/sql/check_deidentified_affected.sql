-- Inside the merge transaction: the de-identified rows this run recomputed must now equal, column for column,
-- what their identified rows imply, and the rows it removed must be gone (cost proportional to the change:
-- one primary-key lookup per row).
SELECT (SELECT count(*)
        FROM desired_deidentified_row x
        LEFT JOIN analytic.medical_record_deidentified d ON d.row_pseudonym = x.row_pseudonym
        WHERE d.row_pseudonym IS NULL
           OR (d.patient_pseudonym, d.visit_pseudonym, d.birth_year, d.age_90_or_older, d.hospital_name, d.diagnosis,
               d.symptom, d.treatment_start_year, d.treatment_end_year, d.medicine_name, d.dose)
              IS DISTINCT FROM
              (x.patient_pseudonym, x.visit_pseudonym, x.birth_year, x.age_90_or_older, x.hospital_name, x.diagnosis,
               x.symptom, x.treatment_start_year, x.treatment_end_year, x.medicine_name, x.dose))
     + (SELECT count(*)
        FROM removed_deidentified_row r
        JOIN analytic.medical_record_deidentified d ON d.row_pseudonym = r.row_pseudonym) AS differences;
