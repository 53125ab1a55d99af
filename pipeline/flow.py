"""The Prefect flow ``refresh-analytics``: replicate → apply changes → check, as tasks.

Run one refresh by hand:        python -m pipeline.flow [--mode full]
Serve it on a schedule:         python -m pipeline.flow --serve [--interval 900]
On a work pool with a worker:   python -m pipeline.deployment --help (the way it runs on ECS)
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NONE

from chalicelib.config import REFRESH_FLOW, REFRESH_INCREMENTAL, REFRESH_MODES, REFRESH_SUMMARY_ARTIFACT
from pipeline import refresh

# Sling and database hiccups are worth a retry; the steps are idempotent.
_TASKS = {
    "replicate": task(refresh.replicate, name="replicate", retries=2, retry_delay_seconds=3, cache_policy=NONE),
    "apply-changes": task(refresh.apply_changes, name="apply-changes", retries=1, retry_delay_seconds=3,
                          cache_policy=NONE),
    "check": task(refresh.check, name="check", cache_policy=NONE),
}


def _as_task(name: str, function: Any, *args: Any) -> Any:
    return _TASKS[name](*args)


@flow(name=REFRESH_FLOW, log_prints=False)
def refresh_analytics(mode: str = REFRESH_INCREMENTAL) -> dict[str, Any]:
    """Bring analytic.medical_record_denormalized and its de-identified counterpart
    analytic.medical_record_deidentified up to date with the application database."""
    logger = get_run_logger()
    try:
        result = refresh.run_refresh(mode, step=_as_task)
    except Exception as exc:
        logger.error("refresh failed: %s", refresh._redact(str(exc)))
        raise
    create_markdown_artifact(
        key=REFRESH_SUMMARY_ARTIFACT, markdown=refresh.summary_markdown(result), description="analytics refresh"
    )
    logger.info(
        "refresh %s: %s inserted, %s updated, %s deleted; de-identified: %s inserted, %s updated, %s deleted",
        result.status, result.rows_inserted, result.rows_updated, result.rows_deleted,
        result.deidentified_rows_inserted, result.deidentified_rows_updated, result.deidentified_rows_deleted,
    )
    return result.as_dict()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.flow", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=REFRESH_MODES, default=REFRESH_INCREMENTAL)
    parser.add_argument("--serve", action="store_true", help="serve the flow with a schedule (needs a Prefect server)")
    parser.add_argument("--interval", type=int, default=900,
                        help="schedule interval in seconds (with --serve; 0: no schedule, runs only when triggered)")
    args = parser.parse_args(argv)
    if args.serve:
        schedule = {"interval": args.interval} if args.interval > 0 else {}
        refresh_analytics.serve(name=REFRESH_FLOW, parameters={"mode": args.mode}, **schedule)
        return 0
    try:
        result = refresh_analytics(mode=args.mode)
    except Exception as exc:  # the flow run already logged it; one line for the terminal
        print(f"refresh failed: {refresh._redact(str(exc))}", file=sys.stderr)
        return 1
    print(refresh.summary_markdown(refresh.RefreshResult(**result)))
    return 0 if result["status"] in ("succeeded", "skipped") else 1


if __name__ == "__main__":
    sys.exit(main())
