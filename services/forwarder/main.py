"""`havip serve forwarder`: the route API and the mapping follower in one process."""

from __future__ import annotations

from services.forwarder.app import create_app
from services.runtime.http import run_http_service
from services.runtime.logs import setup_logging
from services.runtime.settings import Settings


def run(settings: Settings) -> None:
    setup_logging("forwarder", settings.log_level)
    run_http_service(create_app(settings), "forwarder", settings.http_host, settings.forwarder_port)
