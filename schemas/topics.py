"""The topic registry: every topic, its key, its message union, its layout and who may write and read it.

docs/topics.md and the JSON Schema files under `jsonschema/` are generated from this registry
(`python -m schemas.export`); the rules that hold across topics are written out in docs/topics.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter

from schemas import messages as m

# Outside platforms: a compute platform's inventory feed, and tenants' tools producing commands.
PLATFORM = "platform"
# People reading what went wrong; no service of ours reads it.
OPERATORS = "operators"
SERVICES = ("gateway", "quota", "mapping", "forwarder")
# `havip observe` on every hypervisor host: a platform component with its own principal.
OBSERVER = "observer"


@dataclass(frozen=True)
class Topic:
    name: str
    key: str
    adapter: TypeAdapter[Any]
    compacted: bool = False
    doc: str = ""
    writers: str = ""
    readers: str = ""
    # Who may write and read it, by principal: a service, `PLATFORM` or `OPERATORS`. The Kafka
    # ACLs of deploy/k8s (one KafkaUser per principal) are checked against these.
    producers: tuple[str, ...] = ()
    consumers: tuple[str, ...] = ()

    def parse(self, value: bytes) -> Any:
        """Validate one record's value; raises pydantic.ValidationError."""
        return self.adapter.validate_json(value)


COMMANDS = Topic(
    "havip.commands",
    "havip_id",
    TypeAdapter(m.HaVipCommand),
    doc="what a tenant asked for; quota decides each command in the order of its partition",
    writers="the gateway and outside platforms (any client with produce rights)",
    readers="the quota service",
    producers=("gateway", PLATFORM),
    consumers=("quota",),
)
ACCEPTED = Topic(
    "havip.commands.accepted",
    "havip_id",
    TypeAdapter(m.AcceptedCommand),
    doc="commands quota accepted and reserved for, for the mapping service to apply",
    writers="the quota service only",
    readers="the mapping service",
    producers=("quota",),
    consumers=("mapping",),
)
RESULTS = Topic(
    "havip.command-results",
    "command_id",
    TypeAdapter(m.CommandResult),
    doc="exactly one terminal outcome per command, plus the refusals of a reused command_id",
    writers="the quota and mapping services only",
    readers="the gateway (operations) and the quota service (to keep or release a reservation)",
    producers=("quota", "mapping"),
    consumers=("gateway", "quota", PLATFORM),
)
VRRP = Topic(
    "vrrp.events",
    "havip_id",
    TypeAdapter(m.VrrpRecord),
    doc="keepalived state reports, as each instance's agent or its host's observer saw them; an agent's"
    " lease renewals (a live claim repeated) travel apart, through PostgreSQL, unless it is away; an"
    " observer's are coalesced, one record per partition every few seconds",
    writers="the gateway (agents report over HTTP so the gateway can check their token) and the observers"
    " (`havip observe`, one per host, trusted for the ports of their host)",
    readers="the mapping service",
    producers=("gateway", OBSERVER),
    consumers=("mapping",),
)
INVENTORY = Topic(
    "ens.inventory",
    "resource id",
    TypeAdapter(m.InventoryRecord),
    compacted=True,
    doc="the latest revision of each vSwitch, instance, ENI and EIP",
    writers="the compute platform (in development: `havip dev seed`)",
    readers="the quota and mapping services, and the observers (which port is whose)",
    producers=(PLATFORM,),
    consumers=("quota", "mapping", OBSERVER),
)
MAPPINGS = Topic(
    "havip.mappings",
    "havip_id",
    TypeAdapter(m.HaVipMappingChanged),
    compacted=True,
    doc="the full forwarding state per HAVIP, with a version; a newer version replaces an older one",
    writers="the mapping service only",
    readers="the forwarder, and the observers (which address is a HAVIP, attached to whom)",
    producers=("mapping",),
    consumers=("forwarder", OBSERVER),
)
DEAD_LETTERS = Topic(
    "havip.dead-letters",
    "the original record's key",
    TypeAdapter(m.DeadLettered),
    doc="what a consumer could not parse or apply, with the reason; and the VRRP adverts and gratuitous ARPs"
    " an observer saw from an instance that may not claim the address (code UnexpectedClaimant)",
    writers="our consumers only",
    readers="operators",
    producers=(*SERVICES, OBSERVER),
    consumers=(OPERATORS,),
)

ALL: tuple[Topic, ...] = (COMMANDS, ACCEPTED, RESULTS, VRRP, INVENTORY, MAPPINGS, DEAD_LETTERS)


def encode(message: m.Message) -> bytes:
    return message.model_dump_json().encode()
