"""Follows `havip.command-results` and settles the gateway's operations.

The consume kernel parses (dead-lettering what does not parse) and hands each run of results
to `settle`, which records them in one transaction; the group driver commits the offsets only
after that, so a crash re-reads results, and replays change nothing (only Pending rows move).
A database failure rewinds to the start of the failed batch: a result is never skipped, or its
operation would stay Pending forever.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import asyncpg

from schemas import topics
from schemas.errors import Unappliable
from schemas.messages import CommandResult
from services.gateway import operations
from services.gateway.observability import COMMAND_RESULTS
from services.runtime.consume import Kernel, Registry
from services.runtime.deadletters import DeadLetters
from services.runtime.group import GroupConsumer, Lane
from services.runtime.kafka import topic_name
from services.runtime.settings import Settings

log = logging.getLogger(__name__)

SERVICE = "gateway"
# On the embedded broker a group join takes about half the rebalance timeout;
# the default (60 s) would keep a fresh gateway unready for half a minute.
_REBALANCE_TIMEOUT_SECONDS = 6.0


class CommandResults:
    def __init__(self, settings: Settings, pool: asyncpg.Pool, dead_letters: DeadLetters) -> None:
        self._pool = pool
        name = topic_name(settings, topics.RESULTS)
        registry = Registry()
        registry.read(name, topics.RESULTS)
        registry.on_batch(CommandResult, self.settle)
        kernel = Kernel(SERVICE, registry, lambda: dead_letters)
        self._group = GroupConsumer(
            settings,
            f"{settings.topic_prefix}havip-gateway",
            [Lane("command-results", [name], kernel)],
            # Operations settle as results arrive; a gateway behind on them still serves everything else.
            wait_caught_up=False,
            rebalance_timeout_seconds=_REBALANCE_TIMEOUT_SECONDS,
            fetch_max_wait_ms=settings.kafka_operations_fetch_max_wait_ms,
        )

    def start(self) -> None:
        """Join the group in the background: a restarted gateway's join waits out its old member's
        session (seconds), and nothing else (VRRP reports, reads) should wait with it."""
        self._group.start()

    async def stop(self) -> None:
        await self._group.stop()

    def not_ready(self) -> str | None:
        return self._group.not_ready()

    async def read_again(self) -> None:
        """The broker lost the topic: its offsets start again, so read what it holds from the start.

        What was applied but not committed belongs to the old log; committed into the new one
        it could make a later member skip results.
        """
        await self._group.read_again()
        log.warning("command results: reading them again from the start")

    async def settle(self, results: Sequence[CommandResult]) -> list[tuple[int, Unappliable]]:
        outcomes = []
        async with self._pool.acquire() as conn, conn.transaction():
            for result in results:
                changed = await operations.record_outcome(conn, result)
                outcomes.append(result.type if changed else "unchanged")
        for outcome in outcomes:
            COMMAND_RESULTS.labels(outcome).inc()
        return []
