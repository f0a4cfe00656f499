"""The mapping worker: applies accepted commands, VRRP reports and inventory changes."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import asyncpg

from schemas import messages, topics
from schemas.errors import Unappliable
from schemas.messages import ObservedClaimsRenewed, VrrpReported
from services.mapping import handlers
from services.mapping.postgres_store import PostgresMappingStore, restamp_versions
from services.mapping.publishing import MappingContext
from services.mapping.report_batch import IncomingReport, Refusal
from services.mapping.sweep import Sweep
from services.runtime.broker_watch import LogCheck
from services.runtime.consume import Delivery, Kernel, Registry
from services.runtime.group import Lane
from services.runtime.kafka import topic_name
from services.runtime.logs import setup_logging
from services.runtime.settings import Settings
from services.runtime.worker import Timer, Worker, WorkerResources, run_worker

log = logging.getLogger(__name__)

# Where a refused lease renewal says it came from: the table gateways leave them in, not a topic.
RENEWAL_LANE = "claim_renewals"


def build(resources: WorkerResources) -> Worker:
    settings = resources.settings
    registry = Registry()
    kernel = Kernel("mapping", registry, lambda: resources.dead_letters)

    async def refuse_renewal(item: IncomingReport, refusal: Refusal) -> None:
        # A renewal is never on Kafka: it is dead-lettered as the report it stands for.
        report = item.report
        assert report.expires_at is not None
        value = VrrpReported(
            message_id=item.message_id,
            havip_id=item.havip_id,
            tenant_id=item.tenant_id,
            instance_id=report.instance_id,
            state=report.state,
            priority=report.priority,
            seq=report.seq,
            reported_at=report.reported_at,
            received_at=report.received_at,
            lease_seconds=(report.expires_at - report.received_at).total_seconds(),
        )
        delivery = Delivery(RENEWAL_LANE, -1, -1, item.havip_id.encode(), topics.encode(value))
        await kernel.dead_letter(delivery, refusal.code, refusal.message)

    context = MappingContext(PostgresMappingStore(resources.pool), resources.publish_many, refuse_renewal)

    async def republish_everything(_: LogCheck) -> None:
        # havip.mappings must hold every HAVIP's state (forwarders and data-plane agents start from it).
        count = await context.store.forget_published()
        log.warning("the broker lost its topics: %d HAVIP states will be published again", count)

    resources.on_broker_lost(republish_everything)

    async def restamp(conn: asyncpg.Connection) -> None:
        count = await restamp_versions(conn)
        log.warning("a new run of the database: %d HAVIPs get newer versions and will be published again", count)

    resources.on_new_database(restamp)

    async def apply_command(command: messages.AcceptedCommand) -> None:
        await handlers.on_accepted(context, command)

    async def apply_reports(reports: Sequence[VrrpReported]) -> list[tuple[int, Unappliable]]:
        return _unappliable(await handlers.on_reports(context, reports))

    async def apply_observed_renewals(records: Sequence[ObservedClaimsRenewed]) -> list[tuple[int, Unappliable]]:
        return _unappliable(await handlers.on_observed_renewals(context, records))

    async def apply_inventory(change: messages.InventoryRecord) -> None:
        await handlers.on_inventory(context, change)

    accepted, vrrp, inventory = (topic_name(settings, t) for t in (topics.ACCEPTED, topics.VRRP, topics.INVENTORY))
    registry.read(accepted, topics.ACCEPTED)
    registry.read(vrrp, topics.VRRP)
    registry.read(inventory, topics.INVENTORY)
    registry.on(messages.AcceptedCommand, apply_command)
    registry.on_batch(VrrpReported, apply_reports)
    registry.on_batch(ObservedClaimsRenewed, apply_observed_renewals)
    registry.on(messages.InventoryRecord, apply_inventory)
    return Worker(
        lanes=[
            # Commands and reports for one HAVIP share its key; one lane applies both topics so
            # they reach the database in the order this worker read them. Reports are applied in
            # batches of what arrived meanwhile (a bounded number of statements each).
            Lane("havip-changes", [accepted, vrrp], kernel, max_records=settings.report_batch_max),
            Lane("inventory", [inventory], kernel),
        ],
        # Renewals are in PostgreSQL, and a lapsed lease has no message of its own: every worker
        # looks on a timer (under the HAVIPs' row locks, so two workers never change one twice).
        timers=[Timer("lease sweep", settings.lease_sweep_interval_seconds, Sweep(context))],
    )


def _unappliable(refusals: Sequence[Refusal]) -> list[tuple[int, Unappliable]]:
    return [(r.index, Unappliable(r.code, r.message)) for r in refusals]


def run(settings: Settings) -> None:
    setup_logging("mapping", settings.log_level)
    run_worker(settings, "mapping", settings.mapping_port, build)
