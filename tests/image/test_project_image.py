"""The project's image (deploy/Dockerfile), run the way deploy/k8s runs it.

Read-only root filesystem, uid 10001, every capability dropped, no new privileges, tmpfs where the
pods have an emptyDir (/tmp, the working directory); PostgreSQL and the broker in containers on
the same Docker network. `havip migrate` and `havip topics` as the init steps, the four services,
each ready; then the README's walk-through through the published ports (create, attach, a MASTER
report, the forwarder's answer, a failover) and SIGTERM to each service, which must drain and exit 0.

HAVIP_TEST_PROJECT_IMAGE names the image (`tests/images/build.sh --project TAG` builds one where no
registry is reachable); HAVIP_TEST_POSTGRES_IMAGE and HAVIP_TEST_KAFKA_IMAGE as for the other tiers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from testcontainers.core.container import DockerContainer
from testcontainers.core.network import Network

from schemas import topics
from services.dev.stack import DEMO_TENANT, demo_inventory
from services.dev.walkthrough import Tenant, master_then_failover, read_held_open
from services.runtime.kafka import topic_name
from services.runtime.settings import Settings
from tests import container_tools
from tests.container_tools import Unavailable

pytestmark = pytest.mark.image

SERVICES = ("quota", "mapping", "forwarder", "gateway")
PORTS = {name: Settings.model_fields[f"{name}_port"].default for name in SERVICES}
WORKDIR = "/var/lib/havip"
# As pod-defaults.yaml: terminationGracePeriodSeconds.
GRACE_SECONDS = 30

# Publishes records given as JSON [topic, key, value] triples: inventory is the cloud's to publish,
# and the image has a Kafka client, so the records need no route from this machine to the broker.
PUBLISH = """
import asyncio, json, os, aiokafka
async def main():
    producer = aiokafka.AIOKafkaProducer(bootstrap_servers=os.environ["HAVIP_KAFKA_BOOTSTRAP"])
    await producer.start()
    try:
        for topic, key, value in json.loads(os.environ["RECORDS"]):
            await producer.send_and_wait(topic, key=key.encode(), value=value.encode())
    finally:
        await producer.stop()
asyncio.run(main())
"""


@dataclass
class Deployment:
    image: str
    network: Network
    env: dict[str, str]

    def container(
        self, *command: str, alias: str | None = None, entrypoint: list[str] | None = None
    ) -> DockerContainer:
        """A container of the image, locked down as deploy/k8s locks the pods down."""
        container = DockerContainer(self.image).with_command(list(command)).with_envs(**self.env)
        container.with_tmpfs_mount("/tmp", "size=64m").with_tmpfs_mount(WORKDIR, "size=64m")
        return container_tools.ours(
            container,
            network=self.network,
            alias=alias,
            **({"entrypoint": entrypoint} if entrypoint else {}),
            read_only=True,
            user="10001:10001",
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
        )

    def run(self, *command: str, entrypoint: list[str] | None = None, **env: str) -> str:
        """A one-off command (an init step); its output, or the test fails with it."""
        code, out, err = self.outcome(*command, entrypoint=entrypoint, **env)
        assert code == 0, f"{entrypoint or 'havip'} {' '.join(command)} exited {code}:\n{out}{err}"
        return out

    def outcome(self, *command: str, entrypoint: list[str] | None = None, **env: str) -> tuple[int, str, str]:
        """A one-off command's exit status, standard output and standard error."""
        container = self.container(*command, entrypoint=entrypoint).with_envs(**env)
        with container:
            code = container.wait()
            out, err = container.get_logs()
        return code, out.decode(errors="replace"), err.decode(errors="replace")


@pytest.fixture(scope="module")
def deployment() -> Iterator[Deployment]:
    if not container_tools.PROJECT_IMAGE.image(os.environ):
        if os.environ.get("CI"):
            pytest.fail("HAVIP_TEST_PROJECT_IMAGE is not set: CI builds the image (tests/images/build.sh --project)")
        pytest.skip("HAVIP_TEST_PROJECT_IMAGE is not set (tests/images/build.sh --project TAG builds the image)")
    try:
        client = container_tools.engine(os.environ)
        settings = (*container_tools.IMAGES, container_tools.PROJECT_IMAGE)
        images = [container_tools.ensure_image(client, setting, os.environ) for setting in settings]
        broker = container_tools.broker_kind(client, images[1])
    except Unavailable as why:
        pytest.fail(f"the image test cannot run: {why}")
    with contextlib.ExitStack() as stack:
        stack.callback(client.close)
        network = stack.enter_context(container_tools.network())
        postgres = stack.enter_context(container_tools.postgres_container(images[0], network=network))
        stack.enter_context(container_tools.broker_container(images[1], broker, network=network))
        dsn = f"postgresql://{postgres.username}:{postgres.password}@postgres:5432/{postgres.dbname}"
        env = {"HAVIP_DATABASE_URL": dsn, "HAVIP_KAFKA_BOOTSTRAP": "broker:9092", "HAVIP_LOG_LEVEL": "INFO"}
        yield Deployment(images[2], network, env)


def _ready(container: DockerContainer, port: int, deadline: float) -> str:
    url = f"http://127.0.0.1:{container.get_exposed_port(port)}"
    while True:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return url
        except httpx.HTTPError:
            pass
        container.reload()
        if container.status != "running" or time.monotonic() > deadline:
            out, err = container.get_logs()
            pytest.fail(f"not ready ({container.status}):\n{(out + err).decode(errors='replace')[-3000:]}")
        time.sleep(0.2)


def _stop(name: str, container: DockerContainer) -> str:
    """SIGTERM, as the kubelet sends it; the exit code must be 0 within the grace period."""
    wrapped = container.get_wrapped_container()
    started = time.monotonic()
    wrapped.kill(signal="SIGTERM")
    code = wrapped.wait(timeout=GRACE_SECONDS)["StatusCode"]
    took = time.monotonic() - started
    out, err = container.get_logs()
    log = (out + err).decode(errors="replace")
    assert code == 0, f"exit {code} after SIGTERM:\n{log[-3000:]}"
    assert "Traceback" not in log, log
    print(f"{name}: stopped {took:.1f} s after SIGTERM")
    return log


async def test_the_image_runs_the_walkthrough_read_only_as_uid_10001(deployment: Deployment) -> None:
    # The pods' init step, twice as pods starting together would run it: the second applies nothing.
    deployment.run("migrate")
    deployment.run("topics")
    created = json.loads(
        deployment.run("admin", "tenant", "create", "demo", "--tenant-id", DEMO_TENANT, "--output", "json")
    )
    tenant_token = created["token"]["token"]
    records = [
        [topic_name(Settings(), topics.INVENTORY), key, topics.encode(record).decode()]
        for key, record in demo_inventory(revision=time.time_ns())
    ]
    deployment.run(entrypoint=["python", "-c", PUBLISH], RECORDS=json.dumps(records))

    with contextlib.ExitStack() as stack:
        running = {}
        for name in SERVICES:
            container = deployment.container("serve", name, alias=name).with_exposed_ports(PORTS[name])
            running[name] = stack.enter_context(container)
        deadline = time.monotonic() + 120
        urls = {name: await asyncio.to_thread(_ready, c, PORTS[name], deadline) for name, c in running.items()}
        for name, container in running.items():
            user = container.exec(["id", "-u"]).output.decode().strip()
            assert user == "10001", (name, user)

        async with (
            httpx.AsyncClient(base_url=urls["gateway"], timeout=30) as gateway,
            httpx.AsyncClient(base_url=urls["forwarder"], timeout=30) as forwarder,
        ):
            auth = {"Authorization": f"Bearer {tenant_token}"}
            agents = {}
            for instance in ("i-demo-web1", "i-demo-web2"):
                issued = await gateway.post(f"/v1/instances/{instance}/agent-tokens", headers=auth, json={})
                assert issued.status_code == 201, issued.text
                agents[instance] = issued.json()["token"]
            tenant = Tenant(gateway, forwarder, tenant_token, agents)

            havip = await tenant.create_havip("vsw-demo-a", ip_address="192.168.1.100", name="web")
            assert havip["status"] == "Available", havip
            for instance in agents:
                assert (await tenant.attach(havip["havip_id"], instance))["status"] == "Succeeded"
            route, shown = await master_then_failover(tenant, havip["havip_id"])
            assert route is not None and (route["private_ip"], route["host_id"]) == ("192.168.1.11", "host-a")
            assert shown["status"] == "InUse" and shown["owner"]["instance_id"] == "i-demo-web2"

            # SIGTERM: the stream workers finish, commit and leave; the forwarder stops answering.
            for name in ("forwarder", "mapping", "quota"):
                log = await asyncio.to_thread(_stop, name, running[name])
                if name != "forwarder":
                    assert "finishing what is under way, committing it and leaving the group" in log, log
            # The gateway finishes a request in flight: with quota gone an operation stays Pending,
            # and a read that waits for it is under way when SIGTERM arrives.
            in_flight = await read_held_open(gateway, auth, "vsw-demo-a", wait="3s")
            await asyncio.to_thread(_stop, "gateway", running["gateway"])
            answer = await in_flight
            assert answer.status_code == 200 and answer.json()["status"] == "Pending", answer.text


def test_the_image_carries_no_dev_tooling(deployment: Deployment) -> None:
    for command in (["dev", "up"], ["bench", "failover"]):
        code, out, err = deployment.outcome(*command)
        assert code == 2 and not out, (command, code, out, err)
        (line,) = err.splitlines()
        assert "not in this installation" in line and "Traceback" not in err, err
    code, out, err = deployment.outcome(entrypoint=["python", "-c", "import services.dev"])
    assert code == 1 and "No module named 'services.dev'" in err, err
