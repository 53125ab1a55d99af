"""A minimal client for the Prefect REST API (stdlib only: it runs inside the API's Lambda bundle).

Only what the state machine needs: start a run of a deployment, read a run's state, and, once it has
ended, what its metrics need (its times, its summary artifact, the deployment's last completed run).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any


class PrefectUnavailable(RuntimeError):
    """The Prefect API could not be reached or refused the request (worth a retry)."""


@dataclass(frozen=True)
class PrefectApi:
    url: str                      # e.g. http://127.0.0.1:4200/api
    api_key: str | None = None    # Prefect Cloud only
    timeout: float = 10.0

    @classmethod
    def from_env(cls) -> PrefectApi:
        url = os.environ.get("PREFECT_API_URL")
        if not url:
            raise PrefectUnavailable("PREFECT_API_URL is not set")
        return cls(url.rstrip("/"), os.environ.get("PREFECT_API_KEY") or None)

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        # Imported here: the API handler shares this bundle and should not pay for HTTP client modules.
        import urllib.error
        import urllib.request

        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.url}{path}", data=data, method=method)  # noqa: S310
        request.add_header("Content-Type", "application/json")
        if self.api_key:
            request.add_header("Authorization", f"Bearer {self.api_key}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                return json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            raise PrefectUnavailable(f"Prefect API answered {exc.code} for {method} {path}") from None
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise PrefectUnavailable(f"Prefect API unreachable: {type(exc).__name__}") from None

    def start_deployment_run(self, deployment: str, parameters: dict[str, Any]) -> str:
        """``deployment`` is "<flow name>/<deployment name>"; returns the new flow run's id."""
        from urllib.parse import quote

        flow_name, _, deployment_name = deployment.partition("/")
        quoted = f"{quote(flow_name)}/{quote(deployment_name)}"
        deployment_id = self._call("GET", f"/deployments/name/{quoted}")["id"]
        run = self._call("POST", f"/deployments/{deployment_id}/create_flow_run", {"parameters": parameters})
        return str(run["id"])

    def flow_run(self, flow_run_id: str) -> dict[str, Any]:
        """The flow run as Prefect describes it (state, start_time, end_time, deployment_id, ...)."""
        from urllib.parse import quote

        return self._call("GET", f"/flow_runs/{quote(flow_run_id)}")

    def flow_run_state(self, flow_run_id: str) -> tuple[str, str]:
        """(state type, message): SCHEDULED, PENDING, RUNNING, COMPLETED, FAILED, CRASHED, CANCELLED, ..."""
        state = self.flow_run(flow_run_id).get("state") or {}
        return str(state.get("type") or "PENDING"), str(state.get("message") or "")

    def latest_completed_run(self, deployment_id: str) -> dict[str, Any] | None:
        """The deployment's flow run that completed last, if any."""
        runs = self._call("POST", "/flow_runs/filter", {
            "flow_runs": {"deployment_id": {"any_": [deployment_id]}, "state": {"type": {"any_": ["COMPLETED"]}}},
            "sort": "END_TIME_DESC",
            "limit": 1,
        })
        return runs[0] if isinstance(runs, list) and runs else None

    def artifact_data(self, flow_run_id: str, key: str) -> str | None:
        """The content of the flow run's artifact named ``key`` (the newest, if several)."""
        artifacts = self._call("POST", "/artifacts/filter", {
            "artifacts": {"flow_run_id": {"any_": [flow_run_id]}, "key": {"any_": [key]}},
            "sort": "CREATED_DESC",
            "limit": 1,
        })
        if isinstance(artifacts, list) and artifacts and isinstance(artifacts[0].get("data"), str):
            return artifacts[0]["data"]
        return None
