"""Fixtures for all three test levels.

The broker and database are chosen once per session, by HAVIP_TEST_BACKEND (tests/container_tools.py
says how `auto` decides), and the choice is printed before the first test runs. Each test then
gets its own database and its own topic prefix, so tests never see each other's messages or rows.
"""

from __future__ import annotations

import asyncio
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
from services.runtime.kafka import ensure_topics, wait_for_broker
from services.runtime.settings import Settings
from tests import container_tools
from tests.container_tools import Backend, BrokerKind, Choice, Unavailable

_CHOICE = pytest.StashKey[Choice]()


@dataclass(frozen=True)
class Infra:
    kafka_bootstrap: str
    admin_dsn: str  # a database we may CREATE DATABASE from
    backend: Backend
    broker: BrokerKind


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Chosen only when a collected test needs a broker and a database, before any test runs: an
    # engine to ping or an image to pull is not the business of a unit-test run.
    if not any("infra" in getattr(item, "fixturenames", ()) for item in items):
        return
    try:
        choice = container_tools.choose(os.environ)
    except Unavailable as why:
        pytest.exit(f"test backend: {why}", returncode=pytest.ExitCode.USAGE_ERROR)
    config.stash[_CHOICE] = choice
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(choice.describe())


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    if _CHOICE in config.stash:
        terminalreporter.write_line(config.stash[_CHOICE].describe())


@pytest.fixture(scope="session")
def workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="havip-tests-"))


@pytest.fixture(scope="session")
def infra(workdir: Path, pytestconfig: pytest.Config) -> Iterator[Infra]:
    choice = pytestconfig.stash.get(_CHOICE, None) or container_tools.choose(os.environ)
    with contextlib.ExitStack() as stack:
        if choice.backend is Backend.ENV:
            kafka, dsn = os.environ["HAVIP_TEST_KAFKA"], os.environ["HAVIP_TEST_DATABASE_URL"]
        elif choice.backend is Backend.CONTAINERS:
            kafka, dsn = _containers(stack, choice)
        else:
            kafka = stack.enter_context(EmbeddedBroker(workdir)).bootstrap
            dsn = stack.enter_context(EmbeddedPostgres(workdir)).dsn()
        yield Infra(kafka_bootstrap=kafka, admin_dsn=dsn, backend=choice.backend, broker=choice.broker)


def _containers(stack: contextlib.ExitStack, choice: Choice) -> tuple[str, str]:
    client = container_tools.engine(os.environ)
    stack.callback(client.close)
    container_tools.remove_leftovers(client)
    postgres = stack.enter_context(container_tools.postgres_container(choice.postgres_image))
    port = free_port()
    stack.enter_context(container_tools.broker_container(choice.kafka_image, choice.broker, host_port=port))
    kafka = f"127.0.0.1:{port}"
    # Published ports accept before the broker inside does: ready is when it answers metadata.
    asyncio.run(wait_for_broker(Settings(kafka_bootstrap=kafka)))
    return kafka, postgres.get_connection_url(driver=None)


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
