-- What the de-identified table must follow after the identified merge (merge_affected.sql): a de-identified
-- row depends on its identified row alone (and the key and the age reference year), so only the rows that
-- merge wrote (written_row) are recomputed; plus, in the first run of a new year, the rows of the patients
-- who crossed 90 since the last run's reference year (their birth year goes into the "90 or older"
-- category; no scan at all when the year did not change).
CREATE TEMP TABLE deidentified_changed_row (row_key text PRIMARY KEY) ON COMMIT DROP;
INSERT INTO deidentified_changed_row SELECT row_key FROM written_row WHERE NOT deleted;
INSERT INTO deidentified_changed_row
SELECT row_key FROM analytic.medical_record_denormalized
WHERE %(previous_age_reference_year)s <> %(age_reference_year)s  -- a constant: no scan in the same year
  AND birth_date >= make_date(least(%(previous_age_reference_year)s, %(age_reference_year)s) - 89, 1, 1)
  AND birth_date < make_date(greatest(%(previous_age_reference_year)s, %(age_reference_year)s) - 89, 1, 1)
ON CONFLICT DO NOTHING;
ANALYZE deidentified_changed_row;
-- Their de-identified rows as they should be, from their (just merged and checked) identified rows.
CREATE TEMP TABLE desired_deidentified_row ON COMMIT DROP AS
SELECT row_pseudonym, patient_pseudonym, visit_pseudonym, birth_year, age_90_or_older, hospital_name, diagnosis,
       symptom, treatment_start_year, treatment_end_year, medicine_name, dose
FROM analytic.medical_record_deidentified_source
WHERE row_key IN (SELECT row_key FROM deidentified_changed_row);
CREATE UNIQUE INDEX ON desired_deidentified_row (row_pseudonym);
ANALYZE desired_deidentified_row;
-- The pseudonyms of the identified rows the merge deleted: their de-identified rows go too.
CREATE TEMP TABLE removed_deidentified_row ON COMMIT DROP AS
SELECT analytic.pseudonym(row_key) AS row_pseudonym FROM written_row WHERE deleted;
CREATE UNIQUE INDEX ON removed_deidentified_row (row_pseudonym);
ANALYZE removed_deidentified_row;
