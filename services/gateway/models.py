"""What the REST API accepts and answers, as pydantic models.

Request models forbid unknown fields: a typo in a field name must be a 400,
not a silently ignored option.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.ipv4 import IPV4_PATTERN, parse_ipv4
from schemas.messages import (
    MAX_REPORTS_PER_REQUEST,
    HaVipStatus,
    Id,
    OperationStatus,
    ReportSource,
    VrrpState,
)
from schemas.reports import VrrpEventRequest

# Free text is stored in PostgreSQL, whose text and jsonb types cannot hold U+0000.
NO_NUL_PATTERN = r"^[^\u0000]*$"


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CreateHaVipRequest(_Request):
    vswitch_id: Id
    # The pattern documents the syntax; check_havip_address enforces it with the tenant's error codes
    # (InvalidIpAddress.Malformed / .Version) rather than a generic InvalidParameter.
    ip_address: str | None = Field(
        default=None,
        description="IPv4 in the vSwitch's CIDR; quota picks the lowest free one when absent.",
        json_schema_extra={"pattern": IPV4_PATTERN},
    )
    # No NUL: PostgreSQL text and jsonb cannot hold one (the insert would fail with a 500).
    name: str = Field(default="", max_length=128, pattern=NO_NUL_PATTERN)
    description: str = Field(default="", max_length=256, pattern=NO_NUL_PATTERN)


class EipRequest(_Request):
    eip_id: Id


class AssociationRequest(_Request):
    # The document states what _exactly_one_target enforces: one of the two, as a string (the other absent or null).
    model_config = ConfigDict(
        json_schema_extra={
            "oneOf": [
                {"required": [target], "properties": {target: {"type": "string"}, other: {"type": "null"}}}
                for target, other in (("instance_id", "eni_id"), ("eni_id", "instance_id"))
            ]
        }
    )

    instance_id: Id | None = None
    eni_id: Id | None = None

    @model_validator(mode="after")
    def _exactly_one_target(self) -> AssociationRequest:
        if (self.instance_id is None) == (self.eni_id is None):
            raise ValueError("give exactly one of instance_id or eni_id")
        return self

    @property
    def target_id(self) -> str:
        return self.instance_id or self.eni_id or ""


# A sequence number may run ahead of the gateway's clock (agents derive it from
# theirs, in microseconds) but not by more than this: a value far in the future
# would make every later report from that instance look stale for as long.
SEQ_AHEAD_LIMIT = timedelta(days=1)


def seq_too_far_ahead(seq: int, now: datetime) -> bool:
    """The rule moves with the clock, so no static schema can state it: it is a refusal, not a 400."""
    return seq > int((now + SEQ_AHEAD_LIMIT).timestamp() * 1_000_000)


class VrrpEventBatch(_Request):
    """Several reports in one request (an instance holds up to 5 HAVIPs), applied in order."""

    reports: list[VrrpEventRequest] = Field(min_length=1, max_length=MAX_REPORTS_PER_REQUEST)


def check_havip_address(value: str) -> str:
    """The canonical form of a HAVIP address, or the error a tenant sees.

    Only syntax is checked here; whether the address lies in the vSwitch and
    is free is quota's decision, made against its ledger.
    """
    return str(parse_ipv4(value))


# --- answers -----------------------------------------------------------------


class OperationError(BaseModel):
    code: str
    message: str


class OperationView(BaseModel):
    operation_id: str
    kind: str
    havip_id: str
    status: OperationStatus
    error: OperationError | None = None
    created_at: datetime
    updated_at: datetime


class VrrpReportView(BaseModel):
    state: VrrpState
    priority: int
    seq: int
    reported_at: datetime
    source: ReportSource = Field(
        default=ReportSource.AGENT,
        description="Who saw it: the agent in the instance, or the observer on its host (VRRP adverts, ARP).",
    )


class AttachmentView(BaseModel):
    target_id: str
    instance_id: str
    eni_id: str | None = None
    vrrp: VrrpReportView | None = Field(default=None, description="The instance's last VRRP report, if any.")


class EipView(BaseModel):
    eip_id: str
    ip_address: str


class OwnerView(BaseModel):
    instance_id: str
    eni_id: str | None = None
    private_ip: str
    host_id: str


class HaVipView(BaseModel):
    havip_id: str
    vpc_id: str | None = None
    vswitch_id: str
    ip_address: str | None = Field(description="Absent while Creating when quota picks the address.")
    name: str
    description: str
    status: HaVipStatus
    eips: list[EipView] = Field(
        default_factory=list, description="Public EIPs: their traffic goes where the HAVIP's goes."
    )
    owner: OwnerView | None = Field(default=None, description="Who receives the traffic now; null: nobody.")
    attachments: list[AttachmentView] = Field(default_factory=list)
    version: int | None = Field(default=None, description="Absent until the mapping service has applied it.")
    created_at: datetime


class HaVipAccepted(BaseModel):
    havip: HaVipView
    operation: OperationView


class OperationAccepted(BaseModel):
    operation: OperationView


class HaVipPage(BaseModel):
    havips: list[HaVipView]
    next_page_token: str | None = None


class VrrpEventAccepted(BaseModel):
    message_id: str


class VrrpEventOutcome(BaseModel):
    havip_id: str
    seq: int
    status: Literal["Accepted", "Refused"]
    message_id: str | None = Field(default=None, description="When Accepted.")
    code: str | None = Field(default=None, description="When Refused: why it can never count.")
    message: str | None = None


class VrrpEventResults(BaseModel):
    results: list[VrrpEventOutcome] = Field(description="One per report, in the order sent.")


class OwnerChangeView(BaseModel):
    version: int = Field(description="The HAVIP's version that this change produced.")
    previous_instance_id: str | None
    instance_id: str | None = Field(description="The new owner; null when traffic has nowhere to go.")
    cause: str
    detail: str
    trigger: dict[str, object] = Field(
        description="What caused it: kind (VrrpReport, LeaseExpiry, Command, Inventory) and its references."
    )
    changed_at: datetime


class OwnerHistoryPage(BaseModel):
    changes: list[OwnerChangeView] = Field(description="Newest first.")
    next_page_token: str | None = None
