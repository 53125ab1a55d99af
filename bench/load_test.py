"""Load test and soak of the API over loopback HTTP, with Locust headless (bench/load/).

  steps  for each target (`run`: the API on Chalice's local server; `up`: the stack deployed into the
         AWS emulator; either `+pooler` when `tools.cli` has a PgBouncer option): start it on free ports
         in a scratch state directory, register 64 clinicians' patients through the API, measure the
         same mix in-process (the limit), then step concurrency 1 → 2 → 4 → … → 64 and report per step
         requests/s, p50/p99, errors, PostgreSQL connections and where the CPU went.
  soak   one target at a steady rate for --duration seconds: errors, latency, connections and every
         server/worker process's resident memory, per window.

Results: bench/results/load_<target>.json, soak_<target>.json and load_test.md (git-ignored); the plot
(bench/plot_load.py) goes to docs/load-test.png. Exit 0 when measured (even when the soak finds a
leak: the report says so), 1 when something is broken (a target did not start, set-up refused).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "functions"), str(ROOT)]

from bench.load import dataset, targets  # noqa: E402
from bench.load.sampler import Sampler  # noqa: E402

RESULTS = ROOT / "bench" / "results"
CLINICIAN_SCOPES = ["read", "write"]


def target_specs(text: str) -> list[tuple[str, bool]]:
    specs = []
    for item in text.split(","):
        kind, _, extra = item.strip().partition("+")
        if kind not in targets.KINDS or extra not in ("", "pooler"):
            raise argparse.ArgumentTypeError(f"unknown target {item!r}: one of run, up, run+pooler, up+pooler")
        specs.append((kind, extra == "pooler"))
    return specs


def slug(label: str) -> str:
    return label.replace(" + ", "_")


def prepare(target: targets.Target, clinicians: int, patients: int, work: Path) -> Path:
    """Clinicians' tokens and their patients, registered through the target's API; the data set file."""
    from chalicelib.api import auth

    secret = target.secrets()["jwt_secret"]
    tokens = {f"load-clinician-{n:03d}": auth.mint(f"load-clinician-{n:03d}", CLINICIAN_SCOPES, 6 * 3600,
                                                  secret=secret)
              for n in range(clinicians)}
    started = time.monotonic()
    made = dataset.build(target.api_url, tokens, patients)
    print(f"  set-up: {clinicians * patients} patients and visits in {time.monotonic() - started:.1f}s",
          file=sys.stderr)
    path = work / "dataset.json"  # holds tokens: kept in the scratch directory, never in results/
    path.write_text(json.dumps({"clinicians": made}))
    path.chmod(0o600)
    return path


def in_process_limit(target: targets.Target, dataset_file: Path, requests: int) -> dict[str, Any]:
    env = {**os.environ, "DATABASE_URL": target.api_database_url(), "JWT_SECRET": target.secrets()["jwt_secret"],
           "LOAD_DATASET": str(dataset_file), "PYTHONPATH": f"{ROOT / 'functions'}:{ROOT}"}
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "load" / "inprocess.py"), "--requests",
                          str(requests)], env=env, capture_output=True, text=True, check=False, cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(f"in-process limit failed: {out.stderr.strip()[-500:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


FOOTPRINT_SQL = """
SELECT %(table)s, count(*), pg_total_relation_size(%(table)s::regclass), pg_relation_size(%(table)s::regclass),
       pg_indexes_size(%(table)s::regclass)
  FROM {table}
"""
AUDIT_TABLE = "medical_app.audit_event"
FOOTPRINT_TABLES = (AUDIT_TABLE, "medical_app.patient", "medical_app.medical_record",
                    "medical_app.care_team_member")


def database_footprint(target: targets.Target) -> dict[str, dict[str, int | float]]:
    """Rows and on-disk bytes (heap + TOAST + indexes) of the tables the load filled, after the load."""
    import psycopg2
    from psycopg2 import sql

    rows = {}
    with psycopg2.connect(target.owner_url()) as conn, conn.cursor() as cur:
        for table in FOOTPRINT_TABLES:
            schema, name = table.split(".")
            cur.execute(sql.SQL(FOOTPRINT_SQL).format(table=sql.Identifier(schema, name)), {"table": table})
            _, count, total, heap, indexes = cur.fetchone()
            rows[table] = {"rows": count, "total_bytes": total, "heap_bytes": heap, "index_bytes": indexes,
                           "bytes_per_row": round(total / count, 1) if count else None}
    return rows


def drive(target: targets.Target, dataset_file: Path, work: Path, driver_args: list[str]) -> tuple[dict, Sampler]:
    """Run the load generator against ``target`` while sampling; returns its report and the samples."""
    out_file = work / "driver.json"
    sampler = Sampler(target.owner_url(), target.process.pid, target.postmaster_pid).start()
    command = [sys.executable, str(ROOT / "bench" / "load" / "driver.py"), "--host", target.api_url,
               "--dataset", str(dataset_file), "--out", str(out_file), *driver_args]
    driver = subprocess.Popen(command, cwd=ROOT)
    sampler.load_generator_pid = driver.pid
    try:
        code = driver.wait()
    finally:
        if driver.poll() is None:
            driver.terminate()
            driver.wait(timeout=30)
        sampler.stop()
    if code != 0:
        raise RuntimeError(f"the load generator exited with {code}")
    return json.loads(out_file.read_text()), sampler


def run_steps(args: argparse.Namespace, work: Path) -> int:
    machine = {"cpus": os.cpu_count(), "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    failed = []
    for kind, pooler in args.targets:
        label = f"{kind}{' + pooler' if pooler else ''}"
        print(f"== {label}: starting ...", file=sys.stderr)
        target_dir = work / slug(label)
        try:
            target = targets.start(kind, target_dir, pooler)
        except targets.TargetError as exc:  # the other targets are still measured
            print(f"error: {label}: {exc}", file=sys.stderr)
            failed.append(label)
            continue
        try:
            dataset_file = prepare(target, max(args.steps), args.patients, target_dir)
            before = in_process_limit(target, dataset_file, args.limit_requests)
            print(f"  limit (in-process, one caller): {before['rps']} req/s, p50 {before['p50_ms']} ms",
                  file=sys.stderr)
            footprint_before = database_footprint(target)
            report, sampler = drive(target, dataset_file, target_dir, [
                "--steps", ",".join(map(str, args.steps)), "--step-seconds", str(args.step_seconds),
                "--warmup-seconds", str(args.warmup_seconds)])
            # measured again after the steps: this machine's speed drifts, the mean of both is the limit
            after = in_process_limit(target, dataset_file, args.limit_requests)
            print(f"  limit after the steps: {after['rps']} req/s, p50 {after['p50_ms']} ms", file=sys.stderr)
            limit = {"rps": round((before["rps"] + after["rps"]) / 2, 1),
                     "p50_ms": round((before["p50_ms"] + after["p50_ms"]) / 2, 3),
                     "p99_ms": round((before["p99_ms"] + after["p99_ms"]) / 2, 3), "before": before, "after": after}
            footprint = database_footprint(target)
            audit_rows = (footprint[AUDIT_TABLE]["rows"] - footprint_before[AUDIT_TABLE]["rows"])
            footprint["audit_rows_per_request"] = round(audit_rows / report["requests_total"], 3)
            for step in report["steps"]:
                step["resources"] = res = sampler.summarise(step["start"], step["end"])
                cpu = res.get("cpu_percent_of_one_core", {})
                api_cpu = sum(v for k, v in cpu.items() if k in ("api server", "emulator", "lambda workers", "pooler"))
                # CPU time per request: robust to a busy machine, unlike wall-clock throughput
                step["cpu_ms_per_request"] = {
                    "api": round(10 * api_cpu / step["rps"], 3),
                    "postgres": round(10 * cpu.get("postgres", 0) / step["rps"], 3),
                    "load_generator": round(10 * cpu.get("load generator", 0) / step["rps"], 3)}
                step["ratio_to_limit"] = round(step["rps"] / limit["rps"], 2) if step["rps"] else None
            result = {"target": label, "machine": machine, "limit_in_process": limit, "steps": report["steps"],
                      "database": footprint,
                      "clinicians": max(args.steps), "patients_per_clinician": args.patients,
                      "command": " ".join(["bench/load_test.py", *sys.argv[1:]])}
            RESULTS.mkdir(parents=True, exist_ok=True)
            (RESULTS / f"load_{slug(label)}.json").write_text(json.dumps(result, indent=1))
        finally:
            print(f"== {label}: stopping ...", file=sys.stderr)
            target.stop()
    markdown = render_steps()
    (RESULTS / "load_test.md").write_text(markdown)
    print(markdown)
    if not args.no_plot:
        from bench import plot_load

        plot_load.main([])
    if failed:
        print(f"not measured: {', '.join(failed)} (see the errors above)", file=sys.stderr)
    return 1 if failed else 0


def fmt(value: Any, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def render_steps() -> str:
    lines = []
    for path in sorted(RESULTS.glob("load_*.json")):
        result = json.loads(path.read_text())
        limit = result["limit_in_process"]
        measured = (f" (before the steps {limit['before']['rps']}, after {limit['after']['rps']})"
                    if "before" in limit else "")
        lines += [
            f"### {result['target']} ({result['machine']['started']}, {result['machine']['cpus']} CPUs)",
            "",
            f"Limit, same run: the same mix in-process through Chalice's test client, one caller: "
            f"**{limit['rps']} req/s**{measured}, p50 {limit['p50_ms']} ms, p99 {limit['p99_ms']} ms.",
            "",
            "| users | req/s | ÷ one in-process caller | p50 ms | p99 ms | errors | PG conns max (mean) "
            "| PG active max "
            "| CPU ms/request: API / PostgreSQL | CPU busy % (2 cores) "
            "| CPU % of one core: load generator / API (emulator + Lambda workers) / PostgreSQL / rest of machine |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for step in result["steps"]:
            res = step.get("resources", {})
            cpu = res.get("cpu_percent_of_one_core", {})
            cpu_ms = step.get("cpu_ms_per_request", {})
            if "emulator" in cpu:
                server = (f"{fmt(cpu['emulator'])} + {fmt(cpu.get('lambda workers'))} "
                          f"({res.get('lambda_workers', 0)} workers)")
            else:
                server = fmt(cpu.get("api server"))
            if "pooler" in cpu:
                server += f" + pooler {fmt(cpu['pooler'])}"
            lines.append(
                f"| {step['users']} | {fmt(step['rps'])} | {fmt(step['ratio_to_limit'], 2)}× | {fmt(step['p50_ms'])} "
                f"| {fmt(step['p99_ms'])} | {step['errors']} (+{step['warmup']['errors']} warm-up) "
                f"| {res.get('connections_max', '–')} ({fmt(res.get('connections_mean'))}) "
                f"| {res.get('active_max', '–')} "
                f"| {fmt(cpu_ms.get('api'), 2)} / {fmt(cpu_ms.get('postgres'), 2)} "
                f"| {fmt(res.get('machine_busy_percent'))} "
                f"| {fmt(cpu.get('load generator'))} / {server} / {fmt(cpu.get('postgres'))} "
                f"/ {fmt(res.get('other_processes_cpu_percent'))} |")
        audit = result.get("database", {}).get(AUDIT_TABLE)
        if audit is not None:
            lines += ["", f"Audit trail after the run: {audit['rows']:,} events, {audit['bytes_per_row']:g} bytes "
                      f"each with indexes ({fmt(result['database'].get('audit_rows_per_request'), 3)} events "
                      "per request of the mix)."]
        lines += ["", f"`{result['command']}`", ""]
    return "\n".join(lines)


def run_soak(args: argparse.Namespace, work: Path) -> int:
    kind, pooler = args.target[0]
    label = f"{kind}{' + pooler' if pooler else ''}"
    print(f"== soak {label}: starting ...", file=sys.stderr)
    target_dir = work / slug(label)
    target = targets.start(kind, target_dir, pooler)
    try:
        dataset_file = prepare(target, args.users, args.patients, target_dir)
        window = args.window or max(10.0, args.duration / 10)
        report, sampler = drive(target, dataset_file, target_dir, [
            "--soak", "--users", str(args.users), "--rate", str(args.rate), "--duration", str(args.duration),
            "--window", str(window)])
    finally:
        print(f"== soak {label}: stopping ...", file=sys.stderr)
        target.stop()
    for row in report["windows"]:
        row["resources"] = sampler.summarise(row["start"], row["end"])
    result = {"target": label, "rate": args.rate, "users": args.users, "duration": args.duration,
              "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(report["windows"][0]["start"])),
              "windows": report["windows"], "total": report["total"],
              "memory": memory_trend(sampler, report["windows"]),
              "command": " ".join(["bench/load_test.py", *sys.argv[1:]])}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"soak_{slug(label)}.json").write_text(json.dumps(result, indent=1))
    markdown = render_soak(result)
    (RESULTS / f"soak_{slug(label)}.md").write_text(markdown)
    print(markdown)
    return 0


def memory_trend(sampler: Sampler, windows: list[dict]) -> list[dict[str, Any]]:
    """Each process alive from the end of the first window to the end: its RSS then and at the end."""
    if len(windows) < 2:
        return []
    after_warmup = sampler.between(windows[0]["start"], windows[0]["end"])[-1]
    last = sampler.between(windows[0]["start"], windows[-1]["end"])[-1]
    peak: dict[int, int] = {}
    for sample in sampler.between(after_warmup.t, last.t):
        for pid, (_, rss) in sample.rss.items():
            peak[pid] = max(peak.get(pid, 0), rss)
    rows = []
    for pid, (role, rss) in sorted(after_warmup.rss.items()):
        if pid in last.rss and role != "load generator":
            end_rss = last.rss[pid][1]
            private_growth = last.private.get(pid, 0) - after_warmup.private.get(pid, 0)
            rows.append({"pid": pid, "role": role, "rss_mb_after_first_window": round(rss / 2**20, 1),
                         "rss_mb_end": round(end_rss / 2**20, 1), "rss_mb_peak": round(peak[pid] / 2**20, 1),
                         "growth_mb": round((end_rss - rss) / 2**20, 1),
                         "private_mb_end": round(last.private.get(pid, 0) / 2**20, 1),
                         "private_growth_mb": round(private_growth / 2**20, 1)})
    return rows


def render_soak(result: dict[str, Any]) -> str:
    total = result["total"]
    lines = [
        f"### Soak: {result['target']}, {result['users']} clinicians at {result['rate']:g} req/s for "
        f"{result['duration']:g} s ({result['started']})",
        "",
        f"{total['requests']} requests, {total['errors']} errors, p50 {fmt(total['p50_ms'])} ms, "
        f"p99 {fmt(total['p99_ms'])} ms.",
        "",
        "| window | req/s | p50 ms | p99 ms | errors | PG conns min–max | RSS MB by role |",
        "|---:|---:|---:|---:|---:|---:|---|",
    ]
    for number, row in enumerate(result["windows"], 1):
        res = row["resources"]
        rss = ", ".join(f"{role} {mb:g}" for role, mb in res.get("rss_mb", {}).items() if role != "load generator")
        lines.append(f"| {number} | {fmt(row['rps'])} | {fmt(row['p50_ms'])} | {fmt(row['p99_ms'])} | {row['errors']} "
                     f"| {res.get('connections_min', '–')}–{res.get('connections_max', '–')} | {rss} |")
    growth = sorted(result["memory"], key=lambda r: -abs(r["private_growth_mb"]))
    lines += ["", "Resident memory of each process, end of the first window → end (largest private changes first):", "",
              "| process | RSS after first window MB | RSS end MB | RSS peak MB | RSS growth MB "
              "| private (RSS − shared) end MB | private growth MB |", "|---|---:|---:|---:|---:|---:|---:|"]
    for row in growth[:12]:
        lines.append(f"| {row['role']} (pid {row['pid']}) | {row['rss_mb_after_first_window']} | {row['rss_mb_end']} "
                     f"| {row['rss_mb_peak']} | {row['growth_mb']:+g} | {row['private_mb_end']} "
                     f"| {row['private_growth_mb']:+g} |")
    lines += ["", f"`{result['command']}`", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    steps = sub.add_parser("steps", help="step concurrency against each target")
    steps.add_argument("--targets", type=target_specs, default=target_specs("run,up"),
                       help="comma-separated: run, up, run+pooler, up+pooler (default run,up)")
    steps.add_argument("--steps", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 4, 8, 16, 32, 64])
    steps.add_argument("--step-seconds", type=float, default=20, help="measured seconds per step")
    steps.add_argument("--warmup-seconds", type=float, default=10,
                       help="seconds per step before measuring (new emulator workers start)")
    steps.add_argument("--patients", type=int, default=10, help="patients (each with a visit) per clinician")
    steps.add_argument("--limit-requests", type=int, default=2000, help="requests of the in-process limit")
    steps.add_argument("--no-plot", action="store_true")
    soak = sub.add_parser("soak", help="a steady rate against one target")
    soak.add_argument("--target", type=target_specs, default=target_specs("up"), help="run, up, run+pooler, up+pooler")
    soak.add_argument("--duration", type=float, default=600, help="seconds")
    soak.add_argument("--rate", type=float, default=20, help="total requests/s")
    soak.add_argument("--users", type=int, default=8, help="clinicians (concurrent connections)")
    soak.add_argument("--window", type=float, default=None, help="seconds per report row (default duration/10)")
    soak.add_argument("--patients", type=int, default=10)
    args = parser.parse_args(argv)

    def on_sigterm(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    # Ctrl-C and SIGTERM stop every process started, even when started with SIGINT ignored (`&`)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, on_sigterm)
    work = Path(tempfile.mkdtemp(prefix="medrec-load-"))
    try:
        return run_steps(args, work) if args.command == "steps" else run_soak(args, work)
    except (targets.TargetError, dataset.SetupError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; every process started was stopped", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
