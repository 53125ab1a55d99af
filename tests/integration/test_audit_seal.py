"""The audit trail is sealed into a chain of block digests; verification names what was altered, deleted or
inserted, and a transaction that commits a lower event id after a seal is taken by the next one.

Each test gets its own freshly migrated database: tampering with the shared one would spoil the others.
"""

from __future__ import annotations

import secrets
import uuid

import psycopg2
import pytest
from click.testing import CliRunner

from chalicelib import config
from chalicelib.repositories import audit_seal
from tools.cli import cli, create_login

API_LOGIN = "medrec_seal_api_test"
API_PASSWORD = "seal-api-pw-" + secrets.token_hex(8)

INSERT_SQL = (
    "INSERT INTO medical_app.audit_event (actor, actor_kind, action, resource_type, resource_id, patient_ids, "
    "request_id, outcome, source_ip, user_agent, reason, break_glass) "
    "VALUES (%s, %s, %s, %s, %s, %s::bigint[], %s, %s, %s, %s, %s, %s) RETURNING audit_event_id"
)


class Trail:
    """A migrated database of its own: URLs, and helpers to write and inspect its audit trail."""

    def __init__(self, cluster, name: str) -> None:
        self.cluster, self.name = cluster, name
        self.owner_url = cluster.url(name)
        self.api_url = cluster.url(name, user=API_LOGIN, password=API_PASSWORD)
        self.owner = psycopg2.connect(self.owner_url)
        self.owner.autocommit = True

    def connect(self, *, api: bool = True, autocommit: bool = True):
        conn = psycopg2.connect(self.api_url if api else self.owner_url)
        conn.autocommit = autocommit
        return conn

    def add(self, conn=None, **overrides) -> int:
        """One event as the API writes it (repositories/audit.py), on ``conn`` (default: the owner's)."""
        values = {
            "actor": "clinician-1", "actor_kind": "clinician", "action": "read", "resource_type": "patient",
            "resource_id": 1, "patient_ids": [1], "request_id": uuid.uuid4().hex, "outcome": "success",
            "source_ip": "203.0.113.9", "user_agent": "pytest", "reason": None, "break_glass": False,
        } | overrides
        with (conn or self.owner).cursor() as cur:
            cur.execute(INSERT_SQL, tuple(values.values()))
            return cur.fetchone()[0]

    def seal(self):
        conn = psycopg2.connect(self.owner_url)
        try:
            return audit_seal.seal(conn)
        finally:
            conn.close()

    def verify(self, anchors=()):
        conn = psycopg2.connect(self.owner_url)
        try:
            return audit_seal.verify(conn, anchors=anchors)
        finally:
            conn.close()

    def tamper(self, statement: str, params=()) -> None:
        """What an owner can do once the append-only triggers are out of the way."""
        with self.owner.cursor() as cur:
            cur.execute("ALTER TABLE medical_app.audit_event DISABLE TRIGGER ALL")
            try:
                cur.execute(statement, params)
            finally:
                cur.execute("ALTER TABLE medical_app.audit_event ENABLE TRIGGER ALL")

    def one(self, sql: str, params=()):
        with self.owner.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchone()


@pytest.fixture
def trail(pg_cluster, database):
    from chalicelib.migrations import migrate

    name = f"seal_{uuid.uuid4().hex[:10]}"
    pg_cluster.create_database(name)
    migrate(pg_cluster.url(name))
    create_login(pg_cluster.url(name), API_LOGIN, API_PASSWORD, "medical_api")
    t = Trail(pg_cluster, name)
    yield t
    t.owner.close()
    admin = psycopg2.connect(pg_cluster.url())
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    admin.close()


def sealed_trail(trail: Trail, events: int = 5) -> list[int]:
    """A few events sealed into block 1, with a hole (a rolled-back event) at the third position."""
    ids = [trail.add(), trail.add()]
    conn = trail.connect(autocommit=False)
    trail.add(conn)
    conn.rollback()
    conn.close()
    ids += [trail.add() for _ in range(events - 2)]
    assert trail.seal().block_no == 1
    return ids


# --- sealing and verifying ----------------------------------------------------------------------------


def test_sealed_events_verify_and_blocks_chain(trail):
    api = trail.connect()
    awkward = [
        {"reason": 'a "quoted"\\ reason,\nwith a newline and \t tab', "break_glass": True},
        {"user_agent": "Mozilla/5.0 (é ü 漢字 🙂)", "source_ip": None, "request_id": None},
        {"patient_ids": [], "resource_id": None, "actor_kind": None},
        {"patient_ids": [3, 1, 2**62], "actor": "-", "reason": "7:abcdefg"},
        {"actor": "", "reason": ""},
    ]
    first = [trail.add(api, **values) for values in awkward]
    block = trail.seal()
    assert (block.block_no, block.event_count) == (1, len(first))
    assert trail.seal() is None  # nothing new
    report = trail.verify()
    assert report.intact, report.findings
    assert (report.events, report.blocks, report.pending) == (5, 1, 0)

    more = [trail.add(api) for _ in range(12)]  # ids past 9: they sort differently as text
    assert trail.verify().pending == 12
    second = trail.seal()
    assert (second.block_no, second.event_count) == (2, 12)
    report = trail.verify([(1, block.digest), (2, second.digest[:16])])
    assert report.intact, report.findings
    assert report.head_block == 2 and report.head_digest.hex() == second.digest
    prev, ids = trail.one("SELECT prev_digest, event_ids FROM medical_app.audit_seal WHERE block_no = 2")
    assert bytes(prev).hex() == block.digest and ids == more
    api.close()


def test_the_database_owns_time_login_and_transaction(trail):
    api = trail.connect(autocommit=False)
    with api.cursor() as cur:
        cur.execute(
            "INSERT INTO medical_app.audit_event (occurred_at, actor, action, resource_type, outcome) "
            "VALUES ('2001-02-03T04:05:06Z', 'someone', 'read', 'patient', 'success') RETURNING audit_event_id"
        )
        event_id = cur.fetchone()[0]
        cur.execute("SELECT pg_current_xact_id()::text, clock_timestamp()")
        xid, now = cur.fetchone()
    api.commit()
    occurred_at, db_user, inserted_xid = trail.one(
        "SELECT occurred_at, db_user, inserted_xid::text FROM medical_app.audit_event WHERE audit_event_id = %s",
        (event_id,),
    )
    assert occurred_at.year != 2001 and abs((now - occurred_at).total_seconds()) < 60
    assert db_user == API_LOGIN and inserted_xid == xid
    # nor can the caller name the login or the transaction
    with api.cursor() as cur:
        cur.execute(
            "INSERT INTO medical_app.audit_event (actor, action, resource_type, outcome, db_user, inserted_xid) "
            "VALUES ('someone', 'read', 'patient', 'success', 'postgres', '3') RETURNING db_user, inserted_xid::text"
        )
        assert cur.fetchone()[0] == API_LOGIN
    api.rollback()
    api.close()


# --- tampering ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        "actor = 'someone-else'",
        "occurred_at = occurred_at - interval '1 day'",
        "patient_ids = '{1,99}'",
        "break_glass = true",
        "reason = 'added afterwards'",
        "user_agent = NULL",
        "inserted_xid = '3'",
        "inserted_xid = (inserted_xid::text::bigint + 1000)::text::xid8",
    ],
)
def test_an_altered_event_is_named(trail, change):
    ids = sealed_trail(trail)
    victim = ids[2]
    trail.tamper(f"UPDATE medical_app.audit_event SET {change} WHERE audit_event_id = %s", (victim,))  # noqa: S608
    report = trail.verify()
    assert not report.intact
    assert (report.first.kind, report.first.event_id) == ("altered", victim), report.findings


def test_a_deleted_event_is_named(trail):
    ids = sealed_trail(trail)
    trail.add()
    trail.seal()
    trail.tamper("DELETE FROM medical_app.audit_event WHERE audit_event_id = %s", (ids[3],))
    report = trail.verify()
    assert (report.first.kind, report.first.event_id, report.first.block_no) == ("deleted", ids[3], 1)
    assert [f.kind for f in report.findings] == ["deleted"]


@pytest.mark.parametrize("forger", ["owner, own transaction", "owner, a sealed neighbour's transaction", "api role"])
def test_an_event_inserted_into_a_sealed_range_is_named(trail, forger):
    ids = sealed_trail(trail)
    hole = ids[1] + 1  # the rolled-back event's id: inside block 1's range, never sealed
    # a copy of the first event under the hole's id, naming the forger's transaction or the copied event's
    forge = (
        "INSERT INTO medical_app.audit_event (audit_event_id, occurred_at, actor, action, resource_type, outcome, "
        "db_user, inserted_xid) OVERRIDING SYSTEM VALUE "
        "SELECT %s, occurred_at, actor, action, resource_type, outcome, db_user, "
        "CASE WHEN %s THEN pg_current_xact_id() ELSE inserted_xid END "
        "FROM medical_app.audit_event WHERE audit_event_id = %s"
    )
    params = (hole, forger != "owner, a sealed neighbour's transaction", ids[0])
    if forger == "api role":  # the triggers stand: the database stamps the forger's own transaction
        api = trail.connect()
        with api.cursor() as cur:
            cur.execute(forge, params)
        api.close()
    else:
        trail.tamper(forge, params)
    report = trail.verify()
    assert (report.first.kind, report.first.event_id) == ("inserted", hole), report.findings
    # Sealing the forgery into the next block does not launder it.
    trail.add()
    trail.seal()
    report = trail.verify()
    assert (report.first.kind, report.first.event_id) == ("inserted", hole), report.findings


def test_a_rewritten_chain_is_caught_by_an_anchor_kept_outside(trail):
    sealed_trail(trail)
    trail.add()
    anchor = trail.seal()
    with trail.owner.cursor() as cur:  # the owner drops the last block, so its event looks merely pending
        cur.execute("ALTER TABLE medical_app.audit_seal DISABLE TRIGGER ALL")
        cur.execute("DELETE FROM medical_app.audit_seal WHERE block_no = 2")
        cur.execute("ALTER TABLE medical_app.audit_seal ENABLE TRIGGER ALL")
    assert trail.verify().intact
    report = trail.verify([(anchor.block_no, anchor.digest)])
    assert [(f.kind, f.block_no) for f in report.findings] == [("seal", 2)]


def test_an_altered_seal_is_named(trail):
    sealed_trail(trail)
    with trail.owner.cursor() as cur:
        cur.execute("ALTER TABLE medical_app.audit_seal DISABLE TRIGGER ALL")
        cur.execute("UPDATE medical_app.audit_seal SET sealed_at = sealed_at + interval '1 hour'")
        cur.execute("ALTER TABLE medical_app.audit_seal ENABLE TRIGGER ALL")
    report = trail.verify()
    assert [(f.kind, f.block_no) for f in report.findings] == [("seal", 1), ("seal", 1)]


# --- ids are not commit order -------------------------------------------------------------------------


def test_an_event_committed_after_a_later_id_was_sealed_is_sealed_next(trail):
    early = trail.connect(autocommit=False)  # draws the lower id, then stays open across a seal
    low = trail.add(early)
    late = trail.connect()
    high = trail.add(late)
    assert low < high

    first = trail.seal()
    assert first.event_count == 1
    assert trail.one("SELECT event_ids FROM medical_app.audit_seal WHERE block_no = 1")[0] == [high]
    report = trail.verify()
    assert report.intact and report.pending == 0, report.findings  # the open transaction is invisible

    early.commit()
    report = trail.verify()
    assert report.intact and report.pending == 1, report.findings
    second = trail.seal()
    assert (second.block_no, second.event_count) == (2, 1)
    assert trail.one("SELECT event_ids FROM medical_app.audit_seal WHERE block_no = 2")[0] == [low]
    report = trail.verify()
    assert report.intact and report.pending == 0, report.findings
    early.close()
    late.close()


def test_a_seal_waits_for_nothing_and_misses_nothing_under_interleaving(trail):
    """Several transactions open and close around several seals: every event is sealed exactly once."""
    opened = [trail.connect(autocommit=False) for _ in range(4)]
    ids = []
    for round_ in range(4):
        ids.append(trail.add(opened[round_]))
        ids.append(trail.add())
        trail.seal()
        if round_:
            opened[round_ - 1].commit()
    opened[-1].commit()
    trail.seal()
    sealed = trail.one("SELECT array_agg(i ORDER BY i) FROM medical_app.audit_seal, unnest(event_ids) AS i")[0]
    assert sealed == sorted(ids)
    assert trail.verify().intact
    for conn in opened:
        conn.close()


def test_a_transaction_has_its_id_before_it_draws_an_event_id(trail):
    """What tells a late commit from a forgery: the statement trigger assigns the transaction id before the
    row's values (and so its event id) are computed."""
    event_id = trail.add(reason=None, request_id=None)
    with trail.owner.cursor() as cur:
        cur.execute(
            "INSERT INTO medical_app.audit_event (actor, action, resource_type, outcome, reason) "
            "VALUES ('x', 'read', 'patient', 'success', pg_current_xact_id_if_assigned()::text) "
            "RETURNING audit_event_id, reason, inserted_xid::text"
        )
        later, xid_when_id_was_drawn, inserted_xid = cur.fetchone()
    assert later > event_id and xid_when_id_was_drawn == inserted_xid


def test_concurrent_seals_queue_and_chain(trail):
    import threading

    trail.add()
    holder = trail.connect(autocommit=False)
    with holder.cursor() as cur:
        cur.execute(audit_seal.SEAL_SQL)  # block 1, its transaction (and the seal lock) still open
        assert cur.fetchone()[0] == 1
    trail.add()
    results = []
    waiter = threading.Thread(target=lambda: results.append(trail.seal()))
    waiter.start()
    waiter.join(0.5)
    assert waiter.is_alive()  # waits for the first seal to end
    holder.commit()
    waiter.join(10)
    assert (results[0].block_no, results[0].event_count) == (2, 1)
    assert trail.verify().intact
    holder.close()


# --- privileges ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT count(*) FROM medical_app.audit_seal",
        "INSERT INTO medical_app.audit_seal (block_no, sealed_at, sealed_by, snapshot, sealer_xid, event_count, "
        "first_event_id, last_event_id, event_ids, event_hashes, prev_digest, digest) "
        "VALUES (99, now(), 'x', pg_current_snapshot(), '1', 0, 0, 0, '{}', '', '', '')",
        "UPDATE medical_app.audit_seal SET sealed_by = 'x'",
        "DELETE FROM medical_app.audit_seal",
        "TRUNCATE medical_app.audit_seal",
        "UPDATE medical_app.audit_event SET occurred_at = now()",
    ],
)
def test_the_api_role_cannot_touch_seals_or_event_times(trail, statement):
    sealed_trail(trail)
    api = trail.connect()
    with api.cursor() as cur, pytest.raises(psycopg2.errors.InsufficientPrivilege):
        cur.execute(statement)
    api.close()


def test_the_api_role_can_only_append_a_correct_seal(trail):
    api = trail.connect(autocommit=False)
    trail.add()
    result = audit_seal.seal(api)
    assert result.block_no == 1
    assert trail.one("SELECT sealed_by FROM medical_app.audit_seal")[0] == API_LOGIN
    assert trail.verify().intact
    # a transaction that already wrote cannot seal (its id would predate the seal's snapshot)
    trail.add(api)
    with api.cursor() as cur, pytest.raises(psycopg2.errors.InvalidTransactionState):
        cur.execute(audit_seal.SEAL_SQL)
    api.rollback()
    api.close()


def test_the_seal_table_is_append_only_for_the_owner_too(trail):
    sealed_trail(trail)
    with trail.owner.cursor() as cur:
        for statement in ("UPDATE medical_app.audit_seal SET sealed_by = 'x'", "DELETE FROM medical_app.audit_seal",
                          "TRUNCATE medical_app.audit_seal"):
            with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                cur.execute(statement)


# --- the commands and the scheduled function ----------------------------------------------------------


def test_the_commands(trail):
    runner = CliRunner()
    assert runner.invoke(cli, ["verify-audit", "--help"]).exit_code == 0
    trail.add()
    sealed = runner.invoke(cli, ["seal-audit", "--database-url", trail.owner_url])
    assert sealed.exit_code == 0 and "sealed block 1: 1 event(s); anchor 1:" in sealed.output
    anchor = sealed.output.split("anchor ")[1].strip()

    ok = runner.invoke(cli, ["verify-audit", "--database-url", trail.owner_url, "--anchor", anchor, "--quiet"])
    assert ok.exit_code == 0 and "audit trail intact: 1 events, 1 blocks" in ok.output

    wrong = runner.invoke(cli, ["verify-audit", "--database-url", trail.owner_url, "--anchor", "1:" + "0" * 64])
    assert wrong.exit_code == 1 and "differs from its anchor" in wrong.output

    trail.tamper("UPDATE medical_app.audit_event SET actor = 'x'")
    tampered = runner.invoke(cli, ["verify-audit", "--database-url", trail.owner_url])
    assert tampered.exit_code == 1 and tampered.output.startswith("TAMPERED: event 1 was altered")

    bad_anchor = runner.invoke(cli, ["verify-audit", "--database-url", trail.owner_url, "--anchor", "nonsense"])
    assert bad_anchor.exit_code == 2
    unreachable = runner.invoke(cli, ["verify-audit", "--database-url", "postgresql://x@127.0.0.1:1/x"])
    assert unreachable.exit_code == 2
    no_rights = runner.invoke(cli, ["verify-audit", "--database-url", trail.api_url])
    assert no_rights.exit_code == 2 and "permission denied" in no_rights.output


def test_the_scheduled_function_seals_with_the_api_login(client, owner_url, api):
    api.new_patient()  # at least one event to seal in the shared database
    response = client.lambda_.invoke("seal_audit", client.events.generate_cw_event(
        source="aws.events", detail_type="Scheduled Event", detail={}, resources=[]))
    assert response.payload["sealed"] is True and response.payload["events"] >= 1
    again = client.lambda_.invoke("seal_audit", client.events.generate_cw_event(
        source="aws.events", detail_type="Scheduled Event", detail={}, resources=[]))
    assert again.payload == {"sealed": False}
    conn = psycopg2.connect(owner_url)
    try:
        assert audit_seal.verify(conn).intact
    finally:
        conn.close()


def test_the_template_schedules_the_seal_with_a_parameter():
    from pathlib import Path

    import yaml

    from tests.infrastructure.conftest import _Loader

    text = (Path(__file__).resolve().parents[2] / "template.yaml").read_text()
    template = yaml.load(text, Loader=_Loader)  # noqa: S506 - safe loader subclass
    function = template["Resources"]["SealAudit"]["Properties"]
    assert function["Handler"] == "app.seal_audit"
    assert function["Events"]["SealAuditEvent"]["Properties"]["Schedule"] == {"Ref": "AuditSealSchedule"}
    assert template["Parameters"]["AuditSealSchedule"]["Default"] == config.AUDIT_SEAL_SCHEDULE
    assert function["Environment"]["Variables"]["DATABASE_SECRET_ARN"] == {"Ref": "DatabaseSecretArn"}
    assert "SealAuditLogGroup" in template["Resources"]
