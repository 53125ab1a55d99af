-- Least-privilege group roles. Login users are made members of these (see `medrec db create-login`).
-- medical_api: what the API needs and nothing more: no DELETE (deletes are soft), no DDL,
--              and the audit trail is insert/select only.
-- medical_reader: read-only access to the application tables, for the analytics pipeline.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'medical_api') THEN
        CREATE ROLE medical_api NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'medical_reader') THEN
        CREATE ROLE medical_reader NOLOGIN;
    END IF;
END;
$$;

REVOKE ALL ON SCHEMA medical_app FROM PUBLIC;
GRANT USAGE ON SCHEMA medical_app TO medical_api, medical_reader;
GRANT SELECT, INSERT, UPDATE ON medical_app.patient, medical_app.medical_record, medical_app.prescription TO medical_api;
GRANT SELECT, INSERT ON medical_app.audit_event TO medical_api;
GRANT SELECT, INSERT, UPDATE ON medical_app.idempotency_key TO medical_api;
GRANT SELECT ON medical_app.patient, medical_app.medical_record, medical_app.prescription TO medical_reader;
