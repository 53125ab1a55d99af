"""PgBouncer in transaction mode between the functions and PostgreSQL: what RDS Proxy does on AWS.

    pooler = PgBouncer(work_dir, server_port=5432, users={"medrec_api": "..."}).start()
    pooler.url("app", user="medrec_api", password="...")   # connect here instead of PostgreSQL
    pooler.stop()

`make up POOLER=pgbouncer` / `make run POOLER=pgbouncer` (``python -m tools.cli up --pooler pgbouncer``)
put it in front of the API; the tests use the same class. The binary is Debian's PgBouncer 1.18
package, fetched with ``apt-get download`` and unpacked (``dpkg-deb -x``) into ``.build/pgbouncer``
together with any shared library this machine lacks (libc-ares2, libevent): no root, no system
install. ``PGBOUNCER`` names another binary.

    python -m tools.pooler install     # fetch it now; prints the binary's path and version
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
INSTALL_DIR = Path(os.environ.get("MEDREC_PGBOUNCER_DIR") or ROOT / ".build" / "pgbouncer")
PACKAGE = "pgbouncer"
VERSION_PREFIX = "1.18"
# The Debian package that ships each shared library PgBouncer links against (fetched only when missing).
LIBRARY_PACKAGES = {
    "libcares.so.2": "libc-ares2",
    "libevent-2.1.so.7": "libevent-2.1-7",
    "libssl.so.3": "libssl3",
    "libcrypto.so.3": "libssl3",
    "libsystemd.so.0": "libsystemd0",
    "libpam.so.0": "libpam0g",
}
POOL_MODE = "transaction"
DEFAULT_POOL_SIZE = 10


class PoolerError(RuntimeError):
    """PgBouncer could not be installed or started; the message says why."""


def _library_dir() -> Path:
    return INSTALL_DIR / "usr" / "lib" / "x86_64-linux-gnu"


def _env() -> dict[str, str]:
    libs = [str(_library_dir()), str(INSTALL_DIR / "lib" / "x86_64-linux-gnu")]
    current = os.environ.get("LD_LIBRARY_PATH")
    return {**os.environ, "LD_LIBRARY_PATH": ":".join([*libs, *([current] if current else [])])}


def _missing_libraries(binary: Path) -> list[str]:
    out = subprocess.run(["ldd", str(binary)], env=_env(), capture_output=True, text=True, check=False).stdout
    return re.findall(r"^\s*(\S+) => not found", out, flags=re.MULTILINE)


def _version(binary: Path) -> str | None:
    try:
        out = subprocess.run([str(binary), "--version"], env=_env(), capture_output=True, text=True, timeout=10)
    except OSError:
        return None
    found = re.search(r"PgBouncer (\d+\.\d+\.\d+)", out.stdout + out.stderr)
    return found.group(1) if out.returncode == 0 and found else None


def _fetch(packages: list[str]) -> None:
    """``apt-get download`` + ``dpkg-deb -x`` into INSTALL_DIR (Debian's registry; no root needed)."""
    if not shutil.which("apt-get") or not shutil.which("dpkg-deb"):
        raise PoolerError("PgBouncer needs apt-get and dpkg-deb to be fetched (a Debian/Ubuntu machine), "
                          "or set PGBOUNCER to a pgbouncer binary")
    INSTALL_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pgbouncer-debs-") as tmp:
        done = subprocess.run(["apt-get", "download", *packages], cwd=tmp, capture_output=True, text=True,
                              timeout=300, check=False)
        debs = sorted(Path(tmp).glob("*.deb"))
        if done.returncode != 0 or len(debs) < len(packages):
            raise PoolerError(f"apt-get download {' '.join(packages)} failed: "
                              f"{(done.stderr or done.stdout).strip().splitlines()[-1:]}")
        for deb in debs:
            subprocess.run(["dpkg-deb", "-x", str(deb), str(INSTALL_DIR)], check=True, timeout=120)


def ensure_pgbouncer() -> Path:
    """The PgBouncer binary: $PGBOUNCER, else the copy in INSTALL_DIR (fetched on first use)."""
    if os.environ.get("PGBOUNCER"):
        binary = Path(os.environ["PGBOUNCER"])
        if _version(binary) is None:
            raise PoolerError(f"PGBOUNCER={binary} does not run")
        return binary
    binary = INSTALL_DIR / "usr" / "sbin" / "pgbouncer"
    if not binary.exists():
        _fetch([PACKAGE])
    missing = _missing_libraries(binary)
    if missing:
        unknown = [lib for lib in missing if lib not in LIBRARY_PACKAGES]
        if unknown:
            raise PoolerError(f"PgBouncer needs shared libraries this machine lacks: {', '.join(unknown)}")
        _fetch(sorted({LIBRARY_PACKAGES[lib] for lib in missing}))
        still = _missing_libraries(binary)
        if still:
            raise PoolerError(f"PgBouncer still lacks {', '.join(still)} after fetching their packages")
    version = _version(binary)
    if version is None:
        raise PoolerError(f"{binary} does not run")
    if not version.startswith(VERSION_PREFIX):
        raise PoolerError(f"{binary} is PgBouncer {version}; expected {VERSION_PREFIX}.x")
    return binary


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _quoted(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


@dataclass
class PgBouncer:
    """One PgBouncer process in transaction mode in front of one PostgreSQL server.

    At most ``pool_size`` server connections per database and user, whatever the number of clients
    (up to ``max_client_conn``); clients beyond the pool wait for a free server connection.
    """

    work_dir: Path
    server_port: int
    users: dict[str, str]  # login -> password (PgBouncer authenticates clients and the server with them)
    server_host: str = "127.0.0.1"
    port: int = 0  # 0: a free port
    pool_size: int = DEFAULT_POOL_SIZE
    max_client_conn: int = 1000
    # How long a client waits for a server connection (e.g. while PostgreSQL restarts) before an error.
    query_wait_timeout: int = 10
    process: subprocess.Popen | None = field(default=None, init=False)
    name = "PgBouncer"

    @property
    def log_file(self) -> Path:
        return self.work_dir / "pgbouncer.log"

    def config(self) -> str:
        return "\n".join([
            "[databases]",
            # Any database name the client asks for, on the one server.
            f"* = host={self.server_host} port={self.server_port}",
            "",
            "[pgbouncer]",
            "listen_addr = 127.0.0.1",
            f"listen_port = {self.port}",
            "unix_socket_dir =",
            "auth_type = scram-sha-256",
            f"auth_file = {self.work_dir / 'userlist.txt'}",
            f"pool_mode = {POOL_MODE}",
            f"default_pool_size = {self.pool_size}",
            "min_pool_size = 0",
            "reserve_pool_size = 0",
            f"max_db_connections = {self.pool_size}",
            f"max_client_conn = {self.max_client_conn}",
            f"query_wait_timeout = {self.query_wait_timeout}",
            "server_login_retry = 1",
            "server_reset_query =",
            # What drivers send at start-up and a pooled session cannot honour; nothing of the API's.
            "ignore_startup_parameters = extra_float_digits",
            f"logfile = {self.log_file}",
            f"pidfile = {self.work_dir / 'pgbouncer.pid'}",
            "log_connections = 0",
            "log_disconnections = 0",
            "",
        ])

    def start(self, timeout: float = 30) -> PgBouncer:
        binary = ensure_pgbouncer()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = _free_port()
        userlist = self.work_dir / "userlist.txt"
        userlist.write_text("".join(f"{_quoted(u)} {_quoted(p)}\n" for u, p in self.users.items()))
        userlist.chmod(0o600)
        ini = self.work_dir / "pgbouncer.ini"
        ini.write_text(self.config())
        command = [str(binary), str(ini)]
        if os.geteuid() == 0:  # PgBouncer refuses to run as root: as the unprivileged owner of the files
            command = [str(binary), "-u", _unprivileged_user(self.work_dir), str(ini)]
        log = open(self.work_dir / "pgbouncer.out", "ab")  # noqa: SIM115 - owned by the child
        try:
            self.process = subprocess.Popen(command, env=_env(), stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise PoolerError(f"PgBouncer exited while starting: {self.tail()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return self
            time.sleep(0.1)
        self.stop()
        raise PoolerError(f"PgBouncer did not listen on port {self.port} within {timeout:.0f}s: {self.tail()}")

    def tail(self, lines: int = 10) -> str:
        text = ""
        for name in ("pgbouncer.out", "pgbouncer.log"):
            with contextlib.suppress(OSError):
                text += (self.work_dir / name).read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def url(self, dbname: str, user: str, password: str) -> str:
        return f"postgresql://{quote(user, safe='')}:{quote(password, safe='')}@127.0.0.1:{self.port}/{dbname}"

    def stop(self, timeout: float = 10) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)  # SIGTERM: PgBouncer 1.18 shuts down at once
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)


def _unprivileged_user(work_dir: Path) -> str:
    """As root: the user PostgreSQL runs as (tools/pgcluster.py makes one), owning the pooler's files."""
    import pwd

    for name in ("postgres", "medrec-pg"):
        try:
            user = pwd.getpwnam(name)
        except KeyError:
            continue
        for path in [work_dir, *work_dir.iterdir()]:
            os.chown(path, user.pw_uid, user.pw_gid)
        # Every directory above must be traversable for it to open its files.
        for parent in work_dir.parents:
            if parent == Path("/"):
                break
            mode = parent.stat().st_mode
            if not mode & 0o001:
                parent.chmod(mode | 0o001)
        return name
    raise PoolerError("running as root: PgBouncer needs an unprivileged user (postgres or medrec-pg)")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args != ["install"]:
        print(__doc__)
        return 0 if args in ([], ["--help"], ["-h"]) else 2
    try:
        binary = ensure_pgbouncer()
    except PoolerError as exc:
        print(f"pgbouncer: {exc}", file=sys.stderr)
        return 1
    print(f"{binary} (PgBouncer {_version(binary)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
