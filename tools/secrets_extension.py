"""A loopback stand-in for the AWS Parameters and Secrets Lambda Extension, for tests and benchmarks.

The extension is an AWS binary that runs only inside Lambda; this answers its documented interface:
``GET /secretsmanager/get?secretId=<id>`` with the function's session token in
``X-Aws-Parameters-Secrets-Token``, answering GetSecretValue's JSON. It never runs in a deployment.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class SecretsExtensionStandIn:
    def __init__(self, secrets: dict[str, str], session_token: str) -> None:
        self.secrets = dict(secrets)
        self.session_token = session_token
        self.calls: list[tuple[str, str]] = []  # (path, secretId) of every request
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                secret_id = parse_qs(parts.query).get("secretId", [""])[0]
                stand_in.calls.append((parts.path, secret_id))
                if self.headers.get("X-Aws-Parameters-Secrets-Token") != stand_in.session_token:
                    return self._answer(401, {"message": "not authorized"})
                if parts.path != "/secretsmanager/get" or secret_id not in stand_in.secrets:
                    return self._answer(400, {"message": "not found"})
                return self._answer(200, {"ARN": secret_id, "Name": secret_id.rsplit(":", 1)[-1],
                                          "SecretString": stand_in.secrets[secret_id],
                                          "VersionStages": ["AWSCURRENT"]})

            def _answer(self, status: int, body: dict) -> None:
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *_args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]

    def start(self) -> SecretsExtensionStandIn:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
