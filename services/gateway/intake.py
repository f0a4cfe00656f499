"""`POST /v1/vrrp-events` with one report from an agent the directory knows, answered in front of FastAPI.

Why: every live master renews its claim about once a second, so this is the
gateway's busiest request by far, and a profile under `havip bench intake`
spent most of its time in FastAPI's routing, dependency injection and
middleware chain rather than in the report itself.

What it answers: a single report (not the batch form) as JSON within the
body limit, with a Bearer token the agent directory holds, for a HAVIP the
directory says the instance is attached to, with a seq that is not ahead of
the clock. Those are exactly the reports services/gateway/vrrp_api.py would
accept, and this path accepts them the same way: the same throttle, the same
publish (`publish_report`), the same metrics and answers, including a 429
or a 503 once it has counted the request. Everything else (a token or an
attachment the directory cannot confirm, a malformed body, the batch form) goes on to
FastAPI untouched and before anything is counted, so it is decided, refused
or asked of the database there, in one place.
"""

from __future__ import annotations

import json
import time

from fastapi import FastAPI
from pydantic import ValidationError
from starlette.types import ASGIApp, Receive, Scope, Send

from schemas.errors import ErrorCode, HaVipError
from services.gateway.context import GatewayContext
from services.gateway.models import VrrpEventRequest
from services.gateway.observability import AGENT_DIRECTORY_ANSWERS
from services.gateway.throttle import request_rate
from services.gateway.tokens import hash_token
from services.gateway.vrrp_api import publish_report, refusal_of
from services.readmodel.reporters import ReporterStanding
from services.runtime.lean_http import LeanAnswers, json_body_within, read_body, replay

REPORT_PATH = "/v1/vrrp-events"


class ReportIntake:
    def __init__(self, app: ASGIApp, gateway: FastAPI, max_body_bytes: int) -> None:
        self.app = app
        self.gateway = gateway  # its state holds the GatewayContext once the lifespan has started
        self.max_body_bytes = max_body_bytes
        self.answers = LeanAnswers("gateway")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["path"] == REPORT_PATH
            and scope["method"] == "POST"
            and json_body_within(scope, self.max_body_bytes)
            and (context := getattr(self.gateway.state, "gateway", None)) is not None
            and (token := _bearer_token(scope)) is not None
        ):
            started = time.perf_counter()
            body = await read_body(receive)
            if body is None:
                return  # the client went away: nobody to answer
            if await self._accept(context, token, body, scope, send, started):
                return
            receive = replay(body, receive)
        await self.app(scope, receive, send)

    async def _accept(
        self, context: GatewayContext, token: str, body: bytes, scope: Scope, send: Send, started: float
    ) -> bool:
        """Answer the report if this path may (True); False, having counted nothing, for FastAPI to."""
        principal = context.directory.principal(hash_token(token))
        if principal is None or principal.kind != "agent" or principal.instance_id is None:
            return False
        try:
            report = VrrpEventRequest.model_validate_json(body)
        except ValidationError:
            return False
        held = context.directory.standing(principal.tenant_id, principal.instance_id, [report.havip_id])
        if held is None or held[report.havip_id] is not ReporterStanding.ATTACHED:
            return False
        if refusal_of(ReporterStanding.ATTACHED, report, principal.instance_id) is not None:
            return False
        # From here on the request counts, exactly as in services/gateway/auth.py and vrrp_api.py.
        AGENT_DIRECTORY_ANSWERS.labels("token", "directory").inc()
        rate, burst = request_rate(principal, context.settings)
        wait = context.throttle.take(principal.token_id, rate, burst)
        try:
            if wait is not None:
                raise HaVipError(
                    ErrorCode.THROTTLED,
                    f"this token may make {rate:g} requests per second; retry later",
                    retry_after=wait,
                )
            AGENT_DIRECTORY_ANSWERS.labels("attachment", "directory").inc()
            message_id = await publish_report(context, principal.tenant_id, principal.instance_id, report)
        except HaVipError as error:
            await self.answers.error(scope, send, REPORT_PATH, error, started)
            return True
        accepted = json.dumps({"message_id": message_id}, separators=(",", ":")).encode()
        await self.answers.answer(scope, send, REPORT_PATH, 202, accepted, started)
        return True


def _bearer_token(scope: Scope) -> str | None:
    # As FastAPI's HTTPBearer reads it: the scheme in any case, one space, then the credentials.
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, credentials = value.decode("latin-1").partition(" ")
            credentials = credentials.strip()
            return credentials if scheme.lower() == "bearer" and credentials else None
    return None
