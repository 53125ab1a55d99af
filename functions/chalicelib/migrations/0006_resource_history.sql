-- Every version of every patient, visit and prescription, kept append-only.
--
-- One trigger on the three tables writes a version row for each inserted or changed row, in the same
-- transaction as the change: no write path (the API, the cascade of a delete, an operator's SQL) can
-- change a row without leaving its version behind. The row is kept whole (as JSON), so any version can
-- be shown, compared or restored exactly as it was.

CREATE TABLE medical_app.resource_version (
    resource_type  text        NOT NULL CONSTRAINT resource_version_type
                               CHECK (resource_type IN ('patient', 'medical_record', 'prescription')),
    resource_id    bigint      NOT NULL,
    version        integer     NOT NULL,
    change         text        NOT NULL CONSTRAINT resource_version_change
                               CHECK (change IN ('create', 'update', 'delete', 'restore')),
    -- The columns whose value this version changed (every set column for a create; deletion and
    -- restoration are told by ``change``, and the row's own bookkeeping is never listed).
    changed_fields text[]      NOT NULL,
    data           jsonb       NOT NULL,
    -- Who made the change: the API sets the caller's subject for its transaction; anything else
    -- (an operator's SQL) is recorded as its database login.
    actor          text        NOT NULL,
    recorded_at    timestamptz NOT NULL,
    PRIMARY KEY (resource_type, resource_id, version)
);

CREATE FUNCTION medical_app.record_version() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    new_row jsonb := to_jsonb(NEW);
    old_row jsonb;
    bookkeeping CONSTANT text[] := ARRAY['inserted_timestamp', 'updated_timestamp', 'deleted_timestamp', 'version'];
    change_kind text := 'create';
    fields text[];
BEGIN
    IF TG_OP = 'INSERT' THEN
        SELECT coalesce(array_agg(key ORDER BY key), '{}') INTO fields
        FROM jsonb_each(new_row) WHERE value <> 'null'::jsonb AND key <> ALL (bookkeeping) AND key <> TG_ARGV[0];
    ELSE
        old_row := to_jsonb(OLD);
        SELECT coalesce(array_agg(key ORDER BY key), '{}') INTO fields
        FROM jsonb_each(new_row) n
        WHERE n.key <> ALL (bookkeeping) AND n.value IS DISTINCT FROM old_row -> n.key;
        change_kind := CASE
            WHEN OLD.deleted_timestamp IS NULL AND NEW.deleted_timestamp IS NOT NULL THEN 'delete'
            WHEN OLD.deleted_timestamp IS NOT NULL AND NEW.deleted_timestamp IS NULL THEN 'restore'
            ELSE 'update' END;
    END IF;
    INSERT INTO medical_app.resource_version
        (resource_type, resource_id, version, change, changed_fields, data, actor, recorded_at)
    VALUES (TG_TABLE_NAME, (new_row ->> TG_ARGV[0])::bigint, NEW.version, change_kind, fields, new_row,
            coalesce(nullif(current_setting('medrec.actor', true), ''), 'database:' || session_user),
            NEW.updated_timestamp);
    RETURN NEW;
END;
$$;
REVOKE ALL ON FUNCTION medical_app.record_version() FROM PUBLIC;

-- BEFORE, not AFTER: an AFTER row trigger queues one event per row in memory until its statement ends,
-- which a bulk load of millions of rows (COPY) would pay for. BEFORE triggers fire in name order, and
-- *_history comes after *_birth_date_not_future and *_bookkeeping (which sets the version and time), so
-- the row it records is the row written; a statement that fails afterwards rolls the version back with it.
CREATE TRIGGER patient_history BEFORE INSERT OR UPDATE ON medical_app.patient
    FOR EACH ROW EXECUTE FUNCTION medical_app.record_version('patient_id');
CREATE TRIGGER medical_record_history BEFORE INSERT OR UPDATE ON medical_app.medical_record
    FOR EACH ROW EXECUTE FUNCTION medical_app.record_version('medical_record_id');
CREATE TRIGGER prescription_history BEFORE INSERT OR UPDATE ON medical_app.prescription
    FOR EACH ROW EXECUTE FUNCTION medical_app.record_version('prescription_id');

-- The rows that exist already get their current state as their first kept version (what changed
-- before is unknown: no fields are listed).
INSERT INTO medical_app.resource_version
    (resource_type, resource_id, version, change, changed_fields, data, actor, recorded_at)
SELECT resource_type, resource_id, version,
       CASE WHEN deleted THEN 'delete' WHEN version = 1 THEN 'create' ELSE 'update' END,
       '{}', data, 'database:migration', updated_timestamp
FROM (
    SELECT 'patient' AS resource_type, patient_id AS resource_id, version, deleted_timestamp IS NOT NULL AS deleted,
           to_jsonb(p) AS data, updated_timestamp
    FROM medical_app.patient p
    UNION ALL
    SELECT 'medical_record', medical_record_id, version, deleted_timestamp IS NOT NULL, to_jsonb(r), updated_timestamp
    FROM medical_app.medical_record r
    UNION ALL
    SELECT 'prescription', prescription_id, version, deleted_timestamp IS NOT NULL, to_jsonb(x), updated_timestamp
    FROM medical_app.prescription x
) existing;

-- The API reads history; only the trigger (running as this table's owner) writes it, and nobody
-- rewrites it.
GRANT SELECT ON medical_app.resource_version TO medical_api;

-- Reading a resource's history is an audited access like any read.
ALTER TABLE medical_app.audit_event DROP CONSTRAINT audit_event_action;
ALTER TABLE medical_app.audit_event ADD CONSTRAINT audit_event_action
    CHECK (action IN ('read', 'list', 'create', 'update', 'delete', 'grant', 'revoke', 'read_history'));
