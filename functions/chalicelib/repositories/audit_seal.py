"""Sealing the audit trail into a chain of block digests, and reading it back to verify it.

Sealing is ``medical_app.seal_audit_events()`` (migration 0005): one statement that reads the events
committed since the previous seal under its MVCC snapshot and appends the block. It runs as the
``medical_audit_sealer`` role (SECURITY DEFINER), so the API's login may run it without any write on
``audit_seal``. Verification reads the raw rows (built-in text renderings only, nothing the schema owner
could redefine) and recomputes every hash and digest in Python (chalicelib/domain/audit_seal.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from chalicelib.domain.audit_seal import EVENT_COLUMNS, Block, Report, Snapshot, Verifier

SEAL_SQL = "SELECT block_no, event_count, digest FROM medical_app.seal_audit_events()"
# Timestamps are rendered by the session's settings: the same ones the sealing function pins.
_SESSION_SQL = "SET search_path = pg_catalog, pg_temp; SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'"
_BLOCKS_SQL = (
    "SELECT block_no, sealed_at::text, sealed_by, snapshot::text, sealer_xid::text, event_count, first_event_id, "
    "last_event_id, event_ids, event_hashes, prev_digest, digest FROM medical_app.audit_seal ORDER BY block_no"
)
# (Ordered by the qualified column: an unqualified name would sort by the text output column of that name.)
_EVENTS_SQL = (
    f"SELECT {', '.join(f'e.{column}::text' for column in EVENT_COLUMNS)} "
    "FROM medical_app.audit_event e ORDER BY e.audit_event_id"
)
_COLUMNS_SQL = (
    "SELECT column_name FROM information_schema.columns "
    "WHERE table_schema = 'medical_app' AND table_name = 'audit_event' ORDER BY ordinal_position"
)


@dataclass(frozen=True)
class SealResult:
    block_no: int
    event_count: int
    digest: str  # hex

    def anchor(self) -> str:
        """``BLOCK:DIGEST``, what ``verify-audit --anchor`` takes back."""
        return f"{self.block_no}:{self.digest}"


def seal(connection, *, statement_timeout_ms: int | None = None) -> SealResult | None:
    """Seal what was committed since the last seal, in a transaction of its own; None when nothing was.
    The timeout is set for that transaction only (no startup option, which a transaction pooler refuses)."""
    with connection, connection.cursor() as cur:
        if statement_timeout_ms is not None:
            cur.execute("SELECT set_config('statement_timeout', %s, true)", (str(int(statement_timeout_ms)),))
        cur.execute(SEAL_SQL)
        row = cur.fetchone()
    if row is None:
        return None
    return SealResult(int(row[0]), int(row[1]), bytes(row[2]).hex())


def seal_database(dsn: str, *, statement_timeout_ms: int = 600_000,
                  application_name: str = "medical-records-audit-seal") -> SealResult | None:
    """Connect, seal, disconnect (the scheduled function runs every few minutes: no connection to keep)."""
    from chalicelib.transport import connect

    connection = connect(dsn, connect_timeout=10, application_name=application_name)
    try:
        return seal(connection, statement_timeout_ms=statement_timeout_ms)
    finally:
        connection.close()


def _block(row: tuple) -> Block:
    return Block(
        block_no=int(row[0]), sealed_at=row[1], sealed_by=row[2], snapshot_text=row[3], sealer_xid=int(row[4]),
        event_count=int(row[5]), first_event_id=int(row[6]), last_event_id=int(row[7]), event_ids=list(row[8]),
        event_hashes=bytes(row[9]), prev_digest=bytes(row[10]), digest=bytes(row[11]),
    )


def verify(
    connection,
    *,
    anchors: Iterable[tuple[int, str]] = (),
    progress: Callable[[int, int], None] | None = None,
    progress_every: int = 100_000,
    batch_size: int = 10_000,
) -> Report:
    """Recompute every block and the chain over one consistent snapshot of the trail (read only).

    ``progress(done, total)`` is called every ``progress_every`` events (and at the end of a longer run).
    """
    connection.set_session(isolation_level="REPEATABLE READ", readonly=True, autocommit=False)
    try:
        with connection.cursor() as cur:
            cur.execute(_SESSION_SQL)
            # Repeatable read: the snapshot returned here is the one every query below reads with.
            cur.execute("SELECT pg_current_snapshot()::text, (SELECT count(*) FROM medical_app.audit_event)")
            current, total = cur.fetchone()
            cur.execute(_COLUMNS_SQL)
            unsealed = [c for (c,) in cur.fetchall() if c not in EVENT_COLUMNS]
            cur.execute(_BLOCKS_SQL)
            blocks = [_block(row) for row in cur.fetchall()]
        verifier = Verifier(blocks, Snapshot.parse(current), anchors)
        verifier.report.warnings.extend(f"column audit_event.{c} is not covered by the seal" for c in unsealed)
        done = 0
        with connection.cursor(name="audit_verify") as events:
            events.itersize = batch_size
            events.execute(_EVENTS_SQL)
            for row in events:
                verifier.feed(row)
                done += 1
                if progress is not None and done % progress_every == 0:
                    progress(done, total)
        if progress is not None and done > progress_every and done % progress_every:
            progress(done, total)
        return verifier.finish()
    finally:
        connection.rollback()
