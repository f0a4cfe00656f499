"""The quota worker: every command is decided here, accepted or rejected, once."""

from __future__ import annotations

import faust

from schemas import topics
from schemas.errors import InventoryMiss
from schemas.messages import CommandRejected, CommandResult
from services.quota.ledger import Command, QuotaLedger
from services.quota.rules import Limits
from services.runtime.inventory import InventoryChange, record_inventory
from services.runtime.kafka import ConsumerGroupProgress, topic_name
from services.runtime.logs import setup_logging
from services.runtime.records import handle_stream
from services.runtime.settings import Settings
from services.runtime.stream import new_worker, raw_topic, run_worker


def build_app(settings: Settings) -> faust.App:
    app, resources = new_worker(settings, "quota", settings.quota_port)
    limits = Limits(
        attachments_per_havip=settings.max_attachments_per_havip,
        havips_per_instance=settings.max_havips_per_instance,
        eips_per_havip=settings.max_eips_per_havip,
        havips=settings.max_havips_per_tenant,
    )

    inventory_progress = ConsumerGroupProgress(settings, app.conf.id, topic_name(settings, topics.INVENTORY))

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

    @app.agent(raw_topic(app, settings, topics.COMMANDS))
    async def commands(stream: faust.StreamT) -> None:
        await handle_stream(resources, stream, {topic_name(settings, topics.COMMANDS): (topics.COMMANDS, on_command)})

    @app.agent(raw_topic(app, settings, topics.RESULTS))
    async def results(stream: faust.StreamT) -> None:
        await handle_stream(resources, stream, {topic_name(settings, topics.RESULTS): (topics.RESULTS, on_result)})

    @app.agent(raw_topic(app, settings, topics.INVENTORY))
    async def inventory(stream: faust.StreamT) -> None:
        await handle_stream(
            resources, stream, {topic_name(settings, topics.INVENTORY): (topics.INVENTORY, on_inventory)}
        )

    return app


def run(settings: Settings) -> None:
    setup_logging("quota", settings.log_level)
    run_worker(build_app(settings), settings)
