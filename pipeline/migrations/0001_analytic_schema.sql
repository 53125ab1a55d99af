-- Landing tables (schema stg) that Sling upserts into, and the denormalized table for analysis.

CREATE SCHEMA IF NOT EXISTS stg;

-- Every landing row carries the sequence number of the last refresh-visible change to it: a row
-- that Sling rewrites with identical content keeps its number, so "changed since the last run" is
-- exact and cheap (an index range scan), whatever Sling re-reads.
CREATE SEQUENCE stg.change_seq;

CREATE FUNCTION stg.track_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND NEW IS NOT DISTINCT FROM OLD THEN
        RETURN NEW;
    END IF;
    NEW.change_seq := nextval('stg.change_seq');
    RETURN NEW;
END;
$$;

CREATE TABLE stg.patient (
    patient_id         bigint PRIMARY KEY,
    id_card_num        varchar(13),
    first_name         varchar(50),
    last_name          varchar(50),
    birth_date         date,
    phone_num          varchar(10),
    inserted_timestamp timestamptz,
    updated_timestamp  timestamptz,
    deleted_timestamp  timestamptz,
    version            integer,
    change_seq         bigint NOT NULL DEFAULT 0
);
CREATE TABLE stg.medical_record (
    medical_record_id    bigint PRIMARY KEY,
    patient_id           bigint,
    hospital_name        varchar(50),
    doctor_full_name     varchar(50),
    diagnosis            varchar(255),
    symptom              varchar(255),
    treatment_start_date date,
    treatment_end_date   date,
    inserted_timestamp   timestamptz,
    updated_timestamp    timestamptz,
    deleted_timestamp    timestamptz,
    version              integer,
    change_seq           bigint NOT NULL DEFAULT 0
);
CREATE TABLE stg.prescription (
    prescription_id    bigint PRIMARY KEY,
    medical_record_id  bigint,
    medicine_name      varchar(50),
    dose               varchar(50),
    inserted_timestamp timestamptz,
    updated_timestamp  timestamptz,
    deleted_timestamp  timestamptz,
    version            integer,
    change_seq         bigint NOT NULL DEFAULT 0
);
CREATE INDEX stg_patient_change_seq_idx ON stg.patient (change_seq);
CREATE INDEX stg_patient_updated_timestamp_idx ON stg.patient (updated_timestamp);
CREATE INDEX stg_medical_record_change_seq_idx ON stg.medical_record (change_seq);
CREATE INDEX stg_medical_record_updated_timestamp_idx ON stg.medical_record (updated_timestamp);
CREATE INDEX stg_medical_record_patient_id_idx ON stg.medical_record (patient_id);
CREATE INDEX stg_prescription_change_seq_idx ON stg.prescription (change_seq);
CREATE INDEX stg_prescription_updated_timestamp_idx ON stg.prescription (updated_timestamp);
CREATE INDEX stg_prescription_medical_record_id_idx ON stg.prescription (medical_record_id);

CREATE TRIGGER patient_track_change BEFORE INSERT OR UPDATE ON stg.patient
    FOR EACH ROW EXECUTE FUNCTION stg.track_change();
CREATE TRIGGER medical_record_track_change BEFORE INSERT OR UPDATE ON stg.medical_record
    FOR EACH ROW EXECUTE FUNCTION stg.track_change();
CREATE TRIGGER prescription_track_change BEFORE INSERT OR UPDATE ON stg.prescription
    FOR EACH ROW EXECUTE FUNCTION stg.track_change();

-- One row per live prescription, plus one per live visit that has none (prescription columns null).
CREATE TABLE analytic.medical_record_denormalized (
    row_key                         text PRIMARY KEY,  -- stable: 'prescription:<id>' or 'medical_record:<id>'
    patient_id                      bigint NOT NULL,
    id_card_num                     varchar(13),
    first_name                      varchar(50),
    last_name                       varchar(50),
    birth_date                      date,
    phone_num                       varchar(10),
    medical_record_id               bigint NOT NULL,
    hospital_name                   varchar(50),
    doctor_full_name                varchar(50),
    diagnosis                       varchar(255),
    symptom                         varchar(255),
    treatment_start_date            date,
    treatment_end_date              date,
    prescription_id                 bigint,
    medicine_name                   varchar(50),
    dose                            varchar(50),
    patient_updated_timestamp        timestamptz,
    medical_record_updated_timestamp timestamptz,
    prescription_updated_timestamp   timestamptz,
    row_hash                        uuid NOT NULL,     -- md5 of the content: unchanged rows are never rewritten
    inserted_timestamp              timestamptz NOT NULL DEFAULT now(),
    updated_timestamp               timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX medical_record_denormalized_medical_record_id_idx
    ON analytic.medical_record_denormalized (medical_record_id);
CREATE INDEX medical_record_denormalized_prescription_id_idx
    ON analytic.medical_record_denormalized (prescription_id) WHERE prescription_id IS NOT NULL;
CREATE INDEX medical_record_denormalized_patient_id_idx ON analytic.medical_record_denormalized (patient_id);

-- What each refresh did. The watermark is the last landing change_seq a succeeded run applied.
CREATE TABLE analytic.refresh_run (
    refresh_run_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    mode             text        NOT NULL CHECK (mode IN ('incremental', 'full')),
    status           text        NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'skipped')),
    started_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    lock_acquired_at timestamptz,
    finished_at      timestamptz,
    duration_ms      integer,
    watermark_before bigint,
    watermark_after  bigint,
    rows_extracted   jsonb       NOT NULL DEFAULT '{}',  -- per table, as read by Sling
    rows_changed     jsonb       NOT NULL DEFAULT '{}',  -- per table, landing rows whose content changed
    rows_hard_deleted jsonb      NOT NULL DEFAULT '{}',  -- per table, removed by key reconciliation
    rows_inserted    integer,
    rows_updated     integer,
    rows_deleted     integer,
    check_passed     boolean,
    check_scope      text CHECK (check_scope IN ('affected', 'global')),  -- what the last check compared
    step_ms          jsonb       NOT NULL DEFAULT '{}',  -- time per part of the apply step
    message          text
);

-- The one definition of the denormalized rows, computed from the landing tables: one view per kind
-- of row, and their union. The refresh filters each kind by the affected visits (so the planner reads
-- only those, by index); the full rebuild and the global check read the union.
CREATE VIEW analytic.denormalized_prescription_rows AS
SELECT q.*,
       md5(ROW(q.row_key, q.patient_id, q.id_card_num, q.first_name, q.last_name, q.birth_date, q.phone_num,
               q.medical_record_id, q.hospital_name, q.doctor_full_name, q.diagnosis, q.symptom,
               q.treatment_start_date, q.treatment_end_date, q.prescription_id, q.medicine_name, q.dose,
               q.patient_updated_timestamp, q.medical_record_updated_timestamp,
               q.prescription_updated_timestamp)::text)::uuid AS row_hash
FROM (
    SELECT 'prescription:' || x.prescription_id AS row_key,
           p.patient_id, p.id_card_num, p.first_name, p.last_name, p.birth_date, p.phone_num,
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
       md5(ROW(q.row_key, q.patient_id, q.id_card_num, q.first_name, q.last_name, q.birth_date, q.phone_num,
               q.medical_record_id, q.hospital_name, q.doctor_full_name, q.diagnosis, q.symptom,
               q.treatment_start_date, q.treatment_end_date, q.prescription_id, q.medicine_name, q.dose,
               q.patient_updated_timestamp, q.medical_record_updated_timestamp,
               q.prescription_updated_timestamp)::text)::uuid AS row_hash
FROM (
    SELECT 'medical_record:' || r.medical_record_id AS row_key,
           p.patient_id, p.id_card_num, p.first_name, p.last_name, p.birth_date, p.phone_num,
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
