"""The API served locally exactly as `chalice local --no-autoreload` serves it, without its keep-alive stall.

    python -m tools.local_server [--host 127.0.0.1] [--port 8000] [--stage dev]

`chalice local`'s request handler (``chalice.local.ChaliceRequestHandler``) inherits
``StreamRequestHandler.wbufsize = 0``: every response leaves in two small unbuffered writes, the
headers then the body. On a reused (keep-alive) connection Nagle's algorithm holds the body back
until the client ACKs the headers, and the client delays that ACK (≈ 40 ms on Linux): every request
after the first on a connection took ≈ 44 ms though the handler needs ≈ 0.5 ms.

The fix is in one place, :class:`KeepAliveRequestHandler`: the response is buffered (status line,
headers and body leave in one send when ``handle_one_request`` flushes at the end of each request)
and the socket has ``TCP_NODELAY``, so a response larger than the buffer is not held back either.
Everything else is chalice's own: the project's ``.chalice/config.json`` for the stage (its
environment variables included), the route validation `chalice local` does, ``LocalGateway`` (the
local authorizer and API Gateway emulation), ``ThreadedHTTPServer`` (a thread per connection) and
the class swap that makes ``app.current_request`` thread-local (``chalice.local.LocalChalice``).
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from pathlib import Path

from chalice import local as chalice_local

ROOT = Path(__file__).resolve().parent.parent
PROJECT_DIR = ROOT / "functions"


class KeepAliveRequestHandler(chalice_local.ChaliceRequestHandler):
    """``ChaliceRequestHandler`` that answers each request with one send and never waits for Nagle."""

    # Buffered writer; BaseHTTPRequestHandler.handle_one_request flushes it after every request and
    # StreamRequestHandler.finish when the connection ends.
    wbufsize = -1

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def handle_expect_100(self) -> bool:
        # The interim "100 Continue" must reach the client now, not with the final response.
        answer = super().handle_expect_100()
        self.wfile.flush()
        return answer


HANDLERS = {"keepalive": KeepAliveRequestHandler, "chalice": chalice_local.ChaliceRequestHandler}


def create_server(host: str, port: int, stage: str = "dev", handler: str = "keepalive",
                  project_dir: Path = PROJECT_DIR) -> chalice_local.LocalDevServer:
    """What `chalice local` builds (chalice.cli.create_local_server), with the handler class chosen.

    ``handler="chalice"`` is the unpatched handler, kept for the benchmark and for comparison.
    Loads the app (``import app``) into this process and makes its class a ``LocalChalice``.
    """
    from chalice.cli.factory import CLIFactory
    from chalice.deploy.validate import validate_routes

    os.environ["AWS_CHALICE_CLI_MODE"] = "true"  # as the chalice CLI sets it
    factory = CLIFactory(str(project_dir), environ=os.environ)
    config = factory.create_config_obj(chalice_stage_name=stage)
    app_obj = config.chalice_app
    validate_routes(app_obj.routes)
    # chalice.local.create_local_server, which takes no handler class: thread-local current_request.
    chalice_local.CustomLocalChalice.__bases__ = (chalice_local.LocalChalice, app_obj.__class__)
    app_obj.__class__ = chalice_local.CustomLocalChalice
    return chalice_local.LocalDevServer(app_obj, config, host, port, handler_cls=HANDLERS[handler])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.local_server", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--stage", default="dev", help="Chalice stage (.chalice/config.json)")
    parser.add_argument("--handler", choices=sorted(HANDLERS), default="keepalive",
                        help="chalice: chalice local's own handler, with the stall (for comparison)")
    parser.add_argument("--project-dir", type=Path, default=PROJECT_DIR)
    args = parser.parse_args(argv)
    project_dir = args.project_dir.resolve()
    os.chdir(project_dir)  # as `chalice local` runs: the app's relative paths resolve against functions/
    # The same stdout logging `chalice local` configures (the app's log lines, as in Lambda).
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(message)s")
    server = create_server(args.host, args.port, args.stage, args.handler, project_dir)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
