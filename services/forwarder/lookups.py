"""The two hot routes, answered in front of FastAPI: `GET /v1/routes` and `POST /v1/routes:batch`.

Why: profiles of the forwarder spent a lookup's time in routing, dependency
injection, per-key pydantic validation, `ipaddress` objects and building
dicts to encode, not in the table. This ASGI middleware answers the common
case itself, from the answers the table keeps encoded.

What it answers: a well-formed request. Everything else goes on to FastAPI
untouched (a body already read is replayed): a bad or incomplete key, an
unknown or repeated parameter, a percent-escaped query, a body without a
Content-Length or over the limit, another content type, a document that is
not exactly `{"keys": [...]}`, any other method or path. FastAPI answers
those as it always did, so validation errors, 405 with `Allow`, 413 and the
OpenAPI document stay defined in one place (services/forwarder/app.py).

A hit needs no validation: the table holds canonical addresses and real VPC
ids only, so a key that finds a route is a valid key. A miss is checked
(`is_ipv4_text`, the VPC id's length) before it answers 404 or null; a miss
that is not a valid key goes on to FastAPI for its 400.

Request ids, error bodies and the request metrics are those of the app (services/runtime/lean_http.py).
"""

from __future__ import annotations

import json
import time

from starlette.types import ASGIApp, Receive, Scope, Send

from schemas.errors import ErrorCode
from schemas.ipv4 import is_ipv4_text
from services.forwarder.routes import HeldRoute, RouteTable
from services.runtime.lean_http import LeanAnswers, error_body, json_body_within, read_body, replay, request_id_for

MAX_BATCH_KEYS = 1000
MAX_VPC_ID_CHARS = 128
LOOKUP_PATH = "/v1/routes"
BATCH_PATH = "/v1/routes:batch"
_LOOKUP_PARAMETERS = frozenset(("vpc_id", "ip", "eip"))


class RouteLookups:
    def __init__(self, app: ASGIApp, table: RouteTable, max_body_bytes: int, service: str = "forwarder") -> None:
        self.app = app
        self.table = table
        self.max_body_bytes = max_body_bytes
        self.answers = LeanAnswers(service)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path, method = scope["path"], scope["method"]
            if path == LOOKUP_PATH and method == "GET":
                started = time.perf_counter()
                found = await self.answer_one(scope["query_string"])
                if found is not None:
                    await self._answer(scope, send, LOOKUP_PATH, found, started)
                    return
            elif path == BATCH_PATH and method == "POST" and json_body_within(scope, self.max_body_bytes):
                started = time.perf_counter()
                body = await read_body(receive)
                if body is None:
                    return  # the client went away: nobody to answer
                answer = self.lookup_many(body)
                if answer is not None:
                    await self._answer(scope, send, BATCH_PATH, (200, answer), started)
                    return
                receive = replay(body, receive)
        await self.app(scope, receive, send)

    async def answer_one(self, query: bytes) -> tuple[int, bytes | str] | None:
        """`lookup_one`, as a coroutine: what another source of routes (a benchmark's) overrides."""
        return self.lookup_one(query)

    def lookup_one(self, query: bytes) -> tuple[int, bytes | str] | None:
        """(200, answer) or (404, message) for a well-formed query; None for FastAPI to answer."""
        key = route_query(query)
        if key is None:
            return None
        vpc_id, ip, eip = key
        if eip is None and vpc_id is not None and ip is not None:
            route = self.table.lookup(vpc_id, ip)
            if route is not None:
                return 200, route.answer
            if private_key_ok(vpc_id, ip):
                return 404, f"no HAVIP holds {ip} in {vpc_id}"
        elif eip is not None and vpc_id is None and ip is None:
            route = self.table.lookup_public(eip)
            if route is not None:
                return 200, route.answer
            if is_ipv4_text(eip):
                return 404, f"no HAVIP holds public address {eip}"
        return None

    def lookup_many(self, body: bytes) -> bytes | None:
        """`{"routes": [...]}` for a well-formed batch, in the order of its keys; None for FastAPI to answer."""
        try:
            document = json.loads(body)
        except (ValueError, RecursionError):
            return None
        if type(document) is not dict or len(document) != 1:
            return None
        keys = document.get("keys")
        if type(keys) is not list or len(keys) > MAX_BATCH_KEYS:
            return None
        by_private, by_public = self.table.by_private, self.table.by_public
        answers: list[bytes] = []
        route: HeldRoute | None
        for key in keys:
            if type(key) is not dict:
                return None
            size = len(key)
            # Looked up before it is checked: only a miss needs checking (see the module's docstring).
            # A value that is not a string cannot be a hit, and one that cannot be hashed raises.
            try:
                if size == 2:
                    vpc_id, ip = key["vpc_id"], key["ip"]
                    route = by_private((vpc_id, ip))
                    if route is None and not private_key_ok(vpc_id, ip):
                        return None
                elif size == 1:
                    eip = key["eip"]
                    route = by_public(eip)
                    if route is None and not (type(eip) is str and is_ipv4_text(eip)):
                        return None
                else:
                    return None
            except (KeyError, TypeError):
                return None
            answers.append(b"null" if route is None else route.answer)
        return b'{"routes":[' + b",".join(answers) + b"]}"

    async def _answer(
        self, scope: Scope, send: Send, route: str, found: tuple[int, bytes | str], started: float
    ) -> None:
        status, content = found
        if isinstance(content, str):  # a miss: the error body every service answers
            content = error_body(str(ErrorCode.NOT_FOUND_ROUTE), content, request_id_for(scope))
        await self.answers.answer(scope, send, route, status, content, started)


def route_query(query: bytes) -> tuple[str | None, str | None, str | None] | None:
    """(vpc_id, ip, eip) of a plain query string, each at most once; None for anything else."""
    found = plain_query(query, _LOOKUP_PARAMETERS)
    if found is None:
        return None
    return found.get("vpc_id"), found.get("ip"), found.get("eip")


def plain_query(query: bytes, names: frozenset[str]) -> dict[str, str] | None:
    """The parameters of a query string naming only `names`, each at most once; None for anything else."""
    if b"%" in query or b"+" in query:
        return None  # percent-decoding is the framework's business
    found: dict[str, str] = {}
    if not query:
        return found
    # latin-1, as Starlette decodes a query string before splitting it.
    for part in query.decode("latin-1").split("&"):
        name, equals, value = part.partition("=")
        if not equals or name not in names or name in found:
            return None
        found[name] = value
    return found


def private_key_ok(vpc_id: object, ip: object) -> bool:
    return type(vpc_id) is str and 0 < len(vpc_id) <= MAX_VPC_ID_CHARS and type(ip) is str and is_ipv4_text(ip)
