"""The Prefect flow `refresh-analytics` against a real (temporary) Prefect server."""

from __future__ import annotations

import pytest

from chalicelib import config
from tests.pipeline_support import Pipeline, RandomActivity


@pytest.fixture(scope="module")
def prefect_server():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def pipeline_env(pg_cluster, tmp_path, monkeypatch):
    pipeline = Pipeline(pg_cluster, "flow", tmp_path)
    monkeypatch.setenv("APP_DB_URL", pipeline.settings.app_db_url)
    monkeypatch.setenv("ANALYTIC_DB_URL", pipeline.settings.analytic_db_url)
    monkeypatch.setenv("SLING_HOME_DIR", str(pipeline.settings.sling_home))
    monkeypatch.setenv("PSEUDONYM_KEY", pipeline.pseudonym_key_text)
    return pipeline


def test_the_flow_refreshes_and_publishes_a_summary(prefect_server, pipeline_env, monkeypatch):
    from prefect.client.orchestration import get_client

    from pipeline.flow import refresh_analytics

    activity = RandomActivity(pipeline_env, seed=21)
    for _ in range(30):
        activity.step()
    state = refresh_analytics(mode="incremental", return_state=True)
    assert state.is_completed()
    result = state.result()
    assert result["status"] == "succeeded" and result["check_passed"] is True
    assert pipeline_env.analytic() == pipeline_env.reference()
    assert pipeline_env.deidentified() == pipeline_env.deidentified_reference()
    assert result["deidentified_rows_inserted"] == len(pipeline_env.reference())

    async def artifacts():
        async with get_client() as client:
            return await client.read_artifacts()

    import asyncio

    summaries = [a for a in asyncio.run(artifacts()) if a.key == config.REFRESH_SUMMARY_ARTIFACT]
    assert summaries and "Analytics refresh" in summaries[0].data

    # Sling failing (bad connection string) fails the flow run with a clear message
    monkeypatch.setenv("APP_DB_URL", "postgresql://nobody:secret-pw@127.0.0.1:1/nowhere")
    failed = refresh_analytics(mode="incremental", return_state=True)
    assert failed.is_failed()
    assert "Sling replication failed" in failed.message or "Sling replication failed" in str(
        failed.result(raise_on_failure=False)
    )
    assert pipeline_env.runs()[-1][0] == "failed"
