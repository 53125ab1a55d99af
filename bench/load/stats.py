"""Summaries of timed requests: nearest-rank percentiles, throughput, errors by status."""

from __future__ import annotations


def percentile(sorted_values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile of an ascending list (None when empty)."""
    if not sorted_values:
        return None
    rank = max(1, min(len(sorted_values), int(-(-pct * len(sorted_values) // 100))))
    return sorted_values[rank - 1]


def summarise(samples: list[tuple[float, str, float, int, bool]], start: float, end: float) -> dict:
    """Requests completed in [start, end): throughput, latency percentiles (ms), errors by status."""
    window = [s for s in samples if start <= s[0] < end]
    latencies = sorted(s[2] for s in window)
    errors: dict[str, int] = {}
    by_name: dict[str, list[float]] = {}
    for _, name, ms, status, ok in window:
        by_name.setdefault(name, []).append(ms)
        if not ok:
            errors[str(status)] = errors.get(str(status), 0) + 1
    seconds = end - start
    return {
        "start": start, "end": end, "seconds": round(seconds, 3), "requests": len(window),
        "rps": round(len(window) / seconds, 2) if seconds > 0 else None,
        "p50_ms": percentile(latencies, 50), "p90_ms": percentile(latencies, 90),
        "p99_ms": percentile(latencies, 99), "max_ms": latencies[-1] if latencies else None,
        "errors": sum(errors.values()), "errors_by_status": errors,
        "by_route": {name: {"requests": len(v), "p50_ms": percentile(sorted(v), 50)}
                     for name, v in sorted(by_name.items())},
    }
