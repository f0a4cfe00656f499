"""`havip serve forwarder`: the HTTP API and the mapping follower in one process."""

from __future__ import annotations

import uvicorn

from services.forwarder.app import create_app
from services.runtime.logs import setup_logging
from services.runtime.settings import Settings


def run(settings: Settings) -> None:
    setup_logging("forwarder", settings.log_level)
    config = uvicorn.Config(
        create_app(settings),
        host=settings.http_host,
        port=settings.forwarder_port,
        lifespan="on",
        log_level="warning",
        access_log=False,
    )
    server = uvicorn.Server(config)
    # uvicorn turns SIGTERM and SIGINT into a graceful shutdown: in-flight
    # requests finish, then the lifespan stops the follower and the pool.
    server.run()
    if not server.started:
        raise SystemExit("forwarder did not start; see the log above")
