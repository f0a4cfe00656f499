"""The mapping worker: applies accepted commands, VRRP reports and inventory changes."""

from __future__ import annotations

from datetime import timedelta

import faust

from schemas import topics
from services.mapping.handlers import MappingHandlers
from services.runtime.kafka import topic_name
from services.runtime.logs import setup_logging
from services.runtime.settings import Settings
from services.runtime.stream import handle_stream, new_worker, raw_topic, run_worker


def build_app(settings: Settings) -> faust.App:
    app, resources = new_worker(settings, "mapping", settings.mapping_port)
    handlers: MappingHandlers | None = None

    def current() -> MappingHandlers:
        nonlocal handlers
        if handlers is None:
            handlers = MappingHandlers(
                resources.pool, resources.publish, timedelta(seconds=settings.split_brain_window_seconds)
            )
        return handlers

    # Commands and reports for one HAVIP share its key; one agent reads both
    # topics so they reach the database in the order this worker sees them.
    @app.agent(raw_topic(app, settings, topics.ACCEPTED, topics.VRRP))
    async def havip_changes(stream: faust.StreamT) -> None:
        await handle_stream(
            resources,
            stream,
            {
                topic_name(settings, topics.ACCEPTED): (topics.ACCEPTED, lambda cmd: current().on_accepted(cmd)),
                topic_name(settings, topics.VRRP): (topics.VRRP, lambda report: current().on_report(report)),
            },
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

    return app


def run(settings: Settings) -> None:
    setup_logging("mapping", settings.log_level)
    run_worker(build_app(settings), settings)
