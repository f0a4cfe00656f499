"""Postgres: the pool, and the one migration runner.

Migrations are the numbered SQL files in `schemas/migrations`, applied in
order under an advisory lock and recorded in `schema_migrations`. Services
call `require_current_schema` and refuse to start against an older schema.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources

import asyncpg

from schemas.errors import SchemaOutOfDate
from services.runtime.tasks import cancel_and_wait

log = logging.getLogger(__name__)

# Any fixed number; only `havip migrate` takes this lock.
_MIGRATION_LOCK = 0x4A71_0001


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    found = []
    for entry in resources.files("schemas").joinpath("migrations").iterdir():
        match = re.fullmatch(r"(\d+)_(.+)\.sql", entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text()))
    return sorted(found, key=lambda mig: mig.version)


# A connection attempt gives up after this long, so a request never waits on a database that
# does not answer for longer than a client would.
CONNECT_TIMEOUT_SECONDS = 5.0


async def connect_pool(
    dsn: str,
    *,
    min_size: int = 1,
    max_size: int = 10,
    timeout: float = 60.0,
    command_timeout: float | None = None,
) -> asyncpg.Pool:
    """A pool, retrying while the database is still starting.

    `command_timeout`: a statement that has not answered by then raises TimeoutError (transient:
    services/runtime/transient.py), so a database that hangs is an outage, not a request that never ends.
    """
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            return await asyncpg.create_pool(
                dsn,
                min_size=min_size,
                max_size=max_size,
                timeout=CONNECT_TIMEOUT_SECONDS,
                command_timeout=command_timeout,
            )
        except (OSError, asyncpg.CannotConnectNowError):
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.5)


async def migrate(conn: asyncpg.Connection) -> list[int]:
    """Apply what is missing; safe to run from several places at once."""
    applied_now: list[int] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {row["version"] for row in await conn.fetch("SELECT version FROM schema_migrations")}
        for mig in migrations():
            if mig.version in done:
                continue
            async with conn.transaction():
                await conn.execute(mig.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", mig.version, mig.name
                )
            log.info("applied migration version=%s name=%s", mig.version, mig.name)
            applied_now.append(mig.version)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)
    return applied_now


async def require_current_schema(pool: asyncpg.Pool) -> None:
    expected = migrations()[-1].version
    try:
        current = await pool.fetchval("SELECT max(version) FROM schema_migrations")
    except asyncpg.UndefinedTableError:
        current = None
    if current is None or current < expected:
        raise SchemaOutOfDate(
            f"database schema is at version {current}, this build needs {expected}: run `havip migrate`"
        )


# Which run of the PostgreSQL server answers: a restart, failover or restore is a new one.
INCARNATION_SQL = "pg_postmaster_start_time()::text"


async def database_incarnation(conn: asyncpg.Pool | asyncpg.Connection) -> str:
    """Which run of the PostgreSQL server answers (`INCARNATION_SQL`)."""
    return str(await conn.fetchval(f"SELECT {INCARNATION_SQL}"))


class DatabaseProbe:
    """Readiness checks are synchronous; this keeps the last answer of a periodic probe.

    Looked at every 0.5 s, and a probe unanswered after 1 s fails: a database killed makes the
    service unready within about 0.5 s, one frozen within 1.5 s, and one back ready again at
    the next probe. Each probe also reads which run of the server answered (`database_incarnation`): when it is
    not the one the service started against, `on_new_incarnation` is called once.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        every_seconds: float = 0.5,
        failures_allowed: int = 0,
        *,
        timeout_seconds: float = 1.0,
        incarnation: str | None = None,
        on_new_incarnation: Callable[[str], None] | None = None,
    ) -> None:
        self._pool = pool
        self._every = every_seconds
        self._allowed = failures_allowed
        self._timeout = timeout_seconds
        self._failures = 0
        self._last_error = ""
        self._incarnation = incarnation
        self._on_new_incarnation = on_new_incarnation
        self._task: asyncio.Task[None] | None = None

    @property
    def problem(self) -> str | None:
        return f"database unreachable: {self._last_error}"[:200] if self._failures > self._allowed else None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._probe(), name="database-probe")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _probe(self) -> None:
        asking: asyncio.Task[str] | None = None
        try:
            while True:
                # Waited for, never cancelled on a timeout: cancelling a query on a hung server
                # waits for that server (the pool resets the connection it hands back), which
                # once kept a service ready through a 15 s freeze. A probe still unanswered
                # is a failure each time it is looked at, and no second one is started.
                if asking is None:
                    asking = asyncio.get_running_loop().create_task(database_incarnation(self._pool))
                done, _ = await asyncio.wait({asking}, timeout=self._timeout)
                if not done:
                    self._failed(f"no answer within {self._timeout:g} s")
                else:
                    answered, asking = asking, None
                    if answered.exception() is not None:
                        self._failed(repr(answered.exception()))
                    else:
                        self._failures = 0
                        self._seen(answered.result())
                await asyncio.sleep(self._every)
        finally:
            if asking is not None:
                asking.cancel()  # not waited for: on a hung server that could be forever

    def _failed(self, error: str) -> None:
        self._failures += 1
        self._last_error = error

    def _seen(self, seen: str) -> None:
        if self._incarnation is None:
            self._incarnation = seen
        elif seen != self._incarnation and self._on_new_incarnation is not None:
            log.warning("the database restarted (it started at %s, before at %s)", seen, self._incarnation)
            self._incarnation = seen
            self._on_new_incarnation(seen)
