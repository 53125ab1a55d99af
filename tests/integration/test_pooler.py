"""The API through PgBouncer in transaction mode (tools/pooler.py), as `make up POOLER=pgbouncer` runs it
and as RDS Proxy pools on AWS: consecutive transactions of one client land on whichever server session
is free, so nothing may rely on session state; and PostgreSQL sees at most the pool's connections."""

from __future__ import annotations

import os
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import unquote, urlsplit

import psycopg2
import pytest

from tests.conftest import API_USER, reset_caches
from tests.helpers import patient_body

POOL_SIZE = 4


@pytest.fixture(scope="module")
def pooler(pg_cluster, database, tmp_path_factory):
    """PgBouncer in front of the suite's PostgreSQL; the API's DATABASE_URL points at it meanwhile."""
    from tools.pooler import PgBouncer

    owner_url, api_url = database
    password = unquote(urlsplit(api_url).password or "")
    with psycopg2.connect(owner_url) as conn, conn.cursor() as cur:
        # Server sessions of this login default to asynchronous commits: the API must still commit durably.
        cur.execute(f'ALTER ROLE "{API_USER}" SET synchronous_commit = off')
    conn.close()
    bouncer = PgBouncer(tmp_path_factory.mktemp("pgbouncer"), server_port=pg_cluster.port,
                        users={API_USER: password}, pool_size=POOL_SIZE, query_wait_timeout=5).start()
    previous = os.environ["DATABASE_URL"]
    os.environ["DATABASE_URL"] = bouncer.url("app", API_USER, password)
    reset_caches()
    try:
        yield bouncer
    finally:
        os.environ["DATABASE_URL"] = previous
        with psycopg2.connect(owner_url) as conn, conn.cursor() as cur:
            cur.execute(f'ALTER ROLE "{API_USER}" RESET synchronous_commit')
        conn.close()
        reset_caches()
        bouncer.stop()


def _server_sessions(owner_conn) -> int:
    with owner_conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = %s", (API_USER,))
        return cur.fetchone()[0]


def test_the_api_is_served_through_the_pooler(pooler, api, owner_conn):
    created = api.new_patient()
    pid = created["patientId"]
    assert api.get(f"/v1/patients/{pid}").status == 200
    # the API's connection is PgBouncer's, not PostgreSQL's
    from chalicelib.api import dependencies

    assert f"port={pooler.port}" in dependencies.database().connection().dsn
    assert _server_sessions(owner_conn) <= POOL_SIZE


def test_every_transaction_commits_durably_whatever_the_pooled_session_says(pooler, owner_conn):
    """The role's server sessions default to synchronous_commit=off; the API's transactions run with on."""
    from chalicelib.api import dependencies

    database = dependencies.database()
    for _ in range(3):  # whichever server session each lands on
        with database.transaction() as tx:
            setting = tx.fetchone("SELECT current_setting('synchronous_commit'), current_setting('TimeZone')")
        assert setting == ("on", "UTC")
    with owner_conn.cursor() as cur:  # ... and no session was changed by it
        conn = psycopg2.connect(os.environ["DATABASE_URL"])
        try:
            conn.autocommit = True
            with conn.cursor() as pooled:
                pooled.execute("SHOW synchronous_commit")
                assert pooled.fetchone()[0] == "off"
        finally:
            conn.close()
        cur.execute("SELECT 1")


def test_audit_events_are_written_with_the_data(pooler, api, owner_conn):
    pid = api.new_patient()["patientId"]
    for _ in range(3):
        assert api.get(f"/v1/patients/{pid}").status == 200
    with owner_conn.cursor() as cur:
        cur.execute("SELECT action, outcome FROM medical_app.audit_event WHERE resource_id = %s "
                    "AND resource_type = 'patient' ORDER BY audit_event_id", (pid,))
        events = cur.fetchall()
    assert len(events) == 4 and all(outcome == "success" for _, outcome in events)


def test_concurrent_writers_through_the_pooler(pooler, api):
    """More concurrent writers than server connections: every write lands once, stale versions answer 412."""
    pid = api.new_patient()["patientId"]

    def patch(index: int):
        return api.patch(f"/v1/patients/{pid}", {"phoneNum": f"08{index:08d}"}, headers={"If-Match": '"1"'})

    with ThreadPoolExecutor(max_workers=12) as pool:
        statuses = [r.status for r in pool.map(patch, range(12))]
    assert statuses.count(200) == 1 and statuses.count(412) == 11, statuses
    assert api.get(f"/v1/patients/{pid}").json["version"] == 2

    def create(index: int):
        return api.post("/v1/patients", patient_body()).status

    with ThreadPoolExecutor(max_workers=12) as pool:
        assert list(pool.map(create, range(24))) == [201] * 24


def test_a_concurrent_idempotent_retry_creates_one_resource(pooler, api):
    body = patient_body()
    key = {"Idempotency-Key": f"pooled-{secrets.token_hex(8)}"}
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda _: api.post("/v1/patients", body, headers=key), range(8)))
    assert {a.status for a in answers} == {201}
    assert len({a.json["patientId"] for a in answers}) == 1
    assert sum(a.headers.get("idempotent-replayed") == "true" for a in answers) == 7


def test_postgresql_connections_stay_within_the_pool_under_many_clients(pooler, owner_conn):
    """40 clients, each holding a transaction open for a moment: PostgreSQL sees at most POOL_SIZE sessions."""
    from chalicelib.db import Database

    database = Database(lambda: os.environ["DATABASE_URL"])  # one connection per thread, as chalice local
    peak = 0
    stop = threading.Event()

    def watch() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, _server_sessions(owner_conn))

    def work(_: int) -> int:
        with database.transaction() as tx:
            value = tx.fetchone("SELECT 1 FROM pg_sleep(0.05)")[0]
        return value

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with ThreadPoolExecutor(max_workers=40) as pool:
            results = list(pool.map(work, range(200)))
    finally:
        stop.set()
        watcher.join()
    assert results == [1] * 200
    assert 1 <= peak <= POOL_SIZE, peak


def test_the_api_survives_a_postgresql_restart_behind_the_pooler(pooler, api, pg_cluster):
    pid = api.new_patient()["patientId"]
    pg_cluster.stop()
    try:
        down = api.get(f"/v1/patients/{pid}")
        assert down.status == 503 and down.headers["retry-after"]
    finally:
        pg_cluster.start()
    # PgBouncer retries its server login every second (server_login_retry): until then a client is told
    # to come back, as the answer's Retry-After says; nothing else.
    deadline = time.monotonic() + 15
    while (answer := api.get(f"/v1/patients/{pid}")).status != 200 and time.monotonic() < deadline:
        assert answer.status == 503 and answer.headers["retry-after"], answer
        time.sleep(int(answer.headers["retry-after"]))
    assert answer.status == 200
    assert api.post("/v1/patients", patient_body()).status == 201


def test_the_audit_seal_runs_through_the_pooler_with_its_timeout_for_its_transaction_only(pooler, api, owner_conn):
    from chalicelib.repositories.audit_seal import seal_database

    api.new_patient()  # something to seal
    result = seal_database(os.environ["DATABASE_URL"], statement_timeout_ms=45_000)
    assert result is not None and result.event_count >= 1
    # The pooled server session the seal used keeps its own default: the timeout ended with the transaction.
    with psycopg2.connect(os.environ["DATABASE_URL"]) as conn, conn.cursor() as cur:
        cur.execute("SHOW statement_timeout")
        assert cur.fetchone()[0] != "45s"
