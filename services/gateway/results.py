"""Follows `havip.command-results` and settles the gateway's operations.

The consume kernel parses (dead-lettering what does not parse) and hands each run of results
to `settle`, which records them in one transaction; the group driver commits the offsets only
after that, so a crash re-reads results, and replays change nothing (only Pending rows move).
A database failure rewinds to the start of the failed batch: a result is never skipped, or its
operation would stay Pending forever.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import asyncpg

from schemas import topics
from schemas.errors import Unappliable
from schemas.messages import CommandResult
from services.gateway import operations
from services.gateway.observability import COMMAND_RESULTS
from services.runtime.broker_watch import advance_group_epoch, group_epoch
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
        self._settings = settings
        self._pool = pool
        self._topic = topic_name(settings, topics.RESULTS)
        registry = Registry()
        registry.read(self._topic, topics.RESULTS)
        registry.on_batch(CommandResult, self.settle)
        self._kernel = Kernel(SERVICE, registry, lambda: dead_letters)
        self._base_group = f"{settings.topic_prefix}havip-gateway"
        self._epoch = 0
        self._group: GroupConsumer | None = None
        self._retiring: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Join the group in the background: a restarted gateway's join waits out its old member's
        session (seconds), and nothing else (VRRP reports, reads) should wait with it."""
        self._epoch = await group_epoch(self._pool, self._base_group)
        self._group = self._new_group()
        self._group.start()

    async def stop(self) -> None:
        if self._group is not None:
            await self._group.stop()
        for retiring in list(self._retiring):
            await retiring

    def not_ready(self) -> str | None:
        return self._group.not_ready() if self._group is not None else "not started"

    async def follow_anew(self) -> None:
        """The broker lost the topic: follow the new one in a new group, from its start.

        The old group's offsets belong to the lost log, and the member keeps committing them
        until it notices: committed into the new broker (Tansu takes a commit from a member
        that is rejoining), the group would start past the new log's end and, as Tansu
        answers such a fetch with nothing rather than with an out-of-range error, never
        read a result again. So, as the stream workers do, the gateways move to the next
        generation of their group (consumer_group_epochs) with a fresh consumer.
        """
        await advance_group_epoch(self._pool, self._base_group, self._epoch)
        old = self._group
        self._epoch = await group_epoch(self._pool, self._base_group)
        self._group = self._new_group()
        self._group.start()
        if old is not None:
            # In the background: leaving a group on a broker that lost it can take seconds, and
            # the gateway is unready until this recovery returns.
            retiring = asyncio.get_running_loop().create_task(old.stop(), name="results-old-group-stop")
            self._retiring.add(retiring)
            retiring.add_done_callback(self._retiring.discard)
        log.warning("command results: following the new topic from its start in group %s", self._group.group_id)

    def _new_group(self) -> GroupConsumer:
        return GroupConsumer(
            self._settings,
            f"{self._base_group}-g{self._epoch}" if self._epoch else self._base_group,
            [Lane("command-results", [self._topic], self._kernel)],
            # Operations settle as results arrive; a gateway behind on them still serves everything else.
            wait_caught_up=False,
            rebalance_timeout_seconds=_REBALANCE_TIMEOUT_SECONDS,
            fetch_max_wait_ms=self._settings.kafka_operations_fetch_max_wait_ms,
        )

    async def settle(self, results: Sequence[CommandResult]) -> list[tuple[int, Unappliable]]:
        outcomes = []
        async with self._pool.acquire() as conn, conn.transaction():
            for result in results:
                changed = await operations.record_outcome(conn, result)
                outcomes.append(result.type if changed else "unchanged")
        for outcome in outcomes:
            COMMAND_RESULTS.labels(outcome).inc()
        return []
