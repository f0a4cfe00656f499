"""`POST /v1/vrrp-events` with one report from an agent the directory knows, answered in front of FastAPI.

Why: every live master renews its claim about once a second, so this is the
gateway's busiest request by far, and a profile under `havip bench intake`
spent most of its time in FastAPI's routing, dependency injection and
middleware chain rather than in the report itself.

What it answers: a single report (not the batch form) as JSON within the
body limit, with a Bearer token the agent directory holds, for a HAVIP the
directory says the instance is attached to, with a seq that is not ahead of
the clock. Those are exactly the reports services/gateway/vrrp_api.py would
accept, and this path accepts them the same way: the same authentication and
throttle (`auth.authenticate`), the same publish (`publish_report`), the same
metrics and answers, including a 429 or a 503. A malformed body, the batch
form or a token the directory does not hold goes on to FastAPI untouched and
uncounted; a held agent's report the directory cannot accept (an attachment
it cannot confirm, a refusal) goes on counted, with its principal (`auth.hand_on`).
Either way FastAPI decides it, refuses it or asks the database, in one place.
"""

from __future__ import annotations

import json
import time

from fastapi import FastAPI
from pydantic import ValidationError
from starlette.types import ASGIApp, Receive, Scope, Send

from schemas.errors import HaVipError
from schemas.reports import VrrpEventRequest
from services.gateway.auth import authenticate, hand_on
from services.gateway.context import GatewayContext
from services.gateway.observability import AGENT_DIRECTORY_ANSWERS
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
        """Answer the report if this path may (True); False for FastAPI to, having counted the
        request only if it says so (`hand_on`), so FastAPI counts it exactly once either way."""
        try:
            report = VrrpEventRequest.model_validate_json(body)
        except ValidationError:
            return False
        try:
            principal = await authenticate(context, token, directory_only=True)
            if principal is None:
                return False
            if principal.kind != "agent" or principal.instance_id is None:
                hand_on(scope, principal)
                return False
            held = context.directory.standing(principal.tenant_id, principal.instance_id, [report.havip_id])
            if (
                held is None
                or held[report.havip_id] is not ReporterStanding.ATTACHED
                or refusal_of(ReporterStanding.ATTACHED, report, principal.instance_id) is not None
            ):
                hand_on(scope, principal)
                return False
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
