#!/usr/bin/env python3
"""What keeping every version costs a write: PUT and PATCH p50 with the history trigger on and off.

A throwaway PostgreSQL (fsync on), the app's database with its API login and a few thousand patients.
The same writes run in alternating blocks with the history triggers enabled and disabled
(``ALTER TABLE ... DISABLE TRIGGER``, between blocks), so drift of this machine's speed hits both alike:

* ``PUT /v1/patients/{id}`` and ``PATCH /v1/patients/{id}`` through Chalice's test client with a real
  token (authorizer, routing, validation, service, audit, durable commit);
* the limit: a raw ``UPDATE ... RETURNING`` + durable ``COMMIT`` of the same row over psycopg2.

The cost of a version is the median, over the rounds, of the difference between the p50 of a block with
history on and the p50 of the block next to it with history off (target ≤ 0.1 ms for PUT and PATCH).
Results: a markdown report on stdout and bench/results/history_cost.{json,md}.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import secrets
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for _path in (ROOT / "functions", ROOT):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from bench.harness import app_database, run_in_scratch, write_report  # noqa: E402 - after the path set-up

RESULTS_DIR = ROOT / "bench" / "results"
TARGET_MS = 0.1
TRIGGERS = ("patient_history",)


def measure(args: argparse.Namespace, base: Path) -> dict[str, Any]:
    import psycopg2

    from bench.api_latency import seed_patients
    from tools.pgcluster import PostgresCluster

    cluster = PostgresCluster(base / "pg")
    cluster.start()
    try:
        owner_url, api_url = app_database(cluster)
        os.environ.update(DATABASE_URL=api_url, JWT_SECRET=secrets.token_urlsafe(32),
                          POWERTOOLS_SERVICE_NAME="medical-records", AWS_DEFAULT_REGION="us-east-1")
        print(f"seeding {args.patients} patients ...", file=sys.stderr)
        patients = seed_patients(owner_url, args.patients)
        with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):  # the request log lines
            return _measure(args, owner_url, api_url, patients, psycopg2)
    finally:
        cluster.stop()


def _measure(args, owner_url, api_url, patients, psycopg2) -> dict[str, Any]:
    from chalice.test import Client

    from app import app
    from chalicelib.api import auth

    client = Client(app)
    token = auth.mint("bench-user", ["read", "write", "admin"], ttl_seconds=12 * 3600)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    rng = random.Random(20261130)
    owner = psycopg2.connect(owner_url)
    owner.autocommit = True
    raw = psycopg2.connect(api_url)
    raw.autocommit = True
    raw_cur = raw.cursor()

    def put(i: int) -> None:
        pid, card = rng.choice(patients)
        body = {"idCardNum": card, "firstName": "Bench", "lastName": f"Put{i % 50}", "birthDate": "1980-04-12",
                "phoneNum": f"08{i % 10**8:08d}"}
        response = client.http.request("PUT", f"/v1/patients/{pid}", headers=headers, body=json.dumps(body))
        assert response.status_code == 200, response.body

    def patch(i: int) -> None:
        pid, _card = rng.choice(patients)
        response = client.http.request("PATCH", f"/v1/patients/{pid}", headers=headers,
                                       body=json.dumps({"lastName": f"Patch{i % 50}"}))
        assert response.status_code == 200, response.body

    def raw_update(i: int) -> None:
        pid, _card = rng.choice(patients)
        raw_cur.execute("BEGIN; SELECT set_config('synchronous_commit', 'on', true); "
                        "UPDATE medical_app.patient SET last_name = %s WHERE patient_id = %s RETURNING version",
                        (f"Raw{i % 50}", pid))
        raw_cur.fetchone()
        raw_cur.execute("COMMIT")

    operations = {"PUT /v1/patients/{id}": put, "PATCH /v1/patients/{id}": patch,
                  "limit: raw UPDATE + durable COMMIT": raw_update}
    samples: dict[str, dict[str, list[float]]] = {name: {"on": [], "off": []} for name in operations}
    # Per round and operation: p50 of the block with history on minus the block with it off, next to each
    # other in time, so the machine's drift cancels out of each difference.
    paired: dict[str, list[float]] = {name: [] for name in operations}

    def set_history(enabled: bool) -> None:
        with owner.cursor() as cur:
            for trigger in TRIGGERS:
                cur.execute(f"ALTER TABLE medical_app.patient {'ENABLE' if enabled else 'DISABLE'} TRIGGER {trigger}")

    print("warming up ...", file=sys.stderr)
    for operation in operations.values():
        for i in range(args.block):
            operation(i)
    print(f"{args.rounds} rounds of {args.block} calls per operation, history on and off alternately ...",
          file=sys.stderr)
    counter = 0
    blocks: dict[tuple[str, str], float] = {}
    try:
        for round_number in range(args.rounds):
            for state in (("on", "off") if round_number % 2 == 0 else ("off", "on")):
                set_history(state == "on")
                for name, operation in operations.items():
                    block = []
                    for _ in range(args.block):
                        counter += 1
                        started = time.perf_counter_ns()
                        operation(counter)
                        block.append((time.perf_counter_ns() - started) / 1e6)
                    samples[name][state].extend(block)
                    blocks[(name, state)] = statistics.median(block)
            for name in operations:
                paired[name].append(blocks[(name, "on")] - blocks[(name, "off")])
    finally:
        set_history(True)
    with owner.cursor() as cur:
        cur.execute("SELECT count(*), pg_total_relation_size('medical_app.resource_version') "
                    "FROM medical_app.resource_version")
        versions, version_bytes = cur.fetchone()
    rows = {}
    for name, by_state in samples.items():
        on, off = statistics.median(by_state["on"]), statistics.median(by_state["off"])
        differences = sorted(paired[name])
        quartile = max(1, len(differences) // 4)
        rows[name] = {"p50_on_ms": on, "p50_off_ms": off, "calls_each": len(by_state["on"]),
                      "cost_ms": statistics.median(differences),
                      "cost_iqr_ms": (differences[quartile - 1], differences[-quartile])}
    return {
        "started_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "patients": args.patients,
        "rows": rows,
        "versions_kept": versions,
        "bytes_per_version": version_bytes / versions if versions else None,
        "targets": {name: rows[name]["cost_ms"] <= TARGET_MS for name in list(operations)[:2]},
    }


def render_markdown(report: dict[str, Any]) -> str:
    lines = [
        "# What a kept version costs a write",
        "",
        f"{report['started_at']} · {report['patients']} patients · history on and off in alternating blocks",
        "",
        "| operation | calls each | p50 history on ms | p50 history off ms | cost of the version ms "
        "(median of paired block differences) | interquartile range ms |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, row in report["rows"].items():
        lines.append(f"| {name} | {row['calls_each']} | {row['p50_on_ms']:.3f} | {row['p50_off_ms']:.3f} | "
                     f"{row['cost_ms']:+.3f} | {row['cost_iqr_ms'][0]:+.3f} … {row['cost_iqr_ms'][1]:+.3f} |")
    lines += ["", *(f"- {'MET' if met else 'MISSED'}: {name} costs ≤ {TARGET_MS} ms more with its version kept."
                    for name, met in report["targets"].items())]
    if report["bytes_per_version"]:
        lines.append(f"- {report['versions_kept']} versions kept, {report['bytes_per_version']:.0f} bytes each "
                     "on disk (table, TOAST and primary key).")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=30, help="alternations of history on/off (default 30)")
    parser.add_argument("--block", type=int, default=60, help="calls per operation per block (default 60)")
    parser.add_argument("--output-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    report = run_in_scratch("medrec-history-", lambda base: measure(args, base))
    if report is None:
        return 130
    write_report(args.output_dir, "history_cost", report, render_markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
