"""Plot the load test: throughput (as measured, and as a multiple of the in-process limit of the same
run) and p99 latency against concurrency, one line per target, from bench/results/load_*.json.

    .venv/bin/python bench/plot_load.py [--output docs/load-test.png]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "load-test.png")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    runs = [json.loads(p.read_text()) for p in sorted(args.results.glob("load_*.json"))]
    if not runs:
        print(f"no load_*.json in {args.results}: run `make bench-load` first", file=sys.stderr)
        return 1

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (rps_ax, ratio_ax, p99_ax) = plt.subplots(1, 3, figsize=(15, 4.6))
    for number, run in enumerate(runs):
        steps = [s for s in run["steps"] if s.get("rps")]
        users = [s["users"] for s in steps]
        label, color = run["target"], f"C{number}"
        rps_ax.plot(users, [s["rps"] for s in steps], marker="o", color=color, label=label)
        ratio_ax.plot(users, [s["ratio_to_limit"] for s in steps], marker="o", color=color, label=label)
        p99_ax.plot(users, [s["p99_ms"] for s in steps], marker="o", color=color, label=f"{label} p99")
        p99_ax.plot(users, [s["p50_ms"] for s in steps], marker=".", linestyle=":", color=color, label=f"{label} p50")
    for ax in (rps_ax, ratio_ax, p99_ax):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent clinicians (closed loop)")
        ax.set_xticks([1, 2, 4, 8, 16, 32, 64], labels=["1", "2", "4", "8", "16", "32", "64"])
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    rps_ax.set_ylabel("requests/s")
    rps_ax.set_title("throughput")
    ratio_ax.set_ylabel("× the in-process limit (same run)")
    ratio_ax.set_title("throughput ÷ one in-process caller")
    ratio_ax.axhline(1.0, color="grey", linewidth=0.8)
    p99_ax.set_yscale("log")
    p99_ax.set_ylabel("latency ms (log)")
    p99_ax.set_title("p50 and p99 latency")
    started = ", ".join(sorted({r["machine"]["started"] for r in runs}))
    fig.suptitle(f"Load test, 70 % reads / 20 % searches / 10 % writes, loopback, "
                 f"{runs[0]['machine']['cpus']} CPUs shared with the load generator ({started})", fontsize=10)
    fig.tight_layout()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.output, dpi=110)
    print(f"written: {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
