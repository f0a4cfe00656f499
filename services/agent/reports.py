"""A VRRP report as the agent keeps it (`SpooledReport`, a spool file each) and sends it (`SpooledReport.wire`).

On the wire a report is `schemas.reports.VrrpEventRequest`, the model the gateway parses.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from schemas.messages import MAX_SEQ, VrrpState
from services.agent.keepalived import Kind, NameKey


class Origin(enum.StrEnum):
    # The agent saw it on the FIFO and can renew it while keepalived stays MASTER.
    FIFO = "fifo"
    # A notify script reported it once; nobody renews it.
    NOTIFY = "notify"


class SpooledReport(BaseModel):
    """One numbered report; what the spool holds, one JSON file each."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    havip_id: str
    state: VrrpState
    priority: int = Field(ge=0, le=255)
    seq: int = Field(ge=0, le=MAX_SEQ)
    reported_at: datetime
    origin: Origin
    kind: Kind
    name: str

    @property
    def key(self) -> NameKey:
        return NameKey(self.kind, self.name)

    def wire(self, lease_seconds: float | None) -> dict[str, Any]:
        """The body item `POST /v1/vrrp-events` takes for this report (a `schemas.reports.VrrpEventRequest`)."""
        return {
            "havip_id": self.havip_id,
            "state": self.state.value,
            "priority": self.priority,
            "seq": self.seq,
            "reported_at": self.reported_at.isoformat(),
            "lease_seconds": lease_seconds,
        }

    def describe(self) -> str:
        return f"havip={self.havip_id} state={self.state} priority={self.priority} seq={self.seq} origin={self.origin}"


@dataclass(frozen=True)
class ReportDraft:
    """A report before it has a number: numbering and spooling happen together, under one lock."""

    havip_id: str
    state: VrrpState
    priority: int
    reported_at: datetime
    origin: Origin
    key: NameKey

    def numbered(self, seq: int) -> SpooledReport:
        return SpooledReport(
            havip_id=self.havip_id,
            state=self.state,
            priority=self.priority,
            seq=seq,
            reported_at=self.reported_at,
            origin=self.origin,
            kind=self.key.kind,
            name=self.key.name,
        )
