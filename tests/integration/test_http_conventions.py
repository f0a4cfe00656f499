"""HTTP behaviour users rely on, on the real forwarder app: 413, 405 with Allow, an honest document, /docs offline."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator

import httpx
import pytest
import uvicorn

from schemas.ipv4 import IPV4_PATTERN
from services.dev.embedded import free_port
from services.forwarder.app import MAX_BATCH_KEYS, create_app
from services.runtime.settings import Settings

pytestmark = pytest.mark.integration


@contextlib.asynccontextmanager
async def forwarder(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The forwarder with its lifespan running, ready, and a client talking to it in-process."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://forwarder") as client:
            for _ in range(600):
                if (await client.get("/readyz")).status_code == 200:
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the forwarder did not become ready")
            yield client


def big_batch(settings: Settings) -> bytes:
    """A batch within MAX_BATCH_KEYS whose body is over the limit."""
    keys = [{"vpc_id": f"vpc-{n:0>120}", "ip": "10.0.0.1"} for n in range(MAX_BATCH_KEYS)]
    body = json.dumps({"keys": keys}).encode()
    assert len(body) > settings.max_request_body_bytes
    return body


async def in_chunks(body: bytes, size: int = 4096) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


def assert_error(answer: httpx.Response, status: int, code: str) -> dict[str, str]:
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert set(body) == {"code", "message", "request_id"} and body["code"] == code
    return body


async def test_a_batch_over_the_body_limit_is_413(settings: Settings) -> None:
    body = big_batch(settings)
    json_type = {"content-type": "application/json"}
    async with forwarder(settings) as client:
        answer = await client.post("/v1/routes:batch", content=body, headers={**json_type, "x-request-id": "req-big"})
        assert assert_error(answer, 413, "PayloadTooLarge")["request_id"] == "req-big"
        # Without Content-Length (chunked), counted as it arrives.
        answer = await client.post("/v1/routes:batch", content=in_chunks(body), headers=json_type)
        assert "content-length" not in answer.request.headers
        assert_error(answer, 413, "PayloadTooLarge")
        small = await client.post("/v1/routes:batch", json={"keys": [{"vpc_id": "vpc-1", "ip": "10.0.0.1"}]})
        assert small.status_code == 200 and small.json() == {"routes": [None]}


async def test_a_batch_over_the_body_limit_is_413_over_a_real_socket(settings: Settings) -> None:
    port = free_port()
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, lifespan="on", log_config=None)
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    try:
        for _ in range(600):
            if server.started:
                break
            await asyncio.sleep(0.05)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            body = big_batch(settings)
            answer = await client.post("/v1/routes:batch", content=body, headers={"content-type": "application/json"})
            assert_error(answer, 413, "PayloadTooLarge")
    finally:
        server.should_exit = True
        await serving


async def test_a_wrong_method_is_405_naming_the_right_ones(settings: Settings) -> None:
    async with forwarder(settings) as client:
        answer = await client.get("/v1/routes:batch")
        assert_error(answer, 405, "MethodNotAllowed")
        assert answer.headers["allow"] == "POST"
        answer = await client.delete("/v1/routes", params={"ip": "10.0.0.1"})
        assert_error(answer, 405, "MethodNotAllowed")
        assert answer.headers["allow"] == "GET"


async def test_docs_are_served_without_internet(settings: Settings) -> None:
    async with forwarder(settings) as client:
        page = await client.get("/docs")
        assert page.status_code == 200
        assert not re.search(r"https?://", page.text)
        assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert assets and all(asset.startswith("/docs/static/") for asset in assets)
        for asset in assets:
            assert (await client.get(asset)).status_code == 200, asset


async def test_the_document_states_what_the_forwarder_enforces(settings: Settings) -> None:
    async with forwarder(settings) as client:
        document = (await client.get("/openapi.json")).json()
    text = json.dumps(document)
    assert '"422"' not in text and "HTTPValidationError" not in text
    batch = document["paths"]["/v1/routes:batch"]["post"]["responses"]
    assert {"200", "400", "413", "500"} <= set(batch)
    lookup = document["paths"]["/v1/routes"]["get"]
    assert {"200", "400", "404", "500"} <= set(lookup["responses"])
    for name in ("ip", "eip"):
        [parameter] = [p for p in lookup["parameters"] if p["name"] == name]
        assert [kind.get("pattern") for kind in parameter["schema"]["anyOf"]] == [IPV4_PATTERN, None]
    assert not any(path.startswith(("/docs", "/redoc")) for path in document["paths"])
