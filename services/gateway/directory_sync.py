"""Keeps the agent directory current: LISTEN for what changed, re-read only that.

One connection of its own (not the pool's: a LISTEN belongs to one session)
listens on `havip_agent_directory`, where the triggers of migration 0004 name
each token, instance or HAVIP that changed. LISTEN comes before the full load,
so whatever commits after the load's snapshot is notified and re-read.

When the connection is idle, it is asked `SELECT 1` every second with a
one-second timeout: PostgreSQL delivers a session's notifications before it
answers that session, so an answer proves every change committed before the
question is in hand. That is also what marks the copy current (see
`services.gateway.directory` for the staleness this gives). A connection that
fails or stops answering is dropped; a new one reloads everything, since
notifications sent while nobody listened are lost. A full reload every five
minutes as well guards against anything that ever changes the tables around
the triggers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

import asyncpg

from services.gateway import tokens
from services.gateway.directory import AgentDirectory
from services.readmodel import reporters
from services.runtime.db import CONNECT_TIMEOUT_SECONDS
from services.runtime.tasks import cancel_and_wait

log = logging.getLogger(__name__)

CHANNEL = "havip_agent_directory"
# How the listening session shows in pg_stat_activity.
APPLICATION_NAME = "havip-gateway-agent-directory"
PROBE_EVERY = 1.0
PROBE_TIMEOUT = 1.0
# Re-reading a few keys by their index takes milliseconds; a connection slower than this is lost.
REREAD_TIMEOUT = 2.0
RELOAD_TIMEOUT = 30.0
RELOAD_EVERY = 300.0
RECONNECT_EVERY = 1.0
# A re-read names this many keys at most, so a burst of changes is not one huge statement.
_KEYS_PER_READ = 500


@dataclass
class _Named:
    """Keys to re-read, by kind: the payloads of migration 0004's notifications."""

    token: set[str] = field(default_factory=set)
    instance: set[str] = field(default_factory=set)
    havip: set[str] = field(default_factory=set)
    left_behind: bool = False  # more were named than one read takes


class DirectorySync:
    def __init__(
        self,
        dsn: str,
        directory: AgentDirectory,
        *,
        probe_every: float = PROBE_EVERY,
        probe_timeout: float = PROBE_TIMEOUT,
        reload_every: float = RELOAD_EVERY,
    ) -> None:
        self._dsn = dsn
        self.directory = directory
        self._probe_every = probe_every
        self._probe_timeout = probe_timeout
        self._reload_every = reload_every
        self._conn: asyncpg.Connection | None = None
        self._changed: dict[str, set[str]] = {"token": set(), "instance": set(), "havip": set()}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._loaded_at = 0.0
        self._last_error = ""

    async def start(self) -> None:
        """Load the directory (the gateway does not serve without it), then follow changes."""
        await asyncio.wait_for(self._connect_and_load(), timeout=RELOAD_TIMEOUT)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="agent-directory")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        await self._close()

    def problem(self) -> str | None:
        """For /readyz (a note): why agent reports are decided from an older copy, if they are."""
        if self.directory.following:
            return None
        age = f"{self.directory.age or 0:.0f} s"
        if not self.directory.trusted:
            return f"agent directory {age} old, too old to decide: agent reports answer 503 ({self._last_error})"[:200]
        return f"agent reports decided from a copy {age} old ({self._last_error})"[:200]

    # --- the loop --------------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            try:
                if self._conn is None:
                    await asyncio.wait_for(self._connect_and_load(), timeout=RELOAD_TIMEOUT)
                    log.info("agent directory following again %s", self.directory.size())
                await self._follow()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure: drop the connection, start over from a full load
                if self.directory.following or not self._last_error:
                    # Once per outage: the retries every second would flood the log.
                    log.warning("agent directory lost its database connection error=%r", exc)
                self._last_error = repr(exc)[:120]
                self.directory.lose()
                await self._close()
                await asyncio.sleep(RECONNECT_EVERY)

    async def _connect_and_load(self) -> None:
        conn = await asyncpg.connect(
            self._dsn, timeout=CONNECT_TIMEOUT_SECONDS, server_settings={"application_name": APPLICATION_NAME}
        )
        try:
            conn.add_termination_listener(lambda _conn: self._wake.set())
            await conn.add_listener(CHANNEL, self._on_notification)
            for keys in self._changed.values():
                keys.clear()  # the full load below covers them
            await self._reload(conn)
        except BaseException:
            conn.terminate()
            raise
        self._conn = conn

    async def _reload(self, conn: asyncpg.Connection) -> None:
        as_of = self.directory.now()
        # One snapshot, so the three reads agree with each other.
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            principals = await tokens.agent_principals(conn)
            tenant_of = await reporters.havip_tenants(conn)
            attached = await reporters.attached_havips(conn)
        self.directory.replace(dict(principals.values()), tenant_of, attached)
        self.directory.confirm(as_of)
        self._loaded_at = as_of

    async def _follow(self) -> None:
        conn = self._conn
        assert conn is not None
        previous: float | None = None
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._probe_every)
            self._wake.clear()
            if conn.is_closed():
                raise ConnectionError("the listening connection closed")
            as_of = self.directory.now()
            if as_of - self._loaded_at >= self._reload_every:
                await asyncio.wait_for(self._reload(conn), timeout=RELOAD_TIMEOUT)
                previous = None
                continue
            named = self._take_changed()
            if named is None:
                await asyncio.wait_for(conn.fetchval("SELECT 1"), timeout=self._probe_timeout)
            else:
                await asyncio.wait_for(self._reread(conn, named), timeout=REREAD_TIMEOUT)
            if named is not None and named.left_behind:
                previous = None  # more than one read's worth: nothing is current until it is all read
                self._wake.set()
                continue
            # Every change committed before a round trip began was notified before it ended: it
            # was re-read in this round, or (arriving during it) waits for the next one.
            if not any(self._changed.values()):
                self.directory.confirm(as_of)
            elif previous is not None:
                self.directory.confirm(previous)
            previous = as_of

    def _take_changed(self) -> _Named | None:
        """What the notifications named since the last round (at most one read's worth), or None."""
        if not any(self._changed.values()):
            return None
        taken = {kind: set(list(keys)[:_KEYS_PER_READ]) for kind, keys in self._changed.items()}
        for kind, keys in taken.items():
            self._changed[kind] -= keys
        return _Named(**taken, left_behind=any(self._changed.values()))

    async def _reread(self, conn: asyncpg.Connection, named: _Named) -> None:
        # HAVIPs before attachments: a HAVIP is created before anything is attached to it.
        if named.token:
            found = await tokens.agent_principals(conn, sorted(named.token))
            self.directory.update_tokens(named.token, found)
        if named.havip:
            tenants = await reporters.havip_tenants(conn, sorted(named.havip))
            self.directory.update_havips(named.havip, tenants)
        if named.instance:
            attached = await reporters.attached_havips(conn, sorted(named.instance))
            self.directory.update_attachments(named.instance, attached)

    def _on_notification(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        kind, _, key = payload.partition(":")
        if key and kind in self._changed:
            self._changed[kind].add(key)
            self._wake.set()

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            # terminate(): a connection that stopped answering would make close() wait.
            conn.terminate()
