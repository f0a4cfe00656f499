"""The topic registry: every topic, its key, its message union, its layout and who may write and read it.

docs/topics.md and the JSON Schema files under `jsonschema/` are generated from this registry
(`python -m schemas.export`); the rules that hold across topics are written out in docs/topics.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter

from schemas import messages as m


@dataclass(frozen=True)
class Topic:
    name: str
    key: str
    adapter: TypeAdapter[Any]
    compacted: bool = False
    doc: str = ""
    writers: str = ""
    readers: str = ""

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
)
ACCEPTED = Topic(
    "havip.commands.accepted",
    "havip_id",
    TypeAdapter(m.AcceptedCommand),
    doc="commands quota accepted and reserved for, for the mapping service to apply",
    writers="the quota service only",
    readers="the mapping service",
)
RESULTS = Topic(
    "havip.command-results",
    "command_id",
    TypeAdapter(m.CommandResult),
    doc="exactly one terminal outcome per command, plus the refusals of a reused command_id",
    writers="the quota and mapping services only",
    readers="the gateway (operations) and the quota service (to keep or release a reservation)",
)
VRRP = Topic(
    "vrrp.events",
    "havip_id",
    TypeAdapter(m.VrrpReported),
    doc="keepalived state reports, as each instance's agent saw them",
    writers="the gateway only (agents report over HTTP so the gateway can check their token)",
    readers="the mapping service",
)
INVENTORY = Topic(
    "ens.inventory",
    "resource id",
    TypeAdapter(m.InventoryRecord),
    compacted=True,
    doc="the latest revision of each vSwitch, instance, ENI and EIP",
    writers="the compute platform (in development: `havip dev seed`)",
    readers="the quota and mapping services",
)
MAPPINGS = Topic(
    "havip.mappings",
    "havip_id",
    TypeAdapter(m.HaVipMappingChanged),
    compacted=True,
    doc="the full forwarding state per HAVIP, with a version; a newer version replaces an older one",
    writers="the mapping service only",
    readers="the forwarder",
)
DEAD_LETTERS = Topic(
    "havip.dead-letters",
    "the original record's key",
    TypeAdapter(m.DeadLettered),
    doc="what a consumer could not parse or apply, with the reason",
    writers="our consumers only",
    readers="operators",
)

ALL: tuple[Topic, ...] = (COMMANDS, ACCEPTED, RESULTS, VRRP, INVENTORY, MAPPINGS, DEAD_LETTERS)


def encode(message: m.Message) -> bytes:
    return message.model_dump_json().encode()
