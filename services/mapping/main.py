"""The mapping worker: applies accepted commands, VRRP reports and inventory changes."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import asyncpg

from schemas import messages, topics
from schemas.errors import Unappliable
from schemas.messages import ObservedClaimsRenewed, VrrpReported
from services.mapping import store
from services.mapping.handlers import OwnerTracker
from services.mapping.report_batch import IncomingReport, Refusal
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

    tracker = OwnerTracker(resources.pool, resources.publish_many, refuse_renewal)

    async def republish_everything(_: LogCheck) -> None:
        # havip.mappings must hold every HAVIP's state (forwarders and data-plane agents start from it).
        count = await store.forget_published(resources.pool)
        log.warning("the broker lost its topics: %d HAVIP states will be published again", count)

    resources.on_broker_lost(republish_everything)

    async def restamp(conn: asyncpg.Connection) -> None:
        count = await store.restamp_versions(conn)
        log.warning("a new run of the database: %d HAVIPs get newer versions and will be published again", count)

    resources.on_new_database(restamp)

    async def apply_reports(reports: Sequence[VrrpReported]) -> list[tuple[int, Unappliable]]:
        refusals = await tracker.on_reports(reports)
        return [(r.index, Unappliable(r.code, r.message)) for r in refusals]

    async def apply_observed_renewals(records: Sequence[ObservedClaimsRenewed]) -> list[tuple[int, Unappliable]]:
        refusals = await tracker.on_observed_renewals(records)
        return [(r.index, Unappliable(r.code, r.message)) for r in refusals]

    accepted, vrrp, inventory = (topic_name(settings, t) for t in (topics.ACCEPTED, topics.VRRP, topics.INVENTORY))
    registry.read(accepted, topics.ACCEPTED)
    registry.read(vrrp, topics.VRRP)
    registry.read(inventory, topics.INVENTORY)
    registry.on(messages.AcceptedCommand, tracker.on_accepted)
    registry.on_batch(VrrpReported, apply_reports)
    registry.on_batch(ObservedClaimsRenewed, apply_observed_renewals)
    registry.on(messages.InventoryRecord, tracker.on_inventory)
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
        timers=[Timer("lease sweep", settings.lease_sweep_interval_seconds, tracker.sweep)],
    )


def run(settings: Settings) -> None:
    setup_logging("mapping", settings.log_level)
    run_worker(settings, "mapping", settings.mapping_port, build)
