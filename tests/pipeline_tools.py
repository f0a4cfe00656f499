"""The four services as processes on a fresh database and fresh topics, for a test module to share."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

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


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def settled_operation(gateway: httpx.AsyncClient, token: str, operation_id: str) -> dict[str, Any]:
    """The operation once Succeeded or Failed (the gateway holds each poll up to 5 s)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        answer = await gateway.get(f"/v1/operations/{operation_id}", params={"wait": "5s"}, headers=bearer(token))
        if answer.status_code == 200 and answer.json()["status"] != "Pending":
            return dict(answer.json())
        await asyncio.sleep(0.1)
    raise AssertionError(f"operation {operation_id} not settled")


async def succeeded(gateway: httpx.AsyncClient, token: str, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
    """A mutation that must be accepted and succeed."""
    answer = await gateway.request(method, url, headers=bearer(token), **kwargs)
    assert answer.status_code == 202, answer.text
    operation = await settled_operation(gateway, token, answer.json()["operation"]["operation_id"])
    assert operation["status"] == "Succeeded", operation
    return operation
