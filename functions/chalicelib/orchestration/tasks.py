"""The two Lambda tasks of state_machines/refresh_analytics.asl.json."""

from __future__ import annotations

import os
from typing import Any

from chalicelib.orchestration.prefect_api import PrefectApi


def start_refresh(event: dict[str, Any], api: PrefectApi | None = None) -> dict[str, Any]:
    # The flow validates its parameters; a bad one fails the flow run, and so the execution, with its reason.
    mode = (event or {}).get("mode") or "incremental"
    api = api or PrefectApi.from_env()
    deployment = os.environ.get("REFRESH_DEPLOYMENT", "refresh-analytics/refresh-analytics")
    return {"flowRunId": api.start_deployment_run(deployment, {"mode": mode})}


def refresh_status(event: dict[str, Any], api: PrefectApi | None = None) -> dict[str, Any]:
    flow_run_id = str(event["flowRunId"])
    api = api or PrefectApi.from_env()
    state, message = api.flow_run_state(flow_run_id)
    return {
        "flowRunId": flow_run_id,
        "polls": int(event.get("polls") or 0) + 1,
        "state": state,
        "message": message or f"the flow run ended in state {state}",
    }
