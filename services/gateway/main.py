"""`havip serve gateway`: the tenant API and the agents' endpoint."""

from __future__ import annotations

from services.gateway.app import create_app
from services.runtime.http import run_http_service
from services.runtime.logs import setup_logging
from services.runtime.settings import Settings


def run(settings: Settings) -> None:
    setup_logging("gateway", settings.log_level)
    run_http_service(create_app(settings), "gateway", settings.http_host, settings.gateway_port)
