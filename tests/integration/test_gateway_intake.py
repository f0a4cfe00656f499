"""VRRP reports taken in front of FastAPI (services/gateway/intake.py) get FastAPI's answers.

Each request goes twice: as it is (the intake path may take it) and with a
chunked body, which that path always passes on to FastAPI. Both must answer
the same status, error body, request id and Retry-After; an accepted report
is published the same way, each with its own message id.
"""

from __future__ import annotations

import json
import time
from typing import Any

import asyncpg
import httpx
import pytest

from schemas import topics
from schemas.messages import VrrpReported
from services.gateway.tokens import Principal, store_token
from services.runtime.settings import Settings
from tests.integration.test_forwarder_lookups import chunked
from tests.integration.test_gateway import (
    AGENT_TOKEN,
    TENANT_TOKEN,
    attach_in_db,
    bearer,
    running_gateway,
    seed_havip,
)
from tests.kafka_tools import read_topic

pytestmark = pytest.mark.integration

RUNAWAY_TOKEN = "tok-agent-runaway"


def seen(answer: httpx.Response) -> tuple[int, Any, str | None, str | None]:
    body = answer.json()
    if answer.status_code == 202:
        body = sorted(body)  # each accepted report has its own message id
    return answer.status_code, body, answer.headers.get("x-request-id"), answer.headers.get("retry-after")


async def both_ways(gateway: httpx.AsyncClient, document: Any, headers: dict[str, str]) -> httpx.Response:
    body = json.dumps(document).encode()
    sent = {**headers, "content-type": "application/json", "x-request-id": "req-same"}
    taken = await gateway.post("/v1/vrrp-events", content=body, headers=sent)
    passed_on = await gateway.post("/v1/vrrp-events", content=chunked(body), headers=sent)
    assert "content-length" not in passed_on.request.headers
    assert seen(taken) == seen(passed_on), (document, headers, taken.text, passed_on.text)
    return taken


async def test_the_intake_path_answers_what_fastapi_answers(settings: Settings, db: asyncpg.Pool) -> None:
    await store_token(db, TENANT_TOKEN, Principal("tenant", "tenant-a"))
    await store_token(db, AGENT_TOKEN, Principal("agent", "tenant-a", "i-web1"))
    await store_token(db, RUNAWAY_TOKEN, Principal("agent", "tenant-a", "i-web2"))
    await seed_havip(db, "havip-1")
    await seed_havip(db, "havip-2")
    await attach_in_db(db, "havip-1", "i-web1")
    await attach_in_db(db, "havip-2", "i-web2")
    agent = bearer(AGENT_TOKEN)
    # No lease: a notify script's claim. Repeated claims with a lease would be lease renewals, which
    # go to PostgreSQL rather than vrrp.events (tests/integration/test_renewal_lane.py).
    report = {"havip_id": "havip-1", "state": "MASTER", "priority": 150, "seq": 1}
    # Each agent token may make 30 requests, then one every 100 s: the runaway below meets its limit.
    limits = {"agent_request_burst": 30, "agent_requests_per_second": 0.01}
    async with running_gateway(settings.model_copy(update=limits)) as gateway:
        accepted = await both_ways(gateway, report, agent)
        assert accepted.status_code == 202
        day_ahead_us = int((time.time() + 2 * 86400) * 1_000_000)
        for document, headers in [
            ({**report, "seq": 2, "reported_at": "2024-05-01T10:00:00Z"}, agent),
            ({**report, "havip_id": "havip-2"}, agent),  # not attached: 409
            ({**report, "havip_id": "havip-9"}, agent),  # unknown: 404
            ({**report, "seq": day_ahead_us}, agent),  # refused: 409 SeqAhead
            ({**report, "state": "LEADER"}, agent),  # malformed: 400
            ({**report, "instance_id": "i-web2"}, agent),
            ({"reports": [report]}, agent),  # the batch form
            (report, bearer("tok-nobody")),  # 401
            (report, bearer(TENANT_TOKEN)),  # 403
            (report, {"authorization": "bearer  " + AGENT_TOKEN}),  # how HTTPBearer reads it
            (report, {"authorization": "Basic " + AGENT_TOKEN}),
            (report, {}),
        ]:
            await both_ways(gateway, document, headers)
        # A runaway agent: throttled the same way whichever path counted it.
        runaway = bearer(RUNAWAY_TOKEN)
        statuses = [
            (await both_ways(gateway, {**report, "havip_id": "havip-2", "seq": n}, runaway)).status_code
            for n in range(16)
        ]
        assert statuses == [202] * 15 + [429], statuses
        metrics = (await gateway.get("/metrics")).text
    assert 'route="/v1/vrrp-events",service="gateway",status="202"' in metrics
    # i-web1: two reports, the lowercase scheme and the batch, each both ways; the runaway's 30.
    published = await read_topic(settings, topics.VRRP, until=38, timeout=5)
    assert all(isinstance(r, VrrpReported) for r in published) and len(published) == 38
    first = next(r for r in published if r.message_id == accepted.json()["message_id"])
    assert (first.havip_id, first.tenant_id, first.instance_id, first.seq) == ("havip-1", "tenant-a", "i-web1", 1)
