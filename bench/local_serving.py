#!/usr/bin/env python3
"""Keep-alive latency of the local HTTP server: `chalice local`'s own handler vs the fixed one
(tools/local_server.py, what `make run` starts) vs the in-process call (chalice.test.Client).

Starts a throwaway PostgreSQL, migrates it, creates the least-privilege API login, seeds patients,
then serves the app twice with `python -m tools.local_server` (``--handler chalice``: the
unpatched ``chalice.local.ChaliceRequestHandler``; ``--handler keepalive``: the fix) and imports it
in-process. Each target answers ``GET /health`` and an authenticated ``GET /v1/patients?limit=1``
alternately over ONE reused HTTP/1.1 connection per round (the first request of a round, which
opens the connection, is not timed); the targets run interleaved in rounds so drift hits them alike.
Then the throughput of ``--connections`` keep-alive connections in parallel, ``--seconds`` each.

Results: markdown on stdout and bench/results/local_serving.{md,json}. Exit status 0 even when the
target (fixed p50 within 2 ms of in-process) is missed; 1 when a request answers an unexpected status.
Usage: python bench/local_serving.py [--requests N] [--rounds N] [--connections N] [--seconds S]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import math
import os
import platform
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for _path in (ROOT / "functions", ROOT):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from bench.harness import run_in_scratch, write_report  # noqa: E402 - after the path set-up

RESULTS_DIR = ROOT / "bench" / "results"
PATHS = ("/health", "/v1/patients?limit=1")
SERVERS = {"chalice local (unpatched handler)": "chalice", "tools.local_server (fixed)": "keepalive"}
IN_PROCESS = "in-process (chalice.test.Client)"
TARGET_MS = 2.0


class UnexpectedStatus(Exception):
    pass


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


def start_server(handler: str, log: Path) -> tuple[subprocess.Popen, int]:
    from tools.pgcluster import free_port

    port = free_port()
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'functions'}:{ROOT}"}
    with open(log, "w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "tools.local_server", "--port", str(port), "--handler", handler],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the {handler} server exited: {log.read_text()}")
        try:
            probe = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            probe.request("GET", "/health")
            probe.getresponse().read()
            probe.close()
            return process, port
        except OSError:
            time.sleep(0.2)
    process.terminate()
    raise RuntimeError(f"the {handler} server did not answer within 60 s")


def http_caller(port: int) -> Callable[[], Callable[[str, dict[str, str]], int]]:
    """A factory of callers, each owning one keep-alive connection."""

    def open_caller() -> Callable[[str, dict[str, str]], int]:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

        def call(path: str, headers: dict[str, str]) -> int:
            connection.request("GET", path, headers=headers)
            response = connection.getresponse()
            response.read()
            if response.will_close:
                raise UnexpectedStatus(f"{path}: the server closed the keep-alive connection")
            return response.status

        call.close = connection.close  # type: ignore[attr-defined]
        return call

    return open_caller


def in_process_caller(client: Any) -> Callable[[], Callable[[str, dict[str, str]], int]]:
    def open_caller() -> Callable[[str, dict[str, str]], int]:
        def call(path: str, headers: dict[str, str]) -> int:
            return client.http.get(path, headers=headers).status_code

        call.close = lambda: None  # type: ignore[attr-defined]
        return call

    return open_caller


def latency_rounds(targets: dict[str, Any], headers: dict[str, dict[str, str]], requests: int,
                   rounds: int) -> dict[str, dict[str, list[float]]]:
    samples = {name: {path: [] for path in PATHS} for name in targets}
    per_round = max(1, requests // rounds)
    for number in range(rounds):
        print(f"round {number + 1}/{rounds} ...", file=sys.stderr)
        for name, open_caller in targets.items():
            call = open_caller()
            try:
                call(PATHS[0], headers[PATHS[0]])  # opens the connection: not timed
                for _ in range(per_round):
                    for path in PATHS:
                        started = time.perf_counter_ns()
                        status = call(path, headers[path])
                        samples[name][path].append((time.perf_counter_ns() - started) / 1e6)
                        if status != 200:
                            raise UnexpectedStatus(f"{name} {path}: {status}")
            finally:
                call.close()  # type: ignore[attr-defined]
    return samples


def throughput(open_caller: Callable, headers: dict[str, dict[str, str]], connections: int,
               seconds: float) -> float:
    counts = [0] * connections
    errors: list[str] = []
    stop_at = time.monotonic() + seconds

    def worker(index: int) -> None:
        call = open_caller()
        try:
            call(PATHS[0], headers[PATHS[0]])
            while time.monotonic() < stop_at:
                path = PATHS[counts[index] % 2]
                status = call(path, headers[path])
                if status != 200:
                    errors.append(f"{path}: {status}")
                    return
                counts[index] += 1
        except Exception as exc:
            errors.append(repr(exc))
        finally:
            call.close()

    threads = [threading.Thread(target=worker, args=(index,)) for index in range(connections)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise UnexpectedStatus(errors[0])
    return sum(counts) / (time.monotonic() - started)


def measure(args: argparse.Namespace, base: Path) -> dict[str, Any]:
    from tools.pgcluster import PostgresCluster

    cluster = PostgresCluster(base / "pg")
    processes: list[subprocess.Popen] = []
    try:
        print("starting PostgreSQL ...", file=sys.stderr)
        cluster.start()
        from bench.api_latency import seed_patients
        from bench.harness import app_database

        owner_url, api_url = app_database(cluster)
        seed_patients(owner_url, args.patients)
        os.environ["DATABASE_URL"] = api_url
        os.environ["JWT_SECRET"] = secrets.token_urlsafe(32)
        os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "medical-records")
        os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

        print("starting the servers ...", file=sys.stderr)
        targets: dict[str, Any] = {}
        for name, handler in SERVERS.items():
            process, port = start_server(handler, base / f"{handler}.log")
            processes.append(process)
            targets[name] = http_caller(port)
        # The app logs one line per request to stdout, as the servers do to their log files.
        devnull = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
        with contextlib.redirect_stdout(devnull):
            from chalice.test import Client

            from app import app
            from chalicelib.api import auth
        client = Client(app)
        targets[IN_PROCESS] = in_process_caller(client)
        token = auth.mint("bench-local", ["read", "write", "admin"], 12 * 3600)
        headers = {"/health": {}, "/v1/patients?limit=1": {"Authorization": f"Bearer {token}"}}

        with contextlib.redirect_stdout(devnull):
            samples = latency_rounds(targets, headers, args.requests, args.rounds)
            rates = {}
            for name, open_caller in targets.items():
                if name == IN_PROCESS:
                    continue
                print(f"throughput: {name}, {args.connections} connections ...", file=sys.stderr)
                rates[name] = throughput(open_caller, headers, args.connections, args.seconds)
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=10)
        with contextlib.suppress(Exception):
            from chalicelib.api import dependencies

            if dependencies.database.cache_info().currsize:
                dependencies.database().close()
        cluster.stop()

    stats = {
        name: {
            path: {"p50_ms": percentile(values, 50), "p99_ms": percentile(values, 99), "n": len(values)}
            for path, values in by_path.items()
        }
        for name, by_path in samples.items()
    }
    return {"stats": stats, "throughput_rps": rates}


def render(report: dict[str, Any], command: str) -> str:
    stats, rates = report["stats"], report["throughput_rps"]
    plain, fixed = list(SERVERS)
    lines = [
        "# Local HTTP serving over keep-alive",
        "",
        f"`{command}` — {report['when']}, {report['machine']}",
        "",
        "| target | path | n | p50 ms | p99 ms | p50 / in-process | p50 − in-process ms |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name in [*SERVERS, IN_PROCESS]:
        for path in PATHS:
            row = stats[name][path]
            base = stats[IN_PROCESS][path]["p50_ms"]
            lines.append(f"| {name} | `GET {path}` | {row['n']} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} "
                         f"| {row['p50_ms'] / base:.1f}× | {row['p50_ms'] - base:+.2f} |")
    lines += ["", "| path | unpatched p50 / fixed p50 | target: fixed p50 within 2 ms of in-process |",
              "|---|---:|---|"]
    for path in PATHS:
        delta = stats[fixed][path]["p50_ms"] - stats[IN_PROCESS][path]["p50_ms"]
        verdict = "MET" if delta <= TARGET_MS else "MISS"
        lines.append(f"| `GET {path}` | {stats[plain][path]['p50_ms'] / stats[fixed][path]['p50_ms']:.1f}× "
                     f"| {verdict} ({delta:+.2f} ms) |")
    lines += ["", f"Throughput, {report['connections']} keep-alive connections in parallel "
              f"({report['seconds']:.0f} s each, alternating the two paths):", ""]
    lines += [f"- {name}: {rate:.0f} req/s" for name, rate in rates.items()]
    lines.append(f"- fixed / unpatched: {rates[fixed] / rates[plain]:.1f}×")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=200, help="timed requests per path and target")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--patients", type=int, default=100)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    try:
        report = run_in_scratch("medrec-bench-local-", lambda base: measure(args, base))
    except UnexpectedStatus as exc:
        print(f"unexpected answer: {exc}", file=sys.stderr)
        return 1
    if report is None:
        return 130
    report.update(when=datetime.now(UTC).isoformat(timespec="seconds"), connections=args.connections,
                  seconds=args.seconds, machine=f"{platform.machine()}, {os.cpu_count()} CPUs, "
                  f"Python {platform.python_version()}", args=vars(args))
    command = "python bench/local_serving.py " + " ".join(sys.argv[1:])
    write_report(RESULTS_DIR, "local_serving", report, render(report, command.strip()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
