#!/usr/bin/env python3
"""Cold start: what a new Lambda container pays before it answers, from import to first answer.

Each run is a new process started by this script with the interpreter running it. Runs of the variants
are interleaved so drift affects them alike.

Import (wall time from spawn; the import variants exit with os._exit, because a Lambda container is
never torn down between requests; a normal exit, which unloads every module, is reported beside it):

* ``python -c pass``: the floor, and ``python -c "import app"`` with the bytecode cache present. Here
  DATABASE_URL points at a socket this script listens on: importing the app must not connect to it.
* a Lambda-like package: app.py, chalicelib and the dependencies that ``import app`` loads, copied
  into one directory and run with ``python -S`` (no site-packages) and PYTHONDONTWRITEBYTECODE=1,
  without .pyc and after ``compileall`` (what ``make template`` ships); against ``python -S -c pass``.

A new container, phase by phase: a fresh process does what the Lambda runtime does: it imports the
handler module, then invokes the handler with the event API Gateway sends; the API handler reads its
database secret from the AWS emulator's Secrets Manager (ministack, started here), connects to a
PostgreSQL that speaks TLS on this machine's non-loopback address (so sslmode=verify-full applies, with
a CA made here), and answers GET /v1/patients/{id} twice; the authorizer reads its signing key's secret
and checks a token twice. Each phase is timed in the child (CLOCK_MONOTONIC).

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
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parent.parent
FUNCTIONS = ROOT / "functions"
for _path in (FUNCTIONS, ROOT):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from bench.harness import run_in_scratch, write_report  # noqa: E402 - after the path set-up

RESULTS_DIR = ROOT / "bench" / "results"
TARGET_EXTRA_MS = 150.0
TARGET_FIRST_REQUEST_MS = 300.0
BASELINES = {"import": "bare", "import_teardown": "bare_teardown", "package_no_pyc": "bare_S", "package_pyc": "bare_S"}

# A new Lambda container of the API handler, in a fresh process: the runtime imports the handler module,
# then the first invocation reads the database secret, connects (TLS, verify-full) and answers; the
# second invocation is warm. Times are CLOCK_MONOTONIC (system-wide on Linux), so the parent can relate
# them to the moment it spawned the process. The handler is called as the Lambda runtime calls it.
API_CONTAINER_CHILD = r"""
import json, os, sys, time
t_start = time.monotonic_ns()
import app
t_imported = time.monotonic_ns()
loaded = {m: m in sys.modules for m in ("jwt", "psycopg2", "pydantic", "boto3", "chalice.local")}
modules = len(sys.modules)
from chalicelib import config
from chalicelib.api.dependencies import database
config.database_dsn()                     # the database secret (Secrets Manager), once per container
t_secret = time.monotonic_ns()
database().connection()                   # TCP + TLS handshake (verify-full) + SCRAM authentication
t_connect = time.monotonic_ns()

class Context:
    aws_request_id = "bench"
    function_name = "APIHandler"
    def get_remaining_time_in_millis(self):
        return 30000

event = json.loads(os.environ["BENCH_EVENT"])
first = app.app(event, Context())
t_first = time.monotonic_ns()
second = app.app(event, Context())
t_second = time.monotonic_ns()
with open(os.environ["BENCH_OUT"], "w") as fh:
    json.dump({"t_start": t_start, "t_imported": t_imported, "t_secret": t_secret, "t_connect": t_connect,
               "t_first": t_first, "t_second": t_second, "first_status": first["statusCode"],
               "second_status": second["statusCode"], "loaded_at_import": loaded,
               "modules_after_import": modules}, fh)
os._exit(0)
"""

# A new container of the authorizer: import, read the signing key's secret, verify the first token.
AUTHORIZER_CONTAINER_CHILD = r"""
import json, os, sys, time
t_start = time.monotonic_ns()
import app
t_imported = time.monotonic_ns()
from chalicelib import config
config.jwt_secret()                       # the signing key's secret (Secrets Manager), once per container
t_secret = time.monotonic_ns()
event = {"type": "TOKEN", "authorizationToken": "Bearer " + os.environ["BENCH_TOKEN"],
         "methodArn": "arn:aws:execute-api:us-east-1:123456789012:bench/api/GET/v1/patients/1"}
first = app.jwt_authorizer(event, None)
t_first = time.monotonic_ns()
second = app.jwt_authorizer(event, None)
t_second = time.monotonic_ns()
allowed = lambda policy: policy["policyDocument"]["Statement"][0]["Effect"] == "Allow"
with open(os.environ["BENCH_OUT"], "w") as fh:
    json.dump({"t_start": t_start, "t_imported": t_imported, "t_secret": t_secret, "t_connect": t_secret,
               "t_first": t_first, "t_second": t_second, "first_status": 200 if allowed(first) else 401,
               "second_status": 200 if allowed(second) else 401}, fh)
os._exit(0)
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
def container_world(base: Path):
    """What a new container reaches on its first request: the emulator's Secrets Manager holding the
    database and signing-key secrets, and a migrated PostgreSQL that speaks TLS on a non-loopback
    address of this machine (so the functions verify it, sslmode=verify-full), with the API login and
    one patient. Yields (environment for the children, the extra environment that reads secrets through the
    Parameters and Secrets extension's stand-in, patient id, TLS note)."""
    import boto3

    from bench.api_latency import seed_patients
    from bench.harness import app_database
    from chalicelib.config import SECRETS_EXTENSION_PORT_VARIABLE
    from tools import stack
    from tools.certificates import non_loopback_address, write_tls_files
    from tools.pgcluster import PostgresCluster, free_port
    from tools.secrets_extension import SecretsExtensionStandIn

    address = non_loopback_address()
    tls_note = (f"TLS verify-full to {address} (this machine's non-loopback address)" if address else
                "no non-loopback address on this machine: the connection is loopback, without TLS")
    cluster = PostgresCluster(base / "pg", host=address or "127.0.0.1")
    tls = write_tls_files(base / "certs", (address,), cluster._os_user()) if address else None
    if tls:
        cluster.settings.update(tls.server_settings())
    emulator = extension = None
    try:
        print("starting PostgreSQL and the AWS emulator for the container runs ...", file=sys.stderr)
        cluster.start()
        if address:  # initdb trusts loopback only: let clients reach the server over TLS on this address
            with open(cluster.pgdata / "pg_hba.conf", "a") as hba:
                hba.write(f"hostssl all all {address}/32 scram-sha-256\n")
            postmaster = int((cluster.pgdata / "postmaster.pid").read_text().split()[0])
            os.kill(postmaster, signal.SIGHUP)
            time.sleep(0.5)
            os.environ["DATABASE_CA_BUNDLE"] = str(tls.ca)  # this script's own connections verify it too
        owner_url, api_url = app_database(cluster)
        patient_id = seed_patients(owner_url, 1)[0][0]
        port = free_port()
        emulator = stack.ministack(port, base / "ministack")
        endpoint = f"http://127.0.0.1:{port}"
        aws = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
               "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1"}
        client = boto3.client("secretsmanager", endpoint_url=endpoint, region_name="us-east-1",
                              aws_access_key_id="test", aws_secret_access_key="test")  # noqa: S106 - the emulator's
        parts = urlsplit(api_url)
        database_secret = {"engine": "postgres", "host": parts.hostname, "port": parts.port, "dbname": "app",
                           "username": unquote(parts.username or ""), "password": unquote(parts.password or "")}
        env = {
            **aws,
            "DATABASE_SECRET_ARN": client.create_secret(Name="bench/database",
                                                        SecretString=json.dumps(database_secret))["ARN"],
            "JWT_SECRET_ARN": client.create_secret(Name="bench/jwt", SecretString=os.environ["JWT_SECRET"])["ARN"],
            **({"DATABASE_CA_BUNDLE": str(tls.ca)} if tls else {}),
        }
        # The same secrets behind the Parameters and Secrets extension's interface (a loopback stand-in).
        extension = SecretsExtensionStandIn({env["DATABASE_SECRET_ARN"]: json.dumps(database_secret),
                                             env["JWT_SECRET_ARN"]: os.environ["JWT_SECRET"]},
                                            session_token="bench-session").start()  # noqa: S106 - a test value
        extension_env = {SECRETS_EXTENSION_PORT_VARIABLE: str(extension.port), "AWS_SESSION_TOKEN": "bench-session"}
        yield env, extension_env, patient_id, tls_note
    finally:
        if extension is not None:
            extension.stop()
        if emulator is not None:
            emulator.stop()
        cluster.stop()


def api_event(patient_id: int, token_subject: str) -> dict[str, Any]:
    """The API Gateway proxy event of GET /v1/patients/{id} as the authorizer has let it through."""
    path = f"/v1/patients/{patient_id}"
    return {
        "resource": "/v1/patients/{patientId}", "path": path, "httpMethod": "GET",
        "headers": {"Accept": "application/json", "Host": "bench.execute-api"},
        "multiValueHeaders": {}, "queryStringParameters": None, "multiValueQueryStringParameters": None,
        "pathParameters": {"patientId": str(patient_id)}, "stageVariables": None, "body": None,
        "isBase64Encoded": False,
        "requestContext": {
            "resourcePath": "/v1/patients/{patientId}", "httpMethod": "GET", "path": f"/api{path}",
            "requestId": "bench-request", "stage": "api", "identity": {"sourceIp": "127.0.0.1"},
            "authorizer": {"principalId": token_subject, "scope": "read write admin", "patient_id": "",
                           "exp": str(int(time.time()) + 3600)},
        },
    }  # fmt: skip


def measure(args: argparse.Namespace, base: Path) -> dict[str, Any]:
    jwt_secret = secrets.token_urlsafe(32)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.setblocking(False)
    trap_url = f"postgresql://bench:bench@127.0.0.1:{listener.getsockname()[1]}/app?connect_timeout=1"

    base_env = {k: v for k, v in os.environ.items()
                if not k.startswith(("PYTHON", "DATABASE_", "JWT_", "AWS_"))}  # fmt: skip
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

    token = auth.mint("bench-user", ["read", "write", "admin"], ttl_seconds=12 * 3600, secret=jwt_secret)
    exit_now = "; import os; os._exit(0)"  # a container is never torn down between requests

    with contextlib.ExitStack() as stack:
        world_env, extension_env, patient_id, tls_note = stack.enter_context(container_world(base))
        # Deployed, the functions have no DATABASE_URL / JWT_SECRET: they read the secrets.
        container_env = {k: v for k, v in base_env.items() if k not in ("DATABASE_URL", "JWT_SECRET")}
        container_env.update(world_env)
        variants = {
            "bare": ([sys.executable, "-c", "pass" + exit_now], base_env, FUNCTIONS),
            "import": ([sys.executable, "-c", "import app" + exit_now], base_env, FUNCTIONS),
            "bare_teardown": ([sys.executable, "-c", "pass"], base_env, FUNCTIONS),
            "import_teardown": ([sys.executable, "-c", "import app"], base_env, FUNCTIONS),
            "bare_S": ([sys.executable, "-S", "-c", "pass" + exit_now], packaged["package_no_pyc"][1], base),
            "package_no_pyc": ([sys.executable, "-S", "-c", "import app" + exit_now],
                               *reversed(packaged["package_no_pyc"])),
            "package_pyc": ([sys.executable, "-S", "-c", "import app" + exit_now], *reversed(packaged["package_pyc"])),
            "api_container": ([sys.executable, "-c", API_CONTAINER_CHILD], {
                **container_env, "BENCH_EVENT": json.dumps(api_event(patient_id, "bench-user")),
                "BENCH_OUT": str(base / "api_container.json")}, FUNCTIONS),
            "api_container_extension": ([sys.executable, "-c", API_CONTAINER_CHILD], {
                **container_env, **extension_env, "BENCH_EVENT": json.dumps(api_event(patient_id, "bench-user")),
                "BENCH_OUT": str(base / "api_container_extension.json")}, FUNCTIONS),
            "authorizer_container": ([sys.executable, "-c", AUTHORIZER_CONTAINER_CHILD], {
                **container_env, "BENCH_TOKEN": token, "BENCH_OUT": str(base / "authorizer_container.json")},
                FUNCTIONS),
        }  # fmt: skip
        print("warming up (one run of each; writes the app's bytecode cache) ...", file=sys.stderr)
        for argv, env, cwd in variants.values():
            spawn(argv, env, cwd)

        walls: dict[str, list[float]] = {name: [] for name in variants}
        containers: dict[str, dict[str, Any]] = {
            name: {"phases": defaultdict(list), "statuses": set()} for name in CONTAINERS
        }
        loaded: dict[str, bool] = {}
        modules = 0
        print(f"measuring {args.runs} runs of each variant, interleaved ...", file=sys.stderr)
        for _ in range(args.runs):
            for name, (argv, env, cwd) in variants.items():
                wall, spawned, _code = spawn(argv, env, cwd)
                walls[name].append(wall)
                if name in CONTAINERS:
                    child = json.loads((base / f"{name}.json").read_text())
                    record_phases(containers[name]["phases"], spawned, child)
                    containers[name]["statuses"].add((child["first_status"], child["second_status"]))
                    loaded = child.get("loaded_at_import", loaded)
                    modules = child.get("modules_after_import", modules)
        emulator = (emulator_cold_starts(world_env, api_event(patient_id, "bench-user"), args.emulator_runs)
                    if args.emulator_runs else None)

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
    container_report = {
        name: {
            "statuses": sorted(data["statuses"]),
            "phases": {phase: summary(values) for phase, values in data["phases"].items()},
        }
        for name, data in containers.items()
    }
    beyond_start = container_report["api_container"]["phases"][FIRST_ANSWER]["median_ms"]
    beyond_start_extension = container_report["api_container_extension"]["phases"][FIRST_ANSWER]["median_ms"]
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
        "targets": [
            {
                "text": f"import app adds {extra['import']['median_ms']:.1f} ms (median) over bare Python; "
                f"target ≤ {TARGET_EXTRA_MS:.0f} ms",
                "met": extra["import"]["median_ms"] <= TARGET_EXTRA_MS,
            },
            *([{
                "text": f"in the AWS emulator, a new API handler's first invocation takes "
                f"{emulator['api_beyond_worker_start_ms']:.1f} ms (median) longer than a do-nothing function's; "
                f"target ≤ {TARGET_FIRST_REQUEST_MS:.0f} ms",
                "met": emulator["api_beyond_worker_start_ms"] <= TARGET_FIRST_REQUEST_MS,
            }] if emulator else []),
            {
                "text": f"a new API container answers its first request {beyond_start:.1f} ms (median) after "
                f"its interpreter started (import, secret from Secrets Manager through the AWS SDK, TLS connect, "
                f"first query); target ≤ {TARGET_FIRST_REQUEST_MS:.0f} ms",
                "met": beyond_start <= TARGET_FIRST_REQUEST_MS,
            },
            {
                "text": f"the same with the secret read through the Parameters and Secrets extension: "
                f"{beyond_start_extension:.1f} ms (median); target ≤ {TARGET_FIRST_REQUEST_MS:.0f} ms",
                "met": beyond_start_extension <= TARGET_FIRST_REQUEST_MS,
            },
        ],
        "containers": container_report,
        "emulator": emulator,
        "tls": tls_note,
        "loaded_at_import": loaded,
        "modules_after_import": modules,
        "import_connected_to_database": connected > 0,
        "connections_during_import": connected,
        "import_self_time_by_package": packages,
    }


NOOP_HANDLER = "def handler(event, context):\n    return {'statusCode': 200, 'body': ''}\n"


def emulator_cold_starts(world_env: dict[str, str], event: dict[str, Any], runs: int) -> dict[str, Any]:
    """First and second invocation of a new function in the AWS emulator: a do-nothing handler added to the
    deployment package (the emulator's own worker start, unpacking that package included) against the API
    handler of the same package. Each run creates both functions afresh, so each first invocation starts a
    new worker."""
    import io
    import zipfile

    import boto3

    package = ROOT / ".build" / "deployment.zip"
    if not package.exists():
        print("building the deployment package (infra/build_template.py) ...", file=sys.stderr)
        subprocess.run([sys.executable, str(ROOT / "infra" / "build_template.py")], check=True, timeout=900)
    bundle = package.read_bytes()
    noop = io.BytesIO(bundle)  # the same package (the emulator unpacks it for each new worker), plus a no-op
    with zipfile.ZipFile(noop, "a") as archive:
        archive.writestr("bench_noop.py", NOOP_HANDLER)
    codes = {"noop": (noop.getvalue(), "bench_noop.handler"), "api": (bundle, "app.app")}
    client = boto3.client("lambda", endpoint_url=world_env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                          aws_access_key_id="test", aws_secret_access_key="test")  # noqa: S106 - the emulator's
    variables = {k: v for k, v in world_env.items() if not k.startswith("AWS_") or k == "AWS_ENDPOINT_URL"}
    variables["POWERTOOLS_SERVICE_NAME"] = "medical-records"
    timings: dict[str, dict[str, list[float]]] = {k: {"first": [], "second": []} for k in codes}
    statuses: set[int] = set()
    print(f"emulator: {runs} cold starts of a do-nothing function and of the API handler ...", file=sys.stderr)
    for run in range(runs):
        for kind, (code, handler) in codes.items():
            name = f"bench-{kind}-{run}"
            client.create_function(
                FunctionName=name, Runtime="python3.11", Handler=handler, Code={"ZipFile": code},
                Role="arn:aws:iam::000000000000:role/bench", Timeout=30, MemorySize=1024,
                Environment={"Variables": variables},
            )  # fmt: skip
            client.get_waiter("function_active_v2").wait(FunctionName=name)
            try:
                for attempt in ("first", "second"):
                    started = time.perf_counter()
                    answer = client.invoke(FunctionName=name, Payload=json.dumps(event).encode())
                    timings[kind][attempt].append((time.perf_counter() - started) * 1000)
                    payload = json.loads(answer["Payload"].read() or b"{}")
                    if answer.get("FunctionError") or payload.get("statusCode") != 200:
                        raise RuntimeError(f"{kind} function answered {answer.get('FunctionError')} {payload}")
                    statuses.add(payload["statusCode"])
            finally:
                client.delete_function(FunctionName=name)
    report = {kind: {attempt: summary(values) for attempt, values in rows.items()} for kind, rows in timings.items()}
    report["api_beyond_worker_start_ms"] = (report["api"]["first"]["median_ms"]
                                            - report["noop"]["first"]["median_ms"])
    return report


CONTAINERS = ("api_container", "api_container_extension", "authorizer_container")
FIRST_ANSWER = "interpreter started → first answer"


def record_phases(phases: dict[str, list[float]], spawned: int, child: dict[str, int]) -> None:
    ms = 1e6
    phases["interpreter start-up (spawn → import begins)"].append((child["t_start"] - spawned) / ms)
    phases["import app"].append((child["t_imported"] - child["t_start"]) / ms)
    phases["secret fetch (Secrets Manager)"].append((child["t_secret"] - child["t_imported"]) / ms)
    phases["database connect (TCP + TLS + auth)"].append((child["t_connect"] - child["t_secret"]) / ms)
    phases["first invocation (first query, first use of code paths)"].append(
        (child["t_first"] - child["t_connect"]) / ms
    )
    phases["second invocation (warm)"].append((child["t_second"] - child["t_first"]) / ms)
    phases[FIRST_ANSWER].append((child["t_first"] - child["t_start"]) / ms)


def fmt(value: float) -> str:
    return f"{value:.1f}"


def render_markdown(report: dict[str, Any]) -> str:
    env = report["environment"]
    wall, extra = report["wall"], report["extra_over_bare"]
    labels = {
        "bare": "`python -c pass` (exits without teardown)",
        "import": "`python -c \"import app\"` (repo + venv, bytecode cache present; exits without teardown)",
        "bare_teardown": "`python -c pass` (normal exit)",
        "import_teardown": "`python -c \"import app\"` (normal exit: also unloads the modules)",
        "bare_S": "`python -S -c pass` (no site-packages)",
        "package_no_pyc": "`python -S -c \"import app\"` in a Lambda-like package, no .pyc",
        "package_pyc": "the same package after `compileall` (.pyc shipped, as `make template` builds it)",
        "api_container": "a new API handler container: import + secret + TLS connect + 2 invocations",
        "api_container_extension": "the same, reading the secret through the Parameters and Secrets extension",
        "authorizer_container": "a new authorizer container: import + secret + 2 token checks",
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
    lines.append("")
    for target in report["targets"]:
        lines.append(f"- {'MET' if target['met'] else 'MISSED'}: {target['text']}.")
    lines += [
        f"- A Lambda container is not torn down between requests, so the import is measured to the moment it "
        f"ends; with a normal exit (module unloading) it adds {fmt(extra['import_teardown']['median_ms'])} ms.",
        f"- In a Lambda-like package without .pyc the import adds {fmt(extra['package_no_pyc']['median_ms'])} ms "
        f"(median; {fmt(extra['package_pyc']['median_ms'])} ms with .pyc shipped): /var/task is read-only, so "
        "a package without bytecode compiles every module on every cold start; `make template` ships .pyc.",
        f"- Importing app {'CONNECTED' if report['import_connected_to_database'] else 'did not connect'} to the "
        f"database ({report['connections_during_import']} connection attempts on the trap socket). After the "
        f"import: {report['modules_after_import']} modules; "
        + ", ".join(f"{m} {'loaded' if v else 'deferred'}" for m, v in report["loaded_at_import"].items()) + ".",
        "",
        "## A new container, phase by phase",
        "",
        f"Each run is a fresh process that does what the Lambda runtime does in a new container: import the "
        f"handler module, then invoke it (an API Gateway proxy event for `GET /v1/patients/{{id}}`, or a TOKEN "
        f"authorizer event). Secrets come from the AWS emulator's Secrets Manager through Powertools Parameters "
        f"and the AWS SDK (on loopback: a real Secrets Manager adds a TLS round trip in the region), or, in the "
        f"extension column, from a loopback stand-in answering the Parameters and Secrets extension's interface "
        f"(what the function does; the extension's own fetch and cache are not in it); the database: "
        f"{report['tls']}.",
        "",
    ]
    containers = report["containers"]
    names = list(containers)
    lines += ["| phase | " + " | ".join(f"{n.replace('_', ' ')} median ms | p90 ms" for n in names) + " |",
              "|---|" + "---:|---:|" * len(names)]
    phases = list(containers[names[0]]["phases"])
    for phase in phases:
        cells = []
        for name in names:
            row = containers[name]["phases"].get(phase)
            cells += [fmt(row["median_ms"]), fmt(row["p90_ms"])] if row else ["–", "–"]
        lines.append(f"| {phase} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Statuses (first, second): " + "; ".join(f"{n}: {containers[n]['statuses']}" for n in names) + ". "
        "The authorizer has no database; its connect phase is empty.",
        "",
        *emulator_markdown(report.get("emulator")),
        "## Import self time by top-level package (one `-X importtime` run, bytecode cache present)",
        "",
        "| package | self ms | share |",
        "|---|---:|---:|",
    ]  # fmt: skip
    for row in report["import_self_time_by_package"]:
        lines.append(f"| {row['package']} | {row['self_ms']:.1f} | {100 * row['share']:.0f}% |")
    return "\n".join(lines) + "\n"


def emulator_markdown(emulator: dict[str, Any] | None) -> list[str]:
    if not emulator:
        return []
    lines = [
        "## A new function in the AWS emulator (ministack)",
        "",
        "Lambda Invoke round trips through the emulator, each on a function created just before (a new worker "
        "process). The do-nothing function is a no-op handler added to the same deployment package: the "
        "emulator's own worker start, unpacking the package included. The emulator's worker bootstrap also "
        "imports botocore, which the API handler then finds loaded (a real Lambda runtime does not pre-load "
        "it).",
        "",
        "| function | first invocation median ms | p90 ms | second invocation median ms |",
        "|---|---:|---:|---:|",
    ]
    for kind, label in (("noop", "do-nothing handler in the deployment package"),
                        ("api", "API handler, GET /v1/patients/{id}")):
        row = emulator[kind]
        lines.append(f"| {label} | {fmt(row['first']['median_ms'])} | {fmt(row['first']['p90_ms'])} | "
                     f"{fmt(row['second']['median_ms'])} |")
    lines += ["", f"The API handler's first answer comes {fmt(emulator['api_beyond_worker_start_ms'])} ms after "
              "the do-nothing function's.", ""]
    return lines


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Wall time to import the app in a fresh Python process vs bare Python, and what a new "
        "Lambda container does phase by phase (import, secret fetch, TLS connect, first request). Starts a "
        "throwaway PostgreSQL and the AWS emulator. Writes bench/results/cold_start.{json,md}.",
    )
    parser.add_argument("--runs", type=int, default=30, help="runs per variant (default 30, minimum 20)")
    parser.add_argument("--emulator-runs", type=int, default=5,
                        help="cold starts of a new function in the AWS emulator (default 5; 0 to skip)")
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
    bad = {name: data["statuses"] for name, data in report["containers"].items()
           if any(status != 200 for pair in data["statuses"] for status in pair)}  # fmt: skip
    if bad:
        print(f"error: a container answered other than 200: {bad}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
