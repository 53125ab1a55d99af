#!/usr/bin/env python3
"""The analytics refresh on generated data, side by side with a binary COPY and the original approach.

Starts a throwaway PostgreSQL (default settings: fsync on) with two databases, ``app`` and
``analytic``, migrated as the tests do (``tests/pipeline_support.Pipeline``), plus the read-only
``medical_reader`` login the refresh reads with. Fills ``app`` with ``pipeline.generate`` (default
1,000,000 prescriptions ≈ 200,000 patients × 2.5 visits × 2 prescriptions), then times, in order:

Every refresh maintains both analytic tables in the same run and transaction: the identified
``analytic.medical_record_denormalized`` and the de-identified ``analytic.medical_record_deidentified``
(keyed HMAC-SHA256 pseudonyms computed in SQL, birth and visit years, a random PSEUDONYM_KEY per
benchmark run), so every refresh time below includes the de-identified table.

1. **initial load**: ``run_refresh("incremental")`` into an empty analytic database (Sling copies
   every row into the landing tables, then the identified table is built and the de-identified one
   from it).
2. **full rebuild**: ``run_refresh("full")`` (Sling reloads the landing tables, then
   ``rebuild_all.sql`` and ``rebuild_deidentified.sql``), and separately the SQL rebuild alone: both
   tables rebuilt as the pipeline's full mode does it (``refresh.rebuild_identified`` and
   ``refresh.rebuild_deidentified``) on the loaded landing tables.
3. **incremental refresh** with 0 changes, then after 0.1 %, 1 % and 10 % of the prescriptions got a
   new dose (one UPDATE as the app database's owner; the table's trigger bumps updated_timestamp
   and version; the UPDATE is timed apart and not part of the refresh time).
4. **the limit**: a binary ``COPY (SELECT * FROM medical_app.<t>) TO STDOUT (FORMAT binary)`` piped
   into ``COPY stg_copy.<t> FROM STDIN (FORMAT binary)`` for the three tables, into scratch tables
   of the analytic database created like the source (same columns and types, primary key).
5. **the original approach**: the same binary COPY of all three tables (into emptied scratch
   tables), then TRUNCATE + INSERT of the whole denormalized join computed from the copies (the
   analytic view's own definition, pointed at the copies) into a scratch copy of the analytic
   table with the same indexes. This is also what the original system's first run does (it had no
   de-identified table).

Every refresh is timed from the call to its return (wall), and split into its steps (Sling,
apply-changes, check) through ``run_refresh``'s ``step`` hook; the RefreshResult's counts are
reported as they are. Between timed steps (outside the timings) the analytic database gets a
``VACUUM ANALYZE``, as autovacuum would have done between two scheduled refreshes.

All generated rows carry the generator transaction's timestamp; the benchmark then spreads
``inserted_timestamp``/``updated_timestamp`` of the generated rows over the year before yesterday,
in id order (triggers off, as superuser), so they look like history written over time rather than
one bulk load. Without that, every row stays within Sling's two-minute look-back of the newest
landed timestamp (``pipeline/replication.yaml``), so every incremental refresh re-reads every row
until newer changes move the newest timestamp on (the smoke run showed it: a 0-change refresh read
all rows). That is what a real bulk import would do to the first refreshes after it. Rows changed
by one step are still inside the look-back of the next step's refresh when the steps are less than
two minutes apart: Sling re-reads them ("rows read by Sling" shows it) and ``stg.track_change``
does not count them as changes.

Results: a markdown report on stdout and bench/results/pipeline_refresh.{md,json}. Exit status 0
even when a target is missed; non-zero when a refresh fails or the analytic table does not match
its source afterwards.
Usage: python bench/pipeline_refresh.py [--prescriptions N] [--seed N] [--fsync-off]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import random
import re
import secrets
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for _path in (ROOT / "functions", ROOT):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from bench.harness import run_in_scratch, write_report  # noqa: E402 - after the path set-up

RESULTS_DIR = ROOT / "bench" / "results"
READER_USER = "medrec_reader_bench"
TABLES = (("patient", "patient_id"), ("medical_record", "medical_record_id"), ("prescription", "prescription_id"))
CHANGE_FRACTIONS = (0.001, 0.01, 0.10)
TARGET_INCREMENTAL_SPEEDUP = 12.0  # 1 % refresh at least 12× faster than the original approach
TARGET_FULL_VS_COPY = 4.0  # full rebuild within 4× the binary COPY of the three tables
TARGET_ZERO_CHANGE_S = 1.0  # a refresh with nothing to do: under 1 s and no analytic row written
TARGET_1PCT_VS_COPY = 1.0  # 1 % refresh (both tables) within the binary COPY of the same data


# --- environment ----------------------------------------------------------------------------------


def git_revision() -> str:
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT, capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()  # fmt: skip
        return f"{rev}{'-dirty' if dirty else ''}"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def sling_version(binary: str) -> str:
    try:
        out = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=60, check=False,
            env={**os.environ, "SLING_DISABLE_TELEMETRY": "true"},
        ).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    match = re.search(r"\d+\.\d+\.\d+\S*", out)
    return match.group(0) if match else out.strip()[:40] or "unknown"


def server_facts(conn) -> dict[str, str]:
    facts = {}
    with conn.cursor() as cur:
        for name in ("server_version", "fsync", "synchronous_commit", "shared_buffers", "work_mem",
                     "maintenance_work_mem", "max_wal_size"):  # fmt: skip
            cur.execute("SELECT current_setting(%s)", (name,))
            facts[name] = cur.fetchone()[0]
    conn.commit()
    return facts


# --- helpers --------------------------------------------------------------------------------------


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def connect(url: str, autocommit: bool = False):
    import psycopg2

    conn = psycopg2.connect(url, application_name="bench-pipeline-refresh")
    conn.autocommit = autocommit
    return conn


def execute(url: str, *statements: str) -> None:
    conn = connect(url, autocommit=True)
    try:
        with conn.cursor() as cur:
            for statement in statements:
                cur.execute(statement)
    finally:
        conn.close()


def scalar(url: str, sql: str, params: Any = None) -> Any:
    conn = connect(url, autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchone()[0]
    finally:
        conn.close()


def vacuum_analyze(url: str) -> float:
    started = time.perf_counter()
    execute(url, "VACUUM ANALYZE")
    return time.perf_counter() - started


def table_sizes(url: str, names: list[str]) -> dict[str, dict[str, Any]]:
    conn = connect(url, autocommit=True)
    try:
        with conn.cursor() as cur:
            sizes = {}
            for name in names:
                cur.execute("SELECT count(*) FROM " + name)  # noqa: S608 - this script's constants
                rows = cur.fetchone()[0]
                cur.execute("SELECT pg_total_relation_size(%s::regclass)", (name,))
                sizes[name] = {"rows": rows, "total_mb": round(cur.fetchone()[0] / 2**20, 1)}
            return sizes
    finally:
        conn.close()


# --- the benchmark --------------------------------------------------------------------------------


class Bench:
    def __init__(self, cluster: Any, base: Path, args: argparse.Namespace) -> None:
        from chalicelib.migrations import migrate
        from pipeline.settings import PIPELINE_DIR, PipelineSettings, PseudonymKey
        from tools.cli import create_login

        self.args = args
        for db in ("app", "analytic"):
            cluster.create_database(db)
        self.app_owner = cluster.url("app")  # the cluster's superuser owns both databases
        self.analytic_url = cluster.url("analytic")
        migrate(self.app_owner)
        migrate(self.analytic_url, PIPELINE_DIR / "migrations", "analytic")
        password = secrets.token_urlsafe(16)
        create_login(self.app_owner, READER_USER, password, "medical_reader")
        self.reader_url = cluster.url("app", user=READER_USER, password=password)
        self.pseudonym_key = PseudonymKey.from_text(secrets.token_urlsafe(32))
        self.settings = PipelineSettings(self.reader_url, self.analytic_url, base / "sling", lock_timeout_seconds=60,
                                         pseudonym_key=self.pseudonym_key)
        self.rows: list[dict[str, Any]] = []

    # -- data ------------------------------------------------------------------------------------

    def generate(self) -> dict[str, Any]:
        from pipeline.generate import generate

        args = self.args
        patients = max(1, round(args.prescriptions / (args.records_per_patient * args.prescriptions_per_record)))
        log(f"generating {patients} patients × {args.records_per_patient} visits × "
            f"{args.prescriptions_per_record} prescriptions (seed {args.seed}) ...")  # fmt: skip
        conn = connect(self.app_owner)
        started = time.perf_counter()
        try:
            summary = generate(conn, patients, args.records_per_patient, args.prescriptions_per_record, args.seed,
                               sys.stderr.isatty())  # fmt: skip
            conn.commit()
        finally:
            conn.close()
        seconds = time.perf_counter() - started
        log(f"generated in {seconds:.1f} s: {summary}")
        # Make the generated rows existing history (see the module docstring): one day back.
        started = time.perf_counter()
        conn = connect(self.app_owner)
        try:
            with conn.cursor() as cur:
                cur.execute("SET session_replication_role = replica")  # no triggers: keep version as is
                for table, key in TABLES:
                    # Spread over the year before yesterday in id order (newest ids newest), as rows
                    # written one by one over time would be.
                    cur.execute(
                        f"UPDATE medical_app.{table} t SET inserted_timestamp = v.ts, updated_timestamp = v.ts "  # noqa: S608
                        f"FROM (SELECT {key} AS id, now() - interval '1 day' - interval '365 days' "
                        f"* (1 - {key}::float8 / max({key}) OVER ()) AS ts FROM medical_app.{table}) v "
                        f"WHERE t.{key} = v.id"
                    )
            conn.commit()
        finally:
            conn.close()
        backdate_seconds = time.perf_counter() - started
        execute(self.app_owner, "VACUUM ANALYZE")
        counts = {t: scalar(self.app_owner, f"SELECT count(*) FROM medical_app.{t}") for t, _ in TABLES}  # noqa: S608
        log(f"backdated in {backdate_seconds:.1f} s; app rows: {counts}")
        return {"patients_requested": patients, "generator_summary": summary, "generate_seconds": seconds,
                "backdate_seconds": backdate_seconds, "app_rows": counts}  # fmt: skip

    def change(self, fraction: float, label: str) -> dict[str, Any]:
        """New dose for a random sample of prescriptions (as the app database's owner)."""
        conn = connect(self.app_owner)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT prescription_id FROM medical_app.prescription")
                ids = [row[0] for row in cur.fetchall()]
                rng = random.Random(f"{self.args.seed}/{label}")
                sample = rng.sample(ids, max(1, round(len(ids) * fraction))) if ids else []
                started = time.perf_counter()
                cur.execute(
                    "UPDATE medical_app.prescription SET dose = %s WHERE prescription_id = ANY(%s)",
                    (f"bench {label}: 1 tablet twice daily", sample),
                )
                updated = cur.rowcount
            conn.commit()
            seconds = time.perf_counter() - started
        finally:
            conn.close()
        log(f"{label}: updated {updated} prescriptions in {seconds:.2f} s")
        return {"prescriptions_updated": updated, "update_seconds": seconds}

    # -- timed operations ------------------------------------------------------------------------

    def refresh(self, name: str, mode: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        from pipeline import refresh

        vacuum_analyze(self.analytic_url)
        steps: dict[str, float] = {}

        def timed_step(step_name: str, function: Any, *step_args: Any) -> Any:
            started = time.perf_counter()
            try:
                return function(*step_args)
            finally:
                steps[step_name] = time.perf_counter() - started

        log(f"{name}: run_refresh({mode!r}) ...")
        started = time.perf_counter()
        result = refresh.run_refresh(mode, self.settings, step=timed_step)
        wall = time.perf_counter() - started
        if result.status != "succeeded":
            raise RuntimeError(f"{name}: refresh {result.status}: {result.message}")
        row = {
            "name": name,
            "kind": "refresh",
            "mode": mode,
            "wall_s": wall,
            "run_duration_ms": result.duration_ms,
            "sling_s": steps.get("replicate"),
            "apply_s": steps.get("apply-changes"),
            "check_s": steps.get("check"),
            "rows_extracted": result.rows_extracted,
            "rows_changed": result.rows_changed,
            "rows_hard_deleted": result.rows_hard_deleted,
            "rows_inserted": result.rows_inserted,
            "rows_updated": result.rows_updated,
            "rows_deleted": result.rows_deleted,
            "deidentified_rows_inserted": result.deidentified_rows_inserted,
            "deidentified_rows_updated": result.deidentified_rows_updated,
            "deidentified_rows_deleted": result.deidentified_rows_deleted,
            "deidentified_rebuilt": result.deidentified_rebuilt,
            "check_passed": result.check_passed,
            "apply_step_ms": result.step_ms,
            **(extra or {}),
        }
        log(f"{name}: {wall:.2f} s (Sling {row['sling_s']:.2f} s, apply {row['apply_s']:.2f} s, "
            f"check {_s(row['check_s'])} s); extracted {result.rows_extracted}, changed {result.rows_changed}, "
            f"+{result.rows_inserted} ~{result.rows_updated} -{result.rows_deleted} (de-identified "
            f"+{result.deidentified_rows_inserted} ~{result.deidentified_rows_updated} "
            f"-{result.deidentified_rows_deleted}); "
            f"apply parts (ms) {result.step_ms}")  # fmt: skip
        self.rows.append(row)
        return row

    def rebuild_sql_only(self) -> dict[str, Any]:
        """Both analytic tables rebuilt from the landing tables exactly as the pipeline's full mode does
        it (rebuild_all.sql, then rebuild_deidentified.sql from the result, each with its indexes
        dropped for the load and built after), in one transaction, without Sling."""
        from pipeline import refresh

        vacuum_analyze(self.analytic_url)
        log("rebuild from the landing tables (identified, then de-identified; indexes built after the load) ...")
        conn = connect(self.analytic_url)
        result = refresh.RefreshResult(refresh_run_id=0, mode="full", status="running")
        try:
            started = time.perf_counter()
            with conn.cursor() as cur:
                refresh.set_deidentification_parameters(cur, self.pseudonym_key, refresh.age_reference_year())
                refresh.rebuild_identified(cur, result)
                refresh.rebuild_deidentified(cur, result)
            conn.commit()
            wall = time.perf_counter() - started
        finally:
            conn.close()
        inserted = result.rows_inserted
        identified_s, deidentified_s = result.step_ms["rebuild"] / 1000, result.step_ms["deidentified_rebuild"] / 1000
        log(f"SQL rebuild alone: {wall:.2f} s (identified {identified_s:.2f} s, de-identified {deidentified_s:.2f} s), "
            f"{inserted} + {result.deidentified_rows_inserted} rows")  # fmt: skip
        row = {"name": "full rebuild of both tables from the landing tables (the pipeline's SQL; no Sling)",
               "kind": "sql", "wall_s": wall, "rows_inserted": inserted, "identified_s": identified_s,
               "deidentified_s": deidentified_s,
               "deidentified_rows_inserted": result.deidentified_rows_inserted}  # fmt: skip
        self.rows.append(row)
        return row

    def prepare_scratch(self) -> None:
        """Schema stg_copy in the analytic database: the three tables like the source, the analytic
        table like the real one (indexes included) and the analytic view pointed at the copies."""
        src = connect(self.app_owner, autocommit=True)
        statements = ["DROP SCHEMA IF EXISTS stg_copy CASCADE", "CREATE SCHEMA stg_copy"]
        try:
            with src.cursor() as cur:
                for table, key in TABLES:
                    cur.execute(
                        "SELECT quote_ident(attname) || ' ' || format_type(atttypid, atttypmod) "
                        "FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped "
                        "ORDER BY attnum",
                        (f"medical_app.{table}",),
                    )
                    columns = ", ".join(r[0] for r in cur.fetchall())
                    statements.append(f"CREATE TABLE stg_copy.{table} ({columns}, PRIMARY KEY ({key}))")
        finally:
            src.close()
        # The analytic views (one per kind of row, and their union), pointed at the copies.
        for name in ("denormalized_prescription_rows", "denormalized_visit_rows"):
            view = scalar(self.analytic_url, f"SELECT pg_get_viewdef('analytic.{name}'::regclass, true)")
            view = re.sub(r"(?<![\w.\"])stg\.", "stg_copy.", view)
            if re.search(r"(?<![\w.\"])stg\.", view) or "stg_copy." not in view:
                raise RuntimeError("could not point the analytic views at the scratch tables")
            statements.append(f"CREATE VIEW stg_copy.{name} AS {view}")
        statements += [
            "CREATE TABLE stg_copy.medical_record_denormalized "
            "(LIKE analytic.medical_record_denormalized INCLUDING ALL)",
            "CREATE VIEW stg_copy.medical_record_denormalized_source AS "
            "SELECT * FROM stg_copy.denormalized_prescription_rows UNION ALL "
            "SELECT * FROM stg_copy.denormalized_visit_rows",
        ]
        execute(self.analytic_url, *statements)

    def copy_tables(self) -> tuple[float, dict[str, float], dict[str, int]]:
        """Binary COPY of the three tables, each piped from the app database into stg_copy.<t>.

        One connection per side (the reader login at the source, like Sling); the reading side runs
        in a thread writing into an OS pipe that the writing side's COPY FROM STDIN reads."""
        src = connect(self.reader_url, autocommit=True)
        dst = connect(self.analytic_url)
        per_table: dict[str, float] = {}
        rows: dict[str, int] = {}
        try:
            started = time.perf_counter()
            for table, _key in TABLES:
                table_started = time.perf_counter()
                read_fd, write_fd = os.pipe()
                reader = os.fdopen(read_fd, "rb", buffering=1 << 20)
                writer = os.fdopen(write_fd, "wb", buffering=1 << 20)
                errors: list[BaseException] = []

                def produce(table: str = table, writer: Any = writer, errors: list[BaseException] = errors) -> None:
                    try:
                        with src.cursor() as cur:
                            cur.copy_expert(
                                f"COPY (SELECT * FROM medical_app.{table}) TO STDOUT (FORMAT binary)",  # noqa: S608
                                writer,
                            )
                    except BaseException as exc:  # re-raised in the main thread
                        errors.append(exc)
                    finally:
                        with contextlib.suppress(OSError):
                            writer.close()

                thread = threading.Thread(target=produce, daemon=True)
                thread.start()
                try:
                    with dst.cursor() as cur:
                        cur.copy_expert(f"COPY stg_copy.{table} FROM STDIN (FORMAT binary)", reader, size=1 << 20)
                        rows[table] = cur.rowcount
                finally:
                    reader.close()  # a failed COPY FROM leaves the producer with a broken pipe, not a hang
                    thread.join()
                if errors:
                    raise errors[0]
                per_table[table] = time.perf_counter() - table_started
            dst.commit()
            total = time.perf_counter() - started
        finally:
            src.close()
            dst.close()
        return total, per_table, rows

    def copy_limit(self) -> dict[str, Any]:
        vacuum_analyze(self.analytic_url)
        log("the limit: binary COPY of the three tables ...")
        total, per_table, rows = self.copy_tables()
        log(f"binary COPY: {total:.2f} s {per_table}")
        row = {"name": "limit: binary COPY of the 3 tables (app → scratch tables, piped)", "kind": "copy",
               "wall_s": total, "copy_s_per_table": per_table, "rows_copied": rows}  # fmt: skip
        self.rows.append(row)
        return row

    def original(self) -> dict[str, Any]:
        from pipeline.refresh import SQL_DIR

        rebuild = (SQL_DIR / "rebuild_all.sql").read_text(encoding="utf-8")
        rebuild = rebuild.replace("analytic.medical_record_denormalized_source",
                                  "stg_copy.medical_record_denormalized_source")  # fmt: skip
        rebuild = rebuild.replace("analytic.medical_record_denormalized", "stg_copy.medical_record_denormalized")
        execute(self.analytic_url, "TRUNCATE stg_copy.patient, stg_copy.medical_record, stg_copy.prescription")
        vacuum_analyze(self.analytic_url)
        log("original approach: binary COPY of the three tables + full re-merge ...")
        started = time.perf_counter()
        copy_s, per_table, rows = self.copy_tables()
        conn = connect(self.analytic_url)
        try:
            merge_started = time.perf_counter()
            with conn.cursor() as cur:
                cur.execute("ANALYZE stg_copy.patient, stg_copy.medical_record, stg_copy.prescription")
                cur.execute(rebuild)
                inserted = cur.rowcount
            conn.commit()
            merge_s = time.perf_counter() - merge_started
        finally:
            conn.close()
        wall = time.perf_counter() - started
        log(f"original approach: {wall:.2f} s (copy {copy_s:.2f} s, re-merge {merge_s:.2f} s), {inserted} rows")
        row = {"name": "original approach: binary COPY of the 3 tables + TRUNCATE/INSERT of the whole join",
               "kind": "original", "wall_s": wall, "copy_s": copy_s, "copy_s_per_table": per_table,
               "merge_s": merge_s, "rows_copied": rows, "rows_inserted": inserted}  # fmt: skip
        self.rows.append(row)
        return row

    def verify(self) -> dict[str, Any]:
        """The analytic table equals the join recomputed from the scratch copies (copied last), and the
        de-identified table equals what the analytic table implies (its one definition, the view)."""
        from pipeline import refresh

        diff = scalar(self.analytic_url, """
            SELECT count(*) FROM (
                (SELECT row_key, row_hash FROM analytic.medical_record_denormalized
                 EXCEPT SELECT row_key, row_hash FROM stg_copy.medical_record_denormalized)
                UNION ALL
                (SELECT row_key, row_hash FROM stg_copy.medical_record_denormalized
                 EXCEPT SELECT row_key, row_hash FROM analytic.medical_record_denormalized)
            ) d""")  # fmt: skip
        rows = scalar(self.analytic_url, "SELECT count(*) FROM analytic.medical_record_denormalized")
        columns = ("row_pseudonym, patient_pseudonym, visit_pseudonym, birth_year, age_90_or_older, hospital_name, "
                   "diagnosis, symptom, treatment_start_year, treatment_end_year, medicine_name, dose")  # fmt: skip
        conn = connect(self.analytic_url)
        try:
            with conn.cursor() as cur:
                refresh.set_deidentification_parameters(cur, self.pseudonym_key, refresh.age_reference_year())
                cur.execute(f"""
                    SELECT count(*) FROM (
                        (SELECT {columns} FROM analytic.medical_record_deidentified
                         EXCEPT SELECT {columns} FROM analytic.medical_record_deidentified_source)
                        UNION ALL
                        (SELECT {columns} FROM analytic.medical_record_deidentified_source
                         EXCEPT SELECT {columns} FROM analytic.medical_record_deidentified)
                    ) d""")  # noqa: S608 - this script's constants
                deidentified_diff = cur.fetchone()[0]
                cur.execute("SELECT count(*) FROM analytic.medical_record_deidentified")
                deidentified_rows = cur.fetchone()[0]
        finally:
            conn.rollback()
            conn.close()
        return {"analytic_rows": rows, "rows_differing_from_source": diff, "deidentified_rows": deidentified_rows,
                "deidentified_rows_differing": deidentified_diff}  # fmt: skip


def run(args: argparse.Namespace, base: Path) -> dict[str, Any]:
    from pipeline.settings import find_sling_binary
    from tools.pgcluster import PostgresCluster

    settings = {"fsync": "off"} if args.fsync_off else {}
    cluster = PostgresCluster(base / "pg", settings=settings)
    try:
        log("starting PostgreSQL ...")
        cluster.start()
        bench = Bench(cluster, base, args)
        conn = connect(bench.analytic_url)
        try:
            postgres = server_facts(conn)
        finally:
            conn.close()
        started_at = datetime.now(UTC).isoformat(timespec="seconds")
        data = bench.generate()

        initial = bench.refresh("initial load (incremental into an empty analytic database)", "incremental")
        full = bench.refresh('full rebuild: run_refresh("full") (Sling reload + SQL rebuild)', "full")
        rebuild = bench.rebuild_sql_only()
        zero = bench.refresh("incremental, 0 changes", "incremental")
        changed = []
        for fraction in CHANGE_FRACTIONS:
            label = f"{fraction * 100:g}%"
            update = bench.change(fraction, label)
            changed.append(bench.refresh(f"incremental, {label} of prescriptions changed", "incremental", update))
        bench.prepare_scratch()
        limit = bench.copy_limit()
        original = bench.original()
        verification = bench.verify()
        sizes = table_sizes(bench.analytic_url, [
            "stg.patient", "stg.medical_record", "stg.prescription", "analytic.medical_record_denormalized",
            "analytic.medical_record_deidentified",
        ])  # fmt: skip
    finally:
        log("stopping PostgreSQL ...")
        cluster.stop()

    one_percent = changed[1]
    zero_written = sum(zero[f"{prefix}rows_{kind}"] for prefix in ("", "deidentified_")
                       for kind in ("inserted", "updated", "deleted"))
    zero_changed = sum(zero["rows_changed"].values())
    targets = [
        {
            "text": f"1% refresh ≥ {TARGET_INCREMENTAL_SPEEDUP:g}× faster than the original approach: "
                    f"{original['wall_s']:.2f} s / {one_percent['wall_s']:.2f} s = "
                    f"{original['wall_s'] / one_percent['wall_s']:.1f}×",
            "met": original["wall_s"] / one_percent["wall_s"] >= TARGET_INCREMENTAL_SPEEDUP,
        },
        {
            "text": f"full rebuild of the analytic tables from the landing tables within {TARGET_FULL_VS_COPY:g}× the "
                    f"binary COPY limit: {rebuild['wall_s']:.2f} s / {limit['wall_s']:.2f} s = "
                    f"{rebuild['wall_s'] / limit['wall_s']:.1f}× (the identified table alone: "
                    f"{rebuild['identified_s'] / limit['wall_s']:.1f}×; run_refresh(\"full\"), which also reloads "
                    f"the landing tables with Sling: {full['wall_s'] / limit['wall_s']:.1f}×)",
            "met": rebuild["wall_s"] / limit["wall_s"] <= TARGET_FULL_VS_COPY,
        },
        {
            "text": f"0-change refresh under {TARGET_ZERO_CHANGE_S:g} s and zero rows written: "
                    f"{zero['wall_s']:.2f} s, {zero_written} analytic rows written, "
                    f"{zero_changed} landing rows changed",
            "met": zero["wall_s"] < TARGET_ZERO_CHANGE_S and zero_written == 0 and zero_changed == 0,
        },
        {
            "text": f"1% refresh (identified and de-identified tables) within {TARGET_1PCT_VS_COPY:g}× the binary "
                    f"COPY limit of the same data: {one_percent['wall_s']:.2f} s / {limit['wall_s']:.2f} s = "
                    f"{one_percent['wall_s'] / limit['wall_s']:.2f}×",
            "met": one_percent["wall_s"] / limit["wall_s"] <= TARGET_1PCT_VS_COPY,
        },
    ]  # fmt: skip
    ratios = {
        "original_over_1pct_refresh": original["wall_s"] / one_percent["wall_s"],
        "1pct_refresh_over_copy_limit": one_percent["wall_s"] / limit["wall_s"],
        "full_refresh_over_copy_limit": full["wall_s"] / limit["wall_s"],
        "sql_rebuild_over_copy_limit": rebuild["wall_s"] / limit["wall_s"],
        "initial_load_over_original_first_run": initial["wall_s"] / original["wall_s"],
        "original_over_0pct_refresh": original["wall_s"] / zero["wall_s"],
        "original_over_0.1pct_refresh": original["wall_s"] / changed[0]["wall_s"],
        "original_over_10pct_refresh": original["wall_s"] / changed[2]["wall_s"],
    }
    return {
        "started_at": started_at,
        "environment": {
            "git": git_revision(),
            "python": platform.python_version(),
            "cpu": cpu_model(),
            "cpus": os.cpu_count(),
            "postgres": postgres,
            "sling": sling_version(find_sling_binary()),
        },
        "arguments": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "data": data,
        "rows": bench.rows,
        "ratios": ratios,
        "targets": targets,
        "verification": verification,
        "analytic_sizes": sizes,
    }


# --- output ---------------------------------------------------------------------------------------


def _s(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def _per_table(counts: dict[str, int] | None) -> str:
    if not counts:
        return "–"
    return " / ".join(f"{counts.get(t, 0):,}" for t, _ in TABLES)


def render_markdown(report: dict[str, Any]) -> str:
    env, data = report["environment"], report["data"]
    pg = env["postgres"]
    rows_app = data["app_rows"]
    lines = [
        "# Analytics refresh (pipeline/refresh.py) on generated data",
        "",
        f"{report['started_at']} · commit {env['git']} · Python {env['python']} · PostgreSQL {pg['server_version']} "
        f"(fsync={pg['fsync']}, synchronous_commit={pg['synchronous_commit']}, shared_buffers={pg['shared_buffers']}) "
        f"· Sling {env['sling']} · {env['cpu']} × {env['cpus']}",
        "",
        f"Application data (pipeline.generate, seed {report['arguments']['seed']}): "
        f"{rows_app['patient']:,} patients, {rows_app['medical_record']:,} visits, "
        f"{rows_app['prescription']:,} prescriptions → {report['verification']['analytic_rows']:,} analytic rows. "
        f"Generated in {data['generate_seconds']:.1f} s, then timestamps spread over the past year "
        f"({data['backdate_seconds']:.1f} s; see the script's docstring).",
        "",
        "Per-table counts are patient / medical_record / prescription. *Sling*, *apply* and *check* are "
        "run_refresh's steps; *wall* is the whole call (lock, run log, steps).",
        "",
        "The de-identified table (analytic.medical_record_deidentified: keyed HMAC-SHA256 pseudonyms, years "
        "instead of dates, no direct identifiers) is maintained in the same run and transaction as the "
        "identified one: every refresh time includes it, and its rows written are the *de-identified* columns "
        "(inserted / updated / deleted).",
        "",
        "| operation | wall s | Sling s | apply s | check s | rows read by Sling | landing rows changed "
        "| analytic inserted | updated | deleted | de-identified ins / upd / del |",
        "|---|---:|---:|---:|---:|---|---|---:|---:|---:|---:|",
    ]
    for row in report["rows"]:
        if row["kind"] == "refresh":
            lines.append(
                f"| {row['name']} | **{_s(row['wall_s'])}** | {_s(row['sling_s'])} | {_s(row['apply_s'])} | "
                f"{_s(row['check_s'])} | {_per_table(row['rows_extracted'])} | {_per_table(row['rows_changed'])} | "
                f"{row['rows_inserted']:,} | {row['rows_updated']:,} | {row['rows_deleted']:,} | "
                f"{row['deidentified_rows_inserted']:,} / {row['deidentified_rows_updated']:,} / "
                f"{row['deidentified_rows_deleted']:,}{' (rebuilt)' if row['deidentified_rebuilt'] else ''} |"
            )
        elif row["kind"] == "sql":
            lines.append(f"| {row['name']} (identified {_s(row['identified_s'])} s + de-identified "
                         f"{_s(row['deidentified_s'])} s) | **{_s(row['wall_s'])}** | – | {_s(row['wall_s'])} | – | "
                         f"– | – | {row['rows_inserted']:,} | – | – | "
                         f"{row['deidentified_rows_inserted']:,} / – / – |")  # fmt: skip
        elif row["kind"] == "copy":
            lines.append(f"| {row['name']} | **{_s(row['wall_s'])}** | – | – | – | "
                         f"{_per_table(row['rows_copied'])} (copied) | – | – | – | – | – |")  # fmt: skip
        else:
            lines.append(
                f"| {row['name']} (copy {_s(row['copy_s'])} s + re-merge {_s(row['merge_s'])} s) | "
                f"**{_s(row['wall_s'])}** | – | – | – | {_per_table(row['rows_copied'])} (copied) | – | "
                f"{row['rows_inserted']:,} | – | – | – |"
            )
    changes = [r for r in report["rows"] if "update_seconds" in r]
    if changes:
        lines += ["", "Changes were made before each refresh by one UPDATE of the app database (not timed in the "
                  "refresh): " + ", ".join(f"{r['prescriptions_updated']:,} rows in {r['update_seconds']:.2f} s"
                                           for r in changes) + "."]  # fmt: skip
    ratios = report["ratios"]
    lines += [
        "",
        "## Ratios",
        "",
        "| ratio | value |",
        "|---|---:|",
        f"| 1% refresh (both tables) / binary COPY limit | {ratios['1pct_refresh_over_copy_limit']:.2f}× |",
        f"| original approach / 1% refresh | {ratios['original_over_1pct_refresh']:.1f}× |",
        f"| original approach / 0.1% refresh | {ratios['original_over_0.1pct_refresh']:.1f}× |",
        f"| original approach / 10% refresh | {ratios['original_over_10pct_refresh']:.1f}× |",
        f"| original approach / 0-change refresh | {ratios['original_over_0pct_refresh']:.1f}× |",
        f'| full rebuild (run_refresh "full") / binary COPY limit | {ratios["full_refresh_over_copy_limit"]:.1f}× |',
        f"| SQL rebuild alone (both tables) / binary COPY limit | {ratios['sql_rebuild_over_copy_limit']:.1f}× |",
        f"| initial load / original's first run (copy + full re-merge) | "
        f"{ratios['initial_load_over_original_first_run']:.1f}× |",
        "",
        "## Targets",
        "",
    ]
    for target in report["targets"]:
        lines.append(f"- {'PASS' if target['met'] else 'MISS'}: {target['text']}")
    verification = report["verification"]
    lines += [
        "",
        f"Correctness: after the last refresh the analytic table holds {verification['analytic_rows']:,} rows and "
        f"differs from the join recomputed from a fresh copy of the app tables in "
        f"{verification['rows_differing_from_source']} rows (row_key, row_hash); the de-identified table holds "
        f"{verification['deidentified_rows']:,} rows and differs from what the analytic table implies in "
        f"{verification['deidentified_rows_differing']} rows (all columns but its own timestamps).",
        "",
        "Notes: every timed step starts after a VACUUM ANALYZE of the analytic database (untimed). Rows changed "
        "by one step are re-read by the next step's Sling run when they are inside its two-minute look-back; "
        "they are not counted as landing changes.",
    ]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time the analytics refresh (initial load, full rebuild, incremental with 0/0.1/1/10%% "
        "changes) on generated data, next to a binary COPY of the source tables and the original approach.",
    )
    parser.add_argument(
        "--prescriptions",
        type=int,
        default=1_000_000,
        help="prescriptions to generate (default 1,000,000; e.g. 20000 for a smoke run)",
    )
    parser.add_argument("--records-per-patient", type=float, default=2.5, help="default 2.5")
    parser.add_argument("--prescriptions-per-record", type=float, default=2.0, help="default 2.0")
    parser.add_argument("--seed", type=int, default=42, help="generator and sampling seed (default 42)")
    parser.add_argument(
        "--fsync-off",
        action="store_true",
        help="start PostgreSQL with fsync=off (unrealistic; the report says so). Default: fsync on",
    )
    parser.add_argument("--output-dir", type=Path, default=RESULTS_DIR, help="default bench/results")
    args = parser.parse_args(argv)  # fmt: skip
    if args.prescriptions < 1000:
        parser.error("--prescriptions must be at least 1000 (0.1%% of them must be at least one row)")
    if args.records_per_patient <= 0 or args.prescriptions_per_record <= 0:
        parser.error("rates must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = run_in_scratch("medrec-bench-refresh-", lambda base: run(args, base))
    if report is None:
        return 130
    write_report(args.output_dir, "pipeline_refresh", report, render_markdown(report))
    verification = report["verification"]
    exact = verification["rows_differing_from_source"] == 0 and verification["deidentified_rows_differing"] == 0
    return 0 if exact and verification["deidentified_rows"] == verification["analytic_rows"] else 1


if __name__ == "__main__":
    sys.exit(main())
