-- A patient is identified by a Thai national ID (id_card_num), a passport (issuing state and number),
-- or both; each identifies at most one live patient. The national ID's check digit is a rule of the
-- service (chalicelib/domain/identifiers.py), applied to every new or changed number, so numbers
-- stored before it was enforced stay readable and writable while unchanged.

ALTER TABLE medical_app.patient
    ALTER COLUMN id_card_num DROP NOT NULL,
    ADD COLUMN passport_country char(3)
        CONSTRAINT patient_passport_country_format CHECK (passport_country ~ '^[A-Z]{3}$'),
    ADD COLUMN passport_number varchar(20)
        CONSTRAINT patient_passport_number_format CHECK (passport_number ~ '^[A-Z0-9]{5,20}$'),
    ADD CONSTRAINT patient_passport_complete CHECK ((passport_country IS NULL) = (passport_number IS NULL)),
    ADD CONSTRAINT patient_identified CHECK (id_card_num IS NOT NULL OR passport_number IS NOT NULL);

-- Number first: a search by number alone (any issuer) uses it too.
CREATE UNIQUE INDEX patient_passport_live_key ON medical_app.patient (passport_number, passport_country)
    WHERE deleted_timestamp IS NULL;
-- Patients by issuing state ("every patient with a Japanese passport"), page by page.
CREATE INDEX patient_passport_country_idx ON medical_app.patient (passport_country, patient_id)
    WHERE passport_country IS NOT NULL AND deleted_timestamp IS NULL;
