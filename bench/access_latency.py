#!/usr/bin/env python3
"""What the access model costs: reads as admin, clinician and patient, next to two floors, at two table sizes.

For each size (default 10,000 and 1,000,000 patients) the script builds one database in a throwaway
PostgreSQL (default settings: fsync on, synchronous_commit on): patients and their visits from
``pipeline.generate`` (COPY), two background care-team memberships per patient, and one clinician
whose care team is 100 patients spread across the key range; then VACUUM ANALYZE. The app is
imported once and pointed at each size's database in turn, so that every operation of every size
runs interleaved in the same rounds (this machine's speed drifts; a ratio between two rows measured
side by side does not).

Rows, for each size:

* floors, through psycopg2 with no framework: the bare primary-key SELECT (one round trip), and
  the raw audited read: the admin's SELECT of the patient row + the audit INSERT + a durable COMMIT,
  the statements built by the app's own repository and audit modules (checked against what the app
  sends), in the app's two round trips; the same with ``SET LOCAL synchronous_commit = off``;
* GET /v1/patients/{id} as admin, clinician (on the team) and patient (own id), through
  ``chalice.test.Client`` (authorizer run on every request), and as a direct call of the Lambda
  handler with the event API Gateway would send (authorizer context cached);
* list pages ``GET /v1/patients?limit=100`` as admin, clinician (their 100 patients) and patient,
  and ``GET /medicalrecord?limit=100`` (original API) as the clinician;
* for every route, its captured statements replayed on a raw connection ("SQL only").

Then ``EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON)`` of the statements the app sent for the clinician's
GET by id and list pages: node types, Seq Scans, probes of the care-team indexes, buffers.

Targets (from the issue): the handler within 1.5x the raw audited read; the care-team check at most
one index probe; a clinician's list page flat from 10k to 1M patients (p50 within 1.25x, this
script's reading of "flat"). Results: markdown on stdout and bench/results/access_latency.{md,json}.
Exit status 0 even when a target is missed; non-zero when a request answers an unexpected status.
Usage: python bench/access_latency.py [--sizes 10000,1000000] [--calls N] [--warmup N]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import json
import os
import platform
import random
import secrets
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for _path in (ROOT / "functions", ROOT):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from bench.api_latency import (  # noqa: E402 - after the path set-up
    Operation,
    StatementRecorder,
    capture_events,
    cpu_model,
    expect_status,
    fmt,
    git_revision,
    server_facts,
    summarize,
)
from bench.harness import run_in_scratch, write_report  # noqa: E402

RESULTS_DIR = ROOT / "bench" / "results"
API_USER = "medrec_api_access_bench"
ADMIN = "bench-admin"
CLINICIAN = "bench-clinician"
TEAM_SIZE = 100
VISITS_PER_PATIENT = 1.5  # every patient gets one visit, half of them two
BACKGROUND_TEAMS = ("a", "b")  # other clinicians: two memberships per patient, ~100 patients each
PATIENT_TOKENS = 10
PAGE = 100
TARGET_HANDLER_RATIO = 1.5
TARGET_TEAM_PROBES = 1
TARGET_FLAT_RATIO = 1.25

BARE = "bare SELECT by primary key (psycopg2, 1 round trip)"
RAW = "raw audited read: SELECT + audit INSERT + durable COMMIT (psycopg2)"
RAW_ASYNC = "raw audited read with SET LOCAL synchronous_commit = off"
FLOORS = (BARE, RAW, RAW_ASYNC)
KINDS = ("admin", "clinician", "patient")
GET = {kind: f"GET /v1/patients/{{id}} · {kind}" for kind in KINDS}
DIRECT = {kind: f"GET /v1/patients/{{id}} · {kind} · Lambda handler only" for kind in KINDS}
LIST = {kind: f"GET /v1/patients?limit=100 · {kind}" for kind in KINDS}
LEGACY_LIST = "GET /medicalrecord?limit=100 · clinician (original API)"
ROUTES = (*GET.values(), *LIST.values(), LEGACY_LIST)
EXPLAINED = (GET["clinician"], GET["admin"], LIST["clinician"], LEGACY_LIST, LIST["admin"])


def size_label(n: int) -> str:
    for unit, suffix in ((1_000_000, "M"), (1_000, "k")):
        if n >= unit and n % unit == 0:
            return f"{n // unit}{suffix}"
    return str(n)


@dataclass
class Dataset:
    """One size: its database, the clinician's team, its connections and operations."""

    patients: int
    owner_url: str
    api_url: str
    first_id: int = 0
    last_id: int = 0
    team: list[int] = field(default_factory=list)
    load: dict[str, Any] = field(default_factory=dict)
    raw_conn: Any = None  # psycopg2, API login: the floors and the SQL-only replays
    app_conn: Any = None  # the app's own connection to this database
    ops: dict[str, Operation] = field(default_factory=dict)
    replays: dict[str, Operation] = field(default_factory=dict)
    plans: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return size_label(self.patients)


# --- data -------------------------------------------------------------------------------------


def load(ds: Dataset, seed: int) -> None:
    """Patients and visits by COPY (pipeline.generate), care teams by INSERT ... SELECT, then VACUUM ANALYZE."""
    import psycopg2

    from pipeline.generate import generate

    conn = psycopg2.connect(ds.owner_url)
    try:
        started = time.perf_counter()
        counts = generate(conn, ds.patients, VISITS_PER_PATIENT, 0.0, seed)
        ds.load["generate_s"] = time.perf_counter() - started
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT min(patient_id), max(patient_id), count(*) FROM medical_app.patient")
            ds.first_id, ds.last_id, count = cur.fetchone()
            if count != ds.patients or ds.last_id - ds.first_id + 1 != count:
                raise RuntimeError(f"expected {ds.patients} patients with consecutive ids, got {count}")
            step = ds.patients // TEAM_SIZE
            ds.team = [ds.first_id + step // 2 + i * step for i in range(TEAM_SIZE)]
            started = time.perf_counter()
            teams = max(1, ds.patients // TEAM_SIZE)
            # Most of this load's time (~1 min at 1M) is the member_sub CHECK: PostgreSQL's regex
            # engine takes ~28 µs per row for '^[\x21-\x7e]{1,255}$' (vs < 1 µs for '+' and a length test).
            cur.execute(
                "INSERT INTO medical_app.care_team_member (patient_id, member_sub, role, granted_by) "
                "SELECT p.patient_id, 'clinician-' || s.k || '-' || (p.patient_id %% %s), 'physician', %s "
                "FROM medical_app.patient p CROSS JOIN unnest(%s::text[]) AS s(k)",
                (teams, ADMIN, list(BACKGROUND_TEAMS)),
            )
            cur.execute(
                "INSERT INTO medical_app.care_team_member (patient_id, member_sub, role, granted_by) "
                "SELECT unnest(%s::bigint[]), %s, 'physician', %s",
                (ds.team, CLINICIAN, ADMIN),
            )
            ds.load["care_teams_s"] = time.perf_counter() - started
            started = time.perf_counter()
            cur.execute("VACUUM (ANALYZE) medical_app.patient, medical_app.medical_record, "
                        "medical_app.care_team_member, medical_app.audit_event")  # fmt: skip
            ds.load["vacuum_analyze_s"] = time.perf_counter() - started
            cur.execute("SELECT count(*) FROM medical_app.care_team_member")
            ds.load["care_team_rows"] = cur.fetchone()[0]
            cur.execute(
                "SELECT count(*), count(DISTINCT patient_id) FROM medical_app.medical_record "
                "WHERE patient_id = ANY(%s)",
                (ds.team,),
            )
            team_visits, with_visit = cur.fetchone()
            if with_visit != TEAM_SIZE:
                raise RuntimeError(f"only {with_visit} of the team's {TEAM_SIZE} patients have a visit")
            ds.load["team_visits"] = team_visits
            cur.execute("SELECT pg_database_size(current_database())")
            ds.load["database_mb"] = cur.fetchone()[0] / 2**20
        ds.load["visits"] = counts["medical_records"]
    finally:
        conn.close()


class _Sent:
    """Stands in for a Transaction and keeps what the repositories would send (to build the floor)."""

    def __init__(self) -> None:
        self.statements: list[tuple[str, tuple[Any, ...]]] = []

    def fetchone(self, sql: str, params: Any = None) -> None:
        self.statements.append((sql, tuple(params or ())))

    def execute_at_commit(self, sql: str, params: Any = None) -> None:
        self.statements.append((sql, tuple(params or ())))


def audited_read_statements(patient_id: int, request_id: str) -> list[tuple[str, tuple[Any, ...]]]:
    """The admin's GET by id as the app's own modules write it: the patient SELECT, then the audit INSERT."""
    from chalicelib.repositories import audit, resources

    sent = _Sent()
    resources.patients.get(sent, patient_id)
    audit.record(
        sent, actor=ADMIN, actor_kind="admin", action="read", resource_type="patient", resource_id=patient_id,
        patient_ids=[patient_id], request_id=request_id, outcome="success", source_ip="127.0.0.1",
        user_agent=None, reason=None, break_glass=False,
    )  # fmt: skip
    return sent.statements


# --- operations -------------------------------------------------------------------------------


def floor_operations(ds: Dataset, rng: random.Random) -> list[Operation]:
    cur = ds.raw_conn.cursor()

    def random_id(_i: int) -> int:
        return rng.randint(ds.first_id, ds.last_id)

    def bare(pid: int) -> Any:
        cur.execute("SELECT * FROM medical_app.patient WHERE patient_id = %s", (pid,))
        return cur.fetchone()

    def audited(begin: str) -> Callable[[list[tuple[str, tuple[Any, ...]]]], Any]:
        def run(statements: list[tuple[str, tuple[Any, ...]]]) -> Any:
            (select, select_params), (insert, insert_params) = statements
            cur.execute(begin + select, select_params)  # round trip 1, as the app sends it
            row = cur.fetchone()
            cur.execute(insert + "; COMMIT", insert_params)  # round trip 2: the event rides with COMMIT
            return row

        return run

    def prepare(i: int) -> list[tuple[str, tuple[Any, ...]]]:
        return audited_read_statements(random_id(i), f"bench-{i}-{rng.getrandbits(32):08x}")

    def found(row: Any) -> str | None:
        return None if row is not None else "no row"

    return [
        Operation(BARE, random_id, bare, found),
        Operation(RAW, prepare, audited("BEGIN; "), found),
        Operation(RAW_ASYNC, prepare, audited("BEGIN; SET LOCAL synchronous_commit = off; "), found),
    ]


def replay_operation(name: str, statements: list[tuple[str, Any]], conn: Any) -> Operation:
    """A route's captured statements sent again on a raw connection: its database time alone."""
    cur = conn.cursor()

    def run(_: Any) -> None:
        for sql, params in statements:
            cur.execute(sql, params)
            if cur.description is not None:
                cur.fetchall()

    return Operation(f"SQL only: {name}", lambda i: None, run, lambda _r: None)


# --- plans ------------------------------------------------------------------------------------


def _nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", ()):
        yield from _nodes(child)


def explain(conn: Any, sql: str, params: Any) -> dict[str, Any]:
    """EXPLAIN (ANALYZE, BUFFERS) of one SELECT the app sent (its BEGIN stripped), warm: the third run."""
    statement = sql.removeprefix("BEGIN; ")
    with conn.cursor() as cur:
        for _ in range(3):
            cur.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + statement, params)
            result = cur.fetchone()[0][0]
    nodes = list(_nodes(result["Plan"]))
    team_index = [n for n in nodes if str(n.get("Index Name", "")).startswith("care_team_member")]
    kinds = []
    for n in nodes:
        on = n.get("Index Name") or n.get("Relation Name")
        kinds.append(n["Node Type"] + (f" ({on})" if on else ""))
    top = result["Plan"]
    return {
        "statement": statement[:400],
        "node_types": list(dict.fromkeys(kinds)),
        "seq_scan": any(n["Node Type"] == "Seq Scan" for n in nodes),
        "care_team_index_probes": sum(int(n.get("Actual Loops", 0)) for n in team_index),
        "care_team_indexes": sorted({n["Index Name"] for n in team_index}),
        "shared_hit": top.get("Shared Hit Blocks", 0),
        "shared_read": top.get("Shared Read Blocks", 0),
        "rows": top.get("Actual Rows"),
        "execution_ms": result.get("Execution Time"),
        "planning_ms": result.get("Planning Time"),
        "plan": result,
    }


# --- the benchmark ----------------------------------------------------------------------------


def run(args: argparse.Namespace, base: Path) -> dict[str, Any]:
    from tools.pgcluster import PostgresCluster

    datasets: list[Dataset] = []
    print("starting PostgreSQL ...", file=sys.stderr)
    with PostgresCluster(base / "pg") as cluster:
        try:
            return measure(args, cluster, datasets)
        finally:
            for ds in datasets:
                for conn in (ds.raw_conn, ds.app_conn):
                    if conn is not None:
                        conn.close()
            print("stopping PostgreSQL ...", file=sys.stderr)


def measure(args: argparse.Namespace, cluster: Any, datasets: list[Dataset]) -> dict[str, Any]:
    import psycopg2

    from chalicelib.migrations import migrate
    from tools.cli import create_login

    password = secrets.token_urlsafe(16)
    for n in args.sizes:
        name = f"app_{n}"
        cluster.create_database(name)
        ds = Dataset(n, cluster.url(name), cluster.url(name, user=API_USER, password=password))
        datasets.append(ds)
        migrate(ds.owner_url)
        create_login(ds.owner_url, API_USER, password, "medical_api")  # a cluster-wide role: same login
        print(f"loading {n:,} patients ...", file=sys.stderr)
        load(ds, args.seed)
        ds.raw_conn = psycopg2.connect(ds.api_url, options="-c synchronous_commit=on")
        ds.raw_conn.autocommit = True

    os.environ["DATABASE_URL"] = datasets[0].api_url
    os.environ["JWT_SECRET"] = secrets.token_urlsafe(32)
    os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "medical-records")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    # The app logs a JSON line per request: formatted as usual, written to /dev/null.
    devnull = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
    with contextlib.redirect_stdout(devnull):
        from chalice.local import LambdaContext
        from chalice.test import Client

        from app import app
        from chalicelib import config
        from chalicelib.api import auth, dependencies

    database = dependencies.database()

    def use(ds: Dataset) -> None:
        # The app keeps one connection per thread; hand it this size's (opened below by the app itself).
        database._connection = ds.app_conn

    for ds in datasets:
        os.environ["DATABASE_URL"] = ds.api_url
        config.get_settings.cache_clear()
        config.database_dsn.cache_clear()
        database._connection = None
        ds.app_conn = database.connection()

    request = Client(app).http.request
    ttl = 12 * 3600
    rng = random.Random(args.seed)

    def bearer(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    admin = bearer(auth.mint(ADMIN, ["read", "write", "admin"], ttl_seconds=ttl))
    clinician = bearer(auth.mint(CLINICIAN, ["read", "write"], ttl_seconds=ttl))

    for ds in datasets:
        use(ds)
        span = ds.last_id - ds.first_id + 1
        own = [ds.first_id + 7 + k * span // PATIENT_TOKENS for k in range(PATIENT_TOKENS)]
        patient = {
            pid: bearer(auth.mint(f"bench-patient-{pid}", ["read", "write"], ttl_seconds=ttl, patient_id=pid))
            for pid in own
        }

        def get_args(kind: str, ds: Dataset = ds, patient: dict = patient) -> Callable[[int], tuple]:
            def prepare(_i: int) -> tuple[str, str, dict[str, str]]:
                use(ds)
                if kind == "admin":
                    return "GET", f"/v1/patients/{rng.randint(ds.first_id, ds.last_id)}", admin
                if kind == "clinician":
                    return "GET", f"/v1/patients/{rng.choice(ds.team)}", clinician
                pid = rng.choice(list(patient))
                return "GET", f"/v1/patients/{pid}", patient[pid]

            return prepare

        def fixed(path: str, headers_of: Callable[[], dict[str, str]], ds: Dataset = ds) -> Callable[[int], tuple]:
            def prepare(_i: int) -> tuple[str, str, dict[str, str]]:
                use(ds)
                return "GET", path, headers_of()

            return prepare

        def http(a: tuple[str, str, dict[str, str]]) -> Any:
            return request(a[0], a[1], headers=a[2])

        ok = expect_status(200)
        ops = floor_operations(ds, rng)
        ops += [Operation(GET[kind], get_args(kind), http, ok) for kind in KINDS]
        ops += [
            Operation(LIST["admin"], fixed("/v1/patients?limit=100", lambda: admin), http, ok),
            Operation(LIST["clinician"], fixed("/v1/patients?limit=100", lambda: clinician), http, ok),
            Operation(LIST["patient"], fixed("/v1/patients?limit=100", lambda p=patient: rng.choice(list(p.values()))),
                      http, ok),
            Operation(LEGACY_LIST, fixed("/medicalrecord?limit=100", lambda: clinician), http, ok),
        ]  # fmt: skip

        # The deployed path: API Gateway calls the handler with the authorizer's (cached) context.
        for kind in KINDS:
            make = get_args(kind)
            events = capture_events(app, [(*make(i), None) for i in range(40)])

            def direct(i: int, ds: Dataset = ds, events: list = events) -> tuple[dict, Any]:
                use(ds)
                return copy.deepcopy(rng.choice(events)), LambdaContext("medical-records", 1024)

            ops.append(Operation(DIRECT[kind], direct, lambda a: app(*a), _handler_ok))
        ds.ops = {op.name: op for op in ops}
        check_answers(ds, request, admin, clinician, patient)

    print(f"warming up ({args.warmup} calls per operation) ...", file=sys.stderr)
    for ds in datasets:
        for op in ds.ops.values():
            for i in range(args.warmup):
                op.call(i, timed=False)

    # What each route sends (one execute = one round trip); then replayed raw, and explained.
    for ds in datasets:
        use(ds)
        recorder = StatementRecorder(ds.app_conn)
        for name in ROUTES:
            with recorder.recording() as log:
                ds.ops[name].call(0, timed=False)
            ds.ops[name].statements = list(log)
            ds.replays[name] = replay_operation(name, ds.ops[name].statements, ds.raw_conn)
        sent = ds.ops[GET["admin"]].statements
        pid = int(sent[0][1][-1])
        floor = audited_read_statements(pid, "x")
        if sent[0][0] != "BEGIN; " + floor[0][0] or not sent[-1][0].startswith(floor[1][0].split(" VALUES")[0]):
            raise RuntimeError("the raw audited read no longer sends what the app sends for GET by id; update it")
        for op in ds.replays.values():
            for i in range(min(args.warmup, 50)):
                op.call(i, timed=False)
        for name in EXPLAINED:
            sql, params = ds.ops[name].statements[0]
            ds.plans[name] = explain(ds.raw_conn, sql, params)

    timed = [op for ds in datasets for op in (*ds.ops.values(), *ds.replays.values())]
    rounds = args.rounds
    print(f"measuring {args.calls} calls per operation, {len(timed)} operations interleaved in {rounds} rounds ...",
          file=sys.stderr)  # fmt: skip
    gc.collect()
    done = 0
    for r in range(rounds):
        n = args.calls // rounds + (1 if r < args.calls % rounds else 0)
        for op in timed if r % 2 == 0 else reversed(timed):
            for i in range(done, done + n):
                op.call(i, timed=True)
        done += n

    sizes = [summarize_size(ds) for ds in datasets]
    machine = dict(git=git_revision(), python=platform.python_version(), platform=platform.platform())
    machine |= dict(cpu=cpu_model(), cpus=os.cpu_count(), postgres=server_facts(datasets[0].owner_url))
    return {
        "started_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "environment": machine,
        "calls": args.calls,
        "warmup": args.warmup,
        "rounds": rounds,
        "sizes": sizes,
        "targets": targets(sizes),
    }


def _handler_ok(response: dict[str, Any]) -> str | None:
    return None if response["statusCode"] == 200 else f"expected HTTP 200, got {response['statusCode']}"


def check_answers(ds: Dataset, request: Callable, admin: dict, clinician: dict, patient: dict) -> None:
    """Once per size, untimed: each caller sees what the access model says, and nothing else."""

    def body(path: str, headers: dict[str, str], status: int = 200) -> dict[str, Any]:
        response = request("GET", path, headers=headers)
        if response.status_code != status:
            raise RuntimeError(f"GET {path}: expected HTTP {status}, got {response.status_code}")
        return json.loads(response.body) if response.body else {}

    listed = body("/v1/patients?limit=100", clinician)
    if sorted(p["patientId"] for p in listed["items"]) != ds.team or listed.get("nextCursor"):
        raise RuntimeError("the clinician's list page is not exactly their care team")
    outsider = next(pid for pid in range(ds.first_id, ds.last_id + 1) if pid not in ds.team)
    body(f"/v1/patients/{outsider}", clinician, 403)
    pid, headers = next(iter(patient.items()))
    if [p["patientId"] for p in body("/v1/patients?limit=100", headers)["items"]] != [pid]:
        raise RuntimeError("a patient's list page is not their own record alone")
    body(f"/v1/patients/{pid + 1}", headers, 404)
    if len(body("/v1/patients?limit=100", admin)["items"]) != PAGE:
        raise RuntimeError("the admin's list page is not full")
    records = body("/medicalrecord?limit=100", clinician)["medicalRecords"]
    if len(records) != min(PAGE, ds.load["team_visits"]):
        raise RuntimeError("the clinician's /medicalrecord page is not full")


# --- results ----------------------------------------------------------------------------------


def summarize_size(ds: Dataset) -> dict[str, Any]:
    raw = summarize(ds.ops[RAW].samples)
    rows = []
    for op in ds.ops.values():
        row = {"name": op.name, **summarize(op.samples)}
        row["ratio_to_raw_p50"] = row["p50_ms"] / raw["p50_ms"]
        row["ratio_to_raw_p99"] = row["p99_ms"] / raw["p99_ms"]
        if op.statements:
            replay = summarize(ds.replays[op.name].samples)
            row["round_trips"] = len(op.statements)
            row["sql_only_p50_ms"] = replay["p50_ms"]
            row["sql_only"] = replay
            row["statements"] = [sql[:200] for sql, _ in op.statements]
        elif op.name in FLOORS:
            row["round_trips"] = 1 if op.name == BARE else 2
        elif op.name in DIRECT.values():
            row["round_trips"] = len(ds.ops[GET["admin"]].statements)
        rows.append(row)
    return {
        "patients": ds.patients,
        "label": ds.label,
        "load": ds.load,
        "team": {"member_sub": CLINICIAN, "patients": len(ds.team), "first": ds.team[0], "last": ds.team[-1]},
        "operations": rows,
        "plans": ds.plans,
    }


def _row(size: dict[str, Any], name: str) -> dict[str, Any]:
    return next(r for r in size["operations"] if r["name"] == name)


def _time_split(size: dict[str, Any]) -> str:
    """Where the clinician's GET by id goes, from differences of p50s in this run (approximate)."""
    limit = TARGET_HANDLER_RATIO * _row(size, RAW)["p50_ms"]
    client, handler = _row(size, GET["clinician"]), _row(size, DIRECT["clinician"])["p50_ms"]
    sql = client["sql_only_p50_ms"]
    return (
        f"clinician, p50: test client {client['p50_ms']:.3f} ms = test client + authorizer "
        f"{client['p50_ms'] - handler:.3f} + Lambda handler {handler:.3f} (its statements replayed raw {sql:.3f}, "
        f"Python {handler - sql:.3f}); {TARGET_HANDLER_RATIO}× the raw audited read is {limit:.3f} ms, "
        f"which leaves {limit - sql:.3f} ms for all the Python"
    )


def targets(sizes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found = []
    for size in sizes:
        for label, names in (("through the test client", GET), ("Lambda handler only", DIRECT)):
            ratios = {kind: _row(size, names[kind])["ratio_to_raw_p50"] for kind in KINDS}
            found.append({
                "target": "handler within 1.5× the raw audited read",
                "text": f"{size['label']}: GET by id ({label}) p50 / raw audited read p50 = "
                + ", ".join(f"{kind} {ratio:.2f}×" for kind, ratio in ratios.items())
                + f"; target ≤ {TARGET_HANDLER_RATIO}×",
                "met": all(r <= TARGET_HANDLER_RATIO for r in ratios.values()),
            })  # fmt: skip
        found[-1]["note"] = _time_split(size)
    for size in sizes:
        plan = size["plans"][GET["clinician"]]
        indexes = ", ".join(plan["care_team_indexes"]) or "no care-team index"
        found.append({
            "target": "care-team check at most one index probe",
            "text": f"{size['label']}: the clinician's GET by id probes {indexes} "
            f"{plan['care_team_index_probes']}× (target ≤ {TARGET_TEAM_PROBES}), "
            f"{'a Seq Scan' if plan['seq_scan'] else 'no Seq Scan'}, {plan['shared_hit']} shared buffers hit",
            "met": 0 < plan["care_team_index_probes"] <= TARGET_TEAM_PROBES and not plan["seq_scan"],
        })  # fmt: skip
    if len(sizes) > 1:
        small, large = sizes[0], sizes[-1]
        a, b = _row(small, LIST["clinician"]), _row(large, LIST["clinician"])
        flat = b["p50_ms"] / a["p50_ms"]
        pa, pb = small["plans"][LIST["clinician"]], large["plans"][LIST["clinician"]]
        seq = [size["label"] for size, p in ((small, pa), (large, pb)) if p["seq_scan"]]
        found.append({
            "target": "clinician's list page flat from the smallest to the largest size",
            "text": f"clinician list p50 {large['label']} / {small['label']} = {b['p50_ms']:.3f} / "
            f"{a['p50_ms']:.3f} ms = {flat:.2f}× (target ≤ {TARGET_FLAT_RATIO}×); normalised by each size's raw "
            f"audited read {b['ratio_to_raw_p50'] / a['ratio_to_raw_p50']:.2f}×; plan buffers "
            f"{pa['shared_hit'] + pa['shared_read']} → {pb['shared_hit'] + pb['shared_read']}; "
            + (f"Seq Scan at {', '.join(seq)}" if seq else "no Seq Scan"),
            "met": flat <= TARGET_FLAT_RATIO,
        })  # fmt: skip
    return found


def render_markdown(report: dict[str, Any]) -> str:
    env, pg = report["environment"], report["environment"]["postgres"]
    sizes = report["sizes"]
    lines = [
        "# Access-controlled reads: handler latency next to its floors",
        "",
        f"{report['started_at']} · commit {env['git']} · Python {env['python']} · PostgreSQL {pg['server_version']} "
        f"(fsync={pg['fsync']}, synchronous_commit={pg['synchronous_commit']}, shared_buffers={pg['shared_buffers']}) "
        f"· {env['cpu']} × {env['cpus']} · {report['calls']} timed calls per operation after {report['warmup']} "
        f"warm-up calls, every operation of every size interleaved in {report['rounds']} rounds",
        "",
        "Ratios are to the raw audited read of the same size (same run, same rounds): this machine's speed "
        "drifts, ratios between rows measured side by side much less.",
    ]
    for size in sizes:
        load = size["load"]
        lines += [
            "",
            f"## {size['patients']:,} patients",
            "",
            f"{load['visits']:,} visits, {load['care_team_rows']:,} care-team memberships; the clinician's team: "
            f"{size['team']['patients']} patients from id {size['team']['first']} to {size['team']['last']} with "
            f"{load['team_visits']} visits; database {load['database_mb']:.0f} MB; loaded in "
            f"{load['generate_s'] + load['care_teams_s']:.0f} s + VACUUM ANALYZE {load['vacuum_analyze_s']:.0f} s.",
            "",
            "| operation | p50 ms | p99 ms | p50 / raw audited | p99 / raw audited | round trips | SQL-only p50 ms |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for row in size["operations"]:
            name = f"**{row['name']}**" if row["name"] == RAW else row["name"]
            lines.append(
                f"| {name} | {fmt(row['p50_ms'])} | {fmt(row['p99_ms'])} | {row['ratio_to_raw_p50']:.2f}× | "
                f"{row['ratio_to_raw_p99']:.2f}× | {row.get('round_trips', '–')} | {fmt(row.get('sql_only_p50_ms'))} |"
            )
    if len(sizes) > 1:
        small, large = sizes[0], sizes[-1]
        s, g = small["label"], large["label"]
        lines += [
            "",
            f"## Flatness: {s} → {g} patients",
            "",
            f"| operation | p50 ms at {s} | p50 ms at {g} | {g} / {s} | p50 / raw audited, {s} → {g} |",
            "|---|---:|---:|---:|---:|",
        ]
        for name in (LIST["clinician"], LEGACY_LIST, LIST["admin"], LIST["patient"], GET["clinician"], RAW, BARE):
            a, b = _row(small, name), _row(large, name)
            emphasis = "**" if name == LIST["clinician"] else ""
            lines.append(
                f"| {emphasis}{name}{emphasis} | {a['p50_ms']:.3f} | {b['p50_ms']:.3f} | "
                f"{emphasis}{b['p50_ms'] / a['p50_ms']:.2f}×{emphasis} | "
                f"{a['ratio_to_raw_p50']:.2f}× → {b['ratio_to_raw_p50']:.2f}× |"
            )
    lines += ["", "## Durability", ""]
    for size in sizes:
        durable, relaxed = _row(size, RAW), _row(size, RAW_ASYNC)
        cost = durable["p50_ms"] - relaxed["p50_ms"]
        get = _row(size, GET["clinician"])["p50_ms"]
        lines.append(
            f"- {size['label']}: durable commit costs {cost:.3f} ms ({durable['p50_ms'] / relaxed['p50_ms']:.2f}×): "
            f"raw audited read p50 {durable['p50_ms']:.3f} ms with synchronous_commit on, {relaxed['p50_ms']:.3f} ms "
            f"off; {100 * cost / get:.0f}% of the clinician's GET by id p50. p99 {durable['p99_ms']:.3f} vs "
            f"{relaxed['p99_ms']:.3f} ms."
        )
    lines += [
        "",
        "Every request's audit event is committed durably (the app's connection sets synchronous_commit=on); "
        "the off row only prices that choice, nothing runs with it.",
        "",
        "## Plans: EXPLAIN (ANALYZE, BUFFERS) of the statement the app sent (warm, third run)",
        "",
        "| size | route | nodes | Seq Scan | care-team index probes | shared hit | shared read | rows | plan ms "
        "| exec ms |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for size in sizes:
        for name, plan in size["plans"].items():
            seq = "**yes**" if plan["seq_scan"] else "no"
            lines.append(
                f"| {size['label']} | {name} | {'; '.join(plan['node_types'])} | {seq} | "
                f"{plan['care_team_index_probes']} | {plan['shared_hit']} | {plan['shared_read']} | {plan['rows']} | "
                f"{fmt(plan['planning_ms'])} | {fmt(plan['execution_ms'])} |"
            )
    lines += [
        "",
        "Probes: the sum of Actual Loops of the index scans on care_team_member's indexes (a list reads its "
        "clinician's range of `care_team_member_by_member_idx` in one scan). Buffers include the plan's children.",
        "",
        "## Targets",
        "",
    ]
    for target in report["targets"]:
        lines.append(f"- {'HIT' if target['met'] else 'MISS'}: {target['text']}")
        if target.get("note"):
            lines.append(f"  - {target['note']}")
    lines += [
        "",
        "Rows: test-client rows run the JWT authorizer on every request; *Lambda handler only* calls the app "
        "with the event API Gateway sends (its authorizer answer cached), the deployed per-request path. "
        "Round trips: statements the route sent on the app's connection, captured once; SQL-only: those "
        "statements replayed on a raw connection (p50 − SQL-only ≈ the Python side).",
    ]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Access-controlled reads (admin, clinician, patient) at two table sizes next to the bare "
        "and the raw audited read. Starts and removes its own PostgreSQL; writes bench/results/access_latency.*",
    )
    parser.add_argument(
        "--sizes", default="10000,1000000",
        help="patient counts, comma-separated (default 10000,1000000; 2000,20000 for a quick try)",
    )  # fmt: skip
    parser.add_argument("--calls", type=int, default=1000, help="timed calls per operation (default 1000)")
    parser.add_argument("--warmup", type=int, default=100, help="untimed calls per operation first (default 100)")
    parser.add_argument("--rounds", type=int, default=20, help="interleaved rounds (default 20)")
    parser.add_argument("--seed", type=int, default=42, help="data and request seed (default 42)")
    parser.add_argument("--output-dir", type=Path, default=RESULTS_DIR, help="default bench/results")
    args = parser.parse_args(argv)
    try:
        args.sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    except ValueError:
        parser.error("--sizes takes whole numbers separated by commas")
    if not args.sizes or args.sizes[0] < 2 * TEAM_SIZE:
        parser.error(f"every size must be at least {2 * TEAM_SIZE} patients")
    if args.calls < 100:
        parser.error("--calls must be at least 100 (p99 needs samples)")
    if not 1 <= args.rounds <= args.calls:
        parser.error("--rounds must be between 1 and --calls")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = run_in_scratch("medrec-access-", lambda base: run(args, base))
    if report is not None:
        write_report(args.output_dir, "access_latency", report, render_markdown(report))
    return 130 if report is None else 0


if __name__ == "__main__":
    sys.exit(main())
