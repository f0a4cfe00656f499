"""What the real-keepalived tests share: the four services as processes, and a lab on them."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.dev.keepalived_failover import FailoverCluster
from services.dev.keepalived_lab import NodeOptions, lab_unavailable_reason
from services.dev.processes import ServiceProcess
from services.runtime.settings import Settings
from tests.conftest import Infra, fresh_settings

LAB_UNAVAILABLE = lab_unavailable_reason()


def skip_without_lab() -> None:
    """Skip the module where the lab cannot run; under CI=true (root, keepalived installed) fail instead."""
    if LAB_UNAVAILABLE is not None and os.environ.get("CI") != "true":
        pytest.skip(LAB_UNAVAILABLE, allow_module_level=True)


@pytest.fixture(scope="module")
async def platform(infra: Infra, workdir: Path) -> AsyncIterator[Settings]:
    """The four services as processes, shared by a module's scenarios (each gets its own lab and HAVIP)."""
    if LAB_UNAVAILABLE is not None:
        pytest.fail(f"keepalived lab unavailable in CI: {LAB_UNAVAILABLE}", pytrace=False)
    settings = await fresh_settings(infra)
    logs = workdir / f"keepalived-{settings.topic_prefix}logs"
    logs.mkdir()
    services = [ServiceProcess(name, settings, logs).start() for name in ("quota", "mapping", "forwarder", "gateway")]
    try:
        for service in services:
            await asyncio.to_thread(service.wait_ready)
        yield settings
    finally:
        for service in services:
            service.stop()


def cluster(
    settings: Settings,
    workdir: Path,
    *,
    linked: tuple[str, ...] = (),
    with_agents: bool = True,
    observed: bool = False,
    priorities: tuple[int, ...] = (100, 90),
    options: NodeOptions | None = None,
) -> FailoverCluster:
    return FailoverCluster(
        settings,
        gateway_url=f"http://{settings.http_host}:{settings.gateway_port}",
        forwarder_url=f"http://{settings.http_host}:{settings.forwarder_port}",
        workdir=workdir,
        linked=linked,
        with_agents=with_agents,
        observed=observed,
        priorities=priorities,
        options=options,
    )
