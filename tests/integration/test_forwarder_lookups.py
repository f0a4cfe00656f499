"""The lookups answered in front of FastAPI give FastAPI's answers, byte for byte, good or bad.

Each request goes twice: as it is (services/forwarder/lookups.py may answer
it) and in a form that path always passes on to FastAPI (a percent-escaped
query; a chunked body), and both answers must be the same.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import asyncpg
import httpx
import pytest

from services.dev import pg_routes
from services.runtime.settings import Settings
from tests.integration.test_forwarder import OWNER_A, insert_havip, ready, running

pytestmark = pytest.mark.integration

QUERIES = [
    "vpc_id=vpc-1&ip=10.0.0.100",
    "ip=10.0.0.100&vpc_id=vpc-1",
    "vpc_id=vpc-1&ip=10.0.0.101",  # a HAVIP without owner
    "eip=203.0.113.7",
    "vpc_id=vpc-1&ip=10.0.0.199",  # misses
    "eip=203.0.113.99",
    "vpc_id=vpc-2&ip=10.0.0.100",
    "vpc_id=vpc-1&ip=10.0.0.300",  # and bad requests
    "vpc_id=vpc-1&ip=010.0.0.100",
    "vpc_id=vpc-1&ip=fe80::1",
    "vpc_id=&ip=10.0.0.100",
    f"vpc_id={'v' * 129}&ip=10.0.0.100",
    "vpc_id=vpc-1",
    "ip=10.0.0.100",
    "vpc_id=vpc-1&ip=10.0.0.100&eip=203.0.113.7",
    "vpc_id=vpc-1&ip=10.0.0.100&ip=10.0.0.101",
    "vpc_id=vpc-1&ip=10.0.0.100&other=1",
    "vpc_id=vpc-1&ip",
    "",
]

BATCHES: list[Any] = [
    {"keys": [{"vpc_id": "vpc-1", "ip": "10.0.0.100"}, {"eip": "203.0.113.7"}, {"vpc_id": "vpc-1", "ip": "10.0.0.9"}]},
    {"keys": [{"ip": "10.0.0.101", "vpc_id": "vpc-1"}, {"eip": "198.51.100.1"}]},
    {"keys": []},
    {"keys": [{"eip": "10.0.0.1"}] * 1000},
    {"keys": [{"eip": "10.0.0.1"}] * 1001},
    {"keys": [{"vpc_id": "vpc-1", "ip": "10.0.0.100", "eip": None}]},
    {"keys": [{"vpc_id": "vpc-1", "ip": "10.0.0.01"}]},
    {"keys": [{"vpc_id": "", "ip": "10.0.0.100"}]},
    {"keys": [{"vpc_id": "vpc-1", "ip": 7}]},
    {"keys": [{"vpc_id": ["vpc-1"], "ip": "10.0.0.100"}]},
    {"keys": [{"vpc_id": "vpc-1", "eip": "203.0.113.7"}]},
    {"keys": [{"eip": None}]},
    {"keys": [{"x": "y"}]},
    {"keys": ["vpc-1"]},
    {"keys": {"vpc_id": "vpc-1"}},
    {"keys": [], "more": 1},
    {},
    [],
    "keys",
]


def chunked(body: bytes) -> AsyncIterator[bytes]:
    async def chunks() -> AsyncIterator[bytes]:
        yield body[: len(body) // 2]
        yield body[len(body) // 2 :]

    return chunks()


def seen(answer: httpx.Response) -> tuple[int, Any, str | None, str | None]:
    return answer.status_code, answer.json(), answer.headers.get("x-request-id"), answer.headers.get("content-type")


async def test_the_fast_path_answers_what_fastapi_answers(settings: Settings, db: asyncpg.Pool) -> None:
    await insert_havip(db, "havip-1", version=2, ip="10.0.0.100", eip="203.0.113.7", owner=OWNER_A, attached=(OWNER_A,))
    await insert_havip(db, "havip-2", version=1, ip="10.0.0.101")
    same_id = {"x-request-id": "req-same"}
    async with running(settings) as (_, client):
        await ready(client)
        for query in QUERIES:
            escaped = "&".join(
                "=".join(quote(part, safe="") if part else part for part in pair.split("=", 1))
                for pair in query.split("&")
            )
            escaped = escaped.replace("vpc_id", "vpc%5Fid").replace("eip", "%65ip")  # a % in every query
            fast = await client.get(f"/v1/routes?{query}", headers=same_id)
            slow = await client.get(f"/v1/routes?{escaped}" if query else "/v1/routes?%61=1", headers=same_id)
            assert seen(fast) == seen(slow), query
            assert fast.content == slow.content, query
        for document in BATCHES:
            body = json.dumps(document).encode()
            json_body = {**same_id, "content-type": "application/json"}
            fast = await client.post("/v1/routes:batch", content=body, headers=json_body)
            slow = await client.post("/v1/routes:batch", content=chunked(body), headers=json_body)
            assert "content-length" in fast.request.headers and "content-length" not in slow.request.headers
            assert seen(fast) == seen(slow), (document, slow.text)
            assert fast.content == slow.content, document
        # Not JSON, or JSON under another name: FastAPI's answers whichever way it came.
        for body, headers in (
            (b"{not json", {"content-type": "application/json"}),
            (b'{"keys": []}', {"content-type": "text/plain"}),
            (b'{"keys": []}', {}),
        ):
            answer = await client.post("/v1/routes:batch", content=body, headers=headers)
            assert answer.status_code == 400 and answer.json()["code"] == "InvalidParameter", answer.text
        # Without a request id one is made up, and echoed.
        answer = await client.get("/v1/routes?vpc_id=vpc-1&ip=10.0.0.100")
        assert len(answer.headers["x-request-id"]) == 32
        missing = await client.get("/v1/routes?vpc_id=vpc-1&ip=10.0.0.199")
        assert missing.json()["request_id"] == missing.headers["x-request-id"]
        metrics = (await client.get("/metrics")).text
        assert 'havip_http_requests_total{method="GET",route="/v1/routes",service="forwarder",status="404"}' in metrics


async def test_the_postgres_bench_server_answers_what_the_forwarder_answers(
    settings: Settings, db: asyncpg.Pool
) -> None:
    """`havip bench lookups` compares the forwarder with services/dev/pg_routes.py: same answers, same path."""
    await insert_havip(db, "havip-1", version=2, ip="10.0.0.100", eip="203.0.113.7", owner=OWNER_A, attached=(OWNER_A,))
    await insert_havip(db, "havip-2", version=1, ip="10.0.0.101")
    queries = ["vpc_id=vpc-1&ip=10.0.0.100", "vpc_id=vpc-1&ip=10.0.0.101", "vpc_id=vpc-1&ip=10.0.0.199"]
    same_id = {"x-request-id": "req-same"}
    postgres = pg_routes.create_app(settings)
    async with (
        running(settings) as (_, forwarder),
        postgres.router.lifespan_context(postgres),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=postgres), base_url="http://pg-routes") as asked,
    ):
        await ready(forwarder)
        for query in queries:
            expected = await forwarder.get(f"/v1/routes?{query}", headers=same_id)
            answer = await asked.get(f"/v1/routes?{query}", headers=same_id)
            assert seen(answer) == seen(expected), query
        bad = await asked.get("/v1/routes?vpc_id=vpc-1&ip=10.0.0.300")
        assert bad.status_code == 400 and bad.json()["code"] == "InvalidParameter", bad.text
        metrics = (await asked.get("/metrics")).text
        assert 'route="/v1/routes",service="pg-routes",status="200"' in metrics
