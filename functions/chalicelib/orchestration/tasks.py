"""The two Lambda tasks of state_machines/refresh_analytics.asl.json.

When ``refresh_status`` sees the flow run end, it also publishes the run's metrics (chalicelib/metrics.py),
from what Prefect already holds and the task can read with the access it has: the flow run's own times,
the summary artifact the flow writes at the end of every run (rows inserted, updated and deleted), and
the deployment's last completed run (how old the analytic table's data is). Reading
``analytic.refresh_run`` instead would give this function a login to the analytic database and a route
to it, for numbers the artifact already carries.
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from typing import Any

from chalicelib import config, metrics
from chalicelib.observability import logger
from chalicelib.orchestration.prefect_api import PrefectApi

# The run's states that end it: a success, and the ways it can fail (the state machine fails on these).
SUCCEEDED_STATES = frozenset({"COMPLETED"})
FAILED_STATES = frozenset({"FAILED", "CRASHED", "CANCELLED"})
# The analytic table's row of the summary: "| medical_record_denormalized | inserted | updated | deleted | ...".
_ANALYTIC_ROW = re.compile(r"^\|\s*medical_record_denormalized\s*\|\s*(\d+)\s*\|\s*(\d+)\s*\|\s*(\d+)\s*\|", re.M)


def start_refresh(event: dict[str, Any], api: PrefectApi | None = None) -> dict[str, Any]:
    # The flow validates its parameters; a bad one fails the flow run, and so the execution, with its reason.
    mode = (event or {}).get("mode") or config.REFRESH_INCREMENTAL
    api = api or PrefectApi.from_env()
    deployment = os.environ.get("REFRESH_DEPLOYMENT", config.REFRESH_DEPLOYMENT)
    return {"flowRunId": api.start_deployment_run(deployment, {"mode": mode})}


def refresh_status(event: dict[str, Any], api: PrefectApi | None = None) -> dict[str, Any]:
    flow_run_id = str(event["flowRunId"])
    api = api or PrefectApi.from_env()
    state, message = api.flow_run_state(flow_run_id)
    if state in SUCCEEDED_STATES or state in FAILED_STATES:
        metrics.refresh_finished(refresh_outcome(api, flow_run_id, state))
    return {
        "flowRunId": flow_run_id,
        "polls": int(event.get("polls") or 0) + 1,
        "state": state,
        "message": message or f"the flow run ended in state {state}",
    }


def refresh_outcome(
    api: PrefectApi, flow_run_id: str, state: str, now: datetime | None = None
) -> metrics.RefreshOutcome:
    """What the ended run's metrics say; a number Prefect cannot give is left out, never guessed."""
    now = now or datetime.now(UTC)
    duration_ms = rows_changed = data_age = None
    try:
        run = api.flow_run(flow_run_id)
        started, ended = _timestamp(run.get("start_time")), _timestamp(run.get("end_time"))
        duration_ms = (ended - started).total_seconds() * 1000 if started and ended else None
        rows_changed = rows_changed_in_summary(api.artifact_data(flow_run_id, config.REFRESH_SUMMARY_ARTIFACT))
        if run.get("deployment_id"):
            last = api.latest_completed_run(str(run["deployment_id"]))
            last_started = _timestamp((last or {}).get("start_time"))
            # The data of a run is read after it starts: its start bounds the table's age from above.
            data_age = max((now - last_started).total_seconds(), 0.0) if last_started else None
    except Exception as exc:  # the run's outcome is still worth publishing without these
        logger.warning("refresh details unavailable for metrics", extra={"error_type": type(exc).__name__})
    return metrics.RefreshOutcome(
        succeeded=state in SUCCEEDED_STATES,
        duration_ms=duration_ms,
        rows_changed=rows_changed,
        data_age_seconds=data_age,
    )


def rows_changed_in_summary(markdown: str | None) -> int | None:
    """Analytic rows inserted + updated + deleted, read from the run's summary artifact."""
    match = _ANALYTIC_ROW.search(markdown or "")
    return sum(int(n) for n in match.groups()) if match else None


def _timestamp(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
