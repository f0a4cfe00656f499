"""Every message on every topic: a small typed record with an envelope.

Commands say what to do (`CreateHaVip`), events say what happened
(`AttachmentAccepted`, `VrrpReported`). Each carries `message_id`, `type`,
`occurred_at` and `schema_version`, so a consumer can de-duplicate, route and
reject what it does not understand.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    ValidationInfo,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError

SCHEMA_VERSION: Final = 1

# A VRRP report's sequence number is a signed 64-bit integer (Postgres bigint).
MAX_SEQ = 2**63 - 1
MAX_LEASE_SECONDS = 60.0
# Reports one agent request may carry (an instance holds up to 5 HAVIPs; room for their history).
MAX_REPORTS_PER_REQUEST = 16

Id = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")]
# A tenant's free text: bounded, and never a NUL (PostgreSQL text cannot hold one).
Name = Annotated[str, Field(max_length=128, pattern=r"^[^\u0000]*$")]
Description = Annotated[str, Field(max_length=256, pattern=r"^[^\u0000]*$")]

# The wire is JSON, and the exported JSON Schema is the contract outside producers check against: the
# types below make pydantic accept exactly what that schema accepts (tests/unit/test_topic_contract.py).

# RFC 3339 section 5.6 with an offset: no naive times, no space for the T, no leap second (Python's
# datetime has none), at most nanoseconds. `format: date-time` alone is only an annotation in JSON
# Schema 2020-12, so the schema carries this pattern too, and every validator enforces it.
RFC3339_DATETIME = (
    r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
    r"T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,9})?"
    r"(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
)


def _rfc3339(value: Any) -> Any:
    # Lax pydantic would also take a Unix time as a number or a string, and a space for the T.
    if isinstance(value, str) and re.fullmatch(RFC3339_DATETIME, value):
        return value
    if isinstance(value, datetime):
        return value  # built in code; AwareDatetime still refuses a naive one
    raise PydanticCustomError("rfc3339", "must be an RFC 3339 date-time with an offset, like 2025-01-01T00:00:00Z")


def _json_number(value: Any) -> Any:
    # Lax pydantic turns "7" and true into 7; JSON Schema's integer and number take neither.
    # It keeps taking 7.0 for an int, as JSON Schema does.
    if isinstance(value, bool | str):
        raise PydanticCustomError("json_number", "must be a JSON number, not a string or a boolean")
    if isinstance(value, float) and value.is_integer():
        # JSON Schema takes 1e20 for the integer it is; pydantic refuses an integral float past 64
        # bits (int_parsing_size), so the same record would pass the schema and fail the parser.
        return int(value)
    return value


Timestamp = Annotated[
    AwareDatetime,
    BeforeValidator(_rfc3339),
    WithJsonSchema({"type": "string", "format": "date-time", "pattern": RFC3339_DATETIME}),
]
Integer = Annotated[int, BeforeValidator(_json_number)]
Number = Annotated[float, Strict(), Field(allow_inf_nan=False)]

# What every record on every topic must carry. Code that builds a message may leave them to their
# defaults; a record read from a topic must spell them out (DESIGN.md, "Topics").
ENVELOPE = ("message_id", "type", "occurred_at", "schema_version")


def _envelope_is_required(schema: dict[str, Any], model: type[BaseModel]) -> None:
    properties = schema.get("properties", {})
    for name in ENVELOPE:
        properties.get(name, {}).pop("default", None)
    schema["required"] = [*ENVELOPE, *(name for name in schema.get("required", []) if name not in ENVELOPE)]


def new_message_id() -> str:
    return str(uuid.uuid4())


def utcnow() -> datetime:
    return datetime.now(UTC)


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=_envelope_is_required)

    message_id: str = Field(default_factory=new_message_id)
    occurred_at: Timestamp = Field(default_factory=utcnow)
    # A Literal takes true for 1; the number check refuses it as the schema does.
    schema_version: Annotated[Literal[1], BeforeValidator(_json_number)] = SCHEMA_VERSION

    @model_validator(mode="before")
    @classmethod
    def _envelope_on_the_wire(cls, data: Any, info: ValidationInfo) -> Any:
        if info.mode == "json" and isinstance(data, dict):
            missing = [name for name in ENVELOPE if name not in data]
            if missing:
                raise PydanticCustomError("missing", "a record must carry {fields}", {"fields": ", ".join(missing)})
        return data


# --- ens.inventory (compacted, key: resource id) -----------------------------


class InstanceStatus(StrEnum):
    PENDING = "Pending"
    STARTING = "Starting"
    RUNNING = "Running"
    STOPPING = "Stopping"
    STOPPED = "Stopped"
    DELETED = "Deleted"


class VSwitchChanged(Message):
    type: Literal["VSwitchChanged"] = "VSwitchChanged"
    vswitch_id: Id
    tenant_id: Id
    vpc_id: Id
    zone_id: Id
    cidr: str
    revision: Integer = Field(ge=0, description="Monotonic per resource; older revisions are ignored.")


# A port on a hypervisor host as its host agent names it (a tap, a vhost port, a veth end): what
# `havip observe` watches. Linux interface names are at most 15 bytes and never hold "/" or spaces.
PortName = Annotated[str, Field(min_length=1, max_length=15, pattern=r"^[A-Za-z0-9][A-Za-z0-9._@:-]*$")]
MacAddress = Annotated[str, Field(pattern=r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$", description="lower case, colons")]


class InstanceChanged(Message):
    type: Literal["InstanceChanged"] = "InstanceChanged"
    instance_id: Id
    tenant_id: Id
    vpc_id: Id
    vswitch_id: Id
    private_ip: str
    status: InstanceStatus
    host_id: Id
    revision: Integer = Field(ge=0)
    port_name: PortName | None = Field(
        default=None, description="The instance's primary port on its host; frames arriving there are its own."
    )
    mac: MacAddress | None = Field(default=None, description="The primary port's MAC address.")


class EniChanged(Message):
    type: Literal["EniChanged"] = "EniChanged"
    eni_id: Id
    instance_id: Id
    tenant_id: Id
    vswitch_id: Id
    private_ip: str
    revision: Integer = Field(ge=0)
    port_name: PortName | None = Field(
        default=None, description="The ENI's port on its instance's host; frames arriving there are the instance's."
    )
    mac: MacAddress | None = None


class EipChanged(Message):
    type: Literal["EipChanged"] = "EipChanged"
    eip_id: Id
    tenant_id: Id
    ip_address: str
    revision: Integer = Field(ge=0)


InventoryRecord = Annotated[VSwitchChanged | InstanceChanged | EniChanged | EipChanged, Field(discriminator="type")]


# --- havip.commands (key: havip_id) ------------------------------------------


class CreateHaVip(Message):
    type: Literal["CreateHaVip"] = "CreateHaVip"
    command_id: Id
    tenant_id: Id
    havip_id: Id
    vswitch_id: Id
    ip_address: str | None = None
    name: Name = ""
    description: Description = ""


class AttachHaVip(Message):
    type: Literal["AttachHaVip"] = "AttachHaVip"
    command_id: Id
    tenant_id: Id
    havip_id: Id
    target_id: Id = Field(description="An instance id or an ENI id.")


class DetachHaVip(Message):
    type: Literal["DetachHaVip"] = "DetachHaVip"
    command_id: Id
    tenant_id: Id
    havip_id: Id
    target_id: Id


class DeleteHaVip(Message):
    """Release the HAVIP; refused while instances, ENIs or an EIP are still associated."""

    type: Literal["DeleteHaVip"] = "DeleteHaVip"
    command_id: Id
    tenant_id: Id
    havip_id: Id


class AssociateEip(Message):
    """Give the HAVIP a public EIP: traffic for it follows the HAVIP's owner."""

    type: Literal["AssociateEip"] = "AssociateEip"
    command_id: Id
    tenant_id: Id
    havip_id: Id
    eip_id: Id


class UnassociateEip(Message):
    type: Literal["UnassociateEip"] = "UnassociateEip"
    command_id: Id
    tenant_id: Id
    havip_id: Id
    eip_id: Id


# A tenant's command, as code handles it; HaVipCommand is the same on the wire (tagged by `type`).
TenantCommand = CreateHaVip | AttachHaVip | DetachHaVip | DeleteHaVip | AssociateEip | UnassociateEip
HaVipCommand = Annotated[TenantCommand, Field(discriminator="type")]
CommandType = Literal["CreateHaVip", "AttachHaVip", "DetachHaVip", "DeleteHaVip", "AssociateEip", "UnassociateEip"]


# --- havip.commands.accepted (key: havip_id) ---------------------------------


class HaVipCreationAccepted(Message):
    type: Literal["HaVipCreationAccepted"] = "HaVipCreationAccepted"
    command_id: Id
    tenant_id: Id
    havip_id: Id
    vpc_id: Id
    vswitch_id: Id
    ip_address: str
    name: Name = ""
    description: Description = ""


class AttachmentAccepted(Message):
    type: Literal["AttachmentAccepted"] = "AttachmentAccepted"
    command_id: Id
    tenant_id: Id
    havip_id: Id
    target_id: Id
    instance_id: Id
    eni_id: Id | None = None


class DetachmentAccepted(Message):
    type: Literal["DetachmentAccepted"] = "DetachmentAccepted"
    command_id: Id
    tenant_id: Id
    havip_id: Id
    target_id: Id


class HaVipDeletionAccepted(Message):
    type: Literal["HaVipDeletionAccepted"] = "HaVipDeletionAccepted"
    command_id: Id
    tenant_id: Id
    havip_id: Id


class EipAssociationAccepted(Message):
    type: Literal["EipAssociationAccepted"] = "EipAssociationAccepted"
    command_id: Id
    tenant_id: Id
    havip_id: Id
    eip_id: Id
    eip_address: str = Field(description="The EIP's public IPv4 address, from quota's inventory copy.")


class EipUnassociationAccepted(Message):
    type: Literal["EipUnassociationAccepted"] = "EipUnassociationAccepted"
    command_id: Id
    tenant_id: Id
    havip_id: Id
    eip_id: Id


# What quota accepted, as code handles it; AcceptedCommand is the same on the wire.
Accepted = (
    HaVipCreationAccepted
    | AttachmentAccepted
    | DetachmentAccepted
    | HaVipDeletionAccepted
    | EipAssociationAccepted
    | EipUnassociationAccepted
)
AcceptedCommand = Annotated[Accepted, Field(discriminator="type")]


# --- havip.command-results (key: command_id) ---------------------------------


class CommandSucceeded(Message):
    type: Literal["CommandSucceeded"] = "CommandSucceeded"
    command_id: Id
    tenant_id: Id
    havip_id: Id
    command_type: CommandType
    stage: Literal["quota", "mapping"]


class CommandRejected(Message):
    """The command's one terminal outcome, except with code IdempotentParameterMismatch.

    That code answers a second, different command that reused a `command_id`:
    it says the reuse was refused and settles nothing (the first command keeps
    its own outcome).
    """

    type: Literal["CommandRejected"] = "CommandRejected"
    command_id: Id
    tenant_id: Id
    havip_id: Id
    command_type: CommandType
    stage: Literal["quota", "mapping"]
    code: str
    reason: str

    @property
    def settles_command(self) -> bool:
        return self.code != "IdempotentParameterMismatch"


CommandResult = Annotated[CommandSucceeded | CommandRejected, Field(discriminator="type")]


# What a command's one terminal outcome makes of the tenant's operation (`GET /v1/operations/{id}`):
# Pending until its CommandSucceeded or CommandRejected settles it. The gateway writes it; the
# read models read it, so it lives with the outcomes rather than in either service.
class OperationStatus(StrEnum):
    PENDING = "Pending"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


# --- vrrp.events (key: havip_id) ---------------------------------------------


class VrrpState(StrEnum):
    MASTER = "MASTER"
    BACKUP = "BACKUP"
    FAULT = "FAULT"
    STOP = "STOP"


class ReportSource(StrEnum):
    """Who saw a VRRP state: the agent next to keepalived, or the observer on the instance's host."""

    AGENT = "agent"
    OBSERVER = "observer"


def report_order(seq: int, reported_at: datetime) -> tuple[int, datetime]:
    """Where a report stands among its instance's reports: its agent numbers them, its clock breaks ties."""
    return (seq, reported_at)


class VrrpReported(Message):
    """One keepalived state transition on one instance, as its agent saw it."""

    type: Literal["VrrpReported"] = "VrrpReported"
    havip_id: Id
    tenant_id: Id
    instance_id: Id
    state: VrrpState
    priority: Integer = Field(ge=0, le=255)
    seq: Integer = Field(ge=0, le=MAX_SEQ, description="Monotonic per instance agent; orders its reports.")
    reported_at: Timestamp
    received_at: Timestamp = Field(description="Gateway clock; leases run from it.")
    lease_seconds: Number | None = Field(
        default=None,
        ge=0,
        le=MAX_LEASE_SECONDS,
        description="How long a MASTER claim stays live unless renewed; null: until the instance reports"
        " another state (a notify script, which cannot renew). 0: a claim no longer known to be live.",
    )
    source: ReportSource = Field(
        default=ReportSource.AGENT,
        description="agent: reported by `havip agent` through the gateway (seq is its number); observer: seen"
        " by `havip observe` on the instance's port (seq is the observer's clock in microseconds,"
        " received_at when the frame arrived). Reports of one source are ordered by seq, of two sources by"
        " received_at, the platform's clock.",
    )

    @property
    def lease_ends_at(self) -> datetime | None:
        """When the claim stops being live unless renewed (its lease runs from the gateway's clock);
        None without a lease."""
        return None if self.lease_seconds is None else self.received_at + timedelta(seconds=self.lease_seconds)


# Observed claims renewed in one record: the observer repeats its live claims every few seconds,
# as one record per partition, however many HAVIPs advertise on its host.
MAX_RENEWED_CLAIMS = 2000


class RenewedClaim(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    havip_id: Id
    tenant_id: Id
    instance_id: Id
    priority: Integer = Field(ge=1, le=255)
    seq: Integer = Field(ge=0, le=MAX_SEQ)
    seen_at: Timestamp = Field(description="When the observer last saw the claim advertised; its lease runs from here.")


class ObservedClaimsRenewed(Message):
    """MASTER claims an observer still sees advertised, renewed together: a heartbeat, not a state change.

    Each claim counts as the observer's MASTER report seen at its `seen_at`, live for `lease_seconds`;
    a claim that changed (a new priority, a resignation, a lapse) travels as its own VrrpReported.
    """

    type: Literal["ObservedClaimsRenewed"] = "ObservedClaimsRenewed"
    observer_id: Id = Field(description="The host whose observer saw the adverts.")
    lease_seconds: Number = Field(gt=0, le=MAX_LEASE_SECONDS)
    claims: list[RenewedClaim] = Field(min_length=1, max_length=MAX_RENEWED_CLAIMS)


VrrpRecord = Annotated[VrrpReported | ObservedClaimsRenewed, Field(discriminator="type")]


# --- havip.mappings (compacted, key: havip_id) -------------------------------


class HaVipStatus(StrEnum):
    CREATING = "Creating"
    AVAILABLE = "Available"
    IN_USE = "InUse"
    DELETING = "Deleting"
    DELETED = "Deleted"


class Route(BaseModel):
    """Where traffic for a HAVIP goes right now."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    instance_id: str
    eni_id: str | None = None
    private_ip: str
    host_id: str


class MappedAttachment(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    target_id: str
    instance_id: str
    eni_id: str | None = None


class MappedEip(BaseModel):
    """A public EIP of the HAVIP: its traffic goes where the HAVIP's goes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    eip_id: str
    ip_address: str


class HaVipMappingChanged(Message):
    """The whole forwarding state of one HAVIP; a newer version replaces an older one."""

    type: Literal["HaVipMappingChanged"] = "HaVipMappingChanged"
    havip_id: Id
    tenant_id: Id
    vpc_id: Id
    vswitch_id: Id
    ip_address: str
    eips: list[MappedEip] = Field(default_factory=list)
    status: HaVipStatus
    owner: Route | None = None
    attachments: list[MappedAttachment] = Field(default_factory=list)
    version: Integer = Field(ge=1)
    report_received_at: Timestamp | None = Field(
        default=None,
        description="When the gateway accepted the VRRP report that caused this state, if one did.",
    )


# --- havip.dead-letters (key: the original key) ------------------------------


class DeadLettered(Message):
    type: Literal["DeadLettered"] = "DeadLettered"
    source_topic: str
    partition: Integer
    offset: Integer
    consumer: str
    code: str
    reason: str
    original_key_b64: str | None = None
    original_value_b64: str
    original_value_text: str | None = Field(default=None, description="The value as UTF-8, when it is.")
