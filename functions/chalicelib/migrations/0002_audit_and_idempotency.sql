-- Append-only record of every access to patient data.
CREATE TABLE medical_app.audit_event (
    audit_event_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    occurred_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor          text        NOT NULL,
    action         text        NOT NULL CONSTRAINT audit_event_action CHECK (action IN ('read', 'list', 'create', 'update', 'delete')),
    resource_type  text        NOT NULL,
    resource_id    bigint,
    patient_ids    bigint[]    NOT NULL DEFAULT '{}',
    request_id     text,
    outcome        text        NOT NULL
);
CREATE INDEX audit_event_patient_ids_idx ON medical_app.audit_event USING gin (patient_ids);

CREATE FUNCTION medical_app.reject_audit_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_event is append-only' USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER audit_event_append_only BEFORE UPDATE OR DELETE ON medical_app.audit_event
    FOR EACH ROW EXECUTE FUNCTION medical_app.reject_audit_change();
CREATE TRIGGER audit_event_no_truncate BEFORE TRUNCATE ON medical_app.audit_event
    FOR EACH STATEMENT EXECUTE FUNCTION medical_app.reject_audit_change();

-- The first response to a POST carrying an Idempotency-Key, replayed for retries of the same request.
CREATE TABLE medical_app.idempotency_key (
    actor               text        NOT NULL,
    idempotency_key     text        NOT NULL,
    request_fingerprint text        NOT NULL,
    resource_type       text,
    resource            jsonb,
    created_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (actor, idempotency_key)
);
