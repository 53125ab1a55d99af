"""PostgreSQL access suited to Lambda: one lazily opened connection per container.

The connection is opened on first use, reused across invocations, and re-opened when the server
has gone away (restart, failover, idle timeout). A Lambda container serves one request at a time;
where one process serves several at once (``chalice local`` is threaded), each thread gets its own
connection so transactions never interleave on one session. Each unit of work runs in one transaction; BEGIN
is sent together with the first statement to save a round trip.

Nothing here relies on session state, so the same code runs unchanged behind a transaction pooler
(PgBouncer in transaction mode, RDS Proxy), where consecutive transactions of one client may run on
different server sessions: no startup options (PgBouncer refuses them), no session-level SET, no
prepared statements (psycopg2 binds client-side), no session advisory locks, LISTEN or temporary
tables. The settings every transaction needs are set for that transaction only, in its first round trip.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg2

from chalicelib.observability import logger

_CONNECTION_LOST = (psycopg2.OperationalError, psycopg2.InterfaceError)
# What libpq says when the server refuses the credentials (a connection error carries no SQLSTATE).
_PASSWORD_REFUSED = re.compile(r"password authentication failed|PAM authentication failed")


def _reason(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or ["unknown"])[-1]

# Set with set_config(..., is_local => true): they hold for the transaction whatever the server session
# (pooled or not) or the server's defaults say, and end with it.
TRANSACTION_SETTINGS = {
    # Every transaction carries an audit event, which must be on disk before the answer leaves.
    "synchronous_commit": "on",
    "TimeZone": "UTC",
    "statement_timeout": "15000",
    "idle_in_transaction_session_timeout": "30000",
}
BEGIN_SQL = "BEGIN; SELECT " + ", ".join(f"set_config('{name}', '{value}', true)"
                                         for name, value in TRANSACTION_SETTINGS.items())


class Transaction:
    """A thin cursor wrapper; repositories only ever see this."""

    def __init__(self, database: Database, begin_sql: str, actor: str | None = None) -> None:
        self._database = database
        self._cursor = None
        self._pending_begin: str | None = begin_sql
        self._actor = actor
        self._at_commit: list[str] = []

    @property
    def started(self) -> bool:
        return self._pending_begin is None

    def execute_at_commit(self, sql: str, params: Sequence[Any] | dict | None = None) -> None:
        """Send a write that nothing in this transaction reads (an audit event) together with
        COMMIT, in the same round trip. If it fails, COMMIT is not reached and all rolls back."""
        cursor = self._cursor or self._database.connection().cursor()
        self._at_commit.append(cursor.mogrify(sql, params).decode())

    def commit(self) -> None:
        if not self._at_commit and not self.started:
            return  # nothing was sent: nothing to commit
        # Parameters are already bound by mogrify, so the batch is sent as-is.
        self.execute("; ".join([*self._at_commit, "COMMIT"]))
        self._at_commit.clear()

    def execute(self, sql: str, params: Sequence[Any] | dict | None = None) -> None:
        if self._pending_begin is None:
            self._cursor.execute(sql, params)
            return
        begin, self._pending_begin = self._pending_begin, None  # from here on a failure must roll back
        try:
            self._cursor = self._database.connection().cursor()
            self._cursor.execute(self._with_begin(begin, sql, params), params)
        except _CONNECTION_LOST:
            # The server went away since the last invocation. Nothing of this transaction
            # reached it, so reconnecting and sending the first statement again is safe.
            self._database.close()
            self._cursor = self._database.connection().cursor()
            self._cursor.execute(self._with_begin(begin, sql, params), params)

    def _with_begin(self, begin: str, sql: str, params: Sequence[Any] | dict | None) -> str:
        """BEGIN, the transaction's settings and the first statement, in one round trip. The actor (who
        the version history records for each change) is bound here, as a literal."""
        if self._actor is not None:
            actor = self._cursor.mogrify(", set_config('medrec.actor', %s, true)", (self._actor,)).decode()
            # With parameters to bind, psycopg2 reads % as a placeholder: a literal one is written %%.
            begin += actor.replace("%", "%%") if params is not None else actor
        return f"{begin}; {sql}"

    def fetchone(self, sql: str, params: Sequence[Any] | dict | None = None) -> tuple | None:
        self.execute(sql, params)
        return self._cursor.fetchone()

    def fetchall(self, sql: str, params: Sequence[Any] | dict | None = None) -> list[tuple]:
        self.execute(sql, params)
        return self._cursor.fetchall()

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount


class Database:
    def __init__(
        self,
        dsn: Callable[[], str],
        *,
        translate_error: Callable[[psycopg2.Error], Exception | None] = lambda exc: None,
        application_name: str = "medical-records-api",
        on_password_refused: Callable[[], None] | None = None,
    ) -> None:
        self._dsn = dsn
        self._on_password_refused = on_password_refused
        self._translate_error = translate_error
        self._application_name = application_name
        self._local = threading.local()

    @property
    def _connection(self):
        return getattr(self._local, "connection", None)

    @_connection.setter
    def _connection(self, connection) -> None:
        self._local.connection = connection

    def connection(self):
        """The container's connection, opened on first use and after it was lost."""
        if self._connection is None or self._connection.closed:
            try:
                connection = self._connect_once_more_after_a_rotation()
            except psycopg2.OperationalError as exc:
                # libpq says why (refused, certificate verify failed, password...): no patient data in it.
                logger.error("database connection failed", extra={"reason": _reason(exc)[:300]})
                raise
            # Transactions are managed explicitly (BEGIN ... COMMIT) so BEGIN can share a round trip.
            connection.autocommit = True
            self._connection = connection
        return self._connection

    def _connect_once_more_after_a_rotation(self):
        """A password the server refuses may have been rotated since it was read: forget it and connect once
        more with the secret as it is now."""
        try:
            return self._connect()
        except psycopg2.OperationalError as exc:
            if self._on_password_refused is None or not _PASSWORD_REFUSED.search(_reason(exc)):
                raise
            logger.warning("database refused the password; reading the secret again")
            self._on_password_refused()
            return self._connect()

    def _connect(self):
        # No startup options: a pooler would refuse them or apply them to a session other clients share.
        return psycopg2.connect(self._dsn(), application_name=self._application_name, connect_timeout=5)

    def close(self) -> None:
        if self._connection is not None and not self._connection.closed:
            self._connection.close()
        self._connection = None

    @contextmanager
    def transaction(self, actor: str | None = None) -> Iterator[Transaction]:
        """Run a unit of work in one transaction; commit (durably) on success, roll back on any error.
        ``actor``: who the transaction acts for, recorded with every version it writes (migration 0006)."""
        tx = Transaction(self, BEGIN_SQL, actor)
        try:
            yield tx
            tx.commit()
        except psycopg2.Error as exc:
            self._rollback()
            translated = self._translate_error(exc)
            if translated is None:
                raise
            raise translated from None
        except BaseException:
            if tx.started:
                self._rollback()
            raise

    def _rollback(self) -> None:
        connection = self._connection
        if connection is None or connection.closed:
            return
        try:
            connection.cursor().execute("ROLLBACK")
        except psycopg2.Error:
            self.close()
