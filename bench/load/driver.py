"""Drives the load with Locust as a library (headless) and writes what every step measured as JSON.

A separate process from bench/load_test.py because Locust patches the standard library for gevent;
the caller samples PostgreSQL and the processes meanwhile and joins both by wall-clock time.

  steps: closed loop, concurrency 1 → 2 → … (users = concurrent requests), each step held
         --step-seconds, the first --warmup-seconds of it not counted (connections opened, the
         emulator's workers started)
  soak:  --users at a steady total --rate for --duration seconds, summarised per --window
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from gevent import monkey

monkey.patch_all()

import gevent  # noqa: E402
from locust import constant_throughput  # noqa: E402
from locust.env import Environment  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.load.locustfile import Clinician  # noqa: E402
from bench.load.stats import summarise  # noqa: E402


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", required=True, help="the API's base URL")
    parser.add_argument("--dataset", required=True, help="JSON written by the set-up (clinicians and tokens)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", default="1,2,4,8,16,32,64")
    parser.add_argument("--step-seconds", type=float, default=20)
    parser.add_argument("--warmup-seconds", type=float, default=5)
    parser.add_argument("--soak", action="store_true", help="a steady rate instead of steps")
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--rate", type=float, default=20, help="soak: total requests/s")
    parser.add_argument("--duration", type=float, default=600, help="soak: seconds")
    parser.add_argument("--window", type=float, default=60, help="soak: seconds per summary row")
    args = parser.parse_args(argv)
    os.environ["LOAD_DATASET"] = args.dataset

    samples: list[tuple[float, str, float, int, bool]] = []

    def on_request(request_type, name, response_time, response_length, response=None, exception=None,
                   **_kw) -> None:
        status = getattr(response, "status_code", 0) or 0
        samples.append((time.time(), name, float(response_time), int(status), exception is None))

    if args.soak:
        Clinician.wait_time = constant_throughput(args.rate / args.users)
    env = Environment(user_classes=[Clinician], host=args.host)
    env.events.request.add_listener(on_request)
    runner = env.create_local_runner()
    report: dict = {"mode": "soak" if args.soak else "steps", "steps": [], "windows": []}
    try:
        if args.soak:
            runner.start(args.users, spawn_rate=args.users)
            began = time.time()
            windows = max(1, round(args.duration / args.window))
            for number in range(windows):
                gevent.sleep(max(0.0, began + (number + 1) * args.window - time.time()))
                row = summarise(samples, began + number * args.window, began + (number + 1) * args.window)
                report["windows"].append(row)
                print(f"  soak {number + 1}/{windows}: {row['rps']} req/s, p50 {_ms(row['p50_ms'])} ms, "
                      f"p99 {_ms(row['p99_ms'])} ms, errors {row['errors']}", file=sys.stderr, flush=True)
            report["total"] = summarise(samples, began, began + windows * args.window)
        else:
            for users in [int(x) for x in args.steps.split(",")]:
                stepped = time.time()
                runner.start(users, spawn_rate=max(users, 1))
                gevent.sleep(args.warmup_seconds)
                measured = time.time()
                gevent.sleep(args.step_seconds)
                row = {"users": users, **summarise(samples, measured, time.time()),
                       "warmup": summarise(samples, stepped, measured)}
                report["steps"].append(row)
                print(f"  {users:3d} users: {row['rps']} req/s, p50 {_ms(row['p50_ms'])} ms, "
                      f"p99 {_ms(row['p99_ms'])} ms, "
                      f"errors {row['errors']} (+{row['warmup']['errors']} in warm-up)", file=sys.stderr, flush=True)
                Path(args.out).write_text(json.dumps(report, indent=1))
    finally:
        runner.quit()
        report["requests_total"] = len(samples)
        Path(args.out).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
