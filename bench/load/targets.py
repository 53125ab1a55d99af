"""The systems a load test runs against, started exactly as a user starts them, each on free ports
with its own state directory (MEDREC_LOCAL_DIR), and stopped as Ctrl-C stops them:

  run  `python -m tools.cli run`: embedded PostgreSQL + the API on Chalice's local server
  up   `python -m tools.cli up`: the template deployed into the AWS emulator (API Gateway → authorizer
       and API Lambdas as worker processes → PostgreSQL), with Prefect and the served flow beside it
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KINDS = ("run", "up")


class TargetError(RuntimeError):
    """The target did not start; the message names its log."""


@dataclass
class Target:
    kind: str
    pooler: bool
    local_dir: Path
    process: subprocess.Popen
    log_file: Path
    api_url: str = ""
    db_port: int = 0

    @property
    def label(self) -> str:
        return f"{self.kind}{' + pooler' if self.pooler else ''}"

    def secrets(self) -> dict[str, str]:
        return json.loads((self.local_dir / "secrets.json").read_text())

    def cluster(self):
        from tools.pgcluster import PostgresCluster

        return PostgresCluster(self.local_dir / "pg", port=self.db_port)

    def owner_url(self, dbname: str = "app") -> str:
        return self.cluster().url(dbname)

    def api_database_url(self) -> str:
        """The API login straight to PostgreSQL (what the in-process limit uses)."""
        return self.cluster().url("app", user="medrec_api", password=self.secrets()["api_password"])

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.local_dir / "pg" / "pgdata" / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self, timeout: float = 120) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)  # as Ctrl-C in its terminal
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


def has_pooler_option() -> bool:
    """Whether this version of `tools.cli up`/`run` can put PgBouncer in front of PostgreSQL."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'functions'}:{ROOT}"}
    help_text = subprocess.run([sys.executable, "-m", "tools.cli", "run", "--help"], cwd=ROOT, env=env,
                               capture_output=True, text=True, check=False).stdout
    return "pgbouncer" in help_text


def start(kind: str, local_dir: Path, pooler: bool = False, timeout: float = 600) -> Target:
    from tools.pgcluster import free_port

    local_dir.mkdir(parents=True, exist_ok=True)
    db_port = free_port()
    if kind == "run":
        api_port = free_port()
        args = ["run", "--port", str(api_port)]
    elif kind == "up":
        # No scheduled refresh during the measurement: it would compete for the same two cores.
        args = ["up", "--aws-port", str(free_port()), "--prefect-port", str(free_port()), "--schedule", "rate(1 day)"]
    else:
        raise ValueError(f"unknown target {kind!r}; one of {KINDS}")
    args += ["--db-port", str(db_port), "--sample-patients", "0"]
    if pooler:
        if not has_pooler_option():
            raise TargetError("this version of tools.cli has no --pooler pgbouncer option")
        args += ["--pooler", "pgbouncer"]
    log_file = local_dir / "target.log"
    env = {**os.environ, "MEDREC_LOCAL_DIR": str(local_dir), "PYTHONPATH": f"{ROOT / 'functions'}:{ROOT}"}
    with open(log_file, "ab") as log:
        process = subprocess.Popen([sys.executable, "-m", "tools.cli", *args], cwd=ROOT, env=env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    target = Target(kind, pooler, local_dir, process, log_file, db_port=db_port)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise TargetError(f"`tools.cli {kind}` exited during start-up:\n{_tail(log_file)}")
            if kind == "up" and (local_dir / "stack.json").exists():
                target.api_url = json.loads((local_dir / "stack.json").read_text())["api_url"]
                return target
            if kind == "run" and _answers(f"http://127.0.0.1:{api_port}/health"):
                target.api_url = f"http://127.0.0.1:{api_port}"
                return target
            time.sleep(0.5)
        raise TargetError(f"`tools.cli {kind}` not ready within {timeout:.0f}s:\n{_tail(log_file)}")
    except BaseException:
        target.stop()
        raise


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):  # noqa: S310 - our own loopback URL
            return True
    except OSError:
        return False


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(line[:300] for line in path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
