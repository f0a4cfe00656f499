"""`havip dev up` heals and keeps its data: a killed service comes back, HAVIPs survive a restart, --fresh forgets.

dev up runs here with its own embedded PostgreSQL in the work directory (no HAVIP_DATABASE_URL), but on
the test broker to save a start: each run gets a new topic prefix, which is what a restarted embedded broker
(memory only) looks like to the services.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from services.dev.processes import Child, Restarts, heal, settings_env
from services.dev.stack import DEMO_TENANT_TOKEN, demo_agent_tokens
from services.dev.walkthrough import Tenant
from services.runtime.settings import Settings

pytestmark = pytest.mark.e2e


class DevUp:
    """One `havip dev up` process, its log, and a way to wait for lines in it."""

    def __init__(self, settings: Settings, workdir: Path, run: str, *flags: str) -> None:
        self.log = workdir / f"dev-up-{run}.log"
        env = settings_env(settings)
        env.pop("HAVIP_DATABASE_URL")  # so dev up starts (or reuses) its own PostgreSQL in the work directory
        env["HAVIP_TOPIC_PREFIX"] = f"{settings.topic_prefix}{run}."
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "services.cli", "dev", "up", "--workdir", str(workdir / "dev"), *flags],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self.wait_for("HAVIP control plane is up", timeout=60)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, line: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while line not in self.text():
            assert self.process.poll() is None, self.text()
            assert time.monotonic() < deadline, f"no {line!r} after {timeout}s:\n{self.text()}"
            time.sleep(0.2)

    def children(self) -> list[psutil.Process]:
        return psutil.Process(self.process.pid).children(recursive=True)

    def stop(self) -> None:
        """SIGTERM like Ctrl-C; it must exit 0 and leave no child behind."""
        children = self.children()
        self.process.send_signal(signal.SIGTERM)
        assert self.process.wait(60) == 0, self.text()
        time.sleep(0.5)
        alive = [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
        assert alive == [], f"left behind: {alive}"

    def kill(self) -> None:
        if self.process.poll() is None:
            for child in self.children():
                child.kill()
            self.process.kill()
            self.process.wait()


async def _listed(gateway: httpx.AsyncClient) -> set[str]:
    answer = await gateway.get("/v1/havips", headers={"Authorization": f"Bearer {DEMO_TENANT_TOKEN}"})
    answer.raise_for_status()
    return {h["havip_id"] for h in answer.json()["havips"]}


async def test_dev_up_restarts_a_dead_service_and_keeps_its_data(settings: Settings, tmp_path: Path) -> None:
    started: list[DevUp] = []

    def dev_up(run: str, *flags: str) -> DevUp:
        started.append(DevUp(settings, tmp_path, run, *flags))
        return started[-1]

    async with (
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{settings.gateway_port}", timeout=30) as gateway,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{settings.forwarder_port}", timeout=30) as forwarder,
    ):
        tenant = Tenant(gateway, forwarder, DEMO_TENANT_TOKEN, demo_agent_tokens())
        try:
            first = dev_up("first")
            kept = {(await tenant.create_havip("vsw-demo-a", name="before"))["havip_id"]}

            quota = next(c for c in first.children() if "serve quota" in " ".join(c.cmdline()))
            quota.send_signal(signal.SIGKILL)
            first.wait_for("quota exited with -9; restarting in 1s (restart 1)", timeout=10)
            first.wait_for("quota is ready again", timeout=30)
            assert (await gateway.get(f"http://127.0.0.1:{settings.quota_port}/readyz")).status_code == 200
            assert first.process.poll() is None
            # Creating goes through quota: a second HAVIP proves the new quota works.
            kept.add((await tenant.create_havip("vsw-demo-a", name="after"))["havip_id"])
            assert await _listed(gateway) == kept
            first.stop()

            again = dev_up("again")
            assert await _listed(gateway) == kept, again.text()
            again.stop()

            fresh = dev_up("fresh", "--fresh")
            assert "starting with an empty database" in fresh.text()
            assert await _listed(gateway) == set()
            fresh.stop()
        finally:
            for run in started:
                run.kill()


def test_restarts_back_off_and_settle() -> None:
    """1 s, 2 s, 4 s ... capped at 30 s while it keeps dying; back to 1 s after a minute up."""
    exit_code: list[int | None] = [None]
    starts: list[float] = []
    now = 0.0

    def start() -> None:
        starts.append(now)
        exit_code[0] = None

    child = Child("quota", lambda: exit_code[0], start)
    restarts: dict[str, Restarts] = {}
    delays = []
    for _ in range(7):
        exit_code[0] = -9
        said = heal([child], restarts, now)
        due = restarts["quota"].due
        assert due is not None
        delays.append(due - now)
        assert said == [f"quota exited with -9; restarting in {delays[-1]:g}s (restart {len(delays)})"]
        assert heal([child], restarts, now + delays[-1] - 0.5) == []  # not yet: no start before its time
        now += delays[-1]
        assert heal([child], restarts, now) == [] and starts[-1] == now
        now += 1
        assert heal([child], restarts, now) == ["quota is ready again"]
    assert delays == [1, 2, 4, 8, 16, 30, 30]

    now += 60
    exit_code[0] = 1
    assert heal([child], restarts, now) == ["quota exited with 1; restarting in 1s (restart 8)"]
