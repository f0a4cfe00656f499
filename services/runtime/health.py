"""Liveness, readiness and metrics, served the same way by every service.

Liveness says "my event loop is making progress", never "the broker answers":
a broker outage must not restart every pod. Readiness says "connected,
migrated, caught up", from checks each service registers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import uvicorn
from fastapi import APIRouter, FastAPI, Response
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field

from services.runtime.http import NO_NATIVE_TELEMETRY

ReadinessCheck = Callable[[], str | None]  # None when ready, else why not


class Health:
    def __init__(self, service: str, stall_after_seconds: float = 10.0) -> None:
        self.service = service
        self._stall_after = stall_after_seconds
        self._last_tick = time.monotonic()
        self._checks: dict[str, ReadinessCheck] = {}
        self._notes: dict[str, ReadinessCheck] = {}
        self._ticker: asyncio.Task[None] | None = None

    def add_check(self, name: str, check: ReadinessCheck) -> None:
        self._checks[name] = check

    def add_note(self, name: str, check: ReadinessCheck) -> None:
        """Something not yet working that does not make the service unready (shown by /readyz)."""
        self._notes[name] = check

    def notes(self) -> dict[str, str]:
        return {name: note for name, check in self._notes.items() if (note := check()) is not None}

    def start(self) -> None:
        self._ticker = asyncio.get_running_loop().create_task(self._tick())

    async def stop(self) -> None:
        if self._ticker:
            self._ticker.cancel()

    async def _tick(self) -> None:
        while True:
            self._last_tick = time.monotonic()
            await asyncio.sleep(1.0)

    def live(self) -> bool:
        return time.monotonic() - self._last_tick < self._stall_after

    def not_ready(self) -> dict[str, str]:
        reasons = {}
        for name, check in self._checks.items():
            reason = check()
            if reason is not None:
                reasons[name] = reason
        return reasons


class HealthStatus(BaseModel):
    status: str = Field(description="ok, or stalled (503) when the event loop stopped making progress")


class ReadinessStatus(BaseModel):
    status: str = Field(description="ready, or not ready (503)")
    reasons: dict[str, str] = Field(default_factory=dict, description="Why not ready, per check.")
    notes: dict[str, str] = Field(
        default_factory=dict, description="What is not working yet, without making it unready."
    )


def _unready(model: type[BaseModel], what: str) -> dict[int | str, dict[str, Any]]:
    return {503: {"model": model, "description": what}}


def health_router(health: Health) -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get("/healthz", response_model=HealthStatus, responses=_unready(HealthStatus, "The loop is stalled."))
    async def healthz(response: Response) -> dict[str, str]:
        if not health.live():
            response.status_code = 503
            return {"status": "stalled"}
        return {"status": "ok"}

    @router.get(
        "/readyz", response_model=ReadinessStatus, responses=_unready(ReadinessStatus, "Not connected or caught up.")
    )
    async def readyz(response: Response) -> dict[str, object]:
        reasons = health.not_ready()
        notes = health.notes()
        if reasons:
            response.status_code = 503
            return {"status": "not ready", "reasons": reasons, "notes": notes}
        return {"status": "ready", "notes": notes}

    @router.get("/metrics", response_class=PlainTextResponse, responses={200: {"content": {"text/plain": {}}}})
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return router


def health_app(health: Health) -> FastAPI:
    """For the stream workers, which have no API of their own."""
    app = FastAPI(title=f"havip {health.service}", version="1", telemetry=NO_NATIVE_TELEMETRY)
    app.include_router(health_router(health))
    return app


async def serve_http(app: FastAPI, host: str, port: int) -> None:
    """Run an ASGI app in the current event loop until cancelled."""
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="off")
    # uvicorn has no install_signal_handlers to turn off any more (setting it did nothing): in the
    # main thread it listens for SIGINT and SIGTERM itself while it serves, stops serving on one,
    # then raises it again to the handlers it found, the service's own, which drain (the
    # graceful-stop tests).
    await uvicorn.Server(config).serve()
