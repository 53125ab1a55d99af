-- FHIR Bulk Data export ($export): the jobs, what each has written, and the audit action that records one.
--
-- A job is kicked off by the API (one row, one 'bulk_export' audit event, in one transaction), run by the
-- export state machine's worker, and read back by the status route. The worker writes each resource type
-- as NDJSON files ("parts") to S3; a part is recorded here only once its upload is complete, with the last
-- key it holds, so a worker that stops (its time budget, a crash) resumes after that key: nothing twice.
CREATE TABLE medical_app.export_job (
    export_job_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    requested_by     text        NOT NULL,                 -- the caller's token subject
    request_id       text,
    -- What was asked (the manifest's "request" is rebuilt from these; no query string is stored verbatim).
    export_level     text        NOT NULL CONSTRAINT export_job_level CHECK (export_level IN ('system', 'patient')),
    resource_types   text[]      NOT NULL CONSTRAINT export_job_types
                                 CHECK (cardinality(resource_types) > 0
                                        AND resource_types <@ ARRAY['Patient', 'Encounter', 'MedicationRequest']),
    since            timestamptz,
    -- Resources changed after this instant are not part of the export (the manifest's transactionTime).
    transaction_time timestamptz NOT NULL DEFAULT now(),
    -- The request's identity for de-duplication: a retried kick-off finds the job it started.
    idempotency_key  text CONSTRAINT export_job_idempotency_key CHECK (idempotency_key ~ '^[\x21-\x7e]{1,255}$'),
    request_fingerprint text     NOT NULL,
    status           text        NOT NULL DEFAULT 'accepted'
                                 CONSTRAINT export_job_status
                                 CHECK (status IN ('accepted', 'running', 'completed', 'failed', 'cancelled')),
    execution_arn    text,
    error            text,                                  -- a fixed reason, never patient data
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz
);
-- A retried kick-off with the same Idempotency-Key finds its job, whatever the job's state.
CREATE UNIQUE INDEX export_job_idempotency_idx ON medical_app.export_job (requested_by, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- Without a key, the same request from the same caller while its job is still active is that job (no
-- second export of the same data starts silently); once it has ended, the same request is a new export.
CREATE UNIQUE INDEX export_job_active_request_idx ON medical_app.export_job (requested_by, request_fingerprint)
    WHERE status IN ('accepted', 'running');

-- One row per resource type of a job: where the worker is, and whether the type is done.
CREATE TABLE medical_app.export_progress (
    export_job_id bigint  NOT NULL REFERENCES medical_app.export_job (export_job_id) ON DELETE CASCADE,
    resource_type text    NOT NULL,
    last_key      bigint  NOT NULL DEFAULT 0,   -- the keyset checkpoint: every row with a key <= it is written
    parts         integer NOT NULL DEFAULT 0,   -- complete files written so far
    resources     bigint  NOT NULL DEFAULT 0,
    done          boolean NOT NULL DEFAULT false,
    PRIMARY KEY (export_job_id, resource_type)
);

-- The complete files of a job (the manifest's "output"), in order.
CREATE TABLE medical_app.export_file (
    export_job_id bigint  NOT NULL REFERENCES medical_app.export_job (export_job_id) ON DELETE CASCADE,
    resource_type text    NOT NULL,
    part          integer NOT NULL CONSTRAINT export_file_part CHECK (part >= 1),
    object_key    text    NOT NULL,
    resources     bigint  NOT NULL CONSTRAINT export_file_resources CHECK (resources >= 0),
    PRIMARY KEY (export_job_id, resource_type, part)
);

ALTER TABLE medical_app.audit_event DROP CONSTRAINT audit_event_action;
ALTER TABLE medical_app.audit_event ADD CONSTRAINT audit_event_action
    CHECK (action IN ('read', 'list', 'create', 'update', 'delete', 'grant', 'revoke', 'read_history', 'restore',
                      'bulk_export'));

-- The API's login kicks jobs off, runs them (the worker connects as the same login) and cancels them; it
-- never deletes a job's record (the record of what was disclosed stays), and the read-only pipeline login
-- has no business with exports.
GRANT SELECT, INSERT ON medical_app.export_job TO medical_api;
GRANT UPDATE (status, execution_arn, error, updated_at, finished_at) ON medical_app.export_job TO medical_api;
GRANT SELECT, INSERT ON medical_app.export_progress TO medical_api;
GRANT UPDATE (last_key, parts, resources, done) ON medical_app.export_progress TO medical_api;
GRANT SELECT, INSERT ON medical_app.export_file TO medical_api;
