"""Real keepalived failovers against a running control plane, for the tests and `havip bench keepalived`.

A `FailoverCluster` puts the lab's nodes on the platform: the inventory names
one instance per node (its address is the node's), a HAVIP on the lab's VIP
has both attached, each node runs `havip agent` (as a process, in the root
namespace, reading the node's notify FIFO and posting to the gateway), and a
`RouteWatch` follows the forwarder's watch stream to record, to the millisecond, every change
of its answer. Delays are measured from the agent's log line for the FIFO line
that announced the transition (keepalived's notify) to the forwarder's answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import asyncpg
import httpx

from schemas import topics
from schemas.messages import InstanceChanged, InstanceStatus, VSwitchChanged
from services.dev.keepalived_lab import INSTANCE, KeepalivedLab, Node, NodeOptions
from services.dev.observe_lab import ObserverProcess
from services.dev.owner_watch import OwnerWatch
from services.dev.processes import spawn_havip
from services.dev.walkthrough import Tenant
from services.gateway.tokens import Principal, store_token
from services.runtime.kafka import new_producer, topic_name
from services.runtime.settings import Settings

TENANT = "tenant-keepalived"
TENANT_TOKEN = "tok-keepalived-tenant"
_FIFO_READ = re.compile(r'fifo line=("(?:[^"\\]|\\.)*") read_at=(\d+\.\d+)')


@dataclass(frozen=True)
class RouteChange:
    at: float  # wall clock, like the agents' read_at
    instance_id: str | None


class RouteWatch:
    """The forwarder's answer for the HAVIP, followed on its watch stream (`OwnerWatch`), timed on arrival.

    The forwarder pushes each change the moment it applies it (`GET /v1/routes:watch`), so the time
    a change arrived is the time the forwarder began answering it, give or take the loopback: no
    polling interval in the figure, and no core spent asking on a two-core machine. Times are wall
    clock, like the agents' and the observer's.
    """

    def __init__(self, forwarder_url: str, vpc_id: str, ip: str) -> None:
        self._client = httpx.AsyncClient(base_url=forwarder_url, timeout=5)
        self._watch = OwnerWatch(self._client, vpc_id, clock=time.time)
        self._ip = ip

    @property
    def changes(self) -> list[RouteChange]:
        """Every change of the answer (a repeat of the same owner is none), oldest first."""
        changes: list[RouteChange] = []
        for owner, at in self._watch.history(self._ip):
            if not changes or changes[-1].instance_id != owner:
                changes.append(RouteChange(at, owner))
        return changes

    @property
    def current(self) -> str | None:
        changes = self.changes
        return changes[-1].instance_id if changes else None

    async def start(self) -> None:
        await self._watch.__aenter__()

    async def stop(self) -> None:
        await self._watch.__aexit__()
        await self._client.aclose()

    async def wait_for(self, instance_id: str | None, timeout: float, since: float = 0.0) -> float:
        """When the forwarder first answered `instance_id` at or after `since` (wall clock)."""
        deadline = time.monotonic() + timeout
        while True:
            for change in self.changes:
                if change.at >= since and change.instance_id == instance_id:
                    return change.at
            if self.current == instance_id and self.changes:
                return max(self.changes[-1].at, since)
            if time.monotonic() > deadline:
                raise TimeoutError(f"forwarder answers {self.current}, not {instance_id}; changes {self.changes}")
            await asyncio.sleep(0.01)

    async def wait_for_other_than(self, instance_id: str | None, timeout: float, since: float = 0.0) -> float:
        """When the forwarder first answered anything but `instance_id` at or after `since` (wall clock)."""
        deadline = time.monotonic() + timeout
        while True:
            for change in self.changes:
                if change.at >= since and change.instance_id != instance_id:
                    return change.at
            if self.changes and self.current != instance_id:
                return max(self.changes[-1].at, since)
            if time.monotonic() > deadline:
                raise TimeoutError(f"forwarder still answers {instance_id}; changes {self.changes}")
            await asyncio.sleep(0.01)

    def answers_between(self, start: float, end: float) -> set[str | None]:
        """Every answer the forwarder gave in [start, end]."""
        before = [c for c in self.changes if c.at <= start]
        during = [c for c in self.changes if start < c.at <= end]
        return {c.instance_id for c in (before[-1:] + during)}


class GatewayLink:
    """A TCP relay between one agent and the gateway that can be cut and restored: the agent's network."""

    def __init__(self, gateway_host: str, gateway_port: int) -> None:
        self._target = (gateway_host, gateway_port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def restore(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        """Refuse new connections and drop the open ones, as a lost route would."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update({writer, up_writer})

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while chunk := await source.read(65536):
                    sink.write(chunk)
                    await sink.drain()
            sink.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers.difference_update({writer, up_writer})


class AgentProcess:
    """`havip agent --config PATH` for one node, as a tenant runs it next to keepalived."""

    def __init__(self, node: Node, directory: Path, gateway_url: str, token: str, havip_id: str) -> None:
        self.node = node
        self.config_path = directory / f"{node.name}-agent.toml"
        self.log_path = directory / f"{node.name}-agent.log"
        spool = directory / f"{node.name}-agent-spool"
        self.spool_path = spool / "spool"
        self.config_path.write_text(
            f"gateway_url = {json.dumps(gateway_url)}\n"
            f"token = {json.dumps(token)}\n"
            f"spool_dir = {json.dumps(str(spool))}\n"
            f"fifo = {json.dumps(str(node.fifo_path))}\n"
            "lease_seconds = 2.5\n"
            "renew_interval_seconds = 1.0\n"
            f"[instances]\n{INSTANCE} = {json.dumps(havip_id)}\n"
        )
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, settings: Settings) -> AgentProcess:
        self._process = spawn_havip(["agent", "--config", str(self.config_path)], settings, self.log_path)
        return self

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def kill(self) -> None:
        if self.running:
            assert self._process is not None
            self._process.kill()
            self._process.wait()

    def stop(self) -> None:
        if self.running:
            assert self._process is not None
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def spooled(self) -> list[str]:
        """Reports still waiting in the agent's spool (file names)."""
        return sorted(p.name for p in self.spool_path.glob("*.json"))

    def fifo_reads(self, state: str | None = None, since: float = 0.0) -> list[tuple[float, str]]:
        """(read_at, line) for every FIFO line the agent logged, optionally only those with this state."""
        found = []
        for match in _FIFO_READ.finditer(self.log_path.read_text(errors="replace")):
            line, read_at = json.loads(match[1]), float(match[2])
            if read_at >= since and (state is None or line.split()[2:3] == [state]):
                found.append((read_at, line))
        return found

    async def wait_read(self, state: str, since: float, timeout: float = 20.0) -> float:
        """When the agent read keepalived's notify of `state` (the first at or after `since`)."""
        deadline = time.monotonic() + timeout
        while not (reads := self.fifo_reads(state, since)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.node.name}'s agent read no {state} since {since}:\n{self.tail()}")
            await asyncio.sleep(0.02)
        return reads[0][0]

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class FailoverCluster:
    """A keepalived lab whose nodes are instances of a HAVIP on a running control plane.

    How the platform learns what keepalived does: `havip agent` beside each keepalived
    (`with_agents`), `havip observe` on the lab's host watching the nodes' ports (`observed`:
    then every node is an instance on that one host, its port the veth's end on the bridge),
    or both.
    """

    settings: Settings
    gateway_url: str
    forwarder_url: str
    workdir: Path
    linked: tuple[str, ...] = ()  # nodes whose agent reaches the gateway through a GatewayLink
    with_agents: bool = True
    observed: bool = False
    priorities: tuple[int, ...] = (100, 90)
    options: NodeOptions | None = None  # keepalived.conf beyond addresses and priorities, for every node
    lab: KeepalivedLab = field(init=False)
    agents: dict[str, AgentProcess] = field(init=False, default_factory=dict)
    links: dict[str, GatewayLink] = field(init=False, default_factory=dict)
    instances: dict[str, str] = field(init=False, default_factory=dict)
    havip: dict[str, str] = field(init=False, default_factory=dict)
    watch: RouteWatch = field(init=False)
    observer: ObserverProcess | None = field(init=False, default=None)
    lab_id: str = field(init=False, default_factory=lambda: secrets.token_hex(3))

    @property
    def host_id(self) -> str:
        return f"host-ka-{self.lab_id}"

    async def __aenter__(self) -> FailoverCluster:
        self.lab = KeepalivedLab(
            nodes=len(self.priorities), priorities=self.priorities, workdir=self.workdir, options=self.options
        ).create()
        try:
            await self._join_platform()
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.observer is not None:
            self.observer.stop()
        for agent in self.agents.values():
            agent.stop()
        for link in self.links.values():
            await link.cut()
        if hasattr(self, "watch"):
            await self.watch.stop()
        self.lab.close()

    def instance_of(self, node: str) -> str:
        return self.instances[node]

    def running_holders(self) -> list[str]:
        """The ground truth: nodes whose keepalived runs and whose namespace holds the VIP."""
        return [node.name for node in self.lab.nodes if node.running and node.holds_vip()]

    async def wait_claim(self, node: str, since: float, timeout: float = 20.0) -> float:
        """When the platform first heard `node` claim MASTER at or after `since`: the first advert of it the
        observer saw (if it watches), else the notify line the node's agent read."""
        if self.observer is not None:
            return await self.observer.first_advert(self.lab.ports[node], since, timeout)
        return await self.agents[node].wait_read("MASTER", since=since, timeout=timeout)

    async def wait_resignation(self, node: str, since: float, timeout: float = 20.0) -> float:
        """When the platform first heard `node` give up MASTER at or after `since`: its priority-0 advert as
        the observer saw it (if it watches), else the notify line (STOP) its agent read."""
        if self.observer is not None:
            return await self.observer.wait_resignation(self.instance_of(node), since, timeout)
        return await self.agents[node].wait_read("STOP", since=since, timeout=timeout)

    async def add_intruder(self, priority: int = 254) -> Node:
        """An instance of the same tenant on the same host, NOT attached to the HAVIP, running keepalived
        for the same VRID and VIP at `priority` (not started yet)."""
        node = self.lab.add_stranger(priority)
        self.instances[node.name] = f"i-ka-{self.lab_id}-{node.name}"
        await self._publish_inventory(f"vsw-ka-{self.lab_id}", [node], with_vswitch=False)
        return node

    async def owner_history(self) -> list[dict[str, object]]:
        """Every owner change of the HAVIP, oldest first."""
        async with httpx.AsyncClient(base_url=self.gateway_url, timeout=30) as gateway:
            answer = await gateway.get(
                f"/v1/havips/{self.havip['havip_id']}/owner-history",
                headers={"Authorization": f"Bearer {TENANT_TOKEN}"},
                params={"page_size": 100},
            )
            answer.raise_for_status()
            return list(reversed(answer.json()["changes"]))

    async def _join_platform(self) -> None:
        lab_id = self.lab_id
        vswitch = f"vsw-ka-{lab_id}"
        self.instances = {node.name: f"i-ka-{lab_id}-{node.name}" for node in self.lab.nodes}
        await self._publish_inventory(vswitch, self.lab.nodes)
        tokens = {node.name: f"tok-ka-{lab_id}-{node.name}" for node in self.lab.nodes}
        pool = await asyncpg.connect(self.settings.database_url)
        try:
            await store_token(pool, TENANT_TOKEN, Principal("tenant", TENANT))
            for node in self.lab.nodes:
                await store_token(pool, tokens[node.name], Principal("agent", TENANT, self.instances[node.name]))
        finally:
            await pool.close()
        async with (
            httpx.AsyncClient(base_url=self.gateway_url, timeout=30) as gateway,
            httpx.AsyncClient(base_url=self.forwarder_url, timeout=30) as forwarder,
        ):
            tenant = Tenant(gateway, forwarder, TENANT_TOKEN, {})
            created = await tenant.create_havip(vswitch, ip_address=self.lab.vip, name=f"keepalived-{lab_id}")
            for node in self.lab.nodes:
                attached = await tenant.attach(created["havip_id"], self.instances[node.name])
                if attached["status"] != "Succeeded":
                    raise RuntimeError(f"attaching {node.name} failed: {attached}")
        self.havip = {"havip_id": created["havip_id"], "vpc_id": created["vpc_id"], "ip": self.lab.vip}
        self.watch = RouteWatch(self.forwarder_url, created["vpc_id"], self.lab.vip)
        await self.watch.start()
        if self.observed:
            # Its log in the workdir, not the lab's own dir: it outlives the lab for a post-mortem.
            self.observer = ObserverProcess(self.settings, self.host_id, self.lab.hub, self.workdir).start()
            await self.observer.wait_ready()
        if not self.with_agents:
            return
        gateway_address = httpx.URL(self.gateway_url)
        for node in self.lab.nodes:
            node.make_fifo()  # the agent's, kept across keepalived restarts
            url = self.gateway_url
            if node.name in self.linked:
                link = GatewayLink(gateway_address.host, gateway_address.port or 80)
                await link.restore()
                self.links[node.name] = link
                url = link.url
            agent = AgentProcess(node, self.lab.directory or self.workdir, url, tokens[node.name], created["havip_id"])
            self.agents[node.name] = agent.start(self.settings)

    async def _publish_inventory(self, vswitch: str, nodes: Sequence[Node], with_vswitch: bool = True) -> None:
        producer = new_producer(self.settings)
        await producer.start()
        try:
            inventory = topic_name(self.settings, topics.INVENTORY)
            revision = time.time_ns()
            records: list[tuple[str, VSwitchChanged | InstanceChanged]] = []
            if with_vswitch:
                vswitch_record = VSwitchChanged(
                    vswitch_id=vswitch,
                    tenant_id=TENANT,
                    vpc_id=f"vpc-{vswitch}",
                    zone_id="edge-zone-lab",
                    cidr=f"{self.lab.subnet}.0/24",
                    revision=revision,
                )
                records.append((vswitch, vswitch_record))
            for node in nodes:
                instance = self.instances[node.name]
                records.append(
                    (
                        instance,
                        InstanceChanged(
                            instance_id=instance,
                            tenant_id=TENANT,
                            vpc_id=f"vpc-{vswitch}",
                            vswitch_id=vswitch,
                            private_ip=node.ip,
                            status=InstanceStatus.RUNNING,
                            # Observed, the nodes are instances on one host: the lab's hub, whose
                            # bridge ports are theirs. Otherwise each on a host of its own, as before.
                            host_id=self.host_id if self.observed else f"host-{node.name}",
                            revision=revision,
                            port_name=self.lab.ports[node.name],
                            mac=self.lab.mac_of(node),
                        ),
                    )
                )
            for key, record in records:
                await producer.send_and_wait(inventory, key=key.encode(), value=topics.encode(record))
        finally:
            await producer.stop()


@dataclass(frozen=True)
class FailoverTiming:
    """One failover: keepalived's own time to act, and the platform's delay after it first heard of it."""

    scenario: str
    keepalived_seconds: float  # e.g. SIGKILL -> the backup's MASTER notify (agent) or first advert (observer)
    platform_seconds: float  # that notify or advert -> the forwarder answers the new owner

    def describe(self) -> str:
        return (
            f"{self.scenario}: keepalived {self.keepalived_seconds * 1000:.0f} ms,"
            f" heard -> forwarder {self.platform_seconds * 1000:.0f} ms"
        )
