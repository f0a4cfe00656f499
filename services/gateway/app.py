"""The gateway's wiring: the FastAPI app and what its lifespan opens and closes."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI

from schemas import topics
from services.gateway import agent_tokens, vrrp_api
from services.gateway.api import router
from services.gateway.broker import BrokerLink
from services.gateway.commands import CommandSubmitter
from services.gateway.context import GatewayContext
from services.gateway.directory import AgentDirectory
from services.gateway.directory_sync import DirectorySync
from services.gateway.intake import ReportIntake
from services.gateway.outbox import Outbox
from services.gateway.renewals import RenewalLane
from services.gateway.results import CommandResults
from services.gateway.throttle import Throttle
from services.runtime.broker_watch import BrokerWatch, LogCheck
from services.runtime.db import DatabaseProbe, connect_pool, require_current_schema
from services.runtime.deadletters import DeadLetters
from services.runtime.health import Health, health_router
from services.runtime.http import DEFAULT_MAX_REQUEST_BODY_BYTES, NO_NATIVE_TELEMETRY, install_http_conventions
from services.runtime.kafka import new_producer, topic_name
from services.runtime.lean_http import FrontedApp
from services.runtime.settings import Settings

log = logging.getLogger(__name__)

SERVICE = "gateway"


def create_app(settings: Settings) -> FrontedApp:
    health = Health(SERVICE)
    # Request rates are counted per replica: N replicas allow up to N times a token's rate.
    throttle = Throttle()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            health.start()
            stack.push_async_callback(health.stop)

            pool = await connect_pool(settings.database_url, command_timeout=settings.database_timeout_seconds)
            stack.push_async_callback(pool.close)
            # Refuse to serve against an older schema: `havip migrate` runs first.
            await require_current_schema(pool)
            probe = DatabaseProbe(pool)
            probe.start()
            stack.push_async_callback(probe.stop)
            # Agent tokens and attachments in memory: VRRP reports go on while PostgreSQL is away.
            directory = AgentDirectory()
            directory_sync = DirectorySync(settings.database_url, directory)
            await directory_sync.start()
            stack.push_async_callback(directory_sync.stop)
            health.add_note("agent_directory", directory_sync.problem)

            producer = new_producer(settings)
            await producer.start()
            stack.push_async_callback(producer.stop)
            written = [topic_name(settings, topic) for topic in (topics.COMMANDS, topics.VRRP)]
            broker = BrokerLink(producer, publish_timeout=settings.publish_timeout_seconds, topics=written)
            commands = Outbox(pool, broker, topic_name(settings, topics.COMMANDS))
            commands.start()
            stack.push_async_callback(commands.stop)

            renewals = RenewalLane(pool, broker, topic_name(settings, topics.VRRP))
            stack.push_async_callback(renewals.stop)

            results = CommandResults(settings, pool, DeadLetters(producer, settings, SERVICE))
            await results.start()
            # Stopped before the producer and pool it uses (the stack unwinds in reverse).
            stack.push_async_callback(results.stop)

            async def recover(_: LogCheck) -> None:
                # Commands of Pending operations may have been lost with the topic; results are read again.
                await commands.unpublish_pending()
                await results.follow_anew()

            watch = BrokerWatch(settings, SERVICE, pool, recover)
            await watch.first_look()  # milliseconds; readiness is right from the first request
            watch.start()
            stack.push_async_callback(watch.stop)

            health.add_check("database", lambda: probe.problem)
            health.add_check("broker", lambda: watch.problem)
            # What the watch has not seen yet, a publish that timed out has: we are answering 503.
            health.add_check(
                "broker_link", lambda: None if broker.reachable else "broker unreachable: publishes are answered 503"
            )
            # Reported, but not a reason to turn traffic away: VRRP reports and reads do not need it.
            health.add_note("command_results", results.not_ready)
            app.state.gateway = GatewayContext(
                settings=settings,
                pool=pool,
                producer=producer,
                commands=CommandSubmitter(pool, broker, commands),
                broker=broker,
                vrrp_topic=topic_name(settings, topics.VRRP),
                directory=directory,
                renewals=renewals,
                throttle=throttle,
            )
            log.info("gateway started host=%s port=%s", settings.http_host, settings.gateway_port)
            yield
            log.info("gateway stopping")

    app = FrontedApp(
        title="HAVIP gateway",
        version="1",
        description="High-availability virtual IPs: the tenant API and the agent endpoint for VRRP reports.",
        lifespan=lifespan,
        telemetry=NO_NATIVE_TELEMETRY,
    )
    # Set last in the lifespan: the pool, the producer and the consumer are all started.
    health.add_check("started", lambda: None if hasattr(app.state, "gateway") else "starting")
    app.include_router(health_router(health))
    app.include_router(router)
    app.include_router(vrrp_api.router)
    app.include_router(agent_tokens.router)
    install_http_conventions(app, "gateway")
    # In front of the whole app: a VRRP report it takes meets nothing else (see intake.py).
    app.put_in_front(ReportIntake, gateway=app, max_body_bytes=DEFAULT_MAX_REQUEST_BODY_BYTES)
    return app
