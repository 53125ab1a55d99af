#!/usr/bin/env python3
"""Cold start: wall time to ``import app`` in a fresh Python process, against a bare ``python -c pass``.

Each run is a new process started by this script with the interpreter running it; the time is
measured from just before the process is spawned to its exit, so the spawn and interpreter start-up
are in both numbers and the difference is the cost of importing the app. Runs of the variants are
interleaved so drift affects them alike. Needs no database: DATABASE_URL points at a socket this
script listens on, and the report says whether importing the app connected to it (it must not).

Variants (all with cwd=functions, PYTHONPATH=functions:<repo>, the app's environment):

* ``python -c pass``: the floor.
* ``python -c "import app"``: with the bytecode cache (__pycache__) as a developer machine has it.
* a Lambda-like package: app.py, chalicelib and the dependencies that ``import app`` loads, copied
  into one directory without any .pyc and run with ``python -S`` (no site-packages) and
  PYTHONDONTWRITEBYTECODE=1. That is what a chalice-packaged Lambda pays: chalice unpacks
  dependency wheels without compiling them and /var/task is read-only, so every cold start compiles
  them again (the runtime's standard library keeps its cache, as here). The same package after
  ``compileall`` shows what shipping .pyc files would save. Both compare against ``python -S -c pass``.
* import + first request: a fresh process imports app, builds the chalice test client, and sends
  one GET /v1/patients/{id} with a valid token, then a second one; phases are timed separately,
  because lazy imports (PyJWT in the authorizer) and the first connection move cost to the first
  request. Without --with-db the database is unreachable and the GET answers 503, so connection
  set-up and SQL are missing from it; --with-db starts a throwaway PostgreSQL for this variant.

Results: a markdown report on stdout and bench/results/cold_start.{json,md}.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import re
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FUNCTIONS = ROOT / "functions"
for _path in (FUNCTIONS, ROOT):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from bench.harness import run_in_scratch, write_report  # noqa: E402 - after the path set-up

RESULTS_DIR = ROOT / "bench" / "results"
TARGET_EXTRA_MS = 150.0
BASELINES = {"import": "bare", "package_no_pyc": "bare_S", "package_pyc": "bare_S", "first_request": "bare"}

# Run in the fresh process for the first-request variant. Times are CLOCK_MONOTONIC (system-wide on
# Linux), so the parent can relate them to the moment it spawned the process.
FIRST_REQUEST_CHILD = r"""
import json, os, sys, time
t_start = time.monotonic_ns()
import app
t_imported = time.monotonic_ns()
deferred = {m: m in sys.modules for m in ("jwt", "psycopg2", "pydantic", "boto3", "chalice.local")}
modules = len(sys.modules)
from chalice.test import Client
client = Client(app.app)
t_client = time.monotonic_ns()
headers = {"Authorization": "Bearer " + os.environ["BENCH_TOKEN"], "Content-Type": "application/json"}
path = os.environ["BENCH_PATH"]
first = client.http.request("GET", path, headers=headers)
t_first = time.monotonic_ns()
second = client.http.request("GET", path, headers=headers)
t_second = time.monotonic_ns()
with open(os.environ["BENCH_OUT"], "w") as fh:
    json.dump({
        "t_start": t_start, "t_imported": t_imported, "t_client": t_client, "t_first": t_first,
        "t_second": t_second, "first_status": first.status_code, "second_status": second.status_code,
        "loaded_at_import": deferred, "modules_after_import": modules,
    }, fh)
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "runs": len(values),
        "median_ms": statistics.median(values),
        "p90_ms": percentile(values, 90),
        "min_ms": min(values),
        "max_ms": max(values),
    }


def closed_port() -> int:
    """A local port nothing listens on (connecting to it is refused at once)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def spawn(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, int, int]:
    """Run to completion; return (wall ms, spawn monotonic ns, exit code)."""
    started = time.monotonic_ns()
    proc = subprocess.run(
        argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, check=False, timeout=120,
    )  # fmt: skip
    elapsed = (time.monotonic_ns() - started) / 1e6
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stderr.decode(errors='replace')}")
    return elapsed, started, proc.returncode


def import_profile(env: dict[str, str]) -> list[dict[str, Any]]:
    """One ``-X importtime`` run: self time summed by top-level package, largest first."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import app"], cwd=FUNCTIONS, env=env,
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=True, timeout=120,
    )  # fmt: skip
    by_package: dict[str, int] = defaultdict(int)
    for line in proc.stderr.decode(errors="replace").splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+\d+ \|\s*(\S+)", line)
        if match:
            by_package[match.group(2).split(".")[0]] += int(match.group(1))
    total = sum(by_package.values())
    rows = sorted(by_package.items(), key=lambda kv: kv[1], reverse=True)
    return [{"package": name, "self_ms": us / 1000, "share": us / total} for name, us in rows[:12]]


PACKAGE_LISTER = r"""
import json, sys, sysconfig
import app
stdlib = {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib")}
roots = sorted((p for p in sys.path if p and "-packages" in p), key=len, reverse=True)
found = {}
for module in list(sys.modules.values()):
    path = getattr(module, "__file__", None) or ""
    for root in roots:
        if path.startswith(root + "/"):
            found[path[len(root) + 1:].split("/")[0]] = root
            break
print(json.dumps(found))
"""


def build_package(env: dict[str, str], destination: Path, compile_bytecode: bool) -> Path:
    """A Lambda-like deployment directory: app.py, chalicelib and the dependencies ``import app`` loads.

    No __pycache__ is copied; with ``compile_bytecode`` the directory is then compiled (compileall).
    """
    listing = subprocess.run(
        [sys.executable, "-c", PACKAGE_LISTER], cwd=FUNCTIONS, env=env, capture_output=True, text=True,
        check=True, timeout=120,
    ).stdout  # fmt: skip
    found: dict[str, str] = json.loads(listing.strip().splitlines()[-1])
    no_cache = shutil.ignore_patterns("__pycache__", "*.pyc")
    destination.mkdir(parents=True)
    shutil.copy2(FUNCTIONS / "app.py", destination / "app.py")
    shutil.copytree(FUNCTIONS / "chalicelib", destination / "chalicelib", ignore=no_cache)
    roots = set(found.values())
    for name, root in found.items():
        if name.startswith("_distutils_hack"):  # from a venv .pth file, not part of a package
            continue
        source = Path(root) / name
        if source.is_dir():
            ignore = no_cache
            if name == "botocore":  # its service models are data, and large; imports do not read them here
                ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "data")
            shutil.copytree(source, destination / name, ignore=ignore)
        else:
            shutil.copy2(source, destination / name)
    for root in roots:  # wheels bring their metadata and bundled shared libraries along
        for extra in Path(root).iterdir():
            if extra.name.endswith((".dist-info", ".libs")) and not (destination / extra.name).exists():
                shutil.copytree(extra, destination / extra.name, ignore=no_cache)
    if compile_bytecode:
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(destination)], check=True, timeout=300)
    return destination


@contextlib.contextmanager
def throwaway_database(base: Path):
    """A migrated database with the API login and one patient: yields (api_url, patient_id)."""
    from bench.api_latency import seed_patients
    from bench.harness import app_database
    from tools.pgcluster import PostgresCluster

    cluster = PostgresCluster(base / "pg")
    try:
        print("starting PostgreSQL for the first-request runs ...", file=sys.stderr)
        cluster.start()
        owner_url, api_url = app_database(cluster)
        patient_id = seed_patients(owner_url, 1)[0][0]
        yield api_url, patient_id
    finally:
        cluster.stop()


def measure(args: argparse.Namespace, base: Path) -> dict[str, Any]:
    jwt_secret = secrets.token_urlsafe(32)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.setblocking(False)
    trap_url = f"postgresql://bench:bench@127.0.0.1:{listener.getsockname()[1]}/app?connect_timeout=1"

    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "DATABASE_", "JWT_"))}
    base_env.update({
        "PYTHONPATH": f"{FUNCTIONS}{os.pathsep}{ROOT}",
        "DATABASE_URL": trap_url,
        "JWT_SECRET": jwt_secret,
        "POWERTOOLS_SERVICE_NAME": os.environ.get("POWERTOOLS_SERVICE_NAME", "medical-records"),
        "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
    })  # fmt: skip
    print("building Lambda-like package directories ...", file=sys.stderr)
    packaged: dict[str, tuple[Path, dict[str, str]]] = {}
    for name, compiled in (("package_no_pyc", False), ("package_pyc", True)):
        directory = build_package(base_env, base / name, compiled)
        packaged[name] = (directory, {**base_env, "PYTHONPATH": str(directory), "PYTHONDONTWRITEBYTECODE": "1"})

    os.environ["JWT_SECRET"] = jwt_secret
    from chalicelib.api import auth

    token = auth.mint("bench-user", ["read"], ttl_seconds=12 * 3600, secret=jwt_secret)

    with contextlib.ExitStack() as stack:
        if args.with_db:
            db_url, patient_id = stack.enter_context(throwaway_database(base))
            first_db = "a throwaway PostgreSQL (fsync on), API login, one patient: 200 expected"
        else:
            db_url, patient_id = f"postgresql://bench:bench@127.0.0.1:{closed_port()}/app", 1
            first_db = "no database (connection refused): 503 expected; excludes connection set-up and SQL"
        first_env = {
            **base_env, "DATABASE_URL": db_url, "BENCH_TOKEN": token,
            "BENCH_PATH": f"/v1/patients/{patient_id}", "BENCH_OUT": str(base / "first.json"),
        }  # fmt: skip

        variants = {
            "bare": ([sys.executable, "-c", "pass"], base_env, FUNCTIONS),
            "import": ([sys.executable, "-c", "import app"], base_env, FUNCTIONS),
            "bare_S": ([sys.executable, "-S", "-c", "pass"], packaged["package_no_pyc"][1], base),
            "package_no_pyc": ([sys.executable, "-S", "-c", "import app"], *reversed(packaged["package_no_pyc"])),
            "package_pyc": ([sys.executable, "-S", "-c", "import app"], *reversed(packaged["package_pyc"])),
            "first_request": ([sys.executable, "-c", FIRST_REQUEST_CHILD], first_env, FUNCTIONS),
        }
        print("warming up (one run of each; writes the app's bytecode cache) ...", file=sys.stderr)
        for argv, env, cwd in variants.values():
            spawn(argv, env, cwd)

        walls: dict[str, list[float]] = {name: [] for name in variants}
        phases: dict[str, list[float]] = defaultdict(list)
        statuses: set[tuple[int, int]] = set()
        loaded: dict[str, bool] = {}
        modules = 0
        print(f"measuring {args.runs} runs of each variant, interleaved ...", file=sys.stderr)
        for _ in range(args.runs):
            for name, (argv, env, cwd) in variants.items():
                wall, spawned, _code = spawn(argv, env, cwd)
                walls[name].append(wall)
                if name == "first_request":
                    child = json.loads((base / "first.json").read_text())
                    ms = 1e6
                    phases["spawn → import app starts (interpreter start-up)"].append((child["t_start"] - spawned) / ms)
                    phases["import app"].append((child["t_imported"] - child["t_start"]) / ms)
                    phases["test client set-up (harness only, not in Lambda)"].append(
                        (child["t_client"] - child["t_imported"]) / ms
                    )
                    phases["first GET"].append((child["t_first"] - child["t_client"]) / ms)
                    phases["second GET (same process, warm)"].append((child["t_second"] - child["t_first"]) / ms)
                    phases["import app + first GET"].append(
                        (child["t_imported"] - child["t_start"] + child["t_first"] - child["t_client"]) / ms
                    )
                    phases["spawn → first GET answered (incl. harness set-up)"].append(
                        (child["t_first"] - spawned) / ms
                    )
                    statuses.add((child["first_status"], child["second_status"]))
                    loaded = child["loaded_at_import"]
                    modules = child["modules_after_import"]

    connected = 0
    with contextlib.suppress(BlockingIOError):
        while True:
            conn, _ = listener.accept()
            conn.close()
            connected += 1
    listener.close()

    print("profiling the import (-X importtime) ...", file=sys.stderr)
    packages = import_profile(base_env)

    stats = {name: summary(values) for name, values in walls.items()}
    extra = {
        name: {
            "baseline": baseline,
            "median_ms": stats[name]["median_ms"] - stats[baseline]["median_ms"],
            "p90_ms": stats[name]["p90_ms"] - stats[baseline]["p90_ms"],
        }
        for name, baseline in BASELINES.items()
    }
    return {
        "started_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "environment": {
            "python": platform.python_version(),
            "executable": sys.executable,
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        },
        "runs": args.runs,
        "wall": stats,
        "extra_over_bare": extra,
        "target": {
            "text": f"import app adds {extra['import']['median_ms']:.1f} ms (median) over bare Python; "
            f"target < {TARGET_EXTRA_MS:.0f} ms",
            "met": extra["import"]["median_ms"] < TARGET_EXTRA_MS,
        },
        "first_request": {
            "database": first_db,
            "statuses": sorted(statuses),
            "phases": {name: summary(values) for name, values in phases.items()},
            "loaded_at_import": loaded,
            "modules_after_import": modules,
        },
        "import_connected_to_database": connected > 0,
        "connections_during_import": connected,
        "import_self_time_by_package": packages,
    }


def fmt(value: float) -> str:
    return f"{value:.1f}"


def render_markdown(report: dict[str, Any]) -> str:
    env = report["environment"]
    wall, extra = report["wall"], report["extra_over_bare"]
    first_phases = report["first_request"]["phases"]
    labels = {
        "bare": "`python -c pass`",
        "import": "`python -c \"import app\"` (repo + venv, bytecode cache present)",
        "bare_S": "`python -S -c pass` (no site-packages)",
        "package_no_pyc": "`python -S -c \"import app\"` in a Lambda-like package, no .pyc (as chalice packages it)",
        "package_pyc": "the same package after `compileall` (.pyc shipped)",
        "first_request": "import app + test client + 2 GETs (first-request variant, whole process)",
    }
    lines = [
        "# Cold start",
        "",
        f"{report['started_at']} · Python {env['python']} · {env['platform']} · {env['cpus']} CPUs · "
        f"{report['runs']} runs per variant, interleaved; wall time from spawn to exit",
        "",
        "| variant | runs | median ms | p90 ms | median − its bare | p90 − its bare |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, label in labels.items():
        row = wall[name]
        diff = ("–", "–") if name not in extra else (fmt(extra[name]["median_ms"]), fmt(extra[name]["p90_ms"]))
        lines.append(f"| {label} | {row['runs']} | {fmt(row['median_ms'])} | {fmt(row['p90_ms'])} | {diff[0]} | "
                     f"{diff[1]} |")  # fmt: skip
    target = report["target"]
    lines += [
        "",
        f"- {'PASS' if target['met'] else 'MISS'}: {target['text']}.",
        f"- Measured inside the process, `import app` takes {fmt(first_phases['import app']['median_ms'])} ms "
        "(median); the wall-time difference above also holds interpreter shutdown (unloading the modules), "
        "which a Lambda container does not pay per request.",
        f"- In a Lambda-like package without .pyc the import adds {fmt(extra['package_no_pyc']['median_ms'])} ms "
        f"(median; {fmt(extra['package_pyc']['median_ms'])} ms with .pyc shipped): chalice unpacks dependency "
        "wheels without compiling them and /var/task is read-only, so a deployed Lambda compiles every "
        "module of the app and its dependencies from source on each cold start unless the package ships .pyc.",
        f"- Importing app {'CONNECTED' if report['import_connected_to_database'] else 'did not connect'} to the "
        f"database ({report['connections_during_import']} connection attempts on the trap socket).",
    ]
    first = report["first_request"]
    loaded = ", ".join(f"{m} {'loaded' if v else 'deferred'}" for m, v in first["loaded_at_import"].items())
    lines += [
        "",
        "## First request in a fresh process",
        "",
        f"Database: {first['database']}. Statuses (first, second): {first['statuses']}. "
        f"After `import app`: {first['modules_after_import']} modules; {loaded}.",
        "",
        "| phase | median ms | p90 ms |",
        "|---|---:|---:|",
    ]
    for name, row in first["phases"].items():
        lines.append(f"| {name} | {fmt(row['median_ms'])} | {fmt(row['p90_ms'])} |")
    lines += [
        "",
        "First GET − second GET is what the first request pays for lazy imports and first use of code paths"
        + (", and for opening the database connection." if "throwaway" in first["database"] else
           "; without a database, connection set-up (TCP + SCRAM authentication) is not in it (see --with-db)."),
        "",
        "## Import self time by top-level package (one `-X importtime` run, bytecode cache present)",
        "",
        "| package | self ms | share |",
        "|---|---:|---:|",
    ]  # fmt: skip
    for row in report["import_self_time_by_package"]:
        lines.append(f"| {row['package']} | {row['self_ms']:.1f} | {100 * row['share']:.0f}% |")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Wall time to import the app in a fresh Python process vs bare Python, and the first "
        "request in a fresh process. Writes bench/results/cold_start.{json,md}.",
    )
    parser.add_argument("--runs", type=int, default=30, help="runs per variant (default 30, minimum 20)")
    parser.add_argument(
        "--with-db", action="store_true",
        help="start a throwaway PostgreSQL so the first GET is a real 200 (default: no database, the GET gets 503)",
    )  # fmt: skip
    parser.add_argument("--output-dir", type=Path, default=RESULTS_DIR, help="default bench/results")
    args = parser.parse_args(argv)
    if args.runs < 20:
        parser.error("--runs must be at least 20")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = run_in_scratch("medrec-coldstart-", lambda base: measure(args, base))
    if report is None:
        return 130
    write_report(args.output_dir, "cold_start", report, render_markdown(report))
    if report["import_connected_to_database"]:
        print("error: importing app opened a database connection", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
