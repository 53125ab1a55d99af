"""Samples, every --interval seconds while the load runs: PostgreSQL's client connections to `app`
(pg_stat_activity, by state), the CPU time and resident memory of every process of the target (by
role: PostgreSQL, API server, emulator, Lambda workers, pooler, Prefect) and of the load generator,
and the machine's busy CPU. Summarised per step or soak window by wall-clock time."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psutil
import psycopg2

CONNECTIONS_SQL = """
SELECT count(*),
       count(*) FILTER (WHERE state = 'active'),
       count(*) FILTER (WHERE state LIKE 'idle in transaction%%')
  FROM pg_stat_activity
 WHERE datname = %s AND backend_type = 'client backend' AND pid <> pg_backend_pid()
"""


def role_of(process: psutil.Process, roots: dict[str, int | None]) -> str:
    """What a process is for, from who started it and its command line."""
    try:
        cmdline = " ".join(process.cmdline())
        parent = process.ppid()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return "other"
    if roots.get("postgres") in (process.pid, parent):
        return "postgres"
    if process.pid == roots.get("load generator"):
        return "load generator"
    if "pgbouncer" in cmdline:
        return "pooler"
    if "tools.local_server" in cmdline:
        return "api server"
    if "bin/ministack" in cmdline:
        return "emulator"
    if "prefect" in cmdline or "pipeline.flow" in cmdline:
        return "prefect"
    try:
        if "bin/ministack" in " ".join(psutil.Process(parent).cmdline()):
            return "lambda workers"
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        pass
    return "other"


@dataclass
class Sample:
    t: float
    connections: int
    active: int
    idle_in_transaction: int
    cpu_seconds: dict[str, float]      # cumulative user+system CPU of the live processes, by role
    rss: dict[int, tuple[str, int]]    # pid → (role, resident bytes)
    private: dict[int, int]            # pid → resident bytes not shared (RSS minus shared pages)
    machine_busy: float                # cumulative busy CPU seconds of the whole machine


@dataclass
class Sampler:
    owner_url: str
    target_pid: int
    postmaster_pid: Callable[[], int | None]
    interval: float = 0.5
    database: str = "app"
    load_generator_pid: int | None = None
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _processes: dict[int, psutil.Process] = field(default_factory=dict)

    def start(self) -> Sampler:
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _process(self, pid: int) -> psutil.Process | None:
        # psutil measures CPU per Process object: keep one per pid
        if pid not in self._processes:
            try:
                self._processes[pid] = psutil.Process(pid)
            except psutil.NoSuchProcess:  # a short-lived child (an autovacuum worker, a backend) already gone
                return None
        return self._processes[pid]

    def _tree(self) -> list[psutil.Process]:
        pids: set[int] = set()
        for root in (self.target_pid, self.postmaster_pid(), self.load_generator_pid):
            if root is None:
                continue
            try:
                top = psutil.Process(root)
                pids.add(root)
                pids.update(child.pid for child in top.children(recursive=True))
            except psutil.NoSuchProcess:
                continue
        return [process for pid in sorted(pids) if (process := self._process(pid)) is not None]

    def _run(self) -> None:
        conn = psycopg2.connect(self.owner_url, connect_timeout=5)
        conn.autocommit = True
        try:
            while not self._stop.is_set():
                try:
                    self.samples.append(self._sample(conn))
                except psutil.Error as exc:  # a process vanished mid-sample: the next sample sees the new tree
                    print(f"sampler: {exc}", file=sys.stderr)
                self._stop.wait(self.interval)
        finally:
            conn.close()

    def _sample(self, conn: Any) -> Sample:
        with conn.cursor() as cur:
            cur.execute(CONNECTIONS_SQL, (self.database,))
            total, active, idle_tx = cur.fetchone()
        roots = {"postgres": self.postmaster_pid(), "load generator": self.load_generator_pid}
        cpu: dict[str, float] = {}
        rss: dict[int, tuple[str, int]] = {}
        private: dict[int, int] = {}
        for process in self._tree():
            try:
                role = role_of(process, roots)
                times = process.cpu_times()
                cpu[role] = cpu.get(role, 0.0) + times.user + times.system
                memory = process.memory_info()
                rss[process.pid] = (role, memory.rss)
                # PostgreSQL's RSS grows as a backend touches more of shared_buffers: not a leak
                private[process.pid] = memory.rss - getattr(memory, "shared", 0)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        machine = psutil.cpu_times()
        busy = machine.user + machine.nice + machine.system + machine.irq + machine.softirq + machine.steal
        return Sample(time.time(), total, active, idle_tx, cpu, rss, private, busy)

    def between(self, start: float, end: float) -> list[Sample]:
        return [s for s in self.samples if start <= s.t <= end]

    def summarise(self, start: float, end: float) -> dict[str, Any]:
        """Connections (max, mean, max active) and CPU use (percent of one core, by role; machine busy in
        percent of all cores) over [start, end]."""
        window = self.between(start, end)
        if len(window) < 2:
            return {"samples": len(window)}
        first, last = window[0], window[-1]
        seconds = last.t - first.t
        cpu = {role: round(100 * (last.cpu_seconds.get(role, 0.0) - first.cpu_seconds.get(role, 0.0)) / seconds, 1)
               for role in sorted(set(first.cpu_seconds) | set(last.cpu_seconds))}
        workers = {pid for pid, (role, _) in last.rss.items() if role == "lambda workers"}
        return {
            "samples": len(window),
            "connections_min": min(s.connections for s in window),
            "connections_max": max(s.connections for s in window),
            "connections_mean": round(sum(s.connections for s in window) / len(window), 1),
            "active_max": max(s.active for s in window),
            "idle_in_transaction_max": max(s.idle_in_transaction for s in window),
            "cpu_percent_of_one_core": cpu,
            "machine_busy_percent": round(100 * (last.machine_busy - first.machine_busy)
                                          / (seconds * psutil.cpu_count()), 1),
            # busy CPU of processes outside this test (other work on the same machine), % of one core
            "other_processes_cpu_percent": round(100 * (last.machine_busy - first.machine_busy) / seconds
                                                 - sum(cpu.values()), 1),
            "lambda_workers": len(workers),
            "rss_mb": {role: round(sum(b for r, b in last.rss.values() if r == role) / 2**20, 1)
                       for role in sorted({r for r, _ in last.rss.values()})},
        }
