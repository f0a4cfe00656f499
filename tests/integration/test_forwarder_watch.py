"""GET /v1/routes:watch over a real socket, the table fed by the real follower (broker + PostgreSQL)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
import uvicorn

from services.dev.embedded import free_port
from services.forwarder.app import create_app
from services.forwarder.settings import ForwarderSettings
from services.runtime.settings import Settings
from tests.integration.test_forwarder import OWNER_A, OWNER_B, Publisher, eventually, insert_havip, mapping

pytestmark = pytest.mark.integration

LINE_TIMEOUT = 15.0


@contextlib.asynccontextmanager
async def serving(settings: Settings, **watch: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The forwarder on a real port (a watch streams; in-process transports buffer whole answers)."""
    port = free_port()
    app = create_app(ForwarderSettings(**settings.model_dump(), **watch))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="on", log_config=None))
    serving_task = asyncio.create_task(server.serve())
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=LINE_TIMEOUT) as client:

            async def is_ready() -> bool:
                with contextlib.suppress(httpx.TransportError):
                    return (await client.get("/readyz")).status_code == 200
                return False

            await eventually(is_ready, "the forwarder is ready")
            yield client
    finally:
        server.should_exit = True
        await serving_task


class Stream:
    """The lines of one watch, read as they come."""

    def __init__(self, lines: AsyncIterator[str]) -> None:
        self._lines = lines

    async def next(self) -> dict[str, Any]:
        line = await asyncio.wait_for(anext(self._lines), LINE_TIMEOUT)
        return json.loads(line)

    async def until(self, kind: str) -> list[dict[str, Any]]:
        """Every line up to and including the first of type `kind`, heartbeats left out."""
        seen = []
        while (line := await self.next())["type"] != kind:
            if line["type"] != "heartbeat":
                seen.append(line)
        return [*seen, line]


@contextlib.asynccontextmanager
async def watching(client: httpx.AsyncClient, **params: Any) -> AsyncIterator[Stream]:
    async with client.stream("GET", "/v1/routes:watch", params=params) as answer:
        assert answer.status_code == 200, await answer.aread()
        assert answer.headers["content-type"].startswith("application/x-ndjson")
        yield Stream(answer.aiter_lines())


def routes(lines: list[dict[str, Any]]) -> list[tuple[str, str, int, str | None]]:
    return [(line["type"], line["havip_id"], line["version"], line.get("host_id")) for line in lines]


async def test_a_watcher_gets_its_host_s_table_then_every_change_in_order_and_resumes(
    settings: Settings, db: asyncpg.Pool
) -> None:
    await insert_havip(db, "havip-1", version=1, ip="10.0.0.100", owner=OWNER_A, attached=(OWNER_A, OWNER_B))
    await insert_havip(db, "havip-2", version=1, ip="10.0.0.101", owner=OWNER_B, attached=(OWNER_B,))
    await insert_havip(db, "havip-3", version=1, ip="10.0.0.102", vpc_id="vpc-2", owner=OWNER_A, attached=(OWNER_A,))
    async with serving(settings, forwarder_watch_heartbeat_seconds=0.2) as client, Publisher(settings) as publisher:
        async with watching(client, host_id="host-a") as stream:
            hello = await stream.next()
            assert hello["type"] == "hello" and hello["resync"] is True
            start = await stream.until("synced")
            assert sorted(routes(start[:-1])) == [("route", "havip-1", 1, "host-a"), ("route", "havip-3", 1, "host-a")]
            assert start[-1]["revision"] == hello["revision"]

            # failover to host-b: sent (the agent on host-a drops it); havip-2 stays on host-b: not sent
            await publisher.send(mapping("havip-1", 2, ip="10.0.0.100", owner=OWNER_B))
            await publisher.send(mapping("havip-2", 2, ip="10.0.0.101", owner=OWNER_B))
            await publisher.send(mapping("havip-1", 3, ip="10.0.0.100", owner=OWNER_A))
            changes = [await stream.next() for _ in range(2)]
            assert routes(changes) == [("route", "havip-1", 2, "host-b"), ("route", "havip-1", 3, "host-a")]
            assert changes[0]["revision"] < changes[1]["revision"]
            assert (changes[1]["vpc_id"], changes[1]["ip"], changes[1]["eips"]) == ("vpc-1", "10.0.0.100", [])
            beat = await stream.until("heartbeat")  # idle now: heartbeats say the stream is alive
            assert beat[-1]["revision"] >= changes[1]["revision"]
            position = (hello["epoch"], changes[1]["revision"])

        # Away for a while: a VPC watcher sees the changes meanwhile, the host watcher resumes with only its own.
        async with watching(client, vpc_id="vpc-2") as in_vpc:
            assert (await in_vpc.until("synced"))[0]["resync"] is True
            await publisher.send(mapping("havip-3", 2, ip="10.0.0.102", vpc_id="vpc-2", status="Deleted"))
            await publisher.send(mapping("havip-2", 3, ip="10.0.0.101", owner=OWNER_A))
            assert routes([await in_vpc.next()]) == [("removed", "havip-3", 2, None)]

        async def applied() -> bool:
            answer = await client.get("/v1/routes", params={"vpc_id": "vpc-1", "ip": "10.0.0.101"})
            return answer.json()["version"] == 3

        await eventually(applied, "havip-2 version 3 applied")
        epoch, since = position
        async with watching(client, host_id="host-a", epoch=epoch, since=since) as stream:
            hello = await stream.next()
            assert hello["resync"] is False
            missed = await stream.until("synced")
            assert routes(missed[:-1]) == [("removed", "havip-3", 2, None), ("route", "havip-2", 3, "host-a")]
        # Another epoch (a restarted forwarder) gets the whole table again.
        async with watching(client, host_id="host-a", epoch="0" * 32, since=since) as stream:
            assert (await stream.next())["resync"] is True
            assert sorted(routes((await stream.until("synced"))[:-1])) == [
                ("route", "havip-1", 3, "host-a"),
                ("route", "havip-2", 3, "host-a"),
            ]
        metrics = (await client.get("/metrics")).text
        assert "havip_forwarder_watchers 0.0" in metrics


async def test_a_watcher_that_falls_behind_is_told_to_resync_and_the_stream_ends(
    settings: Settings, db: asyncpg.Pool
) -> None:
    await insert_havip(db, "havip-1", version=1, ip="10.0.0.100", owner=OWNER_A, attached=(OWNER_A, OWNER_B))
    async with serving(settings, forwarder_watch_buffer=1) as client, Publisher(settings) as publisher:
        async with watching(client) as stream:
            await stream.until("synced")
            last: dict[str, Any] = {}
            version = 1
            # A burst the follower applies in one go overflows a one-line buffer; bursts until one does.
            for _ in range(20):
                sends = [
                    publisher.send(mapping("havip-1", version + n, ip="10.0.0.100", owner=(OWNER_A, OWNER_B)[n % 2]))
                    for n in range(1, 31)
                ]
                await asyncio.gather(*sends)
                version += 30
                with contextlib.suppress(TimeoutError):
                    while (last := await stream.next())["type"] != "resync":
                        if last["version"] == version:
                            break
                if last.get("type") == "resync":
                    break
            assert last["type"] == "resync", "no burst overflowed the buffer"
            assert "watch again" in last["reason"]
            with pytest.raises(StopAsyncIteration):
                await stream.next()  # and the stream ended
        # The watcher was dropped; watching again gives the whole table.
        async with watching(client) as stream:
            assert (await stream.next())["resync"] is True
