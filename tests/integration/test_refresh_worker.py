"""The refresh flow deployed from source on a process work pool and run by its own worker process,
against a real (temporary) Prefect server: the way it runs on ECS, rather than ``flow.serve``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.pipeline_support import Pipeline, RandomActivity

ROOT = Path(__file__).resolve().parents[2]
QUIET_PREFECT = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}


@pytest.fixture(scope="module")
def prefect_api_url():
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield PREFECT_API_URL.value()


def test_a_worker_on_a_process_pool_runs_the_deployed_flow(prefect_api_url, pg_cluster, tmp_path):
    from prefect.deployments import run_deployment

    from chalicelib.config import REFRESH_FLOW
    from pipeline.deployment import deploy

    pipeline = Pipeline(pg_cluster, "worker", tmp_path)
    activity = RandomActivity(pipeline, seed=41)
    for _ in range(40):
        activity.step()
    pool = "refresh-test-pool"
    deployment_id = deploy(pool)
    assert deploy(pool) == deployment_id  # deploying again updates the same deployment

    # The worker's environment is all the flow-run process gets: databases, key, code path.
    env = {
        **os.environ, **QUIET_PREFECT,
        "PREFECT_API_URL": prefect_api_url,
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_HOME": str(tmp_path / "worker-home"),
        "APP_DB_URL": pipeline.settings.app_db_url,
        "ANALYTIC_DB_URL": pipeline.settings.analytic_db_url,
        "PSEUDONYM_KEY": pipeline.pseudonym_key_text,
        "SLING_HOME_DIR": str(tmp_path / "sling"),
        "PYTHONPATH": f"{ROOT / 'functions'}:{ROOT}",
    }  # fmt: skip
    worker_log = tmp_path / "worker.log"
    with worker_log.open("wb") as log:
        worker = subprocess.Popen(
            [str(Path(sys.executable).parent / "prefect"), "worker", "start", "--pool", pool, "--type", "process",
             "--limit", "1", "--install-policy", "never"],
            env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            flow_run = run_deployment(f"{REFRESH_FLOW}/{REFRESH_FLOW}", parameters={"mode": "incremental"},
                                      timeout=240, poll_interval=1)  # fmt: skip
        finally:
            worker.terminate()
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
    output = worker_log.read_text(errors="replace")
    assert flow_run.state is not None and flow_run.state.is_completed(), (flow_run.state, output[-3000:])
    assert flow_run.work_pool_name == pool and flow_run.deployment_id == deployment_id
    assert pipeline.runs()[-1][0] == "succeeded"
    assert pipeline.analytic() == pipeline.reference()
    assert pipeline.deidentified() == pipeline.deidentified_reference()
    # The key reached the run through the worker's environment only: never in the deployment or the logs.
    assert pipeline.pseudonym_key_text not in output
