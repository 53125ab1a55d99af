"""The refresh flow on a Prefect work pool, run by a worker of its own (the way it runs on ECS).

``flow.serve`` (``python -m pipeline.flow --serve``) runs flow runs inside the serving process. In
production the flow runs instead as a *deployment* on a *work pool*: the Prefect server queues each
run (from the schedule, the state machine or the UI) on the pool, and a worker polling the pool
starts it as a process of its own (on ECS: an ``ecs`` pool, a worker service, a task per run; here a
``process`` pool). The deployment is made *from source*: the worker's flow-run process loads
``pipeline/flow.py:refresh_analytics`` from this directory, and reads the databases and the
pseudonym key from the worker's environment (never stored in Prefect).

    # once (the Prefect server at PREFECT_API_URL): the pool and the deployment
    python -m pipeline.deployment --pool refresh-analytics-pool [--interval 900]
    # the worker, with the refresh's environment (APP_DB_URL, ANALYTIC_DB_URL, PSEUDONYM_KEY, SLING_HOME_DIR)
    # and PYTHONPATH=functions:. set
    prefect worker start --pool refresh-analytics-pool --type process
    # a run, as the state machine starts it
    prefect deployment run refresh-analytics/refresh-analytics
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from uuid import UUID

from chalicelib.config import REFRESH_FLOW, REFRESH_INCREMENTAL, REFRESH_MODES

SOURCE_DIR = Path(__file__).resolve().parent.parent  # the repository root: the deployment's source
ENTRYPOINT = "pipeline/flow.py:refresh_analytics"  # relative to SOURCE_DIR
DEFAULT_POOL = "refresh-analytics-pool"
POOL_TYPE = "process"


def ensure_work_pool(name: str) -> None:
    """Create the process work pool ``name`` with the process worker's default job template, unless it exists."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound
    from prefect.workers.process import ProcessWorker

    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(name)
        except ObjectNotFound:
            client.create_work_pool(WorkPoolCreate(
                name=name, type=POOL_TYPE, base_job_template=ProcessWorker.get_default_base_job_template(),
            ))  # fmt: skip


def deploy(pool: str = DEFAULT_POOL, mode: str = REFRESH_INCREMENTAL, interval_seconds: int = 0,
           source: Path = SOURCE_DIR) -> UUID:
    """The work pool (if missing) and the ``refresh-analytics`` deployment on it, from ``source``;
    returns the deployment's id. ``interval_seconds`` > 0 gives it a schedule of its own (none by
    default: on AWS the EventBridge schedule starts the state machine, which starts the runs)."""
    from prefect import flow

    if mode not in REFRESH_MODES:
        raise ValueError(f"mode must be one of {', '.join(REFRESH_MODES)}")
    ensure_work_pool(pool)
    refresh_flow = flow.from_source(source=str(source), entrypoint=ENTRYPOINT)
    return refresh_flow.deploy(
        name=REFRESH_FLOW,
        work_pool_name=pool,
        parameters={"mode": mode},
        interval=interval_seconds or None,
        build=False,
        push=False,
        print_next_steps=False,
        description="Bring the analytic tables up to date with the application database.",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.deployment", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--pool", default=DEFAULT_POOL, help=f"work pool name (default {DEFAULT_POOL})")
    parser.add_argument("--mode", choices=REFRESH_MODES, default=REFRESH_INCREMENTAL)
    parser.add_argument("--interval", type=int, default=0,
                        help="schedule interval in seconds (default 0: no schedule, runs only when started)")
    args = parser.parse_args(argv)
    if args.interval < 0:
        parser.error("--interval must not be negative")
    deployment_id = deploy(args.pool, args.mode, args.interval)
    print(f"deployment {REFRESH_FLOW}/{REFRESH_FLOW} ({deployment_id}) on work pool {args.pool!r}; "
          f"start its worker: prefect worker start --pool {args.pool} --type {POOL_TYPE}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
