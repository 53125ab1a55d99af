"""The analytics refresh: replicate with Sling, reconcile hard deletes, merge what changed, check.

Steps (each a Prefect task in ``flow.py``; callable directly for tests and commands):

1. ``replicate``: Sling copies changed application rows into the landing tables (schema ``stg``).
2. ``apply_changes``: in ONE transaction of the analytic database: remove landing rows whose source
   rows were hard-deleted, find the visits affected by landing changes since the last good run's
   watermark, recompute only their denormalized rows and write only the rows that differ; then
   recompute the de-identified rows (``medical_record_deidentified``, keyed pseudonyms made with
   ``PSEUDONYM_KEY``) of exactly the rows written, again writing only what differs; record the run.
   A crash anywhere leaves both tables as of the last good run; the next run starts from that
   run's watermark and converges.
3. ``check``: the affected visits' rows equal what the landing tables imply, and the recomputed
   de-identified rows what their identified rows imply (inside step 2's transaction, so a mismatch
   rolls it back); and, after a rebuild or once per ``global_check_interval_seconds``, the whole
   table holds as many rows as the landing tables imply and the de-identified table as many as the
   identified one.

The pseudonym key reaches the database only as HMAC pads set for step 2's transaction
(``set_config(..., is_local => true)``, see ``set_deidentification_parameters``): never in a table,
the run log, a message or a Prefect artifact.

Single flight: a whole run holds a session advisory lock on the analytic database, so two refreshes
never interleave; a second one waits (up to ``lock_timeout_seconds``) and otherwise records
``skipped``.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import psycopg2.extras

from chalicelib.config import REFRESH_FULL, REFRESH_INCREMENTAL, REFRESH_MODES
from chalicelib.transport import is_loopback
from pipeline.bulk_copy import pipe_copy
from pipeline.settings import PIPELINE_DIR, PipelineSettings, PseudonymKey, find_sling_binary

SQL_DIR = PIPELINE_DIR / "sql"
REPLICATION = PIPELINE_DIR / "replication.yaml"
_LOCK_KEY = 0x6D65647265630002  # "medrec" + 2: one refresh at a time
# (landing table, key column, how a removed row maps to the visits it affects)
_TABLES = (
    ("patient", "patient_id",
     "SELECT r.medical_record_id FROM stg.medical_record r WHERE r.patient_id = ANY(%s)"),
    ("medical_record", "medical_record_id", "SELECT unnest(%s::bigint[])"),
    ("prescription", "prescription_id", None),
)
MERGE_RANDOM_PAGE_COST = 1.1  # the analytic database's working set is cached or on SSD (see apply_changes)
_INSERTED = re.compile(r'inserted (\d+) rows into "\w+"\."(\w+)"')


class RefreshFailed(RuntimeError):
    """A refresh step failed; the message is safe to show (no credentials, no patient data)."""


class RefreshBusy(RuntimeError):
    """Another refresh held the lock for longer than the lock timeout."""


@dataclass
class RefreshResult:
    refresh_run_id: int
    mode: str
    status: str
    watermark_before: int | None = None
    watermark_after: int | None = None
    rows_extracted: dict[str, int] = field(default_factory=dict)
    rows_changed: dict[str, int] = field(default_factory=dict)
    rows_hard_deleted: dict[str, int] = field(default_factory=dict)
    rows_inserted: int = 0
    rows_updated: int = 0
    rows_deleted: int = 0
    deidentified_rows_inserted: int = 0
    deidentified_rows_updated: int = 0
    deidentified_rows_deleted: int = 0
    deidentified_rebuilt: bool = False  # rebuilt whole (full mode, first run, new key) rather than merged
    check_passed: bool | None = None
    check_scope: str | None = None
    step_ms: dict[str, float] = field(default_factory=dict)  # where the time went, per part of step 2
    duration_ms: int | None = None
    message: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def crash_point(name: str) -> None:
    """No-op hook; tests replace it to inject a crash at a named point of a run."""


def _sql(name: str) -> str:
    return (SQL_DIR / name).read_text(encoding="utf-8")


def _connect(url: str):
    return psycopg2.connect(url, connect_timeout=10, application_name="medical-records-refresh")


def _redact(text: str) -> str:
    """Drop credentials from connection URLs that tools echo back."""
    return re.sub(r"(postgres(?:ql)?://)[^@\s/]*@", r"\1***@", text)


def _sling_url(url: str) -> str:
    """Sling's URL: as given (settings made a remote database's verify-full), or, for a loopback
    database that names no sslmode, without TLS (Sling's driver would otherwise try it first)."""
    parts = urlsplit(url)
    query = parts.query
    if "sslmode=" not in query and is_loopback(parts.hostname):
        query = f"{query}&sslmode=disable" if query else "sslmode=disable"
    return urlunsplit(parts._replace(query=query))


# --- run log --------------------------------------------------------------------------------------

def start_run(conn, mode: str) -> int:
    with conn, conn.cursor() as cur:
        # A run still "running" here was cut short (crash, kill): say so instead of leaving it open.
        cur.execute(
            "UPDATE analytic.refresh_run SET status = 'failed', finished_at = clock_timestamp(), "
            "message = 'interrupted before it finished' WHERE status = 'running'"
        )
        cur.execute(
            "INSERT INTO analytic.refresh_run (mode, status, lock_acquired_at) "
            "VALUES (%s, 'running', clock_timestamp()) RETURNING refresh_run_id",
            (mode,),
        )
        return cur.fetchone()[0]


def finish_run(conn, result: RefreshResult) -> None:
    with conn, conn.cursor() as cur:
        cur.execute(
            "UPDATE analytic.refresh_run SET status = %s, finished_at = clock_timestamp(), "
            "duration_ms = (extract(epoch FROM clock_timestamp() - started_at) * 1000)::int, "
            "rows_extracted = %s, check_passed = %s, check_scope = %s, message = %s "
            "WHERE refresh_run_id = %s RETURNING duration_ms",
            (
                result.status,
                psycopg2.extras.Json(result.rows_extracted),
                result.check_passed,
                result.check_scope,
                result.message,
                result.refresh_run_id,
            ),
        )
        result.duration_ms = cur.fetchone()[0]


def record_skipped(conn, mode: str, message: str) -> int:
    with conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO analytic.refresh_run (mode, status, finished_at, message) "
            "VALUES (%s, 'skipped', clock_timestamp(), %s) RETURNING refresh_run_id",
            (mode, message),
        )
        return cur.fetchone()[0]


def last_watermark(cur) -> int:
    cur.execute(
        "SELECT watermark_after FROM analytic.refresh_run WHERE status = 'succeeded' AND watermark_after IS NOT NULL "
        "ORDER BY refresh_run_id DESC LIMIT 1"
    )
    row = cur.fetchone()
    return row[0] if row else 0


# --- single flight --------------------------------------------------------------------------------

@contextmanager
def single_flight(settings: PipelineSettings) -> Iterator[Any]:
    """Hold the refresh lock for the whole run; yields the analytic connection that holds it."""
    conn = _connect(settings.analytic_db_url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SET lock_timeout = %s", (f"{int(settings.lock_timeout_seconds * 1000)}ms",))
            deadline = time.monotonic() + settings.lock_timeout_seconds
            while True:
                cur.execute("SELECT pg_try_advisory_lock(%s)", (_LOCK_KEY,))
                if cur.fetchone()[0]:
                    break
                if time.monotonic() >= deadline:
                    raise RefreshBusy(f"another refresh held the lock for over {settings.lock_timeout_seconds:.0f}s")
                time.sleep(0.2)
        conn.autocommit = False
        yield conn
    finally:
        if not conn.closed:
            conn.rollback()
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
            conn.close()


# --- step 1: replicate ----------------------------------------------------------------------------

def replicate(settings: PipelineSettings, conn, mode: str) -> dict[str, int]:
    """Bring the landing tables up to date; returns rows read per landing table. Raises RefreshFailed.

    Empty landing tables (the first run) and ``full`` mode are loaded whole by ``load_landing_tables``
    (a binary COPY of one snapshot, several times faster than Sling's row-by-row load); otherwise the
    Sling replication reads only what changed."""
    if mode == REFRESH_FULL or landing_tables_empty(conn):
        return load_landing_tables(settings, conn)
    return replicate_with_sling(settings)


def landing_tables_empty(conn) -> bool:
    with conn, conn.cursor() as cur:
        cur.execute("SELECT " + " AND ".join(f"NOT EXISTS (SELECT 1 FROM stg.{t})" for t, _, _ in _TABLES))
        return cur.fetchone()[0]


def _landing_columns(cur, table: str) -> list[tuple[str, str]]:
    """The landing table's columns that come from the source (name, type), from the catalogue: the
    migration stays their one definition. ``change_seq`` is the landing table's own."""
    cur.execute(
        "SELECT quote_ident(attname), format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped AND attname <> 'change_seq' "
        "ORDER BY attnum",
        (f"stg.{table}",),
    )
    return cur.fetchall()


def load_landing_tables(settings: PipelineSettings, conn) -> dict[str, int]:
    """Replace the landing tables' rows with the source's, in one transaction of the analytic database,
    from one REPEATABLE READ snapshot of the application database (the three tables agree with each
    other). Each table: TRUNCATE, indexes dropped, binary COPY piped from the source, indexes built;
    the landing trigger still gives every row its ``change_seq``. The analytic tables are untouched
    until step 2. Sling's later incremental runs start from the newest ``updated_timestamp`` landed."""
    rows: dict[str, int] = {}
    source = None
    try:
        source = _connect(settings.app_db_url)
        source.set_session(isolation_level="REPEATABLE READ", readonly=True)
        with conn.cursor() as cur:
            cur.execute("TRUNCATE " + ", ".join(f"stg.{t}" for t, _, _ in _TABLES))
            for table, _key, _ in _TABLES:
                columns = _landing_columns(cur, table)
                names = ", ".join(name for name, _ in columns)
                query = ", ".join(f"{name}::{kind}" for name, kind in columns)
                with _indexes_rebuilt_after(cur, "stg", table):
                    rows[table] = pipe_copy(
                        source, f"SELECT {query} FROM medical_app.{table}", conn, f"stg.{table} ({names})"
                    )
                cur.execute(f"ANALYZE stg.{table}")
        conn.commit()
    except psycopg2.Error as exc:
        conn.rollback()
        # The primary message only: a COPY error's context line would quote the row's values.
        reason = (exc.diag.message_primary if exc.pgcode else None) or str(exc).strip()
        raise RefreshFailed(f"loading the landing tables failed: {_redact(reason)}") from None
    finally:
        if source is not None:
            source.rollback()
            source.close()
    return rows


def replicate_with_sling(settings: PipelineSettings, replication: Path = REPLICATION) -> dict[str, int]:
    """Run a Sling replication (by default the pipeline's: only rows past the newest landed
    ``updated_timestamp``); returns rows written per target table."""
    settings.sling_home.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "APP_DB": _sling_url(settings.app_db_url),
        "ANALYTIC_DB": _sling_url(settings.analytic_db_url),
        "SLING_HOME_DIR": str(settings.sling_home),
        "SLING_DISABLE_TELEMETRY": "true",
    }
    completed = subprocess.run(
        [find_sling_binary(), "run", "-r", str(replication)],
        env=env, capture_output=True, text=True, timeout=3600, check=False,
    )
    output = completed.stdout + completed.stderr
    if completed.returncode != 0:
        fatal = output[output.find("fatal:"):] if "fatal:" in output else output[-2000:]
        fatal = re.sub(r"\x1b\[[0-9;]*m", "", fatal)
        raise RefreshFailed(f"Sling replication failed (exit {completed.returncode}): {_redact(fatal.strip())}")
    return {table: int(rows) for rows, table in _INSERTED.findall(re.sub(r"\x1b\[[0-9;]*m", "", output))}


# --- step 2: apply changes ------------------------------------------------------------------------

def _reconcile_hard_deletes(cur, app_conn, result: RefreshResult) -> None:
    """Remove landing rows whose source rows no longer exist (deleted outside the API).

    Landing tables hold every source row (soft-deleted ones included), so a landing table with more
    rows than its source has lost some to hard deletes; only then are the keys compared. The source
    and landing counts run at the same time, one on each database.
    """
    counts = ", ".join(f"(SELECT count(*) FROM {{schema}}.{table})" for table, _, _ in _TABLES)

    def source_counts() -> tuple[int, ...]:
        with app_conn.cursor() as src:
            src.execute("SELECT " + counts.format(schema="medical_app"))
            return src.fetchone()

    with ThreadPoolExecutor(max_workers=1) as pool:
        source = pool.submit(source_counts)
        cur.execute("SELECT " + counts.format(schema="stg"))
        landing_counts = cur.fetchone()
        source_counts_ = source.result()
    for (table, key, affected_sql), landing_count, source_count in zip(
        _TABLES, landing_counts, source_counts_, strict=True
    ):
        if landing_count <= source_count:
            result.rows_hard_deleted[table] = 0
            continue
        keys = io.BytesIO()
        with app_conn.cursor() as src:
            src.copy_expert(f"COPY (SELECT {key} FROM medical_app.{table}) TO STDOUT", keys)
        keys.seek(0)
        cur.execute(f"CREATE TEMP TABLE source_key_{table} (id bigint PRIMARY KEY) ON COMMIT DROP")
        cur.copy_expert(f"COPY source_key_{table} (id) FROM STDIN", keys)
        returning = "medical_record_id" if table == "prescription" else key
        cur.execute(
            f"DELETE FROM stg.{table} t WHERE NOT EXISTS (SELECT 1 FROM source_key_{table} k WHERE k.id = t.{key}) "
            f"RETURNING t.{returning}"
        )
        removed = [r[0] for r in cur.fetchall()]
        result.rows_hard_deleted[table] = len(removed)
        if not removed:
            continue
        if affected_sql is None:
            cur.execute("INSERT INTO affected_record SELECT unnest(%s::bigint[]) ON CONFLICT DO NOTHING", (removed,))
        else:
            cur.execute(f"INSERT INTO affected_record {affected_sql} ON CONFLICT DO NOTHING", (removed,))


@contextmanager
def _indexes_rebuilt_after(cur, schema: str, table: str) -> Iterator[None]:
    """Drop the table's indexes (primary key included) for a bulk load and build them again after:
    one sorted build is several times faster than maintaining them row by row. The definitions are
    read from the catalogue, so the migration stays their only source."""
    qualified = f"{schema}.{table}"
    cur.execute(
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = %s::regclass AND contype = 'p'",
        (qualified,),
    )
    primary_keys = cur.fetchall()
    cur.execute(
        "SELECT i.indexname, i.indexdef FROM pg_indexes i WHERE i.schemaname = %s AND i.tablename = %s "
        "AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname AND c.conrelid = %s::regclass)",
        (schema, table, qualified),
    )
    indexes = cur.fetchall()
    for name, _ in primary_keys:
        cur.execute(f'ALTER TABLE {qualified} DROP CONSTRAINT "{name}"')
    for name, _ in indexes:
        cur.execute(f'DROP INDEX {schema}."{name}"')
    cur.execute("SET LOCAL maintenance_work_mem = '256MB'")
    yield
    for name, definition in primary_keys:
        cur.execute(f'ALTER TABLE {qualified} ADD CONSTRAINT "{name}" {definition}')
    for _, definition in indexes:
        cur.execute(definition)


def age_reference_year() -> int:
    """The year in which the de-identified table judges who is 90 or older (tests replace it)."""
    return datetime.now(UTC).year


def set_deidentification_parameters(cur, key: PseudonymKey, reference_year: int) -> None:
    """Give ``analytic.pseudonym()`` the key, and the de-identified rows their age reference year, for the
    current transaction only; and make sure the SQL computes exactly the HMAC-SHA256 Python does.

    The key's pads travel as COPY data, which no statement log records (log_statement, pgaudit,
    log_min_duration_statement log statement texts, and a psycopg2 parameter is part of that text),
    through a temporary table that lives only until the settings are made (temporary rows are never
    WAL-logged)."""
    inner, outer = key.hmac_pads()
    cur.execute("CREATE TEMP TABLE pseudonym_pads (inner_pad text, outer_pad text) ON COMMIT DROP")
    cur.copy_expert("COPY pseudonym_pads FROM STDIN", io.StringIO(f"{inner}\t{outer}\n"))
    cur.execute(
        "SELECT set_config('medrec.pseudonym_ipad', inner_pad, true), "
        "set_config('medrec.pseudonym_opad', outer_pad, true), "
        "set_config('medrec.age_reference_year', %s, true) FROM pseudonym_pads",
        (str(reference_year),),
    )
    cur.execute("DROP TABLE pseudonym_pads")
    probe = "medrec/pseudonym-self-test"
    cur.execute("SELECT analytic.pseudonym(%s)", (probe,))
    if cur.fetchone()[0] != key.pseudonym(probe):
        raise RefreshFailed("analytic.pseudonym() does not compute HMAC-SHA256 with the configured key")


def _last_deidentification(cur) -> tuple[str | None, int | None]:
    """The key fingerprint and age reference year of the last good run's de-identified table."""
    cur.execute(
        "SELECT pseudonym_key_fingerprint, age_reference_year FROM analytic.refresh_run WHERE status = 'succeeded' "
        "ORDER BY refresh_run_id DESC LIMIT 1"
    )
    row = cur.fetchone()
    return (row[0], row[1]) if row else (None, None)


def rebuild_identified(cur, result: RefreshResult) -> None:
    """The identified table rebuilt from the landing tables (indexes built after the load)."""
    cur.execute("SELECT count(*) FROM analytic.medical_record_denormalized")
    result.rows_deleted = cur.fetchone()[0]
    with _timed(result, "rebuild"), _indexes_rebuilt_after(cur, "analytic", "medical_record_denormalized"):
        cur.execute(_sql("rebuild_all.sql"))
        result.rows_inserted = cur.rowcount


def rebuild_deidentified(cur, result: RefreshResult) -> None:
    """The de-identified table rebuilt from the identified one (needs ``set_deidentification_parameters``)."""
    cur.execute("SELECT count(*) FROM analytic.medical_record_deidentified")
    result.deidentified_rows_deleted = cur.fetchone()[0]
    with _timed(result, "deidentified_rebuild"), \
            _indexes_rebuilt_after(cur, "analytic", "medical_record_deidentified"):
        cur.execute(_sql("rebuild_deidentified.sql"))
        result.deidentified_rows_inserted = cur.rowcount
    result.deidentified_rebuilt = True


def _merge_deidentified(cur, result: RefreshResult, previous_reference_year: int, reference_year: int) -> None:
    """The de-identified rows of the identified rows the merge just wrote (and, in a new year, of the
    patients who crossed 90), from those identified rows."""
    with _timed(result, "deidentified_compute"):
        cur.execute(
            _sql("desired_deidentified_rows.sql"),
            {"previous_age_reference_year": previous_reference_year, "age_reference_year": reference_year},
        )
    with _timed(result, "deidentified_merge"):
        cur.execute(_sql("merge_deidentified.sql"))
        (result.deidentified_rows_deleted, result.deidentified_rows_inserted,
         result.deidentified_rows_updated) = cur.fetchone()
    with _timed(result, "deidentified_check"):
        cur.execute(_sql("check_deidentified_affected.sql"))
        differences = cur.fetchone()[0]
    if differences:
        raise RefreshFailed(
            f"reconciliation failed: {differences} affected de-identified rows differ from the identified table"
        )


def apply_changes(conn, app_conn, result: RefreshResult, pseudonym_key: PseudonymKey) -> RefreshResult:
    """Step 2, in one transaction on ``conn`` (which holds the refresh lock)."""
    result.deidentified_rebuilt = False  # a retried task starts over
    with conn.cursor() as cur:
        # The affected visits are a few percent of the table: their rows are best read by index. With the
        # default random_page_cost (4, spinning disks) the planner prefers hash joins over whole-table scans
        # of the landing and analytic tables, which makes a 1 % refresh cost as much as the table is large.
        cur.execute("SET LOCAL random_page_cost = %s", (MERGE_RANDOM_PAGE_COST,))
        reference_year = age_reference_year()
        set_deidentification_parameters(cur, pseudonym_key, reference_year)
        # Pseudonyms made with another key (or none: the table is new) cannot be merged into: rebuild.
        last_fingerprint, last_reference_year = _last_deidentification(cur)
        key_is_new = last_fingerprint != pseudonym_key.fingerprint or last_reference_year is None
        watermark = last_watermark(cur)
        cur.execute("SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM stg.change_seq")
        new_watermark = cur.fetchone()[0]
        result.watermark_before, result.watermark_after = watermark, new_watermark
        with _timed(result, "count_changes"):
            for table, _key, _ in _TABLES:
                cur.execute(f"SELECT count(*) FROM stg.{table} WHERE change_seq > %s", (watermark,))
                result.rows_changed[table] = cur.fetchone()[0]
        cur.execute("CREATE TEMP TABLE affected_record (medical_record_id bigint PRIMARY KEY) ON COMMIT DROP")
        cur.execute("CREATE TEMP TABLE affected_prescription (prescription_id bigint PRIMARY KEY) ON COMMIT DROP")
        with _timed(result, "reconcile_keys"):
            _reconcile_hard_deletes(cur, app_conn, result)
        crash_point("before_merge")
        # No good run yet: every row is new, and one bulk build beats merging row by row.
        if result.mode == REFRESH_FULL or watermark == 0:
            rebuild_identified(cur, result)
            rebuild_deidentified(cur, result)
        else:
            with _timed(result, "find_affected"):
                cur.execute(_sql("affected_records.sql"), {"watermark": watermark})
                # temp tables have no statistics until analysed
                cur.execute("ANALYZE affected_record, affected_prescription")
            with _timed(result, "compute_desired"):
                cur.execute(_sql("desired_rows.sql"))
            with _timed(result, "merge"):
                cur.execute(_sql("merge_affected.sql"))
                result.rows_deleted, result.rows_inserted, result.rows_updated = cur.fetchone()
            with _timed(result, "check_affected"):
                cur.execute(_sql("check_affected.sql"))
                differences = cur.fetchone()[0]
            if differences:
                raise RefreshFailed(
                    f"reconciliation failed: {differences} affected rows differ from the landing tables"
                )
            crash_point("before_deidentified_merge")
            if key_is_new:
                rebuild_deidentified(cur, result)
            else:
                _merge_deidentified(cur, result, last_reference_year, reference_year)
            result.check_passed, result.check_scope = True, "affected"
        crash_point("inside_merge")
        cur.execute(
            "UPDATE analytic.refresh_run SET watermark_before = %s, watermark_after = %s, rows_changed = %s, "
            "rows_hard_deleted = %s, rows_inserted = %s, rows_updated = %s, rows_deleted = %s, "
            "deidentified_rows_inserted = %s, deidentified_rows_updated = %s, deidentified_rows_deleted = %s, "
            "pseudonym_key_fingerprint = %s, age_reference_year = %s, step_ms = %s "
            "WHERE refresh_run_id = %s",
            (
                watermark, new_watermark,
                psycopg2.extras.Json(result.rows_changed), psycopg2.extras.Json(result.rows_hard_deleted),
                result.rows_inserted, result.rows_updated, result.rows_deleted,
                result.deidentified_rows_inserted, result.deidentified_rows_updated,
                result.deidentified_rows_deleted, pseudonym_key.fingerprint, reference_year,
                psycopg2.extras.Json(result.step_ms), result.refresh_run_id,
            ),
        )
    with _timed(result, "commit"):
        conn.commit()
    return result


@contextmanager
def _timed(result: RefreshResult, name: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        result.step_ms[name] = round((time.perf_counter() - started) * 1000, 1)


# --- step 3: check --------------------------------------------------------------------------------

def global_check_due(conn, mode: str, interval_seconds: float, rebuilt: bool = False) -> bool:
    """A full-table reconciliation after every rebuild, otherwise at most once per interval."""
    if mode == REFRESH_FULL or rebuilt:
        return True
    with conn.cursor() as cur:
        cur.execute(
            "SELECT coalesce(max(finished_at) < now() - make_interval(secs => %s), true) FROM analytic.refresh_run "
            "WHERE status = 'succeeded' AND check_scope = 'global'",
            (interval_seconds,),
        )
        due = cur.fetchone()[0]
    conn.commit()
    return due


def check(conn) -> tuple[int, int]:
    """Raise RefreshFailed unless the analytic row count equals what the landing tables imply and the
    de-identified table has as many rows as the analytic table."""
    with conn.cursor() as cur:
        cur.execute(_sql("check.sql"))
        analytic_rows, expected_rows, deidentified_rows = cur.fetchone()
    conn.commit()
    if analytic_rows != expected_rows:
        raise RefreshFailed(
            f"reconciliation failed: analytic table has {analytic_rows} rows, landing tables imply {expected_rows}"
        )
    if deidentified_rows != analytic_rows:
        raise RefreshFailed(
            f"reconciliation failed: de-identified table has {deidentified_rows} rows, "
            f"the analytic table {analytic_rows}"
        )
    return analytic_rows, expected_rows


# --- a whole run, without Prefect -----------------------------------------------------------------

def _call(_name: str, function: Any, *args: Any) -> Any:
    return function(*args)


def run_refresh(
    mode: str = REFRESH_INCREMENTAL,
    settings: PipelineSettings | None = None,
    *,
    step: Any = _call,
) -> RefreshResult:
    """One complete refresh. ``step(name, function, *args)`` runs each step: directly by default,
    as a Prefect task in ``flow.py``."""
    if mode not in REFRESH_MODES:
        raise ValueError(f"mode must be {' or '.join(repr(m) for m in REFRESH_MODES)}")
    settings = settings or PipelineSettings.from_env()
    pseudonym_key = settings.require_pseudonym_key()
    try:
        lock = single_flight(settings)
        conn = lock.__enter__()
    except RefreshBusy as busy:
        skip_conn = _connect(settings.analytic_db_url)
        try:
            run_id = record_skipped(skip_conn, mode, str(busy))
        finally:
            skip_conn.close()
        return RefreshResult(refresh_run_id=run_id, mode=mode, status="skipped", message=str(busy))
    try:
        result = RefreshResult(refresh_run_id=start_run(conn, mode), mode=mode, status="running")
        try:
            result.rows_extracted = step("replicate", replicate, settings, conn, mode)
            crash_point("after_replication")
            app_conn = _connect(settings.app_db_url)
            try:
                step("apply-changes", apply_changes, conn, app_conn, result, pseudonym_key)
            finally:
                app_conn.close()
            if global_check_due(conn, mode, settings.global_check_interval_seconds, result.deidentified_rebuilt):
                step("check", check, conn)
                result.check_passed, result.check_scope = True, "global"
            result.status = "succeeded"
        except Exception as exc:
            conn.rollback()
            result.status = "failed"
            result.message = _redact(str(exc))[:2000]
            if isinstance(exc, RefreshFailed) and "reconciliation" in str(exc):
                result.check_passed = False
            finish_run(conn, result)
            raise
        finish_run(conn, result)
        return result
    finally:
        lock.__exit__(None, None, None)


def summary_markdown(result: RefreshResult) -> str:
    """The run as a short markdown report (the Prefect artifact of each run)."""
    lines = [
        f"# Analytics refresh {result.refresh_run_id}: {result.status}",
        "",
        f"mode **{result.mode}**, {result.duration_ms} ms, "
        f"watermark {result.watermark_before} → {result.watermark_after}",
        "",
        "| table | rows read by Sling | landing rows changed | hard deletes found |",
        "|---|---:|---:|---:|",
    ]
    for table in ("patient", "medical_record", "prescription"):
        lines.append(
            f"| {table} | {result.rows_extracted.get(table, 0)} | {result.rows_changed.get(table, 0)} "
            f"| {result.rows_hard_deleted.get(table, 0)} |"
        )
    reconciliation = (
        f"{'passed' if result.check_passed else 'failed' if result.check_passed is False else 'not run'}"
        f"{f' ({result.check_scope})' if result.check_scope else ''}"
    )
    lines += [
        "",
        "| table | rows inserted | updated | deleted | reconciliation |",
        "|---|---:|---:|---:|---|",
        f"| medical_record_denormalized | {result.rows_inserted} | {result.rows_updated} | {result.rows_deleted} "
        f"| {reconciliation} |",
        f"| medical_record_deidentified{' (rebuilt)' if result.deidentified_rebuilt else ''} "
        f"| {result.deidentified_rows_inserted} | {result.deidentified_rows_updated} "
        f"| {result.deidentified_rows_deleted} | {reconciliation} |",
    ]
    if result.step_ms:
        lines += ["", "time per part (ms): " + ", ".join(f"{k} {v:g}" for k, v in result.step_ms.items())]
    if result.message:
        lines += ["", f"> {result.message}"]
    return "\n".join(lines)
