-- Tamper evidence for the audit trail (SPEC §4; README "Security and audit").
--
-- The append-only triggers of audit_event hold only while they stand: an owner can disable them. So the
-- trail is also sealed. medical_app.seal_audit_events() (run every few minutes) hashes every event
-- committed since the previous seal into a block whose digest chains the previous block's digest, and
-- `make verify-audit` (tools/cli.py verify-audit) recomputes them all and names the first altered,
-- deleted or inserted event.
--
-- Which events a block holds is defined by MVCC snapshots, not by id ranges: event ids are drawn when a
-- transaction inserts, not when it commits, so a transaction can commit an id lower than one already
-- sealed. Each block stores the snapshot its seal read the trail with; block n holds exactly the events
-- whose inserting transaction is visible in block n's snapshot and was not visible in block n-1's. An
-- event whose transaction was still running at a seal is not visible in that seal's snapshot, so the
-- first seal after it commits takes it: no event is ever skipped, whatever its id.

-- 1. What the database, not the caller, says about each event --------------------------------------

ALTER TABLE medical_app.audit_event
    -- the database login (session_user) that wrote the event; '' for events written before this migration
    ADD COLUMN db_user      text NOT NULL DEFAULT '',
    -- the top-level transaction that inserted the event; 0 for events written before this migration
    ADD COLUMN inserted_xid xid8 NOT NULL DEFAULT '0';
-- From now on the triggers below set both; an INSERT that bypasses them has to name them itself.
ALTER TABLE medical_app.audit_event ALTER COLUMN db_user DROP DEFAULT, ALTER COLUMN inserted_xid DROP DEFAULT;
-- Event ids are handed out in time order across sessions (no per-session cache): verification relies on it.
ALTER TABLE medical_app.audit_event ALTER COLUMN audit_event_id SET CACHE 1;
-- A seal reads only the events of transactions at or after the previous seal's oldest running one.
CREATE INDEX audit_event_inserted_xid_idx ON medical_app.audit_event (inserted_xid);

-- Statement-level, so it runs before the first event id of the statement is drawn: a transaction's id is
-- always assigned before the event ids it holds. verify-audit uses that to tell a late commit (legitimate)
-- from an event forged into an id range that was already sealed.
CREATE FUNCTION medical_app.audit_event_assign_xid() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_catalog.pg_current_xact_id();
    RETURN NULL;
END;
$$;
CREATE TRIGGER audit_event_assign_xid BEFORE INSERT ON medical_app.audit_event
    FOR EACH STATEMENT EXECUTE FUNCTION medical_app.audit_event_assign_xid();

-- Whatever the INSERT says, the time is the database's clock, the login is the session's, and the
-- transaction is the one inserting.
CREATE FUNCTION medical_app.audit_event_stamp() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.occurred_at  := pg_catalog.clock_timestamp();
    NEW.db_user      := session_user;
    NEW.inserted_xid := pg_catalog.pg_current_xact_id();
    RETURN NEW;
END;
$$;
CREATE TRIGGER audit_event_stamp BEFORE INSERT ON medical_app.audit_event
    FOR EACH ROW EXECUTE FUNCTION medical_app.audit_event_stamp();

-- 2. The seals ---------------------------------------------------------------------------------------

CREATE TABLE medical_app.audit_seal (
    block_no       bigint      PRIMARY KEY CONSTRAINT audit_seal_block_no CHECK (block_no >= 1),
    sealed_at      timestamptz NOT NULL,
    sealed_by      text        NOT NULL,  -- session_user of the sealing login
    -- the snapshot the seal read the trail with: the block holds the events visible here and not in the
    -- previous block's snapshot
    snapshot       pg_snapshot NOT NULL,
    -- the sealer's transaction id, drawn after the snapshot: any transaction that held an event id below
    -- last_event_id of this or an earlier block, but was not sealed yet, has an older id than this
    sealer_xid     xid8        NOT NULL,
    event_count    integer     NOT NULL CONSTRAINT audit_seal_not_empty CHECK (event_count > 0),
    first_event_id bigint      NOT NULL,
    last_event_id  bigint      NOT NULL,
    event_ids      bigint[]    NOT NULL,  -- ascending
    event_hashes   bytea       NOT NULL,  -- sha256 of each event's canonical form, 32 bytes each, in event_ids order
    prev_digest    bytea       NOT NULL,  -- the previous block's digest; 32 zero bytes for block 1
    -- sha256(prev_digest || canonical block header || event_hashes)
    digest         bytea       NOT NULL,
    CONSTRAINT audit_seal_sizes CHECK (
        cardinality(event_ids) = event_count AND octet_length(event_hashes) = 32 * event_count
        AND octet_length(prev_digest) = 32 AND octet_length(digest) = 32
    )
);

CREATE FUNCTION medical_app.reject_seal_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER audit_seal_append_only BEFORE UPDATE OR DELETE ON medical_app.audit_seal
    FOR EACH ROW EXECUTE FUNCTION medical_app.reject_seal_change();
CREATE TRIGGER audit_seal_no_truncate BEFORE TRUNCATE ON medical_app.audit_seal
    FOR EACH STATEMENT EXECUTE FUNCTION medical_app.reject_seal_change();

-- One field of a canonical form: NULL is '-', a value is '<UTF-8 byte length>:<value>' (self-delimiting,
-- so no two different rows serialise alike). chalicelib/domain/audit_seal.py builds the same bytes.
CREATE FUNCTION medical_app.audit_seal_field(value text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN value IS NULL THEN '-' ELSE pg_catalog.octet_length(value)::text || ':' || value END;

-- 3. Sealing -----------------------------------------------------------------------------------------
--
-- Runs as medical_audit_sealer (SECURITY DEFINER), which may read the trail and append seals and nothing
-- else. Whoever may EXECUTE it can only ever append a correct block over committed events: the API role
-- (the scheduled function uses the API's login) gets EXECUTE, not a single write on audit_seal.
CREATE FUNCTION medical_app.seal_audit_events()
RETURNS TABLE (block_no bigint, event_count integer, digest bytea)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET timezone = 'UTC'
SET datestyle = 'ISO, YMD'
AS $$
#variable_conflict use_column
BEGIN
    IF pg_current_xact_id_if_assigned() IS NOT NULL THEN
        -- the sealer's transaction id must be drawn after the snapshot (see audit_seal.sealer_xid)
        RAISE EXCEPTION 'seal_audit_events() must run in a transaction that has written nothing'
            USING ERRCODE = 'invalid_transaction_state';
    END IF;
    IF current_setting('server_encoding') <> 'UTF8' THEN
        RAISE EXCEPTION 'audit sealing needs a UTF8 database';
    END IF;
    -- One seal at a time; a concurrent one waits here, then (READ COMMITTED) sees this one's block.
    PERFORM pg_advisory_xact_lock(7882817165271957507);  -- 0x6D65647265630003: "medrec" + 3
    RETURN QUERY
    WITH prev AS MATERIALIZED (
        SELECT s.block_no, s.digest, s.snapshot FROM medical_app.audit_seal s ORDER BY s.block_no DESC LIMIT 1
    ), cur AS MATERIALIZED (
        -- The snapshot this statement reads the trail with, then (so drawn after it) the sealer's xid.
        SELECT pg_current_snapshot() AS snap, clock_timestamp() AS at, session_user::text AS by,
               pg_current_xact_id() AS xid
    ), events AS (
        SELECT e.audit_event_id AS id,
               sha256(convert_to(
                   'audit_event:v1|'
                   || medical_app.audit_seal_field(e.audit_event_id::text)
                   || medical_app.audit_seal_field(e.occurred_at::text)
                   || medical_app.audit_seal_field(e.actor)
                   || medical_app.audit_seal_field(e.actor_kind)
                   || medical_app.audit_seal_field(e.action)
                   || medical_app.audit_seal_field(e.resource_type)
                   || medical_app.audit_seal_field(e.resource_id::text)
                   || medical_app.audit_seal_field(e.patient_ids::text)
                   || medical_app.audit_seal_field(e.request_id)
                   || medical_app.audit_seal_field(e.outcome)
                   || medical_app.audit_seal_field(e.source_ip)
                   || medical_app.audit_seal_field(e.user_agent)
                   || medical_app.audit_seal_field(e.reason)
                   || medical_app.audit_seal_field(e.break_glass::text)
                   || medical_app.audit_seal_field(e.db_user)
                   || medical_app.audit_seal_field(e.inserted_xid::text),
                   'UTF8')) AS hash
        FROM medical_app.audit_event e
        -- Every transaction older than the previous snapshot's oldest running one was sealed already.
        WHERE e.inserted_xid >= coalesce((SELECT pg_snapshot_xmin(p.snapshot) FROM prev p), '0'::xid8)
          AND pg_visible_in_snapshot(e.inserted_xid, (SELECT c.snap FROM cur c))
          AND NOT coalesce(pg_visible_in_snapshot(e.inserted_xid, (SELECT p.snapshot FROM prev p)), false)
    ), block AS (
        SELECT count(*)::integer AS n, min(id) AS first_id, max(id) AS last_id,
               array_agg(id ORDER BY id) AS ids, string_agg(hash, ''::bytea ORDER BY id) AS hashes
        FROM events
    ), sealed AS (
        SELECT coalesce(p.block_no, 0) + 1 AS block_no, c.at, c.by, c.snap, c.xid, b.n, b.first_id, b.last_id,
               b.ids, b.hashes, coalesce(p.digest, decode(repeat('00', 32), 'hex')) AS prev_digest
        FROM block b CROSS JOIN cur c LEFT JOIN prev p ON true
        WHERE b.n > 0
    ), inserted AS (
        INSERT INTO medical_app.audit_seal AS s (block_no, sealed_at, sealed_by, snapshot, sealer_xid, event_count,
                                                 first_event_id, last_event_id, event_ids, event_hashes,
                                                 prev_digest, digest)
        SELECT x.block_no, x.at, x.by, x.snap, x.xid, x.n, x.first_id, x.last_id, x.ids, x.hashes, x.prev_digest,
               sha256(x.prev_digest
                      || convert_to('audit_seal:v1|'
                                    || medical_app.audit_seal_field(x.block_no::text)
                                    || medical_app.audit_seal_field(x.at::text)
                                    || medical_app.audit_seal_field(x.by)
                                    || medical_app.audit_seal_field(x.snap::text)
                                    || medical_app.audit_seal_field(x.xid::text)
                                    || medical_app.audit_seal_field(x.n::text), 'UTF8')
                      || x.hashes)
        FROM sealed x
        RETURNING s.block_no, s.event_count, s.digest
    )
    SELECT i.block_no, i.event_count, i.digest FROM inserted i;
END;
$$;

-- 4. Roles -------------------------------------------------------------------------------------------

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'medical_audit_sealer') THEN
        CREATE ROLE medical_audit_sealer NOLOGIN;
    END IF;
    -- To hand the sealing function over to it (a superuser is a member of every role already).
    IF NOT pg_has_role(current_user, 'medical_audit_sealer', 'MEMBER') THEN
        EXECUTE format('GRANT medical_audit_sealer TO %I', current_user);
    END IF;
END;
$$;

GRANT USAGE ON SCHEMA medical_app TO medical_audit_sealer;
GRANT SELECT ON medical_app.audit_event TO medical_audit_sealer;
GRANT SELECT, INSERT ON medical_app.audit_seal TO medical_audit_sealer;
ALTER FUNCTION medical_app.seal_audit_events() OWNER TO medical_audit_sealer;
REVOKE ALL ON FUNCTION medical_app.seal_audit_events() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION medical_app.seal_audit_events() TO medical_audit_sealer, medical_api;
