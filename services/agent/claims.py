"""What keepalived last said per name, and the rules the agent derives from it.

A MASTER claim reaches the platform with a lease: it is live while renewals
keep coming. The agent may only renew, or send a spooled claim with a full
lease, while it knows the claim is still true: keepalived's latest line for
that name says MASTER and keepalived is still connected to the FIFO. When
keepalived goes away (killed or stopped) the agent knows nothing more and
stops renewing; a killed keepalived leaves the VIP in place, so it sends
nothing either, and the platform keeps the owner until someone else claims.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime

from schemas.messages import VrrpState
from services.agent.keepalived import NameKey
from services.agent.reports import Origin, ReportDraft, SpooledReport


@dataclass(frozen=True)
class LastState:
    """keepalived's last line for one name."""

    state: VrrpState
    priority: int
    # The HAVIP it was reported for, and that report's seq; None when the name is not configured.
    havip_id: str | None = None
    seq: int | None = None
    # Written by the keepalived now connected to the FIFO; false once that writer has gone.
    live: bool = True


@dataclass(frozen=True)
class Renewal:
    key: NameKey
    havip_id: str
    priority: int


def lease_for(
    report: SpooledReport, states: Mapping[NameKey, LastState], writer_connected: bool, lease: float
) -> float | None:
    """The lease a spooled report carries, decided when it is sent, not when it was written.

    A MASTER report gets the full lease only while it is still keepalived's
    latest word for that name and keepalived is still there; otherwise it is
    a claim that was true once and may no longer be (lease 0): it still
    orders the history but cannot keep the HAVIP. A notify script cannot
    renew, so its claims and every non-MASTER report carry no lease at all.
    """
    if report.state is not VrrpState.MASTER or report.origin is Origin.NOTIFY:
        return None
    last = states.get(report.key)
    if writer_connected and last is not None and last.live and last.seq == report.seq:
        return lease
    return 0.0


def renewals_due(
    states: Mapping[NameKey, LastState], targets: Mapping[NameKey, str], writer_connected: bool, spool_empty: bool
) -> list[Renewal]:
    """The claims to renew on this tick, in a stable order.

    Nothing while reports wait in the spool: a renewal overtaking them would
    be numbered after them and make the gateway skip them as old.
    """
    if not writer_connected or not spool_empty:
        return []
    return [
        Renewal(key, last.havip_id, last.priority)
        for key, last in sorted(states.items())
        if last.live
        and last.state is VrrpState.MASTER
        and last.havip_id is not None
        and targets.get(key) == last.havip_id
    ]


def writer_gone(states: Mapping[NameKey, LastState]) -> dict[NameKey, LastState]:
    """Everything keepalived said is now history: true once, not known to be true now."""
    return {key: replace(last, live=False) for key, last in states.items()}


def reconcile(
    states: Mapping[NameKey, LastState],
    targets: Mapping[NameKey, str],
    writer_connected: bool,
    now: datetime,
) -> tuple[list[ReportDraft], dict[NameKey, LastState]]:
    """The reports a new configuration calls for, and the states with the old HAVIPs forgotten.

    A HAVIP this instance holds as MASTER and no longer names gets a STOP, or
    the platform would keep sending its traffic here. A name newly pointed at
    a HAVIP, whose current state keepalived has told us, reports that state
    at once rather than waiting for keepalived's next transition.
    """
    drafts: list[ReportDraft] = []
    updated: dict[NameKey, LastState] = {}
    for key, last in sorted(states.items()):
        target = targets.get(key)
        if last.havip_id is not None and target != last.havip_id:
            if last.state is VrrpState.MASTER:
                drafts.append(ReportDraft(last.havip_id, VrrpState.STOP, last.priority, now, Origin.FIFO, key))
            last = replace(last, havip_id=None, seq=None)
        if target is not None and last.havip_id is None and last.live and writer_connected:
            drafts.append(ReportDraft(target, last.state, last.priority, now, Origin.FIFO, key))
        updated[key] = last
    return drafts, updated
