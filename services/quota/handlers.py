"""Quota's answer to each message: a command is decided and published, a mapping result settles."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from schemas import topics
from schemas.errors import InventoryMiss
from schemas.messages import CommandRejected, CommandSucceeded
from services.quota.decisions import Command
from services.quota.ledger import QuotaLedger
from services.quota.releases import mapping_outcome

Publish = Callable[[topics.Topic, str, bytes], Awaitable[None]]


class Quota:
    def __init__(
        self, ledger: QuotaLedger, publish: Publish, inventory_caught_up: Callable[[], Awaitable[object]]
    ) -> None:
        self._ledger = ledger
        self._publish = publish
        self._inventory_caught_up = inventory_caught_up

    async def on_command(self, command: Command) -> None:
        try:
            decision = await self._ledger.decide(command, inventory_settled=False)
        except InventoryMiss:
            # Commands and inventory are separate topics: a resource created a
            # moment ago may still be on its way. Only a settled "no" is final.
            await self._inventory_caught_up()
            decision = await self._ledger.decide(command, inventory_settled=True)
        if isinstance(decision, CommandRejected):
            await self._publish(topics.RESULTS, decision.command_id, topics.encode(decision))
        else:
            await self._publish(topics.ACCEPTED, decision.havip_id, topics.encode(decision))

    async def on_result(self, result: CommandSucceeded | CommandRejected) -> None:
        applied = mapping_outcome(result)
        if applied is not None:
            await self._ledger.settle(result.command_id, applied=applied)
