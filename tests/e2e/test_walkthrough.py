"""The README, end to end: `havip dev up` as a process, driven over HTTP like a tenant would."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from services.dev.processes import settings_env
from services.dev.stack import DEMO_TENANT_TOKEN, demo_agent_tokens
from services.dev.walkthrough import Tenant, master_then_failover, measure_failovers
from services.runtime.settings import Settings

pytestmark = pytest.mark.e2e

# The `havip dev up` process, its log, and its children (the services).
DevUp = tuple[subprocess.Popen[bytes], Path, list[psutil.Process]]


@pytest.fixture
def dev_up(settings: Settings, workdir: Path) -> Iterator[DevUp]:
    """`havip dev up` on the test broker and a fresh database; stopped with SIGTERM like Ctrl-C would."""
    log = workdir / f"dev-up-{settings.topic_prefix}log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "dev", "up", "--workdir", str(workdir / "dev")],
            env=settings_env(settings),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    deadline = time.monotonic() + 120
    while b"HAVIP control plane is up" not in log.read_bytes():
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)
    children = psutil.Process(process.pid).children(recursive=True)
    yield process, log, children
    if process.poll() is None:
        process.kill()


async def test_readme_walkthrough_with_failover(settings: Settings, dev_up: DevUp) -> None:
    process, log, children = dev_up
    assert len(children) >= 4, "four services as child processes"
    async with (
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{settings.gateway_port}", timeout=30) as gateway,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{settings.forwarder_port}", timeout=30) as forwarder,
    ):
        tenant = Tenant(gateway, forwarder, DEMO_TENANT_TOKEN, demo_agent_tokens())

        havip = await tenant.create_havip("vsw-demo-a", ip_address="192.168.1.100", name="web")
        assert havip["status"] == "Available" and havip["ip_address"] == "192.168.1.100"
        for instance in ("i-demo-web1", "i-demo-web2"):
            assert (await tenant.attach(havip["havip_id"], instance))["status"] == "Succeeded"
        # Limits and rules answer with their codes, through the whole pipeline.
        wrong_vswitch = await tenant.attach(havip["havip_id"], "i-demo-other")
        assert wrong_vswitch["status"] == "Failed" and wrong_vswitch["error"]["code"] == "InvalidVSwitch.Mismatch"
        stopped = await tenant.attach(havip["havip_id"], "i-demo-stopped")
        assert stopped["status"] == "Succeeded"  # a Stopped instance may be attached, but cannot own

        # The forwarder follows havip.mappings on its own, so it may still be a record behind the
        # operation's result; it must reach the committed version, with nobody owning the address.
        committed = (await tenant.havip(havip["havip_id"]))["version"]
        deadline = time.monotonic() + 10
        while (route := await tenant.route("vpc-demo", "192.168.1.100")) is None or route["version"] < committed:
            assert time.monotonic() < deadline, f"the forwarder stayed at {route} (committed version {committed})"
            await asyncio.sleep(0.05)
        assert route == {
            "havip_id": havip["havip_id"],
            "version": committed,
            "instance_id": None,
            "eni_id": None,
            "private_ip": None,
            "host_id": None,
        }
        # web1 becomes MASTER; then it fails, web2 takes over, and the forwarder follows.
        route, shown = await master_then_failover(tenant, havip["havip_id"])
        assert route is not None and (route["private_ip"], route["host_id"]) == ("192.168.1.11", "host-a")
        assert shown["status"] == "InUse" and shown["owner"]["instance_id"] == "i-demo-web2"
        assert {a["instance_id"] for a in shown["attachments"]} == {"i-demo-web1", "i-demo-web2", "i-demo-stopped"}

        # The public scenario: the demo EIP follows the HAVIP's owner through every failover.
        assert (await tenant.associate_eip(havip["havip_id"], "eip-demo-1"))["status"] == "Succeeded"
        await tenant.wait_owner(None, "203.0.113.10", "i-demo-web2")
        samples = await measure_failovers(tenant, shown, "i-demo-web2", "i-demo-web1", rounds=5)
        assert len(samples) == 5
        public = await tenant.route(None, "203.0.113.10")
        assert public == await tenant.route("vpc-demo", "192.168.1.100")

        # Tear down as the README does: dependencies first, then the HAVIP.
        assert (await tenant.delete(havip["havip_id"]))["error"]["code"] == "DependencyViolation.HaVip"
        assert (await tenant.release_eip(havip["havip_id"]))["status"] == "Succeeded"
        for instance in ("i-demo-web1", "i-demo-web2", "i-demo-stopped"):
            assert (await tenant.detach(havip["havip_id"], instance))["status"] == "Succeeded"
        assert (await tenant.delete(havip["havip_id"]))["status"] == "Succeeded"
        assert (await tenant.havip(havip["havip_id"]))["status"] == "Deleted"
        assert await tenant.route(None, "203.0.113.10") is None

    process.send_signal(signal.SIGTERM)
    assert process.wait(60) == 0, log.read_text()
    await asyncio.sleep(0.5)
    alive = [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    assert alive == [], f"left behind: {alive}"
