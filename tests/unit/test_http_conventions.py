"""What every HTTP service answers the same way: body limit, 405 Allow, Retry-After, the OpenAPI document, /docs."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Annotated, Any

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from starlette.types import Message, Receive, Scope, Send

from schemas.errors import ErrorCode, HaVipError
from schemas.ipv4 import IPv4Text
from services.runtime.http import BodyLimit, RequestContext, install_http_conventions
from services.runtime.openapi import ERROR_BODY_REF, with_error_answers

LIMIT = 1024


class Echo:
    """The smallest ASGI app that reads its body: answers how many bytes it got."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.calls += 1
        size = 0
        more = True
        while more:
            message = await receive()
            size += len(message.get("body", b""))
            more = message.get("more_body", False)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": str(size).encode()})


def client_for(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def chunks(total: int, size: int = 100) -> AsyncIterator[bytes]:
    sent = 0
    while sent < total:
        part = min(size, total - sent)
        sent += part
        yield b"x" * part


def assert_error(answer: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert set(body) == {"code", "message", "request_id"}
    assert body["code"] == code
    return body


# --- the body limit, on a bare ASGI app ---------------------------------------


async def test_a_body_up_to_the_limit_reaches_the_app() -> None:
    async with client_for(BodyLimit(Echo(), max_bytes=LIMIT)) as client:
        assert (await client.post("/", content=b"x" * LIMIT)).text == str(LIMIT)
        assert (await client.post("/", content=chunks(LIMIT))).text == str(LIMIT)


async def test_a_declared_length_over_the_limit_is_refused_before_the_app_runs() -> None:
    echo = Echo()
    app = RequestContext(BodyLimit(echo, max_bytes=LIMIT), service="test")
    async with client_for(app) as client:
        answer = await client.post("/", content=b"x" * (LIMIT + 1), headers={"X-Request-ID": "req-413"})
    body = assert_error(answer, 413, ErrorCode.PAYLOAD_TOO_LARGE)
    assert body["request_id"] == "req-413" and answer.headers["x-request-id"] == "req-413"
    assert echo.calls == 0


async def test_a_chunked_body_is_counted_as_it_arrives() -> None:
    async with client_for(BodyLimit(Echo(), max_bytes=LIMIT)) as client:
        answer = await client.post("/", content=chunks(LIMIT * 10))
    assert "content-length" not in answer.request.headers
    assert_error(answer, 413, ErrorCode.PAYLOAD_TOO_LARGE)


async def test_a_lying_content_length_does_not_get_past_the_count() -> None:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"x" * 600, "more_body": True}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/", "headers": [(b"content-length", b"10")]}
    await BodyLimit(Echo(), max_bytes=LIMIT)(scope, receive, send)
    assert sent[0]["status"] == 413


# --- the conventions on a FastAPI app -----------------------------------------


class Item(BaseModel):
    name: str


_bearer = HTTPBearer(auto_error=False)


def _token(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> str:
    if credentials is None:
        raise HaVipError(ErrorCode.UNAUTHORIZED, "a token is required")
    return credentials.credentials


Token = Annotated[str, Depends(_token)]


def small_app() -> FastAPI:
    app = FastAPI(title="small")
    install_http_conventions(app, "small", max_request_body_bytes=LIMIT)

    @app.get("/ping")
    async def ping() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/items")
    async def list_items(_: Token, ip: Annotated[IPv4Text | None, Query()] = None) -> list[str]:
        return []

    @app.post("/v1/items", status_code=202)
    async def create_item(item: Item, _: Token) -> Item:
        return item

    @app.get("/v1/items/{item_id}", responses={409: {"description": "Conflict"}})
    async def get_item(item_id: str, _: Token) -> Item:
        raise HaVipError(ErrorCode.SERVICE_UNAVAILABLE, "the database is away")

    @app.delete("/v1/items/{item_id}")
    async def delete_item(item_id: str) -> None:
        raise HaVipError(ErrorCode.THROTTLED, "slow down", retry_after=2.5)

    @app.put("/v1/items/{item_id}")
    async def put_item(item_id: str) -> None:
        raise HTTPException(503, "not now")

    return app


def routed_app() -> FastAPI:
    """Routes from an included router, as the gateway has them (FastAPI may keep them nested)."""
    app = FastAPI(title="routed")
    install_http_conventions(app, "routed")
    router = APIRouter(prefix="/v1")

    @router.get("/things")
    async def list_things() -> list[str]:
        return []

    @router.post("/things", status_code=202)
    async def add_thing() -> None:
        return None

    app.include_router(router)
    return app


@pytest.mark.parametrize("make_app", [small_app, routed_app], ids=["routes", "included-router"])
async def test_405_names_every_method_of_the_path_also_for_included_routers(make_app: Any) -> None:
    async with client_for(make_app()) as client:
        path = "/v1/items" if make_app is small_app else "/v1/things"
        for method in ("PUT", "PATCH", "DELETE", "OPTIONS"):
            answer = await client.request(method, path)
            assert_error(answer, 405, ErrorCode.METHOD_NOT_ALLOWED)
            assert answer.headers["allow"] == "GET, POST", method


async def test_405_allows_every_method_of_the_path() -> None:
    async with client_for(small_app()) as client:
        answer = await client.put("/v1/items")
        assert_error(answer, 405, ErrorCode.METHOD_NOT_ALLOWED)
        assert answer.headers["allow"] == "GET, POST"
        answer = await client.post("/v1/items/i-1")
        assert_error(answer, 405, ErrorCode.METHOD_NOT_ALLOWED)
        assert answer.headers["allow"] == "DELETE, GET, PUT"


async def test_413_from_a_fastapi_route_in_both_ways() -> None:
    async with client_for(small_app()) as client:
        headers = {"Authorization": "Bearer t", "Content-Type": "application/json"}
        big = json.dumps({"name": "x" * LIMIT}).encode()
        assert_error(await client.post("/v1/items", content=big, headers=headers), 413, ErrorCode.PAYLOAD_TOO_LARGE)
        answer = await client.post("/v1/items", content=chunks(len(big)), headers=headers)
        assert_error(answer, 413, ErrorCode.PAYLOAD_TOO_LARGE)
        small = await client.post("/v1/items", json={"name": "x"}, headers={"Authorization": "Bearer t"})
        assert small.status_code == 202


async def test_every_429_and_503_says_when_to_come_back() -> None:
    async with client_for(small_app()) as client:
        answer = await client.get("/v1/items/i-1", headers={"Authorization": "Bearer t"})
        assert_error(answer, 503, ErrorCode.SERVICE_UNAVAILABLE)
        assert answer.headers["retry-after"] == "1"
        answer = await client.delete("/v1/items/i-1")
        assert_error(answer, 429, ErrorCode.THROTTLED)
        assert answer.headers["retry-after"] == "3"
        answer = await client.put("/v1/items/i-1")
        assert_error(answer, 503, ErrorCode.SERVICE_UNAVAILABLE)
        assert answer.headers["retry-after"] == "1"


async def test_a_malformed_address_says_what_an_address_looks_like() -> None:
    async with client_for(small_app()) as client:
        answer = await client.get("/v1/items", params={"ip": "10.0.0.01"}, headers={"Authorization": "Bearer t"})
    message = assert_error(answer, 400, ErrorCode.INVALID_PARAMETER)["message"]
    assert message.startswith("ip: not an IPv4 address")


# --- the OpenAPI document ------------------------------------------------------


def operations(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f"{method.upper()} {path}": op for path, item in document["paths"].items() for method, op in item.items()}


def statuses(document: dict[str, Any]) -> dict[str, set[str]]:
    return {name: set(op["responses"]) for name, op in operations(document).items()}


def test_the_document_lists_the_errors_the_server_gives() -> None:
    document = small_app().openapi()
    assert statuses(document) == {
        "GET /ping": {"200", "500"},
        "GET /v1/items": {"200", "400", "401", "403", "429", "500", "503"},
        "POST /v1/items": {"202", "400", "401", "403", "413", "429", "500", "503"},
        "GET /v1/items/{item_id}": {"200", "400", "401", "403", "404", "409", "429", "500", "503"},
        "DELETE /v1/items/{item_id}": {"200", "400", "404", "500", "503"},
        "PUT /v1/items/{item_id}": {"200", "400", "404", "500", "503"},
    }


def test_every_error_is_an_error_body_and_422_is_gone() -> None:
    document = small_app().openapi()
    text = json.dumps(document)
    assert '"422"' not in text and "HTTPValidationError" not in text
    assert "ValidationError" not in document["components"]["schemas"]
    assert set(document["components"]["schemas"]["ErrorBody"]["required"]) == {"code", "message", "request_id"}
    for name, operation in operations(document).items():
        for status, response in operation["responses"].items():
            if int(status) >= 400:
                assert response["content"] == {"application/json": {"schema": {"$ref": ERROR_BODY_REF}}}, name
                assert response["description"], name
                has_retry_after = "Retry-After" in response.get("headers", {})
                assert has_retry_after is (status in ("429", "503")), (name, status)


def test_retry_after_is_a_required_whole_number() -> None:
    document = small_app().openapi()
    header = operations(document)["POST /v1/items"]["responses"]["503"]["headers"]["Retry-After"]
    assert header["required"] is True and header["schema"] == {"type": "integer", "minimum": 1}


def test_the_rewrite_leaves_its_input_alone_and_is_done_once() -> None:
    app = small_app()
    assert app.openapi() is app.openapi()
    raw = FastAPI.openapi(small_app())
    before = json.dumps(raw)
    rewritten = with_error_answers(raw)
    assert json.dumps(raw) == before
    assert with_error_answers(rewritten) == rewritten


def test_a_routes_own_error_schema_is_kept_without_retry_after() -> None:
    readiness = {"application/json": {"schema": {"type": "object"}}}
    document = {
        "openapi": "3.1.0",
        "paths": {"/readyz": {"get": {"responses": {"200": {"description": "OK"}, "503": {"content": readiness}}}}},
    }
    answer = with_error_answers(document)["paths"]["/readyz"]["get"]["responses"]["503"]
    assert answer["content"] == readiness and "headers" not in answer


def test_an_optional_token_is_not_a_reason_for_401() -> None:
    document = {
        "openapi": "3.1.0",
        "paths": {
            "/v1/x": {"get": {"security": [{}, {"HTTPBearer": []}], "responses": {"200": {"description": "OK"}}}}
        },
    }
    assert set(with_error_answers(document)["paths"]["/v1/x"]["get"]["responses"]) == {"200", "500", "503"}


# --- /docs offline -------------------------------------------------------------


async def test_docs_need_no_internet() -> None:
    app = small_app()
    async with client_for(app) as client:
        page = await client.get("/docs")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "http://" not in page.text and "https://" not in page.text
        assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert len(assets) == 3 and all(asset.startswith("/docs/static/") for asset in assets), assets
        for asset in assets:
            assert (await client.get(asset)).status_code == 200, asset
        assert "url: '/openapi.json'" in page.text
        assert (await client.get("/docs/oauth2-redirect")).status_code == 200
        assert (await client.get("/redoc")).status_code == 404
    assert not any(path.startswith("/docs") for path in app.openapi()["paths"])


async def test_docs_replace_fastapis_even_when_created_without_them() -> None:
    app = FastAPI(docs_url=None, redoc_url=None)
    install_http_conventions(app, "bare")
    async with client_for(app) as client:
        page = await client.get("/docs")
        assert page.status_code == 200 and "/docs/static/swagger-ui-bundle.js" in page.text
    assert [getattr(route, "path", None) for route in app.router.routes].count("/docs") == 1
