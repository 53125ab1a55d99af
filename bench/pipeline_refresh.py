#!/usr/bin/env python3
"""The analytics refresh on generated data, side by side with a binary COPY and the original approach.

Starts a throwaway PostgreSQL (default settings: fsync on) with two databases, ``app`` and
``analytic``, migrated as the tests do (``tests/pipeline_support.Pipeline``), plus the read-only
``medical_reader`` login the refresh reads with. Fills ``app`` with ``pipeline.generate`` (default
1,000,000 prescriptions ≈ 200,000 patients × 2.5 visits × 2 prescriptions), then times, in order:

0. **the limit**, before the refreshes and again after them: a binary ``COPY (SELECT * FROM
   medical_app.<t>) TO STDOUT (FORMAT binary)`` piped into ``COPY stg_copy.<t> FROM STDIN (FORMAT
   binary)`` for the three tables (``pipeline.bulk_copy.pipe_copy``), into scratch tables of the
   analytic database created like the source (same columns and types, primary key). Every figure is
   also reported as a multiple of the mean of the two (× COPY).
1. **first load**: ``run_refresh("incremental")`` into an empty analytic database (the landing tables
   are loaded by one binary COPY snapshot, then the identified table is built and the de-identified
   one from it).
2. **full rebuild**: ``run_refresh("full")`` (bulk reload of the landing tables, then
   ``rebuild_all.sql`` and ``rebuild_deidentified.sql``), and separately the SQL rebuild alone: both
   tables rebuilt as the pipeline's full mode does it (``refresh.rebuild_identified`` and
   ``refresh.rebuild_deidentified``) on the loaded landing tables.
3. **incremental refresh** with 0 changes, then after 0.1 %, 1 % and 10 % of the prescriptions got a
   new dose (one UPDATE as the app database's owner; the table's trigger bumps updated_timestamp
   and version; the UPDATE is timed apart and not part of the refresh time). Sling reads the changes.
4. **the original approach** on the same data, in the same run, as the original system ran it: Sling
   copies the three tables whole (``full-refresh``, ``bench/pipeline_original_replication.yaml``,
   into scratch schema ``orig``), then TRUNCATE + INSERT of the whole denormalized join (the analytic
   views' own definition, pointed at the copies) into a copy of the analytic table with the same
   indexes. The original's first run and every later run are this same work (it had no
   de-identified table).

``--scenario one-percent`` (for large data, e.g. ``make bench-pipeline-10m``) measures only 0, 1 and
the 1 % refresh (and 4 with ``--with-original``).

Every refresh maintains both analytic tables in the same run and transaction: the identified
``analytic.medical_record_denormalized`` and the de-identified ``analytic.medical_record_deidentified``
(keyed HMAC-SHA256 pseudonyms computed in SQL, birth and visit years, a random PSEUDONYM_KEY per
benchmark run), so every refresh time below includes the de-identified table.

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
Usage: python bench/pipeline_refresh.py [--prescriptions N] [--scenario all|one-percent] [--with-original]
       [--seed N] [--fsync-off] [--report-name NAME]
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
ORIGINAL_REPLICATION = ROOT / "bench" / "pipeline_original_replication.yaml"
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
        """Scratch schemas of the analytic database: ``stg_copy`` with the three tables like the source
        (same columns and types, primary key) for the COPY limit, and ``orig`` for the original
        approach (Sling creates its three tables; its denormalized table is made like the real one,
        indexes included)."""
        src = connect(self.app_owner, autocommit=True)
        statements = [
            "DROP SCHEMA IF EXISTS stg_copy CASCADE", "CREATE SCHEMA stg_copy",
            "DROP SCHEMA IF EXISTS orig CASCADE", "CREATE SCHEMA orig",
            "CREATE TABLE orig.medical_record_denormalized (LIKE analytic.medical_record_denormalized INCLUDING ALL)",
        ]  # fmt: skip
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
        execute(self.analytic_url, *statements)

    def join_sql(self, schema: str) -> str:
        """The analytic table's one definition (its two views, unioned) pointed at ``schema``'s tables."""
        parts = []
        for name in ("denormalized_prescription_rows", "denormalized_visit_rows"):
            view = scalar(self.analytic_url, f"SELECT pg_get_viewdef('analytic.{name}'::regclass, true)")
            view = re.sub(r"(?<![\w.\"])stg\.", f"{schema}.", view).strip().rstrip(";")
            if re.search(r"(?<![\w.\"])stg\.", view) or f"{schema}." not in view:
                raise RuntimeError(f"could not point the analytic views at schema {schema}")
            parts.append(f"({view})")
        return " UNION ALL ".join(parts)

    def copy_tables(self) -> tuple[float, dict[str, float], dict[str, int]]:
        """Binary COPY of the three tables, each piped from the app database into stg_copy.<t>
        (pipeline.bulk_copy.pipe_copy, as the refresh's own bulk load does); one connection per side,
        the reader login at the source like Sling."""
        from pipeline.bulk_copy import pipe_copy

        src = connect(self.reader_url, autocommit=True)
        dst = connect(self.analytic_url)
        per_table: dict[str, float] = {}
        rows: dict[str, int] = {}
        try:
            started = time.perf_counter()
            for table, _key in TABLES:
                table_started = time.perf_counter()
                rows[table] = pipe_copy(src, f"SELECT * FROM medical_app.{table}", dst, f"stg_copy.{table}")  # noqa: S608
                per_table[table] = time.perf_counter() - table_started
            dst.commit()
            total = time.perf_counter() - started
        finally:
            src.close()
            dst.close()
        return total, per_table, rows

    def copy_limit(self, when: str) -> dict[str, Any]:
        execute(self.analytic_url, "TRUNCATE stg_copy.patient, stg_copy.medical_record, stg_copy.prescription")
        vacuum_analyze(self.analytic_url)
        log(f"the limit ({when}): binary COPY of the three tables ...")
        total, per_table, rows = self.copy_tables()
        log(f"binary COPY ({when}): {total:.2f} s {per_table}")
        row = {"name": f"**limit**: binary COPY of the 3 tables, app → analytic, piped ({when})", "kind": "copy",
               "wall_s": total, "copy_s_per_table": per_table, "rows_copied": rows}  # fmt: skip
        self.rows.append(row)
        return row

    def original(self) -> dict[str, Any]:
        """The original system's run on the same data: Sling copies the three tables whole
        (full-refresh, bench/pipeline_original_replication.yaml), then the denormalized table is
        rebuilt from scratch (TRUNCATE + INSERT of the whole join; ANALYZE of the fresh copies first,
        as autovacuum would, so the join gets a good plan)."""
        from pipeline import refresh

        columns = scalar(self.analytic_url, """
            SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) FROM pg_attribute
            WHERE attrelid = 'analytic.medical_record_denormalized'::regclass AND attnum > 0 AND NOT attisdropped
              AND attname NOT IN ('inserted_timestamp', 'updated_timestamp')""")  # fmt: skip
        rebuild = (f"TRUNCATE orig.medical_record_denormalized; "  # noqa: S608 - this script's constants
                   f"INSERT INTO orig.medical_record_denormalized ({columns}) "
                   f"SELECT {columns} FROM ({self.join_sql('orig')}) j")  # fmt: skip
        vacuum_analyze(self.analytic_url)
        log("original approach: Sling full-refresh of the three tables + full rebuild ...")
        started = time.perf_counter()
        copied = refresh.replicate_with_sling(self.settings, ORIGINAL_REPLICATION)
        sling_s = time.perf_counter() - started
        conn = connect(self.analytic_url)
        try:
            merge_started = time.perf_counter()
            with conn.cursor() as cur:
                cur.execute("ANALYZE orig.patient, orig.medical_record, orig.prescription")
                cur.execute(rebuild)
                inserted = cur.rowcount
            conn.commit()
            merge_s = time.perf_counter() - merge_started
        finally:
            conn.close()
        wall = time.perf_counter() - started
        log(f"original approach: {wall:.2f} s (Sling {sling_s:.2f} s, rebuild {merge_s:.2f} s), {inserted} rows")
        row = {"name": "original approach: Sling full-refresh of the 3 tables + TRUNCATE/INSERT of the whole join",
               "kind": "original", "wall_s": wall, "sling_s": sling_s, "merge_s": merge_s, "rows_copied": copied,
               "rows_inserted": inserted}  # fmt: skip
        self.rows.append(row)
        return row

    def verify(self, with_original: bool) -> dict[str, Any]:
        """The analytic table equals the join recomputed from the scratch copies (copied last), the
        original approach's table (when it ran) equals it too, and the de-identified table equals what
        the analytic table implies (its one definition, the view)."""
        from pipeline import refresh

        log("verifying the analytic tables against the source ...")

        def differing(table: str) -> int:
            return scalar(self.analytic_url, f"""
                WITH source AS MATERIALIZED (SELECT row_key, row_hash FROM ({self.join_sql('stg_copy')}) j)
                SELECT count(*) FROM (
                    (SELECT row_key, row_hash FROM {table} EXCEPT SELECT row_key, row_hash FROM source)
                    UNION ALL
                    (SELECT row_key, row_hash FROM source EXCEPT SELECT row_key, row_hash FROM {table})
                ) d""")  # noqa: S608 - this script's constants

        diff = differing("analytic.medical_record_denormalized")
        original_diff = differing("orig.medical_record_denormalized") if with_original else None
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
                "deidentified_rows_differing": deidentified_diff,
                "original_rows_differing_from_source": original_diff}  # fmt: skip


def run(args: argparse.Namespace, base: Path) -> dict[str, Any]:
    from pipeline.settings import find_sling_binary
    from tools.pgcluster import PostgresCluster

    settings = {"fsync": "off"} if args.fsync_off else {}
    cluster = PostgresCluster(base / "pg", settings=settings)
    with_original = args.scenario == "all" or args.with_original
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
        bench.prepare_scratch()
        limits = [bench.copy_limit("before the refreshes")]
        measured: dict[str, dict[str, Any]] = {}
        measured["initial"] = bench.refresh("first load (into an empty analytic database)", "incremental")
        if args.scenario == "all":
            measured["full"] = bench.refresh('full rebuild: run_refresh("full") (bulk reload + SQL rebuild)', "full")
            measured["rebuild"] = bench.rebuild_sql_only()
            measured["0%"] = bench.refresh("incremental, 0 changes", "incremental")
        fractions = CHANGE_FRACTIONS if args.scenario == "all" else (0.01,)
        for fraction in fractions:
            label = f"{fraction * 100:g}%"
            update = bench.change(fraction, label)
            measured[label] = bench.refresh(f"incremental, {label} of prescriptions changed", "incremental", update)
        limits.append(bench.copy_limit("after the refreshes"))
        if with_original:
            measured["original"] = bench.original()
        verification = bench.verify(with_original)
        sizes = table_sizes(bench.analytic_url, [
            "stg.patient", "stg.medical_record", "stg.prescription", "analytic.medical_record_denormalized",
            "analytic.medical_record_deidentified",
        ])  # fmt: skip
    finally:
        log("stopping PostgreSQL ...")
        cluster.stop()

    limit_s = sum(row["wall_s"] for row in limits) / len(limits)
    original_s = measured["original"]["wall_s"] if with_original else None
    for row in bench.rows:
        row["over_copy"] = row["wall_s"] / limit_s
        if original_s is not None and row["kind"] in ("refresh", "sql"):
            row["original_over_this"] = original_s / row["wall_s"]
    targets = []
    one_percent, initial = measured["1%"], measured["initial"]
    if original_s is not None:
        targets += [
            {"text": f"first load no slower than the original's run on the same data: {initial['wall_s']:.2f} s "
                     f"({initial['over_copy']:.1f}× COPY) vs {original_s:.2f} s ({original_s / limit_s:.1f}× COPY)",
             "met": initial["wall_s"] <= original_s},
            {"text": f"1% refresh ≥ {TARGET_INCREMENTAL_SPEEDUP:g}× faster than the original approach: "
                     f"{original_s:.2f} s / {one_percent['wall_s']:.2f} s = {original_s / one_percent['wall_s']:.1f}×",
             "met": original_s / one_percent["wall_s"] >= TARGET_INCREMENTAL_SPEEDUP},
        ]  # fmt: skip
    if "rebuild" in measured:
        rebuild, full = measured["rebuild"], measured["full"]
        targets.append({
            "text": f"full rebuild of the analytic tables from the landing tables within {TARGET_FULL_VS_COPY:g}× the "
                    f"binary COPY limit: {rebuild['wall_s']:.2f} s = {rebuild['over_copy']:.1f}× (the identified "
                    f"table alone: {rebuild['identified_s'] / limit_s:.1f}×; run_refresh(\"full\"), which also "
                    f"reloads the landing tables: {full['over_copy']:.1f}×)",
            "met": rebuild["over_copy"] <= TARGET_FULL_VS_COPY,
        })  # fmt: skip
    if "0%" in measured:
        zero = measured["0%"]
        zero_written = sum(zero[f"{prefix}rows_{kind}"] for prefix in ("", "deidentified_")
                           for kind in ("inserted", "updated", "deleted"))  # fmt: skip
        zero_changed = sum(zero["rows_changed"].values())
        targets.append({
            "text": f"0-change refresh under {TARGET_ZERO_CHANGE_S:g} s and zero rows written: {zero['wall_s']:.2f} s, "
                    f"{zero_written} analytic rows written, {zero_changed} landing rows changed",
            "met": zero["wall_s"] < TARGET_ZERO_CHANGE_S and zero_written == 0 and zero_changed == 0,
        })  # fmt: skip
    targets.append({
        "text": f"1% refresh (identified and de-identified tables) within {TARGET_1PCT_VS_COPY:g}× the binary COPY "
                f"limit of the same data: {one_percent['wall_s']:.2f} s / {limit_s:.2f} s = "
                f"{one_percent['over_copy']:.2f}×",
        "met": one_percent["over_copy"] <= TARGET_1PCT_VS_COPY,
    })  # fmt: skip
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
        "copy_limit_s": limit_s,
        "original_s": original_s,
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
    limit_s, original_s = report["copy_limit_s"], report["original_s"]
    args = report["arguments"]
    command = f"python bench/pipeline_refresh.py --prescriptions {args['prescriptions']} --scenario {args['scenario']}"
    if args.get("with_original") and args["scenario"] != "all":
        command += " --with-original"
    lines = [
        "# Analytics refresh (pipeline/refresh.py) on generated data",
        "",
        f"{report['started_at']} · commit {env['git']} · Python {env['python']} · PostgreSQL {pg['server_version']} "
        f"(fsync={pg['fsync']}, synchronous_commit={pg['synchronous_commit']}, shared_buffers={pg['shared_buffers']}) "
        f"· Sling {env['sling']} · {env['cpu']} × {env['cpus']}",
        "",
        f"Command: `{command}`",
        "",
        f"Application data (pipeline.generate, seed {args['seed']}): "
        f"{rows_app['patient']:,} patients, {rows_app['medical_record']:,} visits, "
        f"{rows_app['prescription']:,} prescriptions → {report['verification']['analytic_rows']:,} analytic rows. "
        f"Generated in {data['generate_seconds']:.1f} s, then timestamps spread over the past year "
        f"({data['backdate_seconds']:.1f} s; see the script's docstring).",
        "",
        f"**× COPY** is each time over the binary COPY limit of the same data in the same run "
        f"({limit_s:.2f} s: the mean of the two COPY rows). "
        + ("**original ÷** is the original approach's time over this one's (how many times faster). "
           if original_s is not None else "")
        + "Per-table counts are patient / medical_record / prescription. *Sling*, *apply* and *check* are "
        "run_refresh's steps (*Sling* is the bulk COPY load on a first load and in full mode); *wall* is the "
        "whole call (lock, run log, steps). Every refresh also maintains the de-identified table "
        "(analytic.medical_record_deidentified, keyed HMAC-SHA256 pseudonyms) in the same transaction.",
        "",
        "| operation | wall s | × COPY | original ÷ | load s | apply s | check s | rows read | landing rows changed "
        "| analytic ins / upd / del | de-identified ins / upd / del |",
        "|---|---:|---:|---:|---:|---:|---:|---|---|---:|---:|",
    ]
    for row in report["rows"]:
        head = f"**{_s(row['wall_s'])}** | {row['over_copy']:.2f}× | " + (
            f"{row['original_over_this']:.1f}× |" if "original_over_this" in row else "– |")
        if row["kind"] == "refresh":
            lines.append(
                f"| {row['name']} | {head} {_s(row['sling_s'])} | {_s(row['apply_s'])} | "
                f"{_s(row['check_s'])} | {_per_table(row['rows_extracted'])} | {_per_table(row['rows_changed'])} | "
                f"{row['rows_inserted']:,} / {row['rows_updated']:,} / {row['rows_deleted']:,} | "
                f"{row['deidentified_rows_inserted']:,} / {row['deidentified_rows_updated']:,} / "
                f"{row['deidentified_rows_deleted']:,}{' (rebuilt)' if row['deidentified_rebuilt'] else ''} |"
            )
        elif row["kind"] == "sql":
            lines.append(f"| {row['name']} (identified {_s(row['identified_s'])} s + de-identified "
                         f"{_s(row['deidentified_s'])} s) | {head} – | {_s(row['wall_s'])} | – | "
                         f"– | – | {row['rows_inserted']:,} / – / – | "
                         f"{row['deidentified_rows_inserted']:,} / – / – |")  # fmt: skip
        elif row["kind"] == "copy":
            lines.append(f"| {row['name']} | {head} {_s(row['wall_s'])} | – | – | "
                         f"{_per_table(row['rows_copied'])} | – | – | – |")  # fmt: skip
        else:
            lines.append(
                f"| {row['name']} (Sling {_s(row['sling_s'])} s + rebuild {_s(row['merge_s'])} s) | {head} "
                f"{_s(row['sling_s'])} | {_s(row['merge_s'])} | – | {_per_table(row['rows_copied'])} | – | "
                f"{row['rows_inserted']:,} / – / – | – |"
            )
    changes = [r for r in report["rows"] if "update_seconds" in r]
    if changes:
        lines += ["", "Changes were made before each refresh by one UPDATE of the app database (not timed in the "
                  "refresh): " + ", ".join(f"{r['prescriptions_updated']:,} rows in {r['update_seconds']:.2f} s"
                                           for r in changes) + "."]  # fmt: skip
    steps = [r for r in report["rows"] if r["kind"] == "refresh" and r.get("apply_step_ms")]
    if steps:
        lines += ["", "Where the apply step's time went (analytic.refresh_run.step_ms, ms):", ""]
        lines += [f"- {r['name']}: " + ", ".join(f"{k} {v:g}" for k, v in r["apply_step_ms"].items()) for r in steps]
    lines += ["", "## Targets", ""]
    for target in report["targets"]:
        lines.append(f"- {'PASS' if target['met'] else 'MISS'}: {target['text']}")
    verification = report["verification"]
    original_check = (f"; the original approach's table differs from it in "
                      f"{verification['original_rows_differing_from_source']} rows"
                      if verification.get("original_rows_differing_from_source") is not None else "")
    lines += [
        "",
        f"Correctness: after the last refresh the analytic table holds {verification['analytic_rows']:,} rows and "
        f"differs from the join recomputed from the last COPY of the app tables in "
        f"{verification['rows_differing_from_source']} rows (row_key, row_hash){original_check}; the de-identified "
        f"table holds {verification['deidentified_rows']:,} rows and differs from what the analytic table implies "
        f"in {verification['deidentified_rows_differing']} rows (all columns but its own timestamps).",
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
    parser.add_argument(
        "--scenario",
        choices=["all", "one-percent"],
        default="all",
        help="all: first load, full rebuild, 0/0.1/1/10%% refreshes and the original approach (default); "
        "one-percent: first load and a 1%% refresh only (for large data, e.g. 10,000,000 prescriptions)",
    )
    parser.add_argument("--with-original", action="store_true",
                        help="with --scenario one-percent: run the original approach too (slow at scale)")
    parser.add_argument("--output-dir", type=Path, default=RESULTS_DIR, help="default bench/results")
    parser.add_argument("--report-name", default="pipeline_refresh",
                        help="file name of the report under --output-dir (default pipeline_refresh)")
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
    write_report(args.output_dir, args.report_name, report, render_markdown(report))
    verification = report["verification"]
    exact = verification["rows_differing_from_source"] == 0 and verification["deidentified_rows_differing"] == 0
    exact = exact and verification["original_rows_differing_from_source"] in (None, 0)
    return 0 if exact and verification["deidentified_rows"] == verification["analytic_rows"] else 1


if __name__ == "__main__":
    sys.exit(main())
