"""The agent endpoint: VRRP reports from the instance an agent token speaks for.

This is the failover path: the agent directory (in memory) says whether the
reporter is attached, then one bounded publish per report goes to
`vrrp.events`. Whether a report changes the owner is the mapping service's
decision. Only what the directory cannot confirm (an attachment too new for
it, a refusal) is asked of the database, one query for the whole batch;
while the database is away those are decided from the directory when it
knows the HAVIP, and answer 503 otherwise. A report the directory accepts
is published whether or not the database answers: mapping applies it once
the database is back.
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends

from schemas import topics
from schemas.errors import ErrorCode, HaVipError
from schemas.messages import VrrpReported, utcnow
from schemas.reports import VrrpEventRequest
from services.gateway.auth import Agent
from services.gateway.context import GatewayContext, gateway_context
from services.gateway.models import (
    VrrpEventAccepted,
    VrrpEventBatch,
    VrrpEventOutcome,
    VrrpEventResults,
    seq_too_far_ahead,
)
from services.gateway.observability import AGENT_DIRECTORY_ANSWERS, VRRP_REPORTS_ACCEPTED
from services.readmodel.reporters import ReporterStanding, reporter_standing
from services.runtime.http import DATABASE_RETRY_AFTER_SECONDS
from services.runtime.openapi import ErrorBody
from services.runtime.transient import BROKER_UNAVAILABLE, DATABASE_UNAVAILABLE

log = logging.getLogger(__name__)

Context = Annotated[GatewayContext, Depends(gateway_context)]

router = APIRouter(prefix="/v1", responses={status: {"model": ErrorBody} for status in (400, 401, 403, 404, 409, 503)})


@router.post(
    "/vrrp-events",
    status_code=202,
    response_model=VrrpEventResults | VrrpEventAccepted,
    tags=["agents"],
    responses={409: {"model": ErrorBody, "description": "The instance is not attached to the HAVIP."}},
)
async def report_vrrp(
    body: VrrpEventBatch | VrrpEventRequest, principal: Agent, context: Context
) -> VrrpEventResults | VrrpEventAccepted:
    """One report, or up to 16 in order (`{"reports": [...]}`), from the instance the agent token speaks for.

    The batch form answers one outcome per report: a report that can never
    count (the instance is not attached, or the HAVIP is unknown) is Refused
    with its code, and the agent drops it; the others are published in order.
    The single form answers 202, or 409 `VrrpReport.NotAttached` / 404.
    """
    assert principal.instance_id is not None
    reports = body.reports if isinstance(body, VrrpEventBatch) else [body]
    standing = await _standing(context, principal.tenant_id, principal.instance_id, [r.havip_id for r in reports])
    outcomes: list[VrrpEventOutcome] = []
    for request in reports:
        refusal = refusal_of(standing[request.havip_id], request, principal.instance_id)
        if refusal is not None:
            if not isinstance(body, VrrpEventBatch):
                raise refusal
            log.warning(
                "VRRP report refused havip=%s instance=%s code=%s",
                request.havip_id,
                principal.instance_id,
                refusal.code,
            )
            outcomes.append(
                VrrpEventOutcome(
                    havip_id=request.havip_id,
                    seq=request.seq,
                    status="Refused",
                    code=refusal.code,
                    message=refusal.message,
                )
            )
            continue
        message_id = await publish_report(context, principal.tenant_id, principal.instance_id, request)
        outcomes.append(
            VrrpEventOutcome(havip_id=request.havip_id, seq=request.seq, status="Accepted", message_id=message_id)
        )
    if not isinstance(body, VrrpEventBatch):
        return VrrpEventAccepted(message_id=outcomes[0].message_id or "")
    return VrrpEventResults(results=outcomes)


async def _standing(
    context: GatewayContext, tenant_id: str, instance_id: str, havip_ids: list[str]
) -> dict[str, ReporterStanding]:
    held = context.directory.standing(tenant_id, instance_id, havip_ids)
    if held is not None and all(answer is ReporterStanding.ATTACHED for answer in held.values()):
        AGENT_DIRECTORY_ANSWERS.labels("attachment", "directory").inc()
        return held
    # A refusal is confirmed with the database: the attachment may be newer than the directory.
    # While the directory is not following, the database is away: do not wait for it to fail.
    if held is None or context.directory.following:
        read_at_epoch = context.directory.epoch
        try:
            standing = await reporter_standing(context.pool, tenant_id, instance_id, havip_ids)
        except DATABASE_UNAVAILABLE:
            if held is None:
                raise
        else:
            AGENT_DIRECTORY_ANSWERS.labels("attachment", "database").inc()
            for havip_id, answer in standing.items():
                if answer is ReporterStanding.ATTACHED:
                    context.directory.learn_attachment(tenant_id, instance_id, havip_id, read_at_epoch=read_at_epoch)
            return standing
    assert held is not None
    # A HAVIP the directory does not know as the tenant's may have been created a moment ago
    # (or be another tenant's: the same answer either way, so nothing is confirmed).
    if any(answer is ReporterStanding.UNKNOWN_HAVIP for answer in held.values()):
        AGENT_DIRECTORY_ANSWERS.labels("attachment", "undecided").inc()
        raise HaVipError(
            ErrorCode.SERVICE_UNAVAILABLE,
            "the database is unavailable and this HAVIP is not known here yet; retry shortly",
            retry_after=DATABASE_RETRY_AFTER_SECONDS,
        )
    AGENT_DIRECTORY_ANSWERS.labels("attachment", "directory").inc()
    return held


def refusal_of(standing: ReporterStanding, request: VrrpEventRequest, instance_id: str) -> HaVipError | None:
    havip_id = request.havip_id
    if standing is ReporterStanding.UNKNOWN_HAVIP:
        return HaVipError(ErrorCode.NOT_FOUND_HAVIP, f"HAVIP {havip_id} does not exist")
    if standing is ReporterStanding.NOT_ATTACHED:
        return HaVipError(
            ErrorCode.REPORTER_NOT_ATTACHED,
            f"{instance_id} is not attached to {havip_id}; only attached instances may own it",
        )
    if seq_too_far_ahead(request.seq, utcnow()):
        # Accepted, it would make every later report of this instance look stale for as long.
        return HaVipError(
            ErrorCode.SEQ_AHEAD,
            "seq is more than a day ahead of the gateway's clock in microseconds since the epoch;"
            " use a counter or the current time in microseconds",
        )
    return None


async def publish_report(context: GatewayContext, tenant_id: str, instance_id: str, body: VrrpEventRequest) -> str:
    now = utcnow()
    report = VrrpReported(
        havip_id=body.havip_id,
        tenant_id=tenant_id,
        instance_id=instance_id,
        state=body.state,
        priority=body.priority,
        seq=body.seq,
        reported_at=body.reported_at or now,
        received_at=now,
        lease_seconds=body.lease_seconds,
    )
    if context.claims.is_renewal(report):
        # A heartbeat: kept out of the log, so no state change ever waits behind one (renewals.py).
        await context.renewals.carry(report)
    else:
        context.broker.require_reachable()
        try:
            await context.broker.publish(context.vrrp_topic, body.havip_id.encode(), topics.encode(report))
        except BROKER_UNAVAILABLE as exc:
            log.warning("VRRP report not published havip=%s instance=%s error=%r", body.havip_id, instance_id, exc)
            raise HaVipError(
                ErrorCode.SERVICE_UNAVAILABLE,
                "the report could not be queued; retry",
                retry_after=context.broker.retry_after,
            ) from exc
        VRRP_REPORTS_ACCEPTED.labels(body.state.value).inc()
    context.claims.saw(report)
    return report.message_id
