"""PostgreSQL and a Kafka broker in Docker containers, started through testcontainers.

Which images is a setting: the official ones by default (Apache Kafka in KRaft mode and
PostgreSQL), local ones where no registry is reachable (`tests/images/build.sh` builds them from
Debian's packages and the locked wheels, and prints the settings that point here). No Ryuk
reaper: it is an image from a registry too. Containers are removed when the session ends, and
the leftovers of a session that was killed are removed when the next one starts.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

import docker
import psutil
from docker.errors import DockerException, ImageNotFound
from testcontainers.community.postgres import PostgresContainer
from testcontainers.core.config import testcontainers_config
from testcontainers.core.container import DockerContainer
from testcontainers.core.network import Network

# Ryuk would be pulled from Docker Hub before the first container; we remove our own instead.
testcontainers_config.ryuk_disabled = True

LABEL = "io.havip.tests.pid"
BROKER_LABEL = "io.havip.test.broker"  # on tests/images/tansu: how to configure the broker


class Backend(StrEnum):
    """Where the integration and end-to-end tiers find their broker and PostgreSQL."""

    AUTO = "auto"
    EMBEDDED = "embedded"  # Tansu and PostgreSQL from the wheels, as processes
    CONTAINERS = "containers"  # testcontainers
    ENV = "env"  # HAVIP_TEST_KAFKA and HAVIP_TEST_DATABASE_URL


class BrokerKind(StrEnum):
    TANSU = "tansu"
    APACHE_KAFKA = "apache-kafka"


@dataclass(frozen=True)
class ImageSetting:
    variable: str
    default: str

    def image(self, environ: Mapping[str, str]) -> str:
        return environ.get(self.variable) or self.default


POSTGRES_IMAGE = ImageSetting("HAVIP_TEST_POSTGRES_IMAGE", "postgres:16")
KAFKA_IMAGE = ImageSetting("HAVIP_TEST_KAFKA_IMAGE", "apache/kafka:3.9.1")
IMAGES = (POSTGRES_IMAGE, KAFKA_IMAGE)
# The image under test in tests/image: no default, the test skips without one.
PROJECT_IMAGE = ImageSetting("HAVIP_TEST_PROJECT_IMAGE", "")

# A throw-away cluster, as the embedded one: speed over durability, and connections for every
# service, pool and test of a session.
POSTGRES_COMMAND = "postgres -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300"


class Unavailable(Exception):
    """The engine or an image cannot be had; the message says which and what to set."""


def engine(environ: Mapping[str, str]) -> docker.DockerClient:
    """The engine `docker` would talk to (DOCKER_HOST, else the default socket), if it answers."""
    try:
        client = docker.from_env(environment=dict(environ), timeout=5)
        client.ping()
    except DockerException as error:
        where = environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        raise Unavailable(f"no Docker engine answers at {where}") from error
    return client


def ensure_image(client: docker.DockerClient, setting: ImageSetting, environ: Mapping[str, str]) -> str:
    """The setting's image, pulled if the engine lacks it; Unavailable names the variable if neither works."""
    image = setting.image(environ)
    try:
        client.images.get(image)
        return image
    except ImageNotFound:
        pass
    except DockerException as error:
        raise Unavailable(f"{setting.variable}={image}: {_first_line(error)}") from error
    try:
        client.images.pull(image)
    except DockerException as error:
        raise Unavailable(
            f"{setting.variable}={image} is not on the engine and cannot be pulled ({_first_line(error)}); "
            "set it to an image the engine has (tests/images/build.sh builds local ones)"
        ) from error
    return image


def broker_kind(client: docker.DockerClient, image: str) -> BrokerKind:
    labels = client.images.get(image).labels or {}
    return BrokerKind(labels.get(BROKER_LABEL, BrokerKind.APACHE_KAFKA))


def remove_leftovers(client: docker.DockerClient) -> list[str]:
    """Containers of earlier test sessions whose process is gone (killed before it could clean up)."""
    removed = []
    for container in client.containers.list(all=True, filters={"label": LABEL}):
        pid = int(container.labels.get(LABEL, "0"))
        if pid != os.getpid() and not _alive(pid):
            container.remove(force=True)
            removed.append(container.name or container.short_id)
    for network in client.networks.list(filters={"label": LABEL}):
        if not _alive(int(network.attrs.get("Labels", {}).get(LABEL, "0"))):
            network.remove()
    return removed


def postgres_container(image: str, *, network: Network | None = None, alias: str = "postgres") -> PostgresContainer:
    """PostgreSQL with a superuser `havip` and a random password; `get_connection_url(driver=None)` reaches it."""
    container = PostgresContainer(
        image, username="havip", password=secrets.token_hex(12), dbname="havip", driver=None
    ).with_command(POSTGRES_COMMAND)
    return ours(container, network=network, alias=alias)


def broker_container(
    image: str, kind: BrokerKind, *, host_port: int | None = None, network: Network | None = None, alias: str = "broker"
) -> DockerContainer:
    """One broker. With `host_port` it is reached from this machine at 127.0.0.1:host_port (the port
    is published as itself, since a broker tells its clients where to reconnect); with a network,
    by the containers on it at `alias`:9092."""
    advertised = f"127.0.0.1:{host_port}" if host_port is not None else f"{alias}:9092"
    container = DockerContainer(image)
    if host_port is not None:
        container.with_bind_ports(9092, host_port)
    if kind is BrokerKind.TANSU:
        container.with_command(
            [
                "--listener-url",
                "tcp://0.0.0.0:9092",
                "--advertised-listener-url",
                f"tcp://{advertised}",
                "--storage-engine",
                "memory://tansu/",
            ]
        )
    else:
        # The official image's KRaft configuration, one node as broker and controller.
        container.with_envs(
            KAFKA_NODE_ID="1",
            KAFKA_PROCESS_ROLES="broker,controller",
            KAFKA_LISTENERS="PLAINTEXT://0.0.0.0:9092,CONTROLLER://localhost:9093",
            KAFKA_ADVERTISED_LISTENERS=f"PLAINTEXT://{advertised}",
            KAFKA_CONTROLLER_LISTENER_NAMES="CONTROLLER",
            KAFKA_LISTENER_SECURITY_PROTOCOL_MAP="CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            KAFKA_CONTROLLER_QUORUM_VOTERS="1@localhost:9093",
            KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR="1",
            KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR="1",
            KAFKA_TRANSACTION_STATE_LOG_MIN_ISR="1",
            KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS="0",
            # Stream workers' sessions are shorter than Kafka's default minimum of 6 s.
            KAFKA_GROUP_MIN_SESSION_TIMEOUT_MS="500",
        )
    return ours(container, network=network, alias=alias)


def network() -> Network:
    """A network of this session's (removed with it, or by the next session if this one is killed)."""
    return Network(docker_network_kw={"labels": {LABEL: str(os.getpid())}})


Container = TypeVar("Container", bound=DockerContainer)


def ours(container: Container, *, network: Network | None = None, alias: str | None = None, **run: object) -> Container:
    """Label the container as this session's, put it on `network` as `alias`; `run` goes to docker run."""
    container.with_kwargs(labels={LABEL: str(os.getpid())}, **run)
    if network is not None:
        container.with_network(network)
        if alias is not None:
            container.with_network_aliases(alias)
    return container


def _alive(pid: int) -> bool:
    return pid > 0 and psutil.pid_exists(pid)


def _first_line(error: BaseException) -> str:
    # The engine's own words (APIError.explanation), not the URL of the request that failed.
    text = str(getattr(error, "explanation", None) or error).strip() or type(error).__name__
    return text.splitlines()[0]


@dataclass(frozen=True)
class Choice:
    """Where the broker and PostgreSQL of a test session come from, and why."""

    backend: Backend
    why: str
    postgres_image: str = ""
    kafka_image: str = ""
    broker: BrokerKind = BrokerKind.APACHE_KAFKA

    def describe(self) -> str:
        return f"test backend: {self.backend} ({self.why})"


def choose(environ: Mapping[str, str]) -> Choice:
    """HAVIP_TEST_BACKEND: embedded, containers, env, or auto (the default): env when both
    HAVIP_TEST_KAFKA and HAVIP_TEST_DATABASE_URL are set, else containers when an engine answers
    and both images can be had, else embedded. Unavailable when what was asked for cannot be had."""
    raw = environ.get("HAVIP_TEST_BACKEND", Backend.AUTO) or Backend.AUTO
    try:
        asked = Backend(raw)
    except ValueError:
        raise Unavailable(f"HAVIP_TEST_BACKEND={raw!r} is none of {', '.join(b.value for b in Backend)}") from None
    given = [name for name in ("HAVIP_TEST_KAFKA", "HAVIP_TEST_DATABASE_URL") if environ.get(name)]
    if asked is Backend.ENV or (asked is Backend.AUTO and given):
        if len(given) < 2:
            missing = {"HAVIP_TEST_KAFKA", "HAVIP_TEST_DATABASE_URL"} - set(given)
            raise Unavailable(f"{', '.join(sorted(missing))} not set: a broker and a database are both needed")
        # A broker of our own choosing is taken for Apache Kafka (the tests that differ on Tansu say so).
        return Choice(Backend.ENV, "HAVIP_TEST_KAFKA and HAVIP_TEST_DATABASE_URL")
    if asked is Backend.EMBEDDED:
        return Choice(Backend.EMBEDDED, "HAVIP_TEST_BACKEND=embedded", broker=BrokerKind.TANSU)
    try:
        client = engine(environ)
        try:
            postgres, kafka = (ensure_image(client, setting, environ) for setting in IMAGES)
            broker = broker_kind(client, kafka)
        finally:
            client.close()
    except Unavailable as why:
        if asked is Backend.CONTAINERS:
            raise
        return Choice(Backend.EMBEDDED, f"{why}; using Tansu and PostgreSQL from the wheels", broker=BrokerKind.TANSU)
    return Choice(
        Backend.CONTAINERS,
        f"PostgreSQL {postgres}, {broker} {kafka}",
        postgres_image=postgres,
        kafka_image=kafka,
        broker=broker,
    )
