-- Application tables: patients, their visits (medical records) and prescriptions.
-- Timestamps and versions are maintained by the database (trigger below), never by callers.

CREATE TABLE medical_app.patient (
    patient_id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id_card_num         varchar(13) NOT NULL CONSTRAINT patient_id_card_num_format CHECK (id_card_num ~ '^[0-9]{13}$'),
    first_name          varchar(50) NOT NULL CONSTRAINT patient_first_name_not_blank CHECK (btrim(first_name) <> ''),
    last_name           varchar(50) NOT NULL CONSTRAINT patient_last_name_not_blank CHECK (btrim(last_name) <> ''),
    birth_date          date        NOT NULL CONSTRAINT patient_birth_date_range CHECK (birth_date >= DATE '1850-01-01'),
    phone_num           varchar(10)          CONSTRAINT patient_phone_num_format CHECK (phone_num ~ '^[0-9]{1,10}$'),
    inserted_timestamp  timestamptz NOT NULL DEFAULT now(),
    updated_timestamp   timestamptz NOT NULL DEFAULT now(),
    deleted_timestamp   timestamptz,
    version             integer     NOT NULL DEFAULT 1
);
-- A card number identifies one live patient; a soft-deleted patient frees it.
CREATE UNIQUE INDEX patient_id_card_num_live_key ON medical_app.patient (id_card_num) WHERE deleted_timestamp IS NULL;
CREATE INDEX patient_last_name_idx ON medical_app.patient (last_name, patient_id);
CREATE INDEX patient_birth_date_idx ON medical_app.patient (birth_date, patient_id);
CREATE INDEX patient_updated_timestamp_idx ON medical_app.patient (updated_timestamp);

CREATE TABLE medical_app.medical_record (
    medical_record_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    patient_id           bigint      NOT NULL REFERENCES medical_app.patient (patient_id),
    hospital_name        varchar(50) NOT NULL CONSTRAINT medical_record_hospital_name_not_blank CHECK (btrim(hospital_name) <> ''),
    doctor_full_name     varchar(50) NOT NULL CONSTRAINT medical_record_doctor_full_name_not_blank CHECK (btrim(doctor_full_name) <> ''),
    diagnosis            varchar(255),
    symptom              varchar(255),
    treatment_start_date date        NOT NULL,
    treatment_end_date   date,
    inserted_timestamp   timestamptz NOT NULL DEFAULT now(),
    updated_timestamp    timestamptz NOT NULL DEFAULT now(),
    deleted_timestamp    timestamptz,
    version              integer     NOT NULL DEFAULT 1,
    CONSTRAINT medical_record_treatment_dates CHECK (treatment_end_date IS NULL OR treatment_end_date >= treatment_start_date)
);
CREATE INDEX medical_record_patient_id_idx ON medical_app.medical_record (patient_id, medical_record_id);
CREATE INDEX medical_record_updated_timestamp_idx ON medical_app.medical_record (updated_timestamp);

CREATE TABLE medical_app.prescription (
    prescription_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    medical_record_id  bigint      NOT NULL REFERENCES medical_app.medical_record (medical_record_id),
    medicine_name      varchar(50) NOT NULL CONSTRAINT prescription_medicine_name_not_blank CHECK (btrim(medicine_name) <> ''),
    dose               varchar(50) NOT NULL CONSTRAINT prescription_dose_not_blank CHECK (btrim(dose) <> ''),
    inserted_timestamp timestamptz NOT NULL DEFAULT now(),
    updated_timestamp  timestamptz NOT NULL DEFAULT now(),
    deleted_timestamp  timestamptz,
    version            integer     NOT NULL DEFAULT 1
);
CREATE INDEX prescription_medical_record_id_idx ON medical_app.prescription (medical_record_id, prescription_id);
CREATE INDEX prescription_updated_timestamp_idx ON medical_app.prescription (updated_timestamp);

-- Row bookkeeping owned by the database: callers cannot forge timestamps or versions.
CREATE FUNCTION medical_app.maintain_row_bookkeeping() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        NEW.inserted_timestamp := now();
        NEW.updated_timestamp := now();
        NEW.deleted_timestamp := NULL;
        NEW.version := 1;
    ELSE
        NEW.inserted_timestamp := OLD.inserted_timestamp;
        NEW.updated_timestamp := now();
        NEW.version := OLD.version + 1;
    END IF;
    RETURN NEW;
END;
$$;

-- "Not in the future" depends on the clock, so it is checked on write rather than as a CHECK constraint.
CREATE FUNCTION medical_app.check_patient_birth_date() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.birth_date > current_date THEN
        RAISE EXCEPTION 'birth_date must not be in the future'
            USING ERRCODE = 'check_violation', CONSTRAINT = 'patient_birth_date_not_future';
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER patient_bookkeeping BEFORE INSERT OR UPDATE ON medical_app.patient
    FOR EACH ROW EXECUTE FUNCTION medical_app.maintain_row_bookkeeping();
CREATE TRIGGER patient_birth_date_not_future BEFORE INSERT OR UPDATE OF birth_date ON medical_app.patient
    FOR EACH ROW EXECUTE FUNCTION medical_app.check_patient_birth_date();
CREATE TRIGGER medical_record_bookkeeping BEFORE INSERT OR UPDATE ON medical_app.medical_record
    FOR EACH ROW EXECUTE FUNCTION medical_app.maintain_row_bookkeeping();
CREATE TRIGGER prescription_bookkeeping BEFORE INSERT OR UPDATE ON medical_app.prescription
    FOR EACH ROW EXECUTE FUNCTION medical_app.maintain_row_bookkeeping();
