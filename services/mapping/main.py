"""The mapping worker: applies accepted commands, VRRP reports and inventory changes."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import faust

from schemas import topics
from schemas.errors import Unappliable
from schemas.messages import VrrpReported
from services.mapping import store
from services.mapping.handlers import OwnerTracker
from services.runtime.broker_watch import LogCheck
from services.runtime.kafka import topic_name
from services.runtime.logs import setup_logging
from services.runtime.records import handle_stream, handle_stream_in_batches
from services.runtime.settings import Settings
from services.runtime.stream import TRANSIENT, new_worker, raw_topic, run_worker

log = logging.getLogger(__name__)


def build_app(settings: Settings) -> faust.App:
    app, resources = new_worker(settings, "mapping", settings.mapping_port)
    tracker: OwnerTracker | None = None

    def current() -> OwnerTracker:
        nonlocal tracker
        if tracker is None:
            tracker = OwnerTracker(resources.pool, resources.publish_many)
        return tracker

    async def republish_everything(_: LogCheck) -> None:
        # havip.mappings must hold every HAVIP's state (forwarders and data-plane agents start from it).
        count = await store.forget_published(resources.pool)
        log.warning("the broker lost its topics: %d HAVIP states will be published again", count)

    resources.on_broker_lost(republish_everything)

    async def apply_reports(reports: Sequence[VrrpReported]) -> list[tuple[int, Unappliable]]:
        refusals = await current().on_reports(reports)
        return [(r.index, Unappliable(r.code, r.message)) for r in refusals]

    # Commands and reports for one HAVIP share its key; one agent reads both
    # topics so they reach the database in the order this worker sees them.
    # Reports are applied in batches of what arrived meanwhile (a bounded number of statements each).
    @app.agent(raw_topic(app, settings, topics.ACCEPTED, topics.VRRP))
    async def havip_changes(stream: faust.StreamT) -> None:
        await handle_stream_in_batches(
            resources,
            stream,
            {topic_name(settings, topics.ACCEPTED): (topics.ACCEPTED, lambda cmd: current().on_accepted(cmd))},
            (topic_name(settings, topics.VRRP), topics.VRRP, apply_reports),
            max_records=settings.report_batch_max,
        )

    @app.agent(raw_topic(app, settings, topics.INVENTORY))
    async def inventory(stream: faust.StreamT) -> None:
        await handle_stream(
            resources,
            stream,
            {
                topic_name(settings, topics.INVENTORY): (
                    topics.INVENTORY,
                    lambda change: current().on_inventory(change),
                ),
            },
        )

    # A lapsed lease has no message of its own: every worker looks on a timer (under
    # the HAVIP's row lock, so two workers sweeping the same HAVIP change it once).
    @app.timer(interval=settings.lease_sweep_interval_seconds)
    async def sweep() -> None:
        if not resources.ready.is_set():
            return
        try:
            await current().sweep()
        except TRANSIENT as exc:
            log.warning("lease sweep failed, retrying on the next tick: %r", exc)
        except Exception:  # a bug here must not stop the worker's consumers
            log.exception("lease sweep failed")

    return app


def run(settings: Settings) -> None:
    setup_logging("mapping", settings.log_level)
    run_worker(build_app(settings), settings)
