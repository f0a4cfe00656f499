"""`havip serve gateway`: the app under uvicorn, until SIGTERM or Ctrl-C."""

from __future__ import annotations

import logging

import uvicorn

from services.gateway.app import create_app
from services.runtime.logs import setup_logging
from services.runtime.settings import Settings

log = logging.getLogger(__name__)

# uvicorn's exit code for a failed startup (e.g. the schema is out of date).
_STARTUP_FAILURE = 3


def run(settings: Settings) -> None:
    setup_logging("gateway", settings.log_level)
    config = uvicorn.Config(
        create_app(settings),
        host=settings.http_host,
        port=settings.gateway_port,
        lifespan="on",
        log_config=None,  # keep the one logger setup
        access_log=False,  # requests are counted in /metrics instead
        # SIGTERM: stop accepting, finish what is in flight, then close the
        # consumer, producer and pool in the lifespan's shutdown.
        timeout_graceful_shutdown=10,
    )
    server = uvicorn.Server(config)
    server.run()
    if not server.started:
        log.error("gateway did not start")
        raise SystemExit(_STARTUP_FAILURE)
