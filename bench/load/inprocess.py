"""The limit next to the load test: the same mix, the same clinicians and the same database, called
in-process through Chalice's test client (authorizer, routing, service, audit, durable commit; no
HTTP, no emulator, no load generator), one call after another on one core.

Prints one JSON line: requests, seconds, req/s, p50/p99 in ms. Needs DATABASE_URL, JWT_SECRET and
LOAD_DATASET in the environment.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "functions"), str(ROOT)]

from bench.load.mix import headers, next_request  # noqa: E402
from bench.load.stats import percentile  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    args = parser.parse_args(argv)
    clinicians = json.loads(Path(os.environ["LOAD_DATASET"]).read_text())["clinicians"]
    devnull = open(os.devnull, "w")  # noqa: SIM115 - the app's JSON log lines: formatted, then dropped
    with contextlib.redirect_stdout(devnull):
        from chalice.test import Client

        from app import app
    client = Client(app)
    rng = random.Random(1)
    latencies: list[float] = []
    with contextlib.redirect_stdout(devnull):
        began = 0.0
        for number in range(args.warmup + args.requests):
            if number == args.warmup:
                began = time.perf_counter()
            clinician = clinicians[number % len(clinicians)]
            request = next_request(rng, clinician)
            started = time.perf_counter()
            response = client.http.request(request.method, request.path, body=request.body or b"",
                                           headers=headers(clinician["token"], request.body is not None))
            if number >= args.warmup:
                latencies.append((time.perf_counter() - started) * 1000)
            if response.status_code >= 400:
                print(f"{request.name} answered {response.status_code}", file=sys.stderr)
                return 1
        seconds = time.perf_counter() - began
    latencies.sort()
    print(json.dumps({"requests": args.requests, "seconds": round(seconds, 3),
                      "rps": round(args.requests / seconds, 1), "mean_ms": round(seconds * 1000 / args.requests, 3),
                      "p50_ms": round(percentile(latencies, 50), 3), "p99_ms": round(percentile(latencies, 99), 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
