"""The agent daemon against the real gateway (real broker and PostgreSQL), keepalived simulated on a real FIFO.

The gateway is served in-process by uvicorn on a real port, so the agent
talks HTTP to it and "the gateway is down" is a closed port. The test plays
keepalived: it opens the FIFO for writing, writes notify lines, and closes
it when keepalived "dies".
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import asyncpg
import pytest
import uvicorn

from schemas import topics
from schemas.messages import VrrpReported, VrrpState
from services.agent.agent import Agent
from services.agent.config import load_config
from services.dev.embedded import free_port
from services.gateway.app import create_app
from services.gateway.tokens import Principal, store_token
from services.runtime.settings import Settings
from tests.integration.test_gateway import TENANT, attach_in_db, seed_havip
from tests.kafka_tools import read_topic

pytestmark = pytest.mark.integration

AGENT_TOKEN = "tok-agent-i-web1"
HAVIP = "havip-1a"
NOT_ATTACHED = "havip-2b"
LEASE = 1.0
RENEW = 0.2


class ServedGateway:
    """The gateway app on a real port; stop() closes the port, start() opens it again."""

    def __init__(self, settings: Settings) -> None:
        self.app = create_app(settings)
        self.port = free_port()
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, lifespan="off", log_level="warning")
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve())
        await eventually(lambda: self._server is not None and self._server.started, timeout=10)

    async def stop(self) -> None:
        assert self._server is not None and self._task is not None
        self._server.should_exit = True
        await self._task


@pytest.fixture
async def gateway(settings: Settings, db: asyncpg.Pool) -> AsyncIterator[ServedGateway]:
    await store_token(db, AGENT_TOKEN, Principal("agent", TENANT, "i-web1"))
    await seed_havip(db, HAVIP, ip_address="192.168.1.101")
    await seed_havip(db, NOT_ATTACHED, ip_address="192.168.1.102")
    await attach_in_db(db, HAVIP, "i-web1")
    served = ServedGateway(settings)
    async with served.app.router.lifespan_context(served.app):
        await served.start()
        try:
            yield served
        finally:
            with contextlib.suppress(AssertionError):
                await served.stop()


@pytest.fixture
async def agent(gateway: ServedGateway, tmp_path: Path) -> AsyncIterator[Agent]:
    path = tmp_path / "agent.toml"
    path.write_text(
        f'gateway_url = "http://127.0.0.1:{gateway.port}"\ntoken = "{AGENT_TOKEN}"\n'
        f'spool_dir = "state"\nfifo = "keepalived.fifo"\n'
        f"lease_seconds = {LEASE}\nrenew_interval_seconds = {RENEW}\nrequest_timeout_seconds = 2\n"
        f'[instances]\nVI_1 = "{HAVIP}"\nVI_2 = "{NOT_ATTACHED}"\n'
    )
    daemon = Agent(path, load_config(path))
    running = asyncio.create_task(daemon.run())
    yield daemon
    running.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await running


class Keepalived:
    """The writing end of the FIFO, as keepalived's VRRP process holds it."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    @classmethod
    async def connect(cls, path: Path) -> Keepalived:
        for _ in range(500):
            try:
                return cls(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
            except OSError as exc:  # the agent has not created or opened the FIFO yet
                if exc.errno not in (errno.ENXIO, errno.ENOENT):
                    raise
            await asyncio.sleep(0.01)
        raise AssertionError("the agent never opened its FIFO")

    def says(self, *lines: str) -> None:
        os.write(self.fd, "".join(f"{line}\n" for line in lines).encode())

    def dies(self) -> None:
        os.close(self.fd)


async def eventually(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def published(settings: Settings, at_least: int, timeout: float = 20.0) -> list[VrrpReported]:
    """Everything on vrrp.events so far, once at least `at_least` reports are there."""
    found = await read_topic(settings, topics.VRRP, until=at_least, timeout=timeout)
    assert len(found) >= at_least, f"only {len(found)} reports on vrrp.events"
    everything = await read_topic(settings, topics.VRRP, until=10_000, timeout=1.0)
    return [r for r in everything if r.havip_id == HAVIP]


def summary(reports: list[VrrpReported]) -> list[tuple[VrrpState, float | None]]:
    return [(r.state, r.lease_seconds) for r in reports]


async def newest_renewal(db: asyncpg.Pool) -> tuple[int, float] | None:
    """The seq and lease of the newest renewal the gateway has from i-web1 (renewals are kept out of
    vrrp.events: services/gateway/renewals.py), or None before the first."""
    row = await db.fetchrow(
        "SELECT seq, lease_seconds FROM claim_renewals WHERE havip_id = $1 AND instance_id = 'i-web1'", HAVIP
    )
    return None if row is None else (row["seq"], row["lease_seconds"])


async def renewed_past(db: asyncpg.Pool, seq: int, timeout: float = 20.0) -> int:
    """Wait for a renewal numbered after `seq`; its seq."""
    deadline = asyncio.get_running_loop().time() + timeout
    while (newest := await newest_renewal(db)) is None or newest[0] <= seq:
        assert asyncio.get_running_loop().time() < deadline, f"no renewal after seq {seq}"
        await asyncio.sleep(0.05)
    assert newest[1] == LEASE
    return newest[0]


async def test_reports_and_renewals_flow_while_master_and_stop_when_keepalived_dies(
    agent: Agent, settings: Settings, db: asyncpg.Pool
) -> None:
    keepalived = await Keepalived.connect(agent.config.fifo)
    keepalived.says('INSTANCE "VI_1" BACKUP 100', 'INSTANCE "VI_1" MASTER 100')
    reports = await published(settings, at_least=2)
    assert summary(reports) == [(VrrpState.BACKUP, None), (VrrpState.MASTER, LEASE)]
    assert reports[0].seq < reports[1].seq
    # Then renewals: MASTER with the full lease, each with its own, larger seq.
    first = await renewed_past(db, reports[1].seq)
    await renewed_past(db, first)

    keepalived.dies()
    await eventually(lambda: not agent.writer_connected)
    await asyncio.sleep(2 * RENEW)  # one may have been in flight
    settled = await newest_renewal(db)
    await asyncio.sleep(4 * RENEW)
    assert await newest_renewal(db) == settled, "renewals went on after keepalived died"
    assert summary(await published(settings, at_least=2)) == summary(reports), "nothing else was reported"

    # A respawned keepalived: nothing is renewed until it says MASTER again.
    keepalived = await Keepalived.connect(agent.config.fifo)
    keepalived.says('INSTANCE "VI_1" BACKUP 100')
    await asyncio.sleep(4 * RENEW)
    assert await newest_renewal(db) == settled, "a BACKUP was renewed"
    keepalived.says('INSTANCE "VI_1" MASTER 100')
    resumed = await published(settings, at_least=4)
    assert summary(resumed[2:]) == [(VrrpState.BACKUP, None), (VrrpState.MASTER, LEASE)]
    assert settled is not None and settled[0] < resumed[2].seq < resumed[3].seq
    await renewed_past(db, resumed[3].seq)
    keepalived.dies()


async def test_the_spool_holds_reports_while_the_gateway_is_down_and_sends_them_oldest_first(
    agent: Agent, gateway: ServedGateway, settings: Settings
) -> None:
    keepalived = await Keepalived.connect(agent.config.fifo)
    keepalived.says('INSTANCE "VI_1" MASTER 100')
    before = await published(settings, at_least=1)  # the claim; its renewals go to PostgreSQL
    await gateway.stop()
    await asyncio.sleep(2 * RENEW)  # a renewal may have been in flight; let the outage settle

    keepalived.says('INSTANCE "VI_1" BACKUP 100', 'INSTANCE "VI_1" MASTER 110', 'INSTANCE "VI_1" FAULT 110')
    await eventually(lambda: len(agent.spool) == 3)
    await asyncio.sleep(1.0)
    spooled = agent.spool.oldest(16)
    assert [(r.state, r.priority) for r in spooled] == [
        (VrrpState.BACKUP, 100),
        (VrrpState.MASTER, 110),
        (VrrpState.FAULT, 110),
    ]
    seen = await published(settings, at_least=len(before))

    await gateway.start()
    await eventually(lambda: agent.spool.is_empty(), timeout=30)
    after = await published(settings, at_least=len(seen) + 3)
    # The MASTER claim spooled during the outage was overruled before it could be sent: lease 0.
    assert summary(after[-3:]) == [(VrrpState.BACKUP, None), (VrrpState.MASTER, 0.0), (VrrpState.FAULT, None)]
    assert [r.seq for r in after[-3:]] == [r.seq for r in spooled]
    seqs = [r.seq for r in after]
    assert seqs == sorted(seqs)
    keepalived.dies()


async def test_a_report_the_gateway_refuses_is_dropped_not_retried(
    agent: Agent, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    keepalived = await Keepalived.connect(agent.config.fifo)
    keepalived.says('INSTANCE "VI_2" MASTER 100', 'INSTANCE "VI_1" BACKUP 100')
    reports = await published(settings, at_least=1)
    assert summary(reports) == [(VrrpState.BACKUP, None)]
    await eventually(lambda: agent.spool.is_empty())
    assert f"report refused havip={NOT_ATTACHED}" in caplog.text
    assert "code=VrrpReport.NotAttached" in caplog.text
    keepalived.dies()


# --- with a real keepalived ------------------------------------------------------

KEEPALIVED_CONF = """
global_defs {{
    vrrp_notify_fifo {fifo}
}}
vrrp_instance VI_1 {{
    state BACKUP
    interface d0
    virtual_router_id 77
    priority 100
    advert_int 1
    unicast_peer {{
        10.77.0.2
    }}
    virtual_ipaddress {{
        10.77.0.100/24
    }}
}}
"""


def _keepalived_unavailable() -> str | None:
    if shutil.which("keepalived") is None or shutil.which("ip") is None:
        return "needs keepalived and iproute2 installed"
    if os.geteuid() != 0:
        return "needs root: keepalived runs in its own network namespace"
    return None


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"havip-agent-{os.getpid()}"
    created = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if created.returncode != 0:
        pytest.skip(f"cannot create a network namespace: {created.stderr.strip()}")
    try:
        for command in (
            "ip link add d0 type veth peer name d1",  # veth: a dummy device needs a module not always loaded
            "ip addr add 10.77.0.1/24 dev d0",
            "ip link set d0 up",
            "ip link set d1 up",
            "ip link set lo up",
        ):
            done = subprocess.run(["ip", "netns", "exec", name, *command.split()], capture_output=True, text=True)
            if done.returncode != 0:
                pytest.skip(f"cannot set up the namespace ({command}): {done.stderr.strip()}")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


@pytest.mark.skipif(_keepalived_unavailable() is not None, reason=_keepalived_unavailable() or "")
async def test_a_real_keepalived_drives_the_agent(
    agent: Agent, settings: Settings, db: asyncpg.Pool, netns: str, tmp_path: Path
) -> None:
    conf = tmp_path / "keepalived.conf"
    conf.write_text(KEEPALIVED_CONF.format(fifo=agent.config.fifo))
    # `ip netns exec` execs keepalived, so this pid is keepalived's own parent process.
    keepalived = await asyncio.create_subprocess_exec(
        *("ip", "netns", "exec", netns, "keepalived", "--dont-fork", "--log-console", "--vrrp", "-f", str(conf)),
        *("-p", str(tmp_path / "keepalived.pid"), "-r", str(tmp_path / "vrrp.pid")),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # keepalived starts BACKUP and, hearing no peer, becomes MASTER after about three adverts;
        # the two state changes go on the log, the renewals that follow to their table.
        reports = await published(settings, at_least=2, timeout=30)
        assert summary(reports) == [(VrrpState.BACKUP, None), (VrrpState.MASTER, LEASE)]
        await renewed_past(db, await renewed_past(db, reports[1].seq))

        keepalived.send_signal(signal.SIGTERM)  # a graceful stop writes STOP, then closes the FIFO
        await asyncio.wait_for(keepalived.wait(), 20)
        await eventually(lambda: not agent.writer_connected)
        stopped = await published(settings, at_least=3)
        assert [r.state for r in stopped] == [VrrpState.BACKUP, VrrpState.MASTER, VrrpState.STOP]
        settled = await newest_renewal(db)
        await asyncio.sleep(4 * RENEW)
        assert await newest_renewal(db) == settled, "renewals went on after keepalived stopped"
        assert len(await published(settings, at_least=len(stopped))) == len(stopped)
    finally:
        if keepalived.returncode is None:
            keepalived.kill()
            await keepalived.wait()
