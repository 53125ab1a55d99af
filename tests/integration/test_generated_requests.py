"""The API against its own OpenAPI document: requests generated from ``/openapi.json`` (SPEC §3.3).

Schemathesis reads the served document and generates requests for every operation, valid and
invalid, then checks every answer against the document with all its checks (no 500, status codes,
content types, headers and bodies as documented, invalid data rejected, valid data accepted, auth
not ignored). A stateful phase follows the document's links (create → read / update / delete).
The app is called in-process through Chalice's local API Gateway (the same one the test client
uses) wrapped as a WSGI app; the database is the suite's real PostgreSQL. The seed is fixed, so a
failure reproduces.
"""

from __future__ import annotations

import http
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.config import SchemathesisConfig

from chalicelib.api import auth
from tests.schemathesis_hooks import OUTLIVE_THE_PATIENT, config_toml

MAX_EXAMPLES = 40  # per operation and phase: about 5,000 requests in all


class ChaliceWsgi:
    """A WSGI app that passes each request to Chalice's local API Gateway (authorizer included)."""

    def __init__(self) -> None:
        from chalice.config import Config
        from chalice.local import LocalGateway

        from app import app

        self._gateway = LocalGateway(app, Config())

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        from chalice.local import LocalGatewayException

        path = environ.get("RAW_URI") or environ.get("REQUEST_URI") or quote(environ.get("PATH_INFO", "/"))
        if "?" not in path and environ.get("QUERY_STRING"):
            path = f"{path}?{environ['QUERY_STRING']}"
        headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")}
        if environ.get("CONTENT_TYPE"):
            headers["content-type"] = environ["CONTENT_TYPE"]
        if environ["REQUEST_METHOD"] == "OPTIONS":  # no route has CORS: API Gateway's own answer
            start_response("403 Forbidden", [("Content-Type", "application/json")])
            return [b'{"message":"Missing Authentication Token"}']
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        try:
            response = self._gateway.handle_request(environ["REQUEST_METHOD"], path, headers, body)
            status, out_headers, out_body = response["statusCode"], response["headers"], response["body"]
        except LocalGatewayException as exc:  # the gateway's own refusals, with the type API Gateway sends
            status, out_body = exc.CODE, exc.body or b""
            out_headers = {"Content-Type": "application/json", **exc.headers}
        if isinstance(out_body, str):
            out_body = out_body.encode()
        start_response(f"{status} {http.HTTPStatus(status).phrase}", [(k, str(v)) for k, v in out_headers.items()])
        return [out_body]


TOKEN = auth.mint("schemathesis-admin", ["read", "write", "admin"], ttl_seconds=3600)
# A valid request may still meet a state that refuses it: the row is gone (410), the ETag is stale (412),
# the idempotency key was used with another body (422). Those answers are about the data, not the request.
CONFIG = SchemathesisConfig.from_str(config_toml(TOKEN))
schema = schemathesis.openapi.from_wsgi("/openapi.json", ChaliceWsgi(), config=CONFIG)

SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,  # a fixed seed: the same requests every run
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(autouse=True)
def _database(database):
    """The suite's PostgreSQL, migrated, with the API's login (DATABASE_URL points at it)."""


@schema.parametrize()
@SETTINGS
def test_every_operation_answers_as_documented(case):
    case.call_and_validate()


def test_create_read_update_delete_sequences_answer_as_documented(tmp_path):
    """The stateful phase, run by the schemathesis command against the app served on loopback: it chains
    the document's links (a created patient is read, changed and deleted; its visits likewise)."""
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    class Quiet(WSGIRequestHandler):
        def log_message(self, *_args: Any) -> None:  # the raw paths are not for the test log
            pass

    server = make_server("127.0.0.1", 0, ChaliceWsgi(), handler_class=Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    config = tmp_path / "schemathesis.toml"
    config.write_text(config_toml(TOKEN))
    try:
        result = subprocess.run(
            [
                str(Path(sys.executable).parent / "schemathesis"), "--config-file", str(config), "run",
                f"http://127.0.0.1:{server.server_port}/openapi.json",
                "--phases", "stateful", "--checks", "all", "--exclude-checks", "unsupported_method",
                "--exclude-path-regex", OUTLIVE_THE_PATIENT,
                "--seed", "42", "--max-examples", str(MAX_EXAMPLES), "--workers", "1",
                "--no-color", "--max-failures", "10",
            ],
            capture_output=True, text=True, timeout=600, check=False,
            env={**os.environ, "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks"},
        )  # fmt: skip
    finally:
        server.shutdown()
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]
    assert "Stateful" in result.stdout
