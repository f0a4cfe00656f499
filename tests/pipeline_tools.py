"""The four services as processes on a fresh database and fresh topics, for a test module to share."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from services.dev.processes import ServiceProcess
from services.runtime.settings import Settings
from tests.conftest import Infra, fresh_settings

SERVICES = ("quota", "mapping", "forwarder", "gateway")


@dataclass(frozen=True)
class Pipeline:
    settings: Settings
    logs: Path
    services: tuple[ServiceProcess, ...]

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.gateway_port}"

    @property
    def forwarder_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.forwarder_port}"


@contextlib.asynccontextmanager
async def running_pipeline(infra: Infra, workdir: Path, name: str, **overrides: object) -> AsyncIterator[Pipeline]:
    """Start the services once the caller has seeded what they need at start (yielded settings first)."""
    settings = await fresh_settings(infra)
    if overrides:
        settings = settings.model_copy(update=overrides)
    logs = workdir / f"{name}-{settings.topic_prefix}logs"
    logs.mkdir()
    services = tuple(ServiceProcess(service, settings, logs).start() for service in SERVICES)
    try:
        for service in services:
            await asyncio.to_thread(service.wait_ready)
        yield Pipeline(settings, logs, services)
    finally:
        for service in services:
            service.request_stop()
        for service in services:
            service.stop()
