"""The EMF documents the API and the refresh status task print (chalicelib/metrics.py), without I/O."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from chalicelib import config, metrics
from chalicelib.orchestration import tasks


def emf_documents(text: str) -> list[dict[str, Any]]:
    docs = []
    for line in text.splitlines():
        if line.startswith("{") and '"_aws"' in line:
            docs.append(json.loads(line))
    return docs


def directive(doc: dict[str, Any]) -> dict[str, Any]:
    (only,) = doc["_aws"]["CloudWatchMetrics"]
    return only


def values(doc: dict[str, Any]) -> dict[str, float]:
    names = [m["Name"] for m in directive(doc)["Metrics"]]
    return {name: sum(doc[name]) for name in names}


def test_a_request_prints_one_document_with_its_route_status_class_and_counts(capsys):
    capsys.readouterr()
    tally = metrics.request_started()
    metrics.audit_event_committed("success", False)
    metrics.audit_event_committed("denied", False)
    metrics.audit_event_committed("success", True)
    duration = metrics.request_finished(tally, "GET /v1/patients/{patientId}", 403)

    (doc,) = emf_documents(capsys.readouterr().out)
    assert directive(doc)["Namespace"] == metrics.NAMESPACE == "MedicalRecords"
    assert directive(doc)["Dimensions"] == [
        ["service"], ["service", "statusClass"], ["service", "route", "statusClass"]]
    assert doc["service"] == "medical-records"
    assert doc["route"] == "GET /v1/patients/{patientId}"
    assert doc["statusClass"] == "4xx"
    assert doc["statusCode"] == 403
    assert {m["Name"]: m["Unit"] for m in directive(doc)["Metrics"]} == {
        "Requests": "Count", "Latency": "Milliseconds", "AuditEventsWritten": "Count",
        "AccessDenied": "Count", "BreakGlassAccess": "Count",
    }
    assert values(doc) == {"Requests": 1, "Latency": pytest.approx(duration), "AuditEventsWritten": 3,
                           "AccessDenied": 1, "BreakGlassAccess": 1}


def test_audit_events_outside_a_request_and_after_it_count_nowhere(capsys):
    metrics.audit_event_committed("success", True)  # a command using the services: no request
    tally = metrics.request_started()
    metrics.request_finished(tally, "POST /v1/patients", 201)
    metrics.audit_event_committed("denied", True)  # after the request ended
    assert tally.audit_events == 0
    (doc,) = emf_documents(capsys.readouterr().out)
    assert values(doc)["AuditEventsWritten"] == 0 and doc["statusClass"] == "2xx"


def test_a_failing_metrics_backend_never_fails_the_request(monkeypatch, capsys, caplog):
    def broken(service: str) -> Any:
        raise RuntimeError("no metrics today")

    monkeypatch.setattr(metrics, "_document", broken)
    tally = metrics.request_started()
    assert metrics.request_finished(tally, "GET /health", 200) >= 0
    metrics.refresh_finished(metrics.RefreshOutcome(succeeded=True))
    assert emf_documents(capsys.readouterr().out) == []
    assert [r.getMessage() for r in caplog.records] == ["metrics not recorded", "refresh metrics not recorded"]
    assert all(r.error_type == "RuntimeError" for r in caplog.records)


@pytest.mark.parametrize(("status", "expected"),
                         [(200, "2xx"), (204, "2xx"), (404, "4xx"), (503, "5xx"), (42, "other")])
def test_status_classes(status, expected):
    assert metrics.status_class(status) == expected


def test_the_rows_changed_are_read_from_the_summary_the_flow_writes():
    from pipeline.refresh import RefreshResult, summary_markdown

    result = RefreshResult(refresh_run_id=7, mode="incremental", status="succeeded", rows_inserted=12,
                           rows_updated=30, rows_deleted=4, deidentified_rows_inserted=999, duration_ms=812)
    assert tasks.rows_changed_in_summary(summary_markdown(result)) == 46
    assert tasks.rows_changed_in_summary(None) is None
    assert tasks.rows_changed_in_summary("# something else") is None


class FakePrefect:
    """The Prefect API as the status task sees it (the real one is exercised in tests/e2e)."""

    def __init__(self, run: dict[str, Any], artifact: str | None = None, last: dict[str, Any] | None = None,
                 broken_details: bool = False) -> None:
        self.run, self.artifact, self.last, self.broken_details = run, artifact, last, broken_details

    def flow_run(self, flow_run_id: str) -> dict[str, Any]:
        return {**self.run, "id": flow_run_id}

    def flow_run_state(self, flow_run_id: str) -> tuple[str, str]:
        state = self.run["state"]
        return state["type"], state.get("message", "")

    def artifact_data(self, flow_run_id: str, key: str) -> str | None:
        if self.broken_details:
            from chalicelib.orchestration.prefect_api import PrefectUnavailable

            raise PrefectUnavailable("Prefect API unreachable: TimeoutError")
        assert key == config.REFRESH_SUMMARY_ARTIFACT
        return self.artifact

    def latest_completed_run(self, deployment_id: str) -> dict[str, Any] | None:
        assert deployment_id == "dep-1"
        return self.last


SUMMARY = "| medical_record_denormalized | 5 | 6 | 7 | passed |"


def test_a_completed_run_publishes_its_duration_rows_and_the_data_age(capsys):
    now = datetime.now(UTC)
    started = now.replace(microsecond=0).isoformat()
    run = {"state": {"type": "COMPLETED"}, "deployment_id": "dep-1", "start_time": "2026-01-01T10:00:00+00:00",
           "end_time": "2026-01-01T10:00:02.500000+00:00"}
    api = FakePrefect(run, SUMMARY, last={"start_time": started})
    answer = tasks.refresh_status({"flowRunId": "run-1", "polls": 3}, api=api)
    assert answer == {"flowRunId": "run-1", "polls": 4, "state": "COMPLETED",
                      "message": "the flow run ended in state COMPLETED"}
    (doc,) = emf_documents(capsys.readouterr().out)
    assert directive(doc)["Dimensions"] == [["service"]]
    got = values(doc)
    assert got["RefreshSucceeded"] == 1 and got["RefreshFailed"] == 0
    assert got["RefreshDuration"] == 2500
    assert got["RefreshRowsChanged"] == 18
    assert 0 <= got["AnalyticDataAge"] < 60


def test_a_failed_run_publishes_the_failure_and_an_age_from_the_last_good_run(capsys):
    run = {"state": {"type": "FAILED", "message": "mode must be 'incremental' or 'full'"}, "deployment_id": "dep-1",
           "start_time": "2026-01-01T10:00:00Z", "end_time": "2026-01-01T10:00:01Z"}
    last = {"start_time": "2026-01-01T09:00:00Z"}
    outcome = tasks.refresh_outcome(FakePrefect(run, None, last), "r", "FAILED",
                                    now=datetime(2026, 1, 1, 10, 0, 5, tzinfo=UTC))
    assert outcome == metrics.RefreshOutcome(succeeded=False, duration_ms=1000, rows_changed=None,
                                             data_age_seconds=3605)
    metrics.refresh_finished(outcome)
    got = values(emf_documents(capsys.readouterr().out)[0])
    assert got == {"RefreshSucceeded": 0, "RefreshFailed": 1, "RefreshDuration": 1000, "AnalyticDataAge": 3605}


def test_a_running_flow_publishes_nothing_and_unreadable_details_still_publish_the_outcome(capsys, caplog):
    tasks.refresh_status({"flowRunId": "run-2"}, api=FakePrefect({"state": {"type": "RUNNING"}}))
    assert emf_documents(capsys.readouterr().out) == []
    crashed = {"state": {"type": "CRASHED"}, "deployment_id": "dep-1"}
    answer = tasks.refresh_status({"flowRunId": "run-3"}, api=FakePrefect(crashed, broken_details=True))
    assert answer["state"] == "CRASHED"
    assert [r.getMessage() for r in caplog.records] == ["refresh details unavailable for metrics"]
    assert values(emf_documents(capsys.readouterr().out)[0]) == {"RefreshSucceeded": 0, "RefreshFailed": 1}
