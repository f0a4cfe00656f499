"""Fixtures for all three test levels.

The broker and database are chosen as DESIGN.md says, once per session:
`HAVIP_TEST_KAFKA` / `HAVIP_TEST_DATABASE_URL` when set, else testcontainers
when a Docker engine answers, else the embedded pair (Tansu + PostgreSQL
wheels). Each test then gets its own database and its own topic prefix, so
tests never see each other's messages or rows.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from services.dev.embedded import EmbeddedBroker, EmbeddedPostgres, free_port
from services.dev.processes import ServiceProcess
from services.runtime.db import connect_pool, migrate
from services.runtime.kafka import ensure_topics
from services.runtime.settings import Settings


@dataclass(frozen=True)
class Infra:
    kafka_bootstrap: str
    admin_dsn: str  # a database we may CREATE DATABASE from
    kind: str


def _docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="havip-tests-"))


@pytest.fixture(scope="session")
def infra(workdir: Path) -> Iterator[Infra]:
    with contextlib.ExitStack() as stack:
        kafka = os.environ.get("HAVIP_TEST_KAFKA")
        dsn = os.environ.get("HAVIP_TEST_DATABASE_URL")
        kind = "environment"
        if (kafka is None or dsn is None) and _docker_answers():
            kind = "testcontainers"
            if kafka is None:
                from testcontainers.kafka import KafkaContainer

                # Stream workers' sessions are shorter than Kafka's default minimum of 6 s.
                container = KafkaContainer().with_kraft().with_env("KAFKA_GROUP_MIN_SESSION_TIMEOUT_MS", "500")
                kafka = stack.enter_context(container).get_bootstrap_server()
            if dsn is None:
                try:  # newer testcontainers releases move community modules
                    from testcontainers.community.postgres import PostgresContainer
                except ImportError:
                    from testcontainers.postgres import PostgresContainer

                dsn = stack.enter_context(PostgresContainer("postgres:16")).get_connection_url(driver=None)
        if kafka is None or dsn is None:
            kind = "embedded"
            if kafka is None:
                kafka = stack.enter_context(EmbeddedBroker(workdir)).bootstrap
            if dsn is None:
                dsn = stack.enter_context(EmbeddedPostgres(workdir)).dsn()
        yield Infra(kafka_bootstrap=kafka, admin_dsn=dsn, kind=kind)


def _database_dsn(admin_dsn: str, database: str) -> str:
    base, _, _ = admin_dsn.rpartition("/")
    return f"{base}/{database}"


async def fresh_settings(infra: Infra) -> Settings:
    """A fresh, migrated database and a fresh set of topics, on free ports."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(infra.admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    result = Settings(
        kafka_bootstrap=infra.kafka_bootstrap,
        database_url=_database_dsn(infra.admin_dsn, name),
        topic_prefix=f"{name}.",
        gateway_port=free_port(),
        forwarder_port=free_port(),
        quota_port=free_port(),
        mapping_port=free_port(),
    )
    pool = await connect_pool(result.database_url, max_size=1)
    async with pool.acquire() as conn:
        await migrate(conn)
    await pool.close()
    await ensure_topics(result)
    return result


@pytest.fixture
async def settings(infra: Infra) -> AsyncIterator[Settings]:
    """A fresh, migrated database and a fresh set of topics for one test."""
    yield await fresh_settings(infra)


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    pool = await connect_pool(settings.database_url, max_size=20)
    yield pool
    await pool.close()


@pytest.fixture
def start_service(settings: Settings, workdir: Path) -> Iterator[Callable[..., ServiceProcess]]:
    """Start `havip serve NAME` as a real process; everything started is stopped after the test."""
    started: list[ServiceProcess] = []
    logs = Path(tempfile.mkdtemp(prefix="logs-", dir=workdir))

    def start(name: str, *, wait: bool = True, **overrides: object) -> ServiceProcess:
        service_settings = settings.model_copy(update=overrides) if overrides else settings
        process = ServiceProcess(name, service_settings, logs)
        if name in ("quota", "mapping") and any(s.service == name for s in started):
            # A second worker of the same group needs its own health port.
            process.port = free_port()
            process.settings = service_settings.model_copy(update={f"{name}_port": process.port})
        started.append(process.start())
        if wait:
            process.wait_ready()
        return process

    yield start
    for process in reversed(started):
        process.stop()
