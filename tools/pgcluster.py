#!/usr/bin/env python3
"""Start and stop a project-owned PostgreSQL server (throwaway or persistent).

Used by the test suite and by local runs. No Docker and no network access needed: the
server binaries come from the system (``PG_BINDIR``, ``pg_config``, ``/usr/lib/postgresql``)
or, failing that, from the ``pgserver`` pip package.

Layout of ``data_dir``::

    pgdata/        the cluster (initdb output)
    run/           Unix socket directory
    postgres.log   server log
    state.json     {"port": ..., "password": ...}  (mode 0600)

When running as root, the PostgreSQL programs run as an unprivileged system user
(``postgres`` if present, else ``medrec-pg``, created on demand), because initdb and
postgres refuse to run as root.

CLI::

    python tools/pgcluster.py start --data-dir .local/pg --db medrec
    python tools/pgcluster.py url --data-dir .local/pg --db medrec
    python tools/pgcluster.py stop --data-dir .local/pg
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import hashlib
import importlib.util
import json
import os
import pwd
import re
import secrets
import shlex
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import quote

__all__ = ["PostgresCluster", "find_bindir", "free_port"]

_REQUIRED_PROGRAMS = ("initdb", "pg_ctl", "postgres")
# The server log must not hold patient data: no failing statements (with their values) and no
# DETAIL lines such as "Key (id_card_num)=(...) already exists".
PRIVATE_LOGGING = {"log_error_verbosity": "terse", "log_min_error_statement": "panic"}
_FALLBACK_OS_USER = "medrec-pg"
_LOCALE = "C.UTF-8"
_START_TIMEOUT = 60  # seconds, passed to pg_ctl -t
_MAX_SOCKET_DIR_LEN = 90  # sun_path is 108 bytes and must also hold "/.s.PGSQL.NNNNN"


def _has_programs(bindir: Path) -> bool:
    return all(os.access(bindir / name, os.X_OK) for name in _REQUIRED_PROGRAMS)


def _candidate_bindirs() -> Iterator[tuple[str, Path | None]]:
    """Yield (description, bindir or None) in search order; None means nothing found there."""
    pg_config = shutil.which("pg_config")
    if pg_config is None:
        yield "pg_config (not on PATH)", None
    else:
        try:
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=30, check=True
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            yield f"{pg_config} --bindir (failed)", None
        else:
            yield f"{pg_config} --bindir ({out})", Path(out)

    versioned: list[tuple[tuple[int, ...], Path]] = []
    for path in Path("/usr/lib/postgresql").glob("*/bin"):
        if re.fullmatch(r"\d+(\.\d+)*", path.parent.name):
            versioned.append((tuple(int(p) for p in path.parent.name.split(".")), path))
    if not versioned:
        yield "/usr/lib/postgresql/*/bin (none)", None
    for _, path in sorted(versioned, reverse=True):
        yield str(path), path

    try:  # locate pgserver without importing it (its import has side effects)
        spec = importlib.util.find_spec("pgserver")
    except (ImportError, ValueError):
        spec = None
    if spec is None or spec.origin is None:
        yield "pgserver package (not installed)", None
    else:
        path = Path(spec.origin).parent / "pginstall" / "bin"
        yield f"pgserver package ({path})", path


def find_bindir() -> Path:
    """Return a directory holding initdb, pg_ctl and postgres.

    Order: ``$PG_BINDIR``; ``pg_config --bindir``; highest ``/usr/lib/postgresql/*/bin``;
    the binaries bundled in the ``pgserver`` package.
    """
    env = os.environ.get("PG_BINDIR")
    if env:
        path = Path(env).expanduser().absolute()
        if _has_programs(path):
            return path
        raise RuntimeError(f"PG_BINDIR={env} does not contain {', '.join(_REQUIRED_PROGRAMS)}")
    tried = ["PG_BINDIR (unset)"]
    for description, path in _candidate_bindirs():
        if path is not None and _has_programs(path):
            return path
        tried.append(description)
    raise RuntimeError(
        f"no PostgreSQL binaries ({', '.join(_REQUIRED_PROGRAMS)}) found; tried: {'; '.join(tried)}. "
        "Install PostgreSQL, `pip install pgserver==0.1.4`, or set PG_BINDIR."
    )


def _major_version(bindir: Path) -> str | None:
    """Major version of the server binaries in bindir, e.g. "15" (None if unknown)."""
    try:
        out = subprocess.run(
            [str(bindir / "pg_ctl"), "--version"], check=False, capture_output=True, text=True, timeout=30
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"\(PostgreSQL\)\s+(\d+)", out)
    return match.group(1) if match else None


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_in_use(host: str, port: int) -> bool:
    """True if something already listens on host:port (bind test, like the postmaster does)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        return False  # let postgres report the bad address
    for family, type_, proto, _, addr in infos:
        with socket.socket(family, type_, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(addr)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return True
    return False


def _add_mode(path: Path, bits: int) -> None:
    mode = path.stat().st_mode
    if mode & bits != bits:
        path.chmod(stat.S_IMODE(mode) | bits)


def _ensure_traversable(path: Path) -> None:
    """chmod o+x path and every parent directory where missing."""
    for directory in (path, *path.parents):
        _add_mode(directory, stat.S_IXOTH)


def _ensure_tree_readable(root: Path) -> None:
    """Make a directory tree usable by other users: dirs o+rx, files o+r (o+x if u+x)."""
    if not root.is_dir():
        return
    _add_mode(root, stat.S_IROTH | stat.S_IXOTH)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            _add_mode(Path(dirpath, name), stat.S_IROTH | stat.S_IXOTH)
        for name in filenames:
            path = Path(dirpath, name)
            if path.is_symlink():
                continue
            mode = path.stat().st_mode
            _add_mode(path, stat.S_IROTH | (stat.S_IXOTH if mode & stat.S_IXUSR else 0))


def _tail(path: Path, lines: int = 20) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 16384))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


class PostgresCluster:
    """A PostgreSQL cluster living in ``data_dir``, reachable over TCP on ``host:port``.

    ``settings`` are passed to the server as ``-c name=value`` on every start.
    Use as a context manager to initialize+start on enter and stop on exit.
    """

    superuser = "postgres"

    def __init__(
        self,
        data_dir: Path | str,
        port: int | None = None,
        host: str = "127.0.0.1",
        settings: Mapping[str, str] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.pgdata = self.data_dir / "pgdata"
        self.log_file = self.data_dir / "postgres.log"
        self.state_file = self.data_dir / "state.json"
        self.host = host
        self.settings = {**PRIVATE_LOGGING, **(settings or {})}
        state = self._load_state()
        self._explicit_port = port is not None
        self.port: int = port if port is not None else int(state.get("port") or free_port())
        self.password: str = str(state.get("password") or secrets.token_urlsafe(24))
        self._bindir: Path | None = None
        self._os_user_entry: pwd.struct_passwd | None = None
        self._lock_depth = 0

    # -- paths, state, locking -------------------------------------------------------------

    @property
    def socket_dir(self) -> Path:
        """``data_dir/run``, or a short directory under /tmp if that path is too long for a socket."""
        run = self.data_dir / "run"
        if len(str(run)) <= _MAX_SOCKET_DIR_LEN:
            return run
        digest = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:16]
        # Not tempfile.gettempdir(): $TMPDIR may be long too. Ownership is checked in _prepare_dirs.
        return Path("/tmp") / f"medrec-pg-{digest}"  # noqa: S108

    @property
    def bindir(self) -> Path:
        """Directory of the PostgreSQL programs used for this cluster."""
        if self._bindir is None:
            self._bindir = self._select_bindir()
        return self._bindir

    def _select_bindir(self) -> Path:
        # An existing cluster can only be run by the major version that created it.
        try:
            wanted = (self.pgdata / "PG_VERSION").read_text().strip()
        except OSError:
            return find_bindir()
        found = find_bindir()
        if os.environ.get("PG_BINDIR") or _major_version(found) == wanted:
            return found
        seen = [f"{found} ({_major_version(found)})"]
        for _, path in _candidate_bindirs():
            if path is not None and _has_programs(path) and path != found:
                version = _major_version(path)
                if version == wanted:
                    return path
                seen.append(f"{path} ({version})")
        raise RuntimeError(
            f"{self.pgdata} was created by PostgreSQL {wanted}, but only found: {', '.join(seen)}"
        )

    def _load_state(self) -> dict[str, object]:
        try:
            data = json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise RuntimeError(f"cannot read {self.state_file}: {exc}") from None
        return data if isinstance(data, dict) else {}

    def _save_state(self) -> None:
        data = {"port": self.port, "password": self.password}
        if self._load_state() == data:
            return
        tmp = self.state_file.with_name(self.state_file.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            os.fchmod(fd, 0o600)
            json.dump(data, fh)
            fh.write("\n")
        os.replace(tmp, self.state_file)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialize init/start/stop across processes (e.g. pytest-xdist workers)."""
        if self._lock_depth:
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.data_dir / ".lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            self._lock_depth = 1
            try:
                # Another process may have initialized or started the cluster meanwhile: adopt its state.
                state = self._load_state()
                if state.get("password"):
                    self.password = str(state["password"])
                if state.get("port") and not self._explicit_port:
                    self.port = int(str(state["port"]))
                yield
            finally:
                self._lock_depth = 0
                fcntl.flock(fh, fcntl.LOCK_UN)

    # -- running programs ------------------------------------------------------------------

    def _os_user(self) -> pwd.struct_passwd | None:
        """Unprivileged user to run PostgreSQL as when we are root (None when not root)."""
        if os.geteuid() != 0:
            return None
        if self._os_user_entry is None:
            self._os_user_entry = self._pick_os_user()
        return self._os_user_entry

    def _pick_os_user(self) -> pwd.struct_passwd:
        with contextlib.suppress(OSError, KeyError):  # keep running an existing cluster as its owner
            uid = (self.pgdata / "PG_VERSION").stat().st_uid
            if uid != 0:
                return pwd.getpwuid(uid)
        for name in ("postgres", _FALLBACK_OS_USER):
            with contextlib.suppress(KeyError):
                return pwd.getpwnam(name)
        cmd = ["useradd", "--system", "--no-create-home", "-s", "/usr/sbin/nologin", _FALLBACK_OS_USER]
        try:
            proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=60)
        except OSError as exc:
            raise RuntimeError(f"cannot create system user {_FALLBACK_OS_USER}: {exc}") from None
        if proc.returncode != 0 and "already exists" not in proc.stderr:
            raise RuntimeError(f"cannot create system user {_FALLBACK_OS_USER}: {proc.stderr.strip()}")
        return pwd.getpwnam(_FALLBACK_OS_USER)

    def _run(self, program: str, *args: str, timeout: float = 120) -> tuple[int, str]:
        """Run a PostgreSQL program (as the unprivileged user if root); return (exit code, output)."""
        user = self._os_user()
        env = dict(os.environ)
        for name in ("PGDATA", "PGPORT", "PGHOST", "PGUSER", "PGPASSWORD", "PGDATABASE"):
            env.pop(name, None)

        def drop_privileges() -> None:
            assert user is not None
            os.setgroups([])
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)

        if user is not None:
            env["HOME"] = str(self.data_dir)
            # Another process may have closed a parent directory again since start (pytest resets its
            # temporary root to 0700): without this, `pg_ctl status` would call a running server stopped.
            if self.data_dir.exists():
                _ensure_traversable(self.data_dir)
        # Output goes to a file, not a pipe: pg_ctl's server child could otherwise keep a pipe open.
        with tempfile.TemporaryFile("w+") as out:
            try:
                proc = subprocess.run(
                    [str(self.bindir / program), *args],
                    check=False,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=self.data_dir,
                    env=env,
                    timeout=timeout,
                    preexec_fn=drop_privileges if user is not None else None,
                )
            except subprocess.TimeoutExpired:
                raise RuntimeError(f"{program} timed out after {timeout:.0f}s") from None
            except OSError as exc:
                raise RuntimeError(f"cannot run {self.bindir / program}: {exc}") from None
            out.seek(0)
            return proc.returncode, out.read()

    def _prepare_dirs(self) -> None:
        """Create the directory layout and give the PostgreSQL user access to it."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        socket_dir = self.socket_dir
        if socket_dir.is_symlink():
            raise RuntimeError(f"socket directory {socket_dir} is a symlink")
        socket_dir.mkdir(mode=0o755, exist_ok=True)
        self.log_file.touch(mode=0o600, exist_ok=True)
        user = self._os_user()
        allowed = {os.geteuid()} | ({user.pw_uid} if user is not None else set())
        if socket_dir.stat().st_uid not in allowed:
            raise RuntimeError(f"socket directory {socket_dir} is owned by another user")
        if user is None:
            return
        for path in (self.pgdata, socket_dir, self.log_file):
            st = path.lstat()
            if (st.st_uid, st.st_gid) != (user.pw_uid, user.pw_gid):
                os.chown(path, user.pw_uid, user.pw_gid)
        self.pgdata.chmod(0o700)
        _ensure_traversable(self.data_dir)
        _ensure_traversable(socket_dir)
        pginstall = self.bindir.resolve().parent
        if pginstall.name == "pginstall":  # pgserver bundle: may sit in a venv other users cannot read
            _ensure_traversable(pginstall)
            for sub in ("bin", "lib", "share"):
                _ensure_tree_readable(pginstall / sub)
            # its shared libs (libpq) live in site-packages/pgserver.libs, found via RPATH $ORIGIN
            _ensure_tree_readable(pginstall.parent.parent / f"{pginstall.parent.name}.libs")

    def _initialized(self) -> bool:
        return (self.pgdata / "PG_VERSION").is_file()

    def _running_port(self) -> int | None:
        """Port recorded in postmaster.pid (4th line), if present."""
        try:
            lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
            return int(lines[3])
        except (OSError, IndexError, ValueError):
            return None

    # -- public API ------------------------------------------------------------------------

    def ensure_initialized(self) -> None:
        """Run initdb unless the cluster already exists; persist port and password in state.json."""
        with self._locked():
            if self._initialized():
                if "password" not in self._load_state():
                    raise RuntimeError(
                        f"{self.pgdata} exists but {self.state_file} has no password; "
                        f"delete {self.data_dir} to start over"
                    )
                self._prepare_dirs()
                return
            self._save_state()  # before initdb, so a retry after a failure reuses the password
            self._prepare_dirs()
            fd, pwfile = tempfile.mkstemp(dir=self.data_dir, prefix=".pwfile-")
            try:
                with os.fdopen(fd, "w") as fh:
                    fh.write(self.password + "\n")
                user = self._os_user()
                if user is not None:
                    os.chown(pwfile, user.pw_uid, user.pw_gid)
                args = [
                    "-D", str(self.pgdata), "-U", self.superuser, f"--pwfile={pwfile}",
                    "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8",
                ]  # fmt: skip
                code, out = self._run("initdb", *args, f"--locale={_LOCALE}", timeout=600)
                if code != 0 and "locale" in out.lower():
                    code, out = self._run("initdb", *args, "--no-locale", timeout=600)
            finally:
                os.unlink(pwfile)
            if code != 0:
                raise RuntimeError(f"initdb failed (exit {code}) in {self.pgdata}:\n{out.strip()}")

    def is_running(self) -> bool:
        """True if a server is running on this cluster's data directory (pg_ctl status)."""
        if not self._initialized():
            return False
        code, _ = self._run("pg_ctl", "status", "-D", str(self.pgdata))
        return code == 0

    def start(self) -> None:
        """Initialize if needed and start the server; no-op if it is already running."""
        with self._locked():
            self.ensure_initialized()
            if self.is_running():
                running = self._running_port()
                if running is not None and running != self.port:
                    if self._explicit_port:
                        raise RuntimeError(f"cluster is already running on port {running}, not {self.port}")
                    self.port = running
                    self._save_state()
                return
            if _port_in_use(self.host, self.port):
                raise RuntimeError(f"port {self.port} is in use by another process")
            options = ["-p", str(self.port), "-k", str(self.socket_dir)]
            options += ["-c", f"listen_addresses={self.host}"]
            for name, value in self.settings.items():
                options += ["-c", f"{name}={value}"]
            code, out = self._run(
                "pg_ctl", "start", "-D", str(self.pgdata), "-l", str(self.log_file),
                "-w", "-t", str(_START_TIMEOUT), "-o", shlex.join(options),
                timeout=_START_TIMEOUT + 30,
            )  # fmt: skip
            if code != 0:
                raise RuntimeError(
                    f"pg_ctl start failed (exit {code}), see {self.log_file}\n{out.strip()}\n"
                    f"--- tail of {self.log_file} ---\n{_tail(self.log_file)}"
                )
            self._save_state()

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast`` shutdown; ``immediate`` is a crash, for tests); no error if it is not running."""
        if mode not in ("smart", "fast", "immediate"):
            raise ValueError(f"unknown shutdown mode {mode!r}")
        if not self._initialized():
            return
        with self._locked():
            if not self.is_running():
                return
            code, out = self._run(
                "pg_ctl", "stop", "-D", str(self.pgdata), "-m", mode, "-w", "-t", str(_START_TIMEOUT),
                timeout=_START_TIMEOUT + 30,
            )  # fmt: skip
            if code != 0 and self.is_running():
                raise RuntimeError(f"pg_ctl stop failed (exit {code}): {out.strip()}")

    def url(self, dbname: str = "postgres", user: str | None = None, password: str | None = None) -> str:
        """Connection URL; defaults to the superuser and its password (pass password="" to omit it)."""
        user = self.superuser if user is None else user
        password = self.password if password is None else password
        auth = quote(user, safe="") + (f":{quote(password, safe='')}" if password else "")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"postgresql://{auth}@{host}:{self.port}/{quote(dbname, safe='')}"

    def create_database(self, name: str, owner: str | None = None) -> None:
        """Create database ``name`` (optionally owned by role ``owner``) unless it exists."""
        import psycopg2
        from psycopg2 import errors, sql

        conn = psycopg2.connect(self.url(), connect_timeout=10)
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cur.fetchone() is not None:
                    return
                query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
                if owner is not None:
                    query = sql.SQL("{} OWNER {}").format(query, sql.Identifier(owner))
                # A concurrent creator wins the race with DuplicateDatabase or, mid-creation, UniqueViolation.
                with contextlib.suppress(errors.DuplicateDatabase, errors.UniqueViolation):
                    cur.execute(query)
        finally:
            conn.close()

    def __enter__(self) -> Self:
        self.ensure_initialized()
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the process exit code."""
    parser = argparse.ArgumentParser(
        prog="pgcluster.py",
        description="Manage the project's own PostgreSQL server.",
        epilog="start: initialize if needed, start, create --db databases, print superuser URL(s). "
        "stop: fast shutdown. status: print state; exit 0 if running, 3 if stopped. "
        "url: print superuser URL(s). Errors: one line on stderr, exit 1.",
    )
    parser.add_argument("command", choices=("start", "stop", "status", "url"))
    parser.add_argument("--data-dir", required=True, type=Path, metavar="DIR", help="cluster directory")
    parser.add_argument("--port", type=int, metavar="N", help="TCP port (default: saved, else free)")
    parser.add_argument(
        "--db", action="extend", nargs="+", default=[], metavar="NAME",
        help="database name(s): created by start, used in the printed URLs",
    )  # fmt: skip
    args = parser.parse_args(argv)
    try:
        cluster = PostgresCluster(args.data_dir, port=args.port)
        dbnames = args.db or ["postgres"]
        if args.command == "start":
            cluster.start()
            for name in args.db:
                cluster.create_database(name)
            for name in dbnames:
                print(cluster.url(name))
        elif args.command == "stop":
            cluster.stop()
        elif args.command == "status":
            if not cluster.is_running():
                print(f"stopped ({cluster.data_dir})")
                return 3
            cluster.port = cluster._running_port() or cluster.port
            print(f"running: {cluster.url(password='')} ({cluster.data_dir})")
        else:
            if not cluster._initialized() or not cluster.state_file.exists():
                raise RuntimeError(f"no cluster in {cluster.data_dir}; run `start` first")
            for name in dbnames:
                print(cluster.url(name))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # one-line error, no traceback
        lines = str(exc).strip().splitlines()
        print(f"pgcluster: error: {lines[0] if lines else type(exc).__name__}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
