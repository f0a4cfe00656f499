"""Whether a stream worker holds its partitions and has caught up with them: its readiness.

Not ready before its first assignment, nor while its group rebalances (faust sets
`app.rebalancing` when aiokafka revokes and clears it once the new assignment runs).
After each rebalance the worker notes where each assigned partition's log ends; it
is caught up once the group's committed offset reached that end. faust commits only
what the handlers finished, after their database commit, so "committed" means applied.
A backlog that builds later does not make it unready: a worker that is behind but
working is still the one to keep.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition

from services.runtime.kafka import new_consumer
from services.runtime.settings import Settings

log = logging.getLogger(__name__)

POLL_SECONDS = 0.2


class PartitionHolding:
    def __init__(self, app: faust.App, settings: Settings) -> None:
        self._app = app
        self._settings = settings
        self._generation: int | None = None  # the assignment whose ends we noted
        self._behind: dict[TopicPartition, int] = {}  # partition -> the end it must reach
        self._follow: asyncio.Task[None] | None = None
        # Never subscribes, so never joins the group: it only reads the group's offsets.
        self._probe: AIOKafkaConsumer | None = None

    def problem(self) -> str | None:
        """None when ready, else why not."""
        if self._app.rebalancing:
            return "rebalancing"
        if self._generation is None:
            return "waiting for partition assignment"
        if self._generation != self._app.consumer_generation_id:
            return "rebalancing"  # done, but where the new partitions end is not known yet
        if self._behind:
            return f"catching up: {len(self._behind)} partitions behind where their logs ended when assigned"
        return None

    def on_rebalance_complete(self) -> None:
        if self._follow is not None:
            self._follow.cancel()
        self._follow = asyncio.get_running_loop().create_task(self._catch_up(self._app.consumer_generation_id))

    async def _catch_up(self, generation: int) -> None:
        assigned = [TopicPartition(tp.topic, tp.partition) for tp in self._app.consumer.assignment()]
        while True:
            try:
                probe = await self._opened_probe()
                ends = await probe.end_offsets(assigned) if assigned else {}
                starts = await probe.beginning_offsets(assigned) if assigned else {}
                break
            except Exception as exc:  # broker away, or anything else: readiness must not stop following
                log.warning("cannot read where our partitions end, retrying: %r", exc)
                await asyncio.sleep(1.0)
        # An empty partition needs nothing; one never committed is read from its beginning.
        behind = {tp: end for tp, end in ends.items() if end > starts[tp]}
        if self._app.consumer_generation_id != generation:
            return  # another rebalance began: its completion takes stock again
        self._behind, self._generation = behind, generation
        while self._behind:
            for tp, end in list(self._behind.items()):
                try:
                    committed = await probe.committed(tp)
                except Exception as exc:
                    log.warning("cannot read the group's offsets, retrying: %r", exc)
                    break
                if committed is not None and committed >= end:
                    del self._behind[tp]
            await asyncio.sleep(POLL_SECONDS)

    async def _opened_probe(self) -> AIOKafkaConsumer:
        if self._probe is None:
            probe = new_consumer(self._settings, self._app.conf.id)
            try:
                await probe.start()
            except BaseException:
                await probe.stop()
                raise
            self._probe = probe
        return self._probe

    async def stop(self) -> None:
        if self._follow is not None:
            self._follow.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follow
        if self._probe is not None:
            await self._probe.stop()
