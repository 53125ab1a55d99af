"""The local server `make run` starts (`python -m tools.local_server`) answers requests on a reused
keep-alive connection without `chalice local`'s ≈ 44 ms Nagle/delayed-ACK stall."""

from __future__ import annotations

import http.client
import json
import statistics
import time

import pytest

from tests.e2e.conftest import local_api_server

REQUESTS = 50
# "chalice" serves with chalice local's own handler: this test then fails (median ≈ 44 ms).
HANDLER = "keepalive"


@pytest.fixture
def local_server(database, tmp_path):
    with local_api_server(tmp_path / "server.log", "--handler", HANDLER) as (_process, port):
        yield port


def test_keepalive_requests_are_not_stalled(local_server):
    from chalicelib.api import auth

    token = auth.mint("keepalive-admin", ["read", "write", "admin"])
    connection = http.client.HTTPConnection("127.0.0.1", local_server, timeout=10)
    latencies: dict[str, list[float]] = {"/health": [], "/v1/patients?limit=1": []}
    first_socket = None
    try:
        for _ in range(REQUESTS):
            for path, latency in latencies.items():
                headers = {"Authorization": f"Bearer {token}"} if path.startswith("/v1/") else {}
                started = time.perf_counter()
                connection.request("GET", path, headers=headers)
                response = connection.getresponse()
                body = json.loads(response.read())
                latency.append(time.perf_counter() - started)
                assert response.status == 200, (path, response.status, body)
                assert not response.will_close, "the server closed the keep-alive connection"
                if path == "/health":
                    assert body == {"status": "ok", "database": "ok"}
                else:
                    assert isinstance(body["items"], list) and len(body["items"]) <= 1, body
                first_socket = first_socket or connection.sock
                assert connection.sock is first_socket, "a new connection was opened"
    finally:
        connection.close()
    for path, latency in latencies.items():
        median_ms = statistics.median(latency) * 1000
        assert median_ms < 20, f"{path}: median {median_ms:.1f} ms over one keep-alive connection"
