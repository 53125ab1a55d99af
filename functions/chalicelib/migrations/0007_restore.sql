-- Restoring a deleted resource is an audited write like any other.
ALTER TABLE medical_app.audit_event DROP CONSTRAINT audit_event_action;
ALTER TABLE medical_app.audit_event ADD CONSTRAINT audit_event_action
    CHECK (action IN ('read', 'list', 'create', 'update', 'delete', 'grant', 'revoke', 'read_history', 'restore'));
