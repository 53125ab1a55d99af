-- The de-identified table for analysts (HIPAA Safe Harbor, 45 CFR 164.514(b)(2)), the roles that
-- separate it from the identified table, and a view of the identified table under the original
-- system's column names.

-- Keyed pseudonyms: HMAC-SHA256 (RFC 2104) of a message, in hex, built on core sha256() rather than
-- pgcrypto's hmac(), which the pip-installed PostgreSQL used by local runs does not ship. The key is
-- PSEUDONYM_KEY (pipeline/settings.py): the refresh sets its inner and outer pads (key xor 0x36…,
-- key xor 0x5c…) with set_config(..., is_local => true) for its own transaction only (passed as COPY
-- data through a temporary table dropped at once, so no statement log records them; see
-- refresh.set_deidentification_parameters): the key is never stored in a persistent table nor kept
-- past the transaction. Unset, the function fails ("unrecognized
-- configuration parameter"); set to '' (what a local setting reverts to after its transaction in the
-- same session) it returns NULL, which the NOT NULL pseudonym columns refuse: never an unkeyed hash.
CREATE FUNCTION analytic.pseudonym(message text) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT encode(sha256(decode(nullif(current_setting('medrec.pseudonym_opad'), ''), 'hex')
                         || sha256(decode(nullif(current_setting('medrec.pseudonym_ipad'), ''), 'hex')
                                   || convert_to(message, 'UTF8'))), 'hex')
$$;
REVOKE ALL ON FUNCTION analytic.pseudonym(text) FROM PUBLIC;

-- One row per row of analytic.medical_record_denormalized (same grain), without direct identifiers:
-- * kept: facility (not a Safe Harbor identifier), diagnosis, symptom, medicine, dose, and the
--   analytic row's own inserted/updated timestamps (when the refresh wrote it);
-- * generalised: birth date -> birth year; treatment dates -> years; ages over 89 aggregated into
--   one "90 or older" category: a patient who is (or turns) 90 or older in the refresh's reference
--   year (the current UTC year; reference year - birth year >= 90) has birth_year NULL and
--   age_90_or_older true on every row. Judged against the current year rather than each visit's
--   year, because a birth year shown on an old visit would still date a patient who is over 89 now,
--   and the patient pseudonym would carry it to their later, bucketed visits. Whoever was 90 or older
--   at a visit is so now. When the year changes, the refresh rewrites the rows of the patients who
--   crossed 90 (see desired_deidentified_rows.sql);
-- * replaced by keyed pseudonyms: the patient id (patient_pseudonym = pseudonym('patient:<id>')), the
--   visit id (visit_pseudonym = pseudonym('medical_record:<id>')) and the row key (row_pseudonym =
--   pseudonym(row_key), so a visit without prescriptions has row_pseudonym = visit_pseudonym): the
--   application's ids appear in its URLs, audit trail and identified table, so they are identifiers
--   too (Safe Harbor (H) and (R)); their pseudonyms still let analysts count patients and visits;
-- * dropped: names, card number, phone, exact dates, the source rows' timestamps (they date the
--   visit), and doctor_full_name: a clinician's name is not the patient's identifier, but it is left
--   out to be conservative (with facility and year it narrows down who was treated).
-- Free text (diagnosis, symptom) is kept as entered: it must not hold identifiers (a residual risk
-- that Safe Harbor's "no actual knowledge" condition leaves with the data's owner).
CREATE TABLE analytic.medical_record_deidentified (
    row_pseudonym        text PRIMARY KEY,
    patient_pseudonym    text        NOT NULL,
    visit_pseudonym      text        NOT NULL,
    birth_year           smallint,              -- NULL when age_90_or_older
    age_90_or_older      boolean     NOT NULL,  -- 90 or older in the reference year (see above)
    hospital_name        varchar(50),
    diagnosis            varchar(255),
    symptom              varchar(255),
    treatment_start_year smallint,
    treatment_end_year   smallint,
    medicine_name        varchar(50),           -- NULL (with dose) on the row of a visit without prescriptions
    dose                 varchar(50),
    inserted_timestamp   timestamptz NOT NULL DEFAULT now(),
    updated_timestamp    timestamptz NOT NULL DEFAULT now()
) WITH (fillfactor = 90);

-- Room on each page for a changed row's new version: the refresh's updates never change an indexed
-- column of this table, and most never one of the identified table (a dose, a diagnosis, a name), so
-- they can be heap-only (HOT) updates, which write no index entries: about half the pages and WAL
-- records per updated row. It applies to pages written from now on (a `full` refresh rewrites all).
ALTER TABLE analytic.medical_record_denormalized SET (fillfactor = 90);

-- The one definition of the de-identified rows, computed from the identified table (which the same
-- transaction has just brought up to date and checked), row for row. row_key is there only for the
-- refresh to pick the rows it recomputes; it is not a column of the table.
CREATE VIEW analytic.medical_record_deidentified_source AS
SELECT d.row_key,
       analytic.pseudonym(d.row_key) AS row_pseudonym,
       analytic.pseudonym('patient:' || d.patient_id) AS patient_pseudonym,
       analytic.pseudonym('medical_record:' || d.medical_record_id) AS visit_pseudonym,
       CASE WHEN y.age_90_or_older THEN NULL ELSE y.birth_year END AS birth_year,
       y.age_90_or_older,
       d.hospital_name, d.diagnosis, d.symptom,
       extract(year FROM d.treatment_start_date)::smallint AS treatment_start_year,
       extract(year FROM d.treatment_end_date)::smallint AS treatment_end_year,
       d.medicine_name, d.dose
FROM analytic.medical_record_denormalized d
CROSS JOIN LATERAL (
    -- medrec.age_reference_year: set by the refresh for its transaction, like the key's pads.
    SELECT b.birth_year,
           coalesce(current_setting('medrec.age_reference_year')::smallint - b.birth_year >= 90, false)
               AS age_90_or_older
    FROM (SELECT extract(year FROM d.birth_date)::smallint AS birth_year) b
) y;

-- The identified table under the original system's column names (its analytic table was
-- medical_record_denormalized with a serial key medical_record_sk and the misspelt symtom), for
-- queries written against it. medical_record_sk is derived from the stable row key, so it is stable
-- across refreshes and rebuilds: 2 × prescription_id for a prescription's row, 2 × medical_record_id
-- + 1 for the row of a visit without prescriptions (unique, positive, never reused).
CREATE VIEW analytic.medical_record_denormalized_original AS
SELECT CASE WHEN d.prescription_id IS NOT NULL THEN d.prescription_id * 2
            ELSE d.medical_record_id * 2 + 1 END AS medical_record_sk,
       d.patient_id, d.id_card_num, d.first_name, d.last_name, d.birth_date, d.phone_num,
       d.medical_record_id, d.hospital_name, d.doctor_full_name, d.diagnosis, d.symptom AS symtom,
       d.treatment_start_date, d.treatment_end_date, d.prescription_id, d.medicine_name, d.dose,
       d.inserted_timestamp, d.updated_timestamp
FROM analytic.medical_record_denormalized d;

-- What each run did to the de-identified table, which key its pseudonyms were made with (a
-- fingerprint: an HMAC of a constant, not the key) and which year ages were judged in. A run whose
-- key differs from the last succeeded run's rebuilds the de-identified table.
ALTER TABLE analytic.refresh_run
    ADD COLUMN deidentified_rows_inserted integer,
    ADD COLUMN deidentified_rows_updated  integer,
    ADD COLUMN deidentified_rows_deleted  integer,
    ADD COLUMN pseudonym_key_fingerprint  text,
    ADD COLUMN age_reference_year         smallint;

-- Roles (cluster-wide; NOLOGIN groups: logins are made members, like the application's roles):
-- analytic_analyst reads the de-identified table and nothing else; analytic_identified_reader (the
-- privileged role) reads the identified table and its original-names view as well. Neither reads
-- the landing tables (schema stg), the run log or the views over stg.
DO $$
BEGIN
    CREATE ROLE analytic_analyst NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;  -- created by another analytic database's migration in the same cluster
END;
$$;
DO $$
BEGIN
    CREATE ROLE analytic_identified_reader NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END;
$$;

REVOKE ALL ON SCHEMA stg FROM PUBLIC;
REVOKE ALL ON SCHEMA analytic FROM PUBLIC;
GRANT USAGE ON SCHEMA analytic TO analytic_analyst, analytic_identified_reader;
GRANT SELECT ON analytic.medical_record_deidentified TO analytic_analyst, analytic_identified_reader;
GRANT SELECT ON analytic.medical_record_denormalized, analytic.medical_record_denormalized_original
    TO analytic_identified_reader;
