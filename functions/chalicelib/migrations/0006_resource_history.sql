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

-- Rows written in bulk (the sample-data generator's COPY, with the row trigger switched off inside its
-- transaction) and the rows that exist already get their versions here, set-based: each row's current
-- state as one version, unless it has one. A row at version 1 is its create (every set column listed);
-- a row already changed or deleted before the migration lists no fields (what changed is unknown).
CREATE FUNCTION medical_app.keep_current_versions(table_name text, from_key bigint, actor text)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    key_column text := CASE table_name WHEN 'patient' THEN 'patient_id'
                                       WHEN 'medical_record' THEN 'medical_record_id'
                                       WHEN 'prescription' THEN 'prescription_id' END;
    kept bigint;
BEGIN
    IF key_column IS NULL THEN
        RAISE EXCEPTION 'no history is kept for %', table_name USING ERRCODE = 'invalid_parameter_value';
    END IF;
    EXECUTE format($sql$
        INSERT INTO medical_app.resource_version
            (resource_type, resource_id, version, change, changed_fields, data, actor, recorded_at)
        SELECT %1$L, t.%2$I, t.version,
               CASE WHEN t.deleted_timestamp IS NOT NULL THEN 'delete' WHEN t.version = 1 THEN 'create'
                    ELSE 'update' END,
               CASE WHEN t.version = 1 AND t.deleted_timestamp IS NULL THEN ARRAY(
                   SELECT e.key FROM jsonb_each(to_jsonb(t)) e
                   WHERE e.value <> 'null'::jsonb AND e.key <> %2$L
                     AND e.key <> ALL (ARRAY['inserted_timestamp', 'updated_timestamp', 'deleted_timestamp',
                                             'version'])
                   ORDER BY e.key) ELSE '{}' END,
               to_jsonb(t), $1, t.updated_timestamp
        FROM medical_app.%1$I t
        WHERE t.%2$I >= $2
        ON CONFLICT (resource_type, resource_id, version) DO NOTHING
    $sql$, table_name, key_column) USING actor, from_key;
    GET DIAGNOSTICS kept = ROW_COUNT;
    RETURN kept;
END;
$$;
REVOKE ALL ON FUNCTION medical_app.keep_current_versions(text, bigint, text) FROM PUBLIC;

SELECT medical_app.keep_current_versions(t, 1, 'database:migration')
FROM unnest(ARRAY['patient', 'medical_record', 'prescription']) t;

-- The API reads history; only the trigger (running as this table's owner) writes it, and nobody
-- rewrites it.
GRANT SELECT ON medical_app.resource_version TO medical_api;

-- Reading a resource's history is an audited access like any read.
ALTER TABLE medical_app.audit_event DROP CONSTRAINT audit_event_action;
ALTER TABLE medical_app.audit_event ADD CONSTRAINT audit_event_action
    CHECK (action IN ('read', 'list', 'create', 'update', 'delete', 'grant', 'revoke', 'read_history'));
