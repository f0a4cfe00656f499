"""The watch answered in front of FastAPI gives FastAPI's stream, and forgets a client that leaves.

Each watch goes twice: as it is (services/forwarder/watch_answers.py may
answer it) and with its first character percent-escaped, which that path
always passes on to FastAPI; both must give the same lines, or the same 400.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest

from services.forwarder.watch_answers import watch_query
from services.runtime.settings import Settings
from tests.integration.test_forwarder import OWNER_A, OWNER_B, Publisher, eventually, insert_havip, mapping
from tests.integration.test_forwarder_watch import LINE_TIMEOUT, serving

pytestmark = pytest.mark.integration

MALFORMED = [
    "vpc_id=",
    f"vpc_id={'v' * 129}",
    "host_id=",
    f"host_id={'h' * 129}",
    "since=-1",
    "since=abc",
    "since=1.5",
    "epoch=xyz",
    f"epoch={'A' * 32}",
    f"epoch={'0' * 31}",
]


def escaped(query: str) -> str:
    """The same query, in a form only FastAPI answers."""
    return f"%{ord(query[0]):02X}{query[1:]}" if query else "ignored=%2A"


@contextlib.asynccontextmanager
async def stream(client: httpx.AsyncClient, query: str) -> AsyncIterator[tuple[httpx.Response, AsyncIterator[str]]]:
    headers = {"x-request-id": "watch-test-1"}
    async with client.stream("GET", f"/v1/routes:watch?{query}", headers=headers) as answer:
        yield answer, answer.aiter_lines()


async def until_synced(lines: AsyncIterator[str]) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    while not seen or seen[-1]["type"] != "synced":
        line = json.loads(await asyncio.wait_for(anext(lines), LINE_TIMEOUT))
        if line["type"] != "heartbeat":
            seen.append(line)
    return seen


async def next_change(lines: AsyncIterator[str]) -> dict[str, Any]:
    while (line := json.loads(await asyncio.wait_for(anext(lines), LINE_TIMEOUT)))["type"] == "heartbeat":
        pass
    return line


def head(answer: httpx.Response) -> tuple[int, str | None, str | None]:
    return answer.status_code, answer.headers.get("content-type"), answer.headers.get("x-request-id")


async def test_both_ways_give_the_same_stream_and_the_same_400s(settings: Settings, db: asyncpg.Pool) -> None:
    await insert_havip(db, "havip-1", version=1, ip="10.0.0.100", owner=OWNER_A, attached=(OWNER_A, OWNER_B))
    await insert_havip(db, "havip-2", version=1, ip="10.0.0.101", owner=OWNER_B, attached=(OWNER_B,))
    await insert_havip(db, "havip-3", version=1, ip="10.0.0.102", vpc_id="vpc-2", owner=OWNER_A, attached=(OWNER_A,))
    async with serving(settings, forwarder_watch_heartbeat_seconds=0.2) as client, Publisher(settings) as publisher:
        async with stream(client, "") as (_, lines):
            hello = (await until_synced(lines))[0]
        epoch, revision = hello["epoch"], hello["revision"]
        await publisher.send(mapping("havip-2", 2, ip="10.0.0.101", owner=OWNER_A))
        well_formed = [
            "",
            "host_id=host-a",
            "vpc_id=vpc-2",
            "vpc_id=vpc-1&host_id=host-b",
            f"epoch={epoch}&since={revision}",
            f"since={revision}&epoch={epoch}&host_id=host-a",
            "since=0",
            f"epoch={'0' * 32}&since={revision}",
        ]

        async def applied() -> bool:
            async with stream(client, f"epoch={epoch}&since={revision}") as (_, lines):
                return len(await until_synced(lines)) == 3  # hello, the change, synced

        await eventually(applied, "havip-2 version 2 applied")
        for query in well_formed:
            assert watch_query(query.encode()) is not None, query
            assert watch_query(escaped(query).encode()) is None
            both = stream(client, query), stream(client, escaped(query))
            async with both[0] as (lean, lean_lines), both[1] as (full, full_lines):
                assert head(lean) == head(full) == (200, "application/x-ndjson", "watch-test-1"), query
                assert await until_synced(lean_lines) == await until_synced(full_lines), query
                if "host_id=host-a" in query:
                    # A change after the start reaches both the same way.
                    await publisher.send(mapping("havip-1", 10 + len(query), ip="10.0.0.100", owner=OWNER_A))
                    assert await next_change(lean_lines) == await next_change(full_lines), query

        for query in MALFORMED:
            assert watch_query(query.encode()) is None, query
            as_is = await client.get(f"/v1/routes:watch?{query}", headers={"x-request-id": "watch-test-1"})
            other = await client.get(f"/v1/routes:watch?{escaped(query)}", headers={"x-request-id": "watch-test-1"})
            assert as_is.status_code == other.status_code == 400, (query, as_is.text)
            assert as_is.json() == other.json(), query
            assert as_is.json()["code"] == "InvalidParameter"
            assert as_is.headers["x-request-id"] == "watch-test-1"

        metrics = (await client.get("/metrics")).text
        assert 'havip_http_requests_total{method="GET",route="/v1/routes:watch",service="forwarder",status="200"}' in (
            metrics
        )


@pytest.mark.parametrize("query", ["", escaped("host_id=host-a")], ids=["in front of FastAPI", "FastAPI"])
async def test_a_client_that_leaves_is_forgotten(settings: Settings, db: asyncpg.Pool, query: str) -> None:
    await insert_havip(db, "havip-1", version=1, ip="10.0.0.100", owner=OWNER_A, attached=(OWNER_A, OWNER_B))
    # No heartbeat for a minute: only noticing the disconnect can forget the watcher in time.
    async with serving(settings, forwarder_watch_heartbeat_seconds=60) as client:

        async def watchers(count: int) -> bool:
            return f"havip_forwarder_watchers {count:.1f}" in (await client.get("/metrics")).text

        async with stream(client, query) as (answer, lines):
            assert answer.status_code == 200
            await until_synced(lines)
            assert await watchers(1)
        await eventually(lambda: watchers(0), "the watcher forgotten once its client left")
