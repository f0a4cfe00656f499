"""The agent directory follows PostgreSQL: bursts, lost connections, and what happened while it was away.

Bounds are generous (10 s) so a loaded CI machine does not fail them; the directory
follows within milliseconds when it is connected.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import asyncpg
import pytest

from services.gateway.directory import AgentDirectory
from services.gateway.directory_sync import APPLICATION_NAME, DirectorySync
from services.gateway.tokens import Principal, hash_token, revoke_token, store_token
from services.readmodel.reporters import ReporterStanding
from services.runtime.settings import Settings
from tests.integration.test_gateway import attach_in_db, seed_havip

pytestmark = pytest.mark.integration

BOUND_SECONDS = 10.0


async def within_bound(check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + BOUND_SECONDS
    while not check():
        assert time.monotonic() < deadline, "not within the bound"
        await asyncio.sleep(0.01)


@pytest.fixture
async def directory(settings: Settings) -> AsyncIterator[AgentDirectory]:
    directory = AgentDirectory()
    sync = DirectorySync(settings.database_url, directory)
    await sync.start()
    yield directory
    await sync.stop()


async def test_a_burst_larger_than_one_read_is_all_followed(directory: AgentDirectory, db: asyncpg.Pool) -> None:
    async with db.acquire() as conn, conn.transaction():
        for n in range(1200):
            await store_token(conn, f"tok-burst-{n}", Principal("agent", "tenant-a", f"i-{n}"))
    await within_bound(lambda: all(directory.principal(hash_token(f"tok-burst-{n}")) for n in range(1200)))
    assert directory.size()["agent_tokens"] == 1200
    await within_bound(lambda: directory.following)


async def test_changes_made_while_its_connection_was_gone_are_there_once_it_is_back(
    directory: AgentDirectory, db: asyncpg.Pool
) -> None:
    kept = await store_token(db, "tok-kept", Principal("agent", "tenant-a", "i-1"))
    await seed_havip(db, "havip-1", tenant_id="tenant-a")
    await within_bound(lambda: directory.principal(hash_token("tok-kept")) is not None)

    # Kill the listening session and change things before it can listen again: those
    # notifications are lost, so only the reload on reconnection can bring the changes.
    # waits until it is gone; the directory reconnects only a second later
    assert await db.fetchval(
        "SELECT bool_and(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity WHERE application_name = $1",
        APPLICATION_NAME,
    )
    await revoke_token(db, kept)
    await store_token(db, "tok-new", Principal("agent", "tenant-a", "i-1"))
    await attach_in_db(db, "havip-1", "i-1")
    await within_bound(lambda: directory.principal(hash_token("tok-new")) is not None)
    assert directory.principal(hash_token("tok-kept")) is None
    assert directory.standing("tenant-a", "i-1", ["havip-1"]) == {"havip-1": ReporterStanding.ATTACHED}
