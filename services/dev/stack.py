"""`havip dev up` and `havip dev seed`: the whole system on one machine.

The demo inventory and tokens are fixed so the README's walk-through works
as written; they are for a laptop, never for a real cloud.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg

from schemas import topics
from schemas.messages import (
    EipChanged,
    InstanceChanged,
    InstanceStatus,
    Message,
    VSwitchChanged,
)
from services.dev.embedded import EmbeddedBroker, EmbeddedPostgres, free_port
from services.dev.processes import PORT_SETTING, Child, Restarts, ServiceProcess, heal
from services.gateway.tenants import create_tenant, get_tenant
from services.gateway.tokens import Principal, store_token
from services.runtime.db import connect_pool, migrate
from services.runtime.kafka import (
    ensure_topics,
    new_admin,
    new_producer,
    topic_name,
    wait_for_broker,
)
from services.runtime.settings import Settings

DEMO_TENANT = "tenant-demo"
DEMO_TENANT_TOKEN = "dev-tenant-token"


def demo_inventory(revision: int) -> list[tuple[str, Message]]:
    def instance(
        iid: str, ip: str, host: str, vsw: str = "vsw-demo-a", status: InstanceStatus = InstanceStatus.RUNNING
    ) -> tuple[str, Message]:
        # The facts `havip observe` needs: the instance's port on its host (a tap, as a host
        # agent names it) and its MAC, made up from the address so the demo stays readable.
        last = [int(part) for part in ip.split(".")[2:]]
        return iid, InstanceChanged(
            instance_id=iid,
            tenant_id=DEMO_TENANT,
            vpc_id="vpc-demo",
            vswitch_id=vsw,
            private_ip=ip,
            status=status,
            host_id=host,
            revision=revision,
            port_name="tap-{}-{}".format(*last),
            mac="02:00:c0:a8:{:02x}:{:02x}".format(*last),
        )

    return [
        (
            "vsw-demo-a",
            VSwitchChanged(
                vswitch_id="vsw-demo-a",
                tenant_id=DEMO_TENANT,
                vpc_id="vpc-demo",
                zone_id="edge-zone-1",
                cidr="192.168.1.0/24",
                revision=revision,
            ),
        ),
        (
            "vsw-demo-b",
            VSwitchChanged(
                vswitch_id="vsw-demo-b",
                tenant_id=DEMO_TENANT,
                vpc_id="vpc-demo",
                zone_id="edge-zone-1",
                cidr="192.168.2.0/24",
                revision=revision,
            ),
        ),
        instance("i-demo-web1", "192.168.1.11", "host-a"),
        instance("i-demo-web2", "192.168.1.12", "host-b"),
        instance("i-demo-web3", "192.168.1.13", "host-c"),
        instance("i-demo-other", "192.168.2.10", "host-a", vsw="vsw-demo-b"),
        instance("i-demo-stopped", "192.168.1.20", "host-b", status=InstanceStatus.STOPPED),
        (
            "eip-demo-1",
            EipChanged(eip_id="eip-demo-1", tenant_id=DEMO_TENANT, ip_address="203.0.113.10", revision=revision),
        ),
    ]


def demo_agent_tokens() -> dict[str, str]:
    return {iid: f"dev-agent-{iid}" for iid in ("i-demo-web1", "i-demo-web2", "i-demo-web3")}


async def seed(settings: Settings) -> None:
    await wait_for_broker(settings)
    await ensure_topics(settings)
    producer = new_producer(settings)
    await producer.start()
    try:
        inventory = topic_name(settings, topics.INVENTORY)
        records = demo_inventory(revision=time.time_ns())
        for key, record in records:
            await producer.send_and_wait(inventory, key=key.encode(), value=topics.encode(record))
    finally:
        await producer.stop()
    pool = await connect_pool(settings.database_url, max_size=1)
    try:
        if await get_tenant(pool, DEMO_TENANT) is None:
            await create_tenant(pool, "demo", tenant_id=DEMO_TENANT)
        await store_token(pool, DEMO_TENANT_TOKEN, Principal("tenant", DEMO_TENANT))
        for iid, token in demo_agent_tokens().items():
            await store_token(pool, token, Principal("agent", DEMO_TENANT, iid))
    finally:
        await pool.close()
    print(f"seeded {len(records)} inventory records on {inventory} and {1 + len(demo_agent_tokens())} API tokens")


async def _prepare_database(admin_dsn: str, database: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database):
            await conn.execute(f'CREATE DATABASE "{database}"')
    finally:
        await conn.close()


async def _migrate(dsn: str) -> None:
    pool = await connect_pool(dsn, max_size=1)
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
    finally:
        await pool.close()


def _returncode_of(process: ServiceProcess) -> Callable[[], int | None]:
    return lambda: process.returncode


# Two mapping workers: with a standby in the group, a worker that dies hands its partitions on
# in about 3 s, however long its own restart takes (`havip bench rebalance`; README "A worker that dies").
DEV_SERVICES = ("quota", "mapping", "mapping", "forwarder", "gateway")


class DevStack:
    """Broker, database and the four services; embedded unless the environment names them.

    With `keep_data` the embedded PostgreSQL lives in `<workdir>/postgres` and
    outlives the stack; otherwise it is thrown away on stop.
    """

    def __init__(
        self,
        settings: Settings,
        workdir: Path,
        *,
        embedded_kafka: bool,
        embedded_postgres: bool,
        services: tuple[str, ...] = DEV_SERVICES,
        keep_data: bool = False,
    ) -> None:
        self.settings = settings
        self._wanted = services
        self._embedded_kafka = embedded_kafka
        self._embedded_postgres = embedded_postgres
        self._keep_data = keep_data
        self.workdir = workdir
        self.services: list[ServiceProcess] = []
        self._broker: EmbeddedBroker | None = None
        self._postgres: EmbeddedPostgres | None = None
        self._restarts: dict[str, Restarts] = {}

    @property
    def data_dir(self) -> Path:
        """Where the embedded PostgreSQL keeps its cluster when it keeps data."""
        return postgres_dir(self.workdir)

    def __enter__(self) -> DevStack:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def url(self, service: str) -> str:
        return next(s.url for s in self.services if s.service == service)

    def _start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self._embedded_kafka:
            self._broker = EmbeddedBroker(self.workdir).start()
            self.settings = self.settings.model_copy(update={"kafka_bootstrap": self._broker.bootstrap})
        if self._embedded_postgres:
            data_dir = self.data_dir if self._keep_data else None
            self._postgres = EmbeddedPostgres(self.workdir, data_dir=data_dir).start()
            asyncio.run(_prepare_database(self._postgres.dsn(), "havip"))
            self.settings = self.settings.model_copy(update={"database_url": self._postgres.dsn("havip")})
        asyncio.run(_migrate(self.settings.database_url))
        asyncio.run(seed(self.settings))
        for name in self._wanted:
            self.services.append(self._process(name).start())
        for service in self.services:
            service.wait_ready()

    def _process(self, service: str) -> ServiceProcess:
        """The first process of a service uses the configured port; another (a standby) a free one."""
        earlier = sum(1 for s in self.services if s.service == service)
        if not earlier:
            return ServiceProcess(service, self.settings, self.workdir)
        port = free_port(self.settings.http_host)
        settings = self.settings.model_copy(update={PORT_SETTING[service]: port})
        return ServiceProcess(service, settings, self.workdir, name=f"{service}-{earlier + 1}")

    def exited(self) -> ServiceProcess | None:
        return next((s for s in self.services if s.process is not None and s.process.poll() is not None), None)

    def heal(self, now: float | None = None) -> list[str]:
        """Start again whatever died, with backoff; one step per call, so call it about once a second.

        Returns (and prints) what happened. Never waits for a backoff or for
        readiness: a child due later is looked at again on a later call.
        """
        said = heal(self._children(), self._restarts, time.monotonic() if now is None else now)
        for line in said:
            print(line, flush=True)
        return said

    def _children(self) -> Iterator[Child]:
        if self._broker is not None:
            broker = self._broker
            yield Child("broker", lambda: broker.returncode, self._restart_broker)
        if self._postgres is not None:
            postgres = self._postgres
            yield Child("postgres", lambda: postgres.returncode, postgres.start)
        for service in self.services:
            yield Child(service.name, _returncode_of(service), service.start, service.ready)

    def _restart_broker(self) -> None:
        assert self._broker is not None
        restart_embedded_broker(self._broker, self.settings)
        asyncio.run(seed(self.settings))
        print(
            f"broker restarted on {self._broker.bootstrap}; topics recreated and demo inventory re-seeded;"
            " the services notice the lost topics and rebuild them from PostgreSQL",
            flush=True,
        )

    def stop(self) -> None:
        for service in self.services:
            service.request_stop()
        for service in self.services:
            service.stop()
        if self._postgres:
            self._postgres.stop()
        if self._broker:
            self._broker.stop()


def restart_embedded_broker(broker: EmbeddedBroker, settings: Settings) -> None:
    """Start the embedded broker again, empty, on its port, with every topic made afresh.

    Tansu keeps topics in memory, so the new broker has none, and the services reconnect
    at once. Tansu 0.6 creates a topic that a produce request names before anything else
    did, and such a topic's partition answers fetches with nothing, for good, while its end
    offset grows. A producer that had our topics in its metadata sends exactly that. So
    every topic that already exists is deleted and all are created again, at once; what
    the services wrote in that moment is lost like the rest of the old broker's log, and
    they rebuild it (services/runtime/broker_watch.py).
    """
    broker.start()
    asyncio.run(_recreate_topics(settings))


async def _recreate_topics(settings: Settings) -> None:
    admin = new_admin(settings)
    await admin.start()
    try:
        ours = {topic_name(settings, topic) for topic in topics.ALL}
        stray = sorted(ours & set(await admin.list_topics()))
        if stray:
            await admin.delete_topics(stray)
    finally:
        await admin.close()
    await ensure_topics(settings)


def postgres_dir(workdir: Path) -> Path:
    return workdir / "postgres"


def dev_stack(
    settings: Settings, workdir: Path, services: tuple[str, ...] | None = None, *, keep_data: bool = False
) -> DevStack:
    """Embedded broker and database unless HAVIP_KAFKA_BOOTSTRAP / HAVIP_DATABASE_URL name real ones."""
    return DevStack(
        settings,
        workdir,
        embedded_kafka="HAVIP_KAFKA_BOOTSTRAP" not in os.environ,
        embedded_postgres="HAVIP_DATABASE_URL" not in os.environ,
        keep_data=keep_data,
        **({"services": services} if services is not None else {}),
    )


def run_dev_stack(settings: Settings, workdir: str, *, fresh: bool = False) -> int:
    """Start everything, print how to use it, restart what dies, and stop everything on Ctrl-C or SIGTERM.

    The embedded database keeps its data in the work directory between runs; `fresh` starts it over.
    """
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stack = dev_stack(settings, Path(workdir).resolve(), keep_data=True)
    if fresh and stack.data_dir.exists():
        shutil.rmtree(stack.data_dir)
        print(f"removed {stack.data_dir}: starting with an empty database", flush=True)
    try:
        stack.__enter__()
        _print_banner(stack.settings, stack.services, stack.workdir)
        while not stop.wait(1.0):
            stack.heal()
        return 0
    finally:
        print("stopping...", flush=True)
        stack.stop()
        print("stopped", flush=True)


def _print_banner(settings: Settings, services: list[ServiceProcess], work: Path) -> None:
    urls = {s.service: s.url for s in services}
    lines = [
        "",
        "HAVIP control plane is up (Ctrl-C stops everything)",
        f"  gateway    {urls['gateway']}   (API docs: {urls['gateway']}/docs)",
        f"  forwarder  {urls['forwarder']}",
        f"  quota      {urls['quota']}/readyz",
        *(f"  {s.name:<10} {s.url}/readyz" for s in services if s.service == "mapping"),
        f"  kafka      {settings.kafka_bootstrap}",
        f"  postgres   {settings.database_url}",
        f"  logs       {work}",
        "",
        f"  tenant token ({DEMO_TENANT}):  {DEMO_TENANT_TOKEN}",
    ]
    lines += [f"  agent token for {iid}:  {token}" for iid, token in demo_agent_tokens().items()]
    lines.append("")
    print("\n".join(lines), flush=True)
