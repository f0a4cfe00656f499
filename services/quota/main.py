"""The quota worker: every command is decided here, accepted or rejected, once."""

from __future__ import annotations

from schemas import messages, topics
from services.quota.handlers import Quota
from services.quota.ledger import QuotaLedger
from services.quota.postgres_store import PostgresLedgerStore
from services.quota.tenant_limits import default_limits
from services.runtime.consume import Kernel, Registry
from services.runtime.group import Lane
from services.runtime.inventory import InventoryChange, record_inventory
from services.runtime.kafka import ConsumerGroupProgress, topic_name
from services.runtime.logs import setup_logging
from services.runtime.settings import Settings
from services.runtime.worker import Worker, WorkerResources, run_worker


def build(resources: WorkerResources) -> Worker:
    settings = resources.settings
    commands, results, inventory = (
        topic_name(settings, topic) for topic in (topics.COMMANDS, topics.RESULTS, topics.INVENTORY)
    )
    inventory_progress = ConsumerGroupProgress(settings, resources.group_id, inventory)

    quota = Quota(
        QuotaLedger(PostgresLedgerStore(resources.pool), default_limits(settings)),
        resources.publish,
        lambda: inventory_progress.wait_caught_up(timeout=30.0),
    )

    async def on_inventory(change: InventoryChange) -> None:
        async with resources.pool.acquire() as conn:
            await record_inventory(conn, change, "quota")

    registry = Registry()
    registry.read(commands, topics.COMMANDS)
    registry.read(results, topics.RESULTS)
    registry.read(inventory, topics.INVENTORY)
    registry.on(messages.HaVipCommand, quota.on_command)
    registry.on(messages.CommandResult, quota.on_result)
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
