"""The topic registry: every topic, its key, its message union and its layout."""

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

    def parse(self, value: bytes) -> Any:
        """Validate one record's value; raises pydantic.ValidationError."""
        return self.adapter.validate_json(value)


COMMANDS = Topic("havip.commands", "havip_id", TypeAdapter(m.HaVipCommand), doc="gateway → quota")
ACCEPTED = Topic("havip.commands.accepted", "havip_id", TypeAdapter(m.AcceptedCommand), doc="quota → mapping")
RESULTS = Topic(
    "havip.command-results",
    "command_id",
    TypeAdapter(m.CommandResult),
    doc="quota, mapping → gateway; exactly one terminal outcome per command",
)
VRRP = Topic("vrrp.events", "havip_id", TypeAdapter(m.VrrpReported), doc="gateway → mapping")
INVENTORY = Topic(
    "ens.inventory",
    "resource id",
    TypeAdapter(m.InventoryRecord),
    compacted=True,
    doc="compute platform → quota, mapping",
)
MAPPINGS = Topic(
    "havip.mappings",
    "havip_id",
    TypeAdapter(m.HaVipMappingChanged),
    compacted=True,
    doc="mapping → forwarder; full state per HAVIP with a version",
)
DEAD_LETTERS = Topic("havip.dead-letters", "original key", TypeAdapter(m.DeadLettered), doc="any consumer → operators")

ALL: tuple[Topic, ...] = (COMMANDS, ACCEPTED, RESULTS, VRRP, INVENTORY, MAPPINGS, DEAD_LETTERS)


def encode(message: m.Message) -> bytes:
    return message.model_dump_json().encode()
