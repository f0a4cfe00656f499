"""`havip observe`: wiring. One per hypervisor host; needs CAP_NET_RAW and the broker, nothing else.

No database: the observer learns who is who from Kafka (services/observe/feed.py) and writes
only `vrrp.events` and `havip.dead-letters`, with a Kafka user allowed exactly that
(deploy/k8s/base/kafka-users.yaml).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from services.observe.feed import Feed
from services.observe.hostview import HostView
from services.observe.observer import Observer
from services.runtime.deadletters import DeadLetters
from services.runtime.health import Health, health_app, serve_http
from services.runtime.kafka import new_producer, wait_for_broker
from services.runtime.logs import setup_logging
from services.runtime.settings import Settings
from services.runtime.tasks import until_one_ends

log = logging.getLogger(__name__)

SERVICE = "observe"


class SettingsError(ValueError):
    pass


def check_settings(settings: Settings) -> None:
    if not settings.observe_host_id:
        raise SettingsError(
            "HAVIP_OBSERVE_HOST_ID is not set: the observer watches the ports of one host's instances"
            " (the inventory's host_id; on Kubernetes, the node name)"
        )


async def observe(settings: Settings, stop: asyncio.Event) -> None:
    check_settings(settings)
    health = Health(SERVICE)
    health.start()
    view = HostView(settings.observe_host_id)
    server = asyncio.create_task(serve_http(health_app(health), settings.http_host, settings.observe_port))
    producer = new_producer(settings)
    started = asyncio.Event()
    health.add_check("broker", lambda: None if started.is_set() else "connecting to the broker")
    try:
        await wait_for_broker(settings, timeout=float("inf"))
        await producer.start()
        started.set()
        observer = Observer(settings, view, producer, DeadLetters(producer, settings, SERVICE))
        feed = Feed(settings, view, observer.ports_changed)
        health.add_check("feed", feed.not_caught_up)
        health.add_note("ports", observer.missing_ports)
        log.info("observing the ports of host %s", settings.observe_host_id)
        await until_one_ends({"observe feed": feed.run(), "observe": observer.run(), "stop": _stopped(stop)})
    finally:
        with contextlib.suppress(Exception):
            await producer.stop()
        server.cancel()
        await asyncio.gather(server, return_exceptions=True)
        await health.stop()


async def _stopped(stop: asyncio.Event) -> None:
    await stop.wait()


async def _main(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await observe(settings, stop)


def run(settings: Settings) -> None:
    setup_logging(SERVICE, settings.log_level)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        asyncio.run(_main(settings))
    else:
        # One wake-up per advert on a busy host: uvloop's is a fraction of asyncio's.
        uvloop.run(_main(settings))
