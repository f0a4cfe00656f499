"""The quota worker: every command is decided here, accepted or rejected, once."""

from __future__ import annotations

from schemas import messages, topics
from schemas.errors import InventoryMiss
from schemas.messages import CommandRejected, CommandResult
from services.quota.ledger import Command, QuotaLedger
from services.quota.rules import Limits
from services.runtime.consume import Kernel, Registry
from services.runtime.group import Lane
from services.runtime.inventory import InventoryChange, record_inventory
from services.runtime.kafka import ConsumerGroupProgress, topic_name
from services.runtime.logs import setup_logging
from services.runtime.settings import Settings
from services.runtime.worker import Worker, WorkerResources, run_worker


def build(resources: WorkerResources) -> Worker:
    settings = resources.settings
    limits = Limits(
        attachments_per_havip=settings.max_attachments_per_havip,
        havips_per_instance=settings.max_havips_per_instance,
        eips_per_havip=settings.max_eips_per_havip,
        havips=settings.max_havips_per_tenant,
    )

    commands, results, inventory = (
        topic_name(settings, topic) for topic in (topics.COMMANDS, topics.RESULTS, topics.INVENTORY)
    )
    inventory_progress = ConsumerGroupProgress(settings, resources.group_id, inventory)

    async def on_command(command: Command) -> None:
        ledger = QuotaLedger(resources.pool, limits)
        try:
            decision = await ledger.decide(command, inventory_settled=False)
        except InventoryMiss:
            # Commands and inventory are separate topics: a resource created a
            # moment ago may still be on its way. Only a settled "no" is final.
            await inventory_progress.wait_caught_up(timeout=30.0)
            decision = await ledger.decide(command, inventory_settled=True)
        if isinstance(decision, CommandRejected):
            await resources.publish(topics.RESULTS, decision.command_id, topics.encode(decision))
        else:
            await resources.publish(topics.ACCEPTED, decision.havip_id, topics.encode(decision))

    async def on_result(result: CommandResult) -> None:
        # Only the mapping service's outcomes settle a reservation; quota's own
        # rejections reserved nothing, and a mismatch notice settles nothing.
        if result.stage != "mapping" or (isinstance(result, CommandRejected) and not result.settles_command):
            return
        await QuotaLedger(resources.pool, limits).settle(
            result.command_id, applied=not isinstance(result, CommandRejected)
        )

    async def on_inventory(change: InventoryChange) -> None:
        async with resources.pool.acquire() as conn:
            await record_inventory(conn, change, "quota")

    registry = Registry()
    registry.read(commands, topics.COMMANDS)
    registry.read(results, topics.RESULTS)
    registry.read(inventory, topics.INVENTORY)
    registry.on(messages.HaVipCommand, on_command)
    registry.on(messages.CommandResult, on_result)
    registry.on(messages.InventoryRecord, on_inventory)
    kernel = Kernel("quota", registry, lambda: resources.dead_letters)
    # Each topic its own lane: a command that waits for the inventory to catch up must not hold
    # up the inventory lane that lets it.
    return Worker(
        lanes=[
            Lane("commands", [commands], kernel, max_records=50),
            Lane("results", [results], kernel),
            Lane("inventory", [inventory], kernel),
        ],
        # Off the failover path: polled less often, sparing the broker (Settings says how much).
        fetch_max_wait_ms=settings.kafka_operations_fetch_max_wait_ms,
    )


def run(settings: Settings) -> None:
    setup_logging("quota", settings.log_level)
    run_worker(settings, "quota", settings.quota_port, build)
