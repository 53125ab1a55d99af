"""The whole system on one machine without Docker: what `make up` runs, and what the end-to-end
tests start. Each part is a process this module starts, watches and stops (its whole process group).

  PostgreSQL (embedded)  ← app + analytic databases, data kept in .local/pg
  ministack              ← the AWS emulator: API Gateway, Lambda (as local processes), Step Functions,
                            EventBridge, Secrets Manager, CloudFormation
  Prefect server + UI    ← http://127.0.0.1:4200
  served refresh flow    ← runs the flow runs the state machine starts (Sling + refresh SQL)
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MINISTACK = ROOT / ".venv-ministack" / "bin" / "ministack"
QUIET_PREFECT = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}


class StackError(RuntimeError):
    """A part of the stack could not start; the message names the part and the cause."""


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def require_free(port: int, what: str) -> None:
    if not port_is_free(port):
        raise StackError(f"port {port} ({what}) is already in use by another process; stop it or choose another port")


def answers(url: str, timeout: float = 2) -> bool:
    try:
        urllib.request.urlopen(url, timeout=timeout)  # noqa: S310 - our own loopback URLs
        return True
    except urllib.error.HTTPError:
        return True  # it answered
    except OSError:
        return False


@dataclass
class Service:
    """A process of the stack, in its own process group, logging to a file."""

    name: str
    command: list[str]
    log_file: Path
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path = ROOT
    process: subprocess.Popen | None = None

    def start(self) -> Service:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_file, "ab")  # noqa: SIM115 - owned by the child from here on
        try:
            self.process = subprocess.Popen(self.command, cwd=self.cwd, env=self.env, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            log.close()
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def wait_until(self, ready, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise StackError(f"{self.name} exited while starting; last lines of {self.log_file}:\n{self.tail()}")
            if ready():
                return
            time.sleep(0.3)
        raise StackError(f"{self.name}: {what} within {timeout:.0f}s; see {self.log_file}")

    def stop(self, timeout: float = 20) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)


def ministack(port: int, state_dir: Path) -> Service:
    """ministack with a clean environment: it passes its environment on to the Lambdas it runs."""
    if not MINISTACK.exists():
        raise StackError("ministack is not installed: run `make ministack`")
    state_dir.mkdir(parents=True, exist_ok=True)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(state_dir), "TMPDIR": str(state_dir),
           "GATEWAY_PORT": str(port), "MINISTACK_HOST": "127.0.0.1", "MINISTACK_REGION": "us-east-1"}
    service = Service("ministack", [str(MINISTACK)], state_dir / "ministack.log", env).start()
    service.wait_until(lambda: answers(f"http://127.0.0.1:{port}/_ministack/health", 1), 60, "did not answer")
    return service


def prefect_server(port: int, home: Path) -> Service:
    env = {**os.environ, **QUIET_PREFECT, "PREFECT_HOME": str(home)}
    env.pop("PREFECT_API_URL", None)
    command = [str(Path(sys.executable).parent / "prefect"), "server", "start", "--host", "127.0.0.1",
               "--port", str(port)]
    service = Service("prefect server", command, home / "server.log", env).start()
    service.wait_until(lambda: answers(f"http://127.0.0.1:{port}/api/health"), 120, "did not become healthy")
    return service


def served_flow(prefect_api: str, app_db_url: str, analytic_db_url: str, work: Path) -> Service:
    """`python -m pipeline.flow --serve`: the worker that runs the refresh flow runs (no own schedule:
    the EventBridge schedule starts the state machine, which starts the runs)."""
    env = {**os.environ, **QUIET_PREFECT, "PREFECT_API_URL": prefect_api, "PREFECT_HOME": str(work),
           "APP_DB_URL": app_db_url, "ANALYTIC_DB_URL": analytic_db_url, "SLING_HOME_DIR": str(work / "sling"),
           "PYTHONPATH": f"{ROOT / 'functions'}:{ROOT}"}
    command = [sys.executable, "-m", "pipeline.flow", "--serve", "--interval", "0"]
    service = Service("served refresh flow", command, work / "serve.log", env).start()
    deployment = f"{prefect_api}/deployments/name/refresh-analytics/refresh-analytics"

    def registered() -> bool:
        try:
            urllib.request.urlopen(deployment, timeout=2)  # noqa: S310
            return True
        except OSError:
            return False

    service.wait_until(registered, 120, "did not register the refresh-analytics deployment")
    return service
