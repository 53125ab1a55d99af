#!/usr/bin/env python3
"""FHIR bulk export of generated data, next to a raw COPY of the same rows, at two sizes.

For each size (default 100,000 and 1,000,000 prescriptions, with their visits and patients:
``pipeline.generate``, 2.5 visits per patient, 2 prescriptions per visit), in one throwaway PostgreSQL
(default settings) and one AWS emulator (ministack, its S3 over HTTP), in this order:

1. **the limit**: ``COPY (<the export's own query for the type>) TO STDOUT`` for the three types, read by
   the client and discarded (text format, as NDJSON is text). The same query (``export_jobs.source_queries``:
   the same rows, columns and joins), without its per-file LIMIT.
2. **the export**: one job for the three types, run to the end by ``ExportWorker`` steps as the state
   machine runs them: the types side by side (its Map), one child process each, whose resident memory
   (RSS) the parent samples every 20 ms:
   - ``to S3``: the files streamed into the emulator's S3 through multipart uploads (as deployed);
   - ``no upload``: the same worker writing into a discarding store (what the export costs without S3).
   Memory is reported per worker as the peak RSS and the peak above its RSS once imports and its first
   connection were done (the baseline): the export's own working memory.
3. the limit again; every export figure is also given as a multiple of the mean of the two (× COPY).

The exported resource counts must equal the COPY row counts, or the run fails.
Results: markdown on stdout and bench/results/bulk_export.{md,json}.

Usage: python bench/bulk_export.py [--sizes 100000,1000000] [--seed N]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
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
TARGET_VS_COPY = 3.0
SAMPLE_SECONDS = 0.02
RESULT = "result: "  # the worker child's answer on stdout
# The emulator's S3 takes any credentials; these name no account.
EMULATOR_CREDENTIALS = {"aws_access_key_id": "test", "aws_secret_access_key": "test"}
TYPES = ("Patient", "Encounter", "MedicationRequest")


def log(message: str) -> None:
    print(f"[{datetime.now(UTC).strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- the child: one export, run by the worker ---------------------------------------------------------


class DiscardingStore:
    """Takes the files and keeps nothing (the export's cost without the upload)."""

    class _Upload:
        def __init__(self) -> None:
            self.bytes = 0

        def write(self, data: bytes) -> None:
            self.bytes += len(data)

        def complete(self) -> None:
            pass

        def abort(self) -> None:
            pass

    def upload(self, key: str) -> DiscardingStore._Upload:
        return self._Upload()

    def delete(self, keys: list[str]) -> None:
        pass


def worker_main(args: argparse.Namespace) -> int:
    """Run job ``--job`` to its end, after the parent says go; print the result as JSON."""
    from chalicelib.db import Database
    from chalicelib.export.aws import S3ExportFiles
    from chalicelib.export.worker import ExportWorker

    db = Database(lambda: args.database_url)
    with db.transaction() as tx:
        tx.fetchone("SELECT 1")  # connected: part of the baseline, not of the export
    if args.store == "s3":
        store: Any = S3ExportFiles(args.bucket, _s3_client(args.endpoint))
    else:
        store = DiscardingStore()
    worker = ExportWorker(db, store)
    print("ready", flush=True)
    sys.stdin.readline()
    started = time.perf_counter()
    steps = 1
    while not worker.step(args.job, lambda: float("inf"), args.resource_type):
        steps += 1
    print(RESULT + json.dumps({"seconds": time.perf_counter() - started, "steps": steps}), flush=True)
    return 0


# --- the parent ---------------------------------------------------------------------------------------


def run_export(database_url: str, job_id: int, store: str, endpoint: str, bucket: str) -> dict[str, Any]:
    """The job's types side by side, one worker process each (as the state machine's Map runs them), each
    process's RSS sampled; the wall time is from "go" to the last type's end."""
    import psutil

    # The worker's per-file log lines would go to stdout too: only warnings, and the result is marked.
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'functions'}:{ROOT}", "POWERTOOLS_LOG_LEVEL": "WARNING"}
    children = {}
    for resource_type in TYPES:
        children[resource_type] = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "worker", "--job", str(job_id), "--database-url",
             database_url, "--store", store, "--endpoint", endpoint, "--bucket", bucket,
             "--resource-type", resource_type],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT,
        )
    processes, baseline = {}, {}
    for resource_type, child in children.items():
        assert child.stdout is not None
        if child.stdout.readline().strip() != "ready":
            raise SystemExit("an export worker did not start")
        processes[resource_type] = psutil.Process(child.pid)
        baseline[resource_type] = processes[resource_type].memory_info().rss
    peak = dict(baseline)
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            for resource_type, process in processes.items():
                with contextlib.suppress(psutil.Error):  # it has just ended
                    peak[resource_type] = max(peak[resource_type], process.memory_info().rss)
            time.sleep(SAMPLE_SECONDS)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    for child in children.values():
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
    per_type = {}
    for resource_type, child in children.items():
        assert child.stdout is not None
        line = next((line for line in child.stdout if line.startswith(RESULT)), "")
        if child.wait(timeout=60) != 0 or not line:
            raise SystemExit(f"the {resource_type} export worker failed")
        per_type[resource_type] = json.loads(line.removeprefix(RESULT))
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    mb = 2**20
    return {"seconds": seconds, "per_type_seconds": {t: r["seconds"] for t, r in per_type.items()},
            "peak_rss_mb": {t: peak[t] / mb for t in TYPES},
            "peak_above_baseline_mb": {t: (peak[t] - baseline[t]) / mb for t in TYPES}}


def copy_limit(owner_url: str) -> dict[str, Any]:
    """COPY (the export's query) TO STDOUT per type, read and discarded."""
    import psycopg2

    from chalicelib.repositories.export_jobs import source_queries

    class Discard:
        def __init__(self) -> None:
            self.bytes = 0

        def write(self, data: Any) -> int:
            self.bytes += len(data)
            return len(data)

    conn = psycopg2.connect(owner_url)
    rows: dict[str, int] = {}
    started = time.perf_counter()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT now()")
            until = cur.fetchone()[0]
            for fhir_type, (sql, _names) in source_queries().items():
                query = cur.mogrify(sql, {"after": 0, "until": until, "since": None, "limit": None}).decode()
                sink = Discard()
                cur.copy_expert(f"COPY ({query}) TO STDOUT", sink)
                rows[fhir_type] = cur.rowcount
        conn.rollback()
    finally:
        conn.close()
    return {"seconds": time.perf_counter() - started, "rows": rows}


def measure_size(cluster: Any, prescriptions: int, seed: int, endpoint: str, bucket: str) -> dict[str, Any]:
    import psycopg2

    from chalicelib.db import Database
    from chalicelib.domain import export
    from chalicelib.repositories import export_jobs
    from pipeline.generate import generate
    from tools.provisioning import database_with_api_login

    owner_url, api_url = database_with_api_login(cluster, f"app_{prescriptions}", f"bench_api_{prescriptions}")
    patients = max(1, round(prescriptions / 5))
    log(f"{prescriptions:,} prescriptions: generating {patients:,} patients ...")
    conn = psycopg2.connect(owner_url)
    started = time.perf_counter()
    generate(conn, patients, 2.5, 2.0, seed, sys.stderr.isatty())
    conn.commit()
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("VACUUM ANALYZE")
    conn.close()
    log(f"generated in {time.perf_counter() - started:.1f} s")

    db = Database(lambda: api_url)
    limits = [copy_limit(owner_url)]
    log(f"COPY: {limits[0]['seconds']:.2f} s {limits[0]['rows']}")
    exports = {}
    for store in ("s3", "discard"):
        request = export.ExportRequest(export.LEVEL_SYSTEM, TYPES, None, idempotency_key=f"bench-{store}")
        with db.transaction() as tx:
            job_id = export_jobs.insert(tx, "bench", None, request)
        measured = run_export(api_url, job_id, store, endpoint, bucket)
        with db.transaction() as tx:
            export_jobs.finish(tx, job_id, "completed", None)
        with db.transaction() as tx:
            files = export_jobs.files(tx, job_id)
        counts = {t: sum(f.resources for f in files if f.resource_type == t) for t in TYPES}
        measured.update(files=len(files), resources=counts)
        if store == "s3":
            from chalicelib.export.aws import S3ExportFiles

            client = _s3_client(endpoint)
            measured["bytes"] = sum(client.head_object(Bucket=bucket, Key=f.object_key)["ContentLength"]
                                    for f in files)
            S3ExportFiles(bucket, client).delete([f.object_key for f in files])  # free the emulator's memory
        exports[store] = measured
        log(f"export ({store}): {measured['seconds']:.2f} s {measured['per_type_seconds']}, peak RSS MB "
            f"{measured['peak_rss_mb']} (above baseline {measured['peak_above_baseline_mb']}), {counts}")
    db.close()
    limits.append(copy_limit(owner_url))
    log(f"COPY: {limits[1]['seconds']:.2f} s")
    for store, measured in exports.items():
        if measured["resources"] != limits[0]["rows"]:
            raise SystemExit(f"export ({store}) wrote {measured['resources']}, COPY read {limits[0]['rows']}")
    copy_mean = sum(limit["seconds"] for limit in limits) / len(limits)
    for measured in exports.values():
        measured["x_copy"] = measured["seconds"] / copy_mean
    return {"prescriptions": prescriptions, "rows": limits[0]["rows"], "copy": limits, "copy_mean_seconds": copy_mean,
            "exports": exports}


def _s3_client(endpoint: str) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **EMULATOR_CREDENTIALS,
                        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}))


def run(args: argparse.Namespace, base: Path) -> dict[str, Any]:
    from tools import stack
    from tools.pgcluster import PostgresCluster, free_port

    cluster = PostgresCluster(base / "pg")
    port = free_port()
    emulator = None
    try:
        log("starting PostgreSQL and the AWS emulator ...")
        cluster.start()
        emulator = stack.ministack(port, base / "ministack")
        endpoint = f"http://127.0.0.1:{port}"
        bucket = "bulk-export-bench"
        _s3_client(endpoint).create_bucket(Bucket=bucket)
        started_at = datetime.now(UTC).isoformat(timespec="seconds")
        sizes = [measure_size(cluster, n, args.seed, endpoint, bucket) for n in args.sizes]
    finally:
        if emulator is not None:
            emulator.stop()
        cluster.stop()
    return {"started_at": started_at, "sizes": sizes, "target_x_copy": TARGET_VS_COPY,
            "machine": {"cpus": os.cpu_count(), "load_average": os.getloadavg()}}


def render_markdown(report: dict[str, Any]) -> str:
    lines = [
        "# FHIR bulk export next to COPY",
        "",
        f"Run {report['started_at']} (`python bench/bulk_export.py`), {report['machine']['cpus']} CPUs, load average "
        f"at the end {', '.join(f'{v:.1f}' for v in report['machine']['load_average'])}. The three types are "
        "written side by side, one worker process each (the state machine's Map).",
        "",
        "| prescriptions | resources (Patient / Encounter / MedicationRequest) | COPY s (before, after) "
        "| export to S3 s | × COPY | export, no upload s | × COPY |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for size in report["sizes"]:
        s3, discard = size["exports"]["s3"], size["exports"]["discard"]
        rows = " / ".join(f"{size['rows'][t]:,}" for t in TYPES)
        copies = ", ".join(f"{c['seconds']:.2f}" for c in size["copy"])
        lines.append(
            f"| {size['prescriptions']:,} | {rows} | {size['copy_mean_seconds']:.2f} ({copies}) | {s3['seconds']:.2f} "
            f"| {s3['x_copy']:.2f}× | {discard['seconds']:.2f} | {discard['x_copy']:.2f}× |"
        )
    lines += ["", "Peak resident memory of each worker process, MB (above its baseline: imports and connection "
              "done), to S3 / no upload:", "",
              "| prescriptions | " + " | ".join(TYPES) + " |", "|---:|" + "---:|" * len(TYPES)]
    for size in report["sizes"]:
        s3, discard = size["exports"]["s3"], size["exports"]["discard"]
        cells = [f"{s3['peak_rss_mb'][t]:.1f} (+{s3['peak_above_baseline_mb'][t]:.1f}) / "
                 f"{discard['peak_rss_mb'][t]:.1f} (+{discard['peak_above_baseline_mb'][t]:.1f})" for t in TYPES]
        lines.append(f"| {size['prescriptions']:,} | " + " | ".join(cells) + " |")
    lines += ["", f"Target: within {report['target_x_copy']:.0f}× COPY, memory flat in the row count.", ""]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    worker = sub.add_parser("worker", help="(internal) run one export job in this process")
    worker.add_argument("--job", type=int, required=True)
    worker.add_argument("--database-url", required=True)
    worker.add_argument("--store", choices=("s3", "discard"), required=True)
    worker.add_argument("--endpoint", required=True)
    worker.add_argument("--bucket", required=True)
    worker.add_argument("--resource-type", choices=TYPES, required=True)
    parser.add_argument("--sizes", default="100000,1000000",
                        type=lambda text: [int(v) for v in text.split(",")],
                        help="prescriptions per size, comma-separated (default 100000,1000000)")
    parser.add_argument("--seed", type=int, default=42)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.command == "worker":
        return worker_main(args)
    report = run_in_scratch("medrec-bench-export-", lambda base: run(args, base))
    if report is None:
        return 130
    write_report(RESULTS_DIR, "bulk_export", report, render_markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
