-- Who may see which patient (care teams), and an audit trail that records every access decision.

-- A clinician sees a patient while an unrevoked membership names them. Revoking keeps the row
-- (who granted, who revoked, when), so the history of access rights is never lost.
CREATE TABLE medical_app.care_team_member (
    care_team_member_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    patient_id          bigint      NOT NULL REFERENCES medical_app.patient (patient_id) ON DELETE CASCADE,
    member_sub          text        NOT NULL CONSTRAINT care_team_member_sub_format
                                    CHECK (member_sub ~ '^[\x21-\x7e]+$' AND length(member_sub) <= 255),
    role                text        NOT NULL CONSTRAINT care_team_member_role_format
                                    CHECK (role ~ '^[a-z][a-z0-9_-]{0,49}$'),
    granted_by          text        NOT NULL,
    granted_at          timestamptz NOT NULL DEFAULT now(),
    revoked_by          text,
    revoked_at          timestamptz,
    CONSTRAINT care_team_member_revocation CHECK ((revoked_at IS NULL) = (revoked_by IS NULL))
);
-- One active membership per (patient, member): the access check is one probe of this index.
CREATE UNIQUE INDEX care_team_member_active_key
    ON medical_app.care_team_member (patient_id, member_sub) WHERE revoked_at IS NULL;
-- A clinician's patients in key order: their lists are an index range scan, whatever the table size.
CREATE INDEX care_team_member_by_member_idx
    ON medical_app.care_team_member (member_sub, patient_id) WHERE revoked_at IS NULL;

-- The audit trail records the kind of actor, where the request came from, and why (break-the-glass).
ALTER TABLE medical_app.audit_event
    ADD COLUMN actor_kind  text CONSTRAINT audit_event_actor_kind CHECK (actor_kind IN ('admin', 'clinician', 'patient')),
    ADD COLUMN source_ip   text,
    ADD COLUMN user_agent  text,
    ADD COLUMN reason      text,
    ADD COLUMN break_glass boolean NOT NULL DEFAULT false;
ALTER TABLE medical_app.audit_event DROP CONSTRAINT audit_event_action;
ALTER TABLE medical_app.audit_event ADD CONSTRAINT audit_event_action
    CHECK (action IN ('read', 'list', 'create', 'update', 'delete', 'grant', 'revoke'));
-- Break-the-glass accesses, for review: few rows, found without scanning the trail.
CREATE INDEX audit_event_break_glass_idx ON medical_app.audit_event (audit_event_id) WHERE break_glass;

-- The API grants and revokes; it can never rewrite who granted what.
GRANT SELECT, INSERT ON medical_app.care_team_member TO medical_api;
GRANT UPDATE (revoked_at, revoked_by) ON medical_app.care_team_member TO medical_api;

-- A revocation is final (a new grant is a new row), so the history of who had access stays true.
CREATE FUNCTION medical_app.keep_revocations() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.revoked_at IS NOT NULL THEN
        RAISE EXCEPTION 'a revoked care-team membership cannot change' USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER care_team_member_keep_revocations BEFORE UPDATE ON medical_app.care_team_member
    FOR EACH ROW EXECUTE FUNCTION medical_app.keep_revocations();
