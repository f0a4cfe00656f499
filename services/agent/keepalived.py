"""keepalived's notify lines, and what each state means to the platform.

keepalived (2.2.x) writes one line per event to its notify FIFO:
`INSTANCE "VI_1" MASTER 100` or `GROUP "VG_1" BACKUP 0`, newline-terminated.
A notify script receives the same four fields as arguments, without quotes.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from schemas.messages import VrrpState


class Kind(enum.StrEnum):
    INSTANCE = "INSTANCE"
    GROUP = "GROUP"


# keepalived's states, and the platform state each one asserts.
PLATFORM_STATE: dict[str, VrrpState] = {
    "MASTER": VrrpState.MASTER,
    # A master that heard a lower-priority advert stays master (it is keepalived's
    # hook for re-asserting a VIP after a split brain), so the claim stands.
    "MASTER_RX_LOWER_PRI": VrrpState.MASTER,
    # Priority changed while in that state (notify_priority_changes): the state holds.
    "MASTER_PRIORITY": VrrpState.MASTER,
    "BACKUP": VrrpState.BACKUP,
    "BACKUP_PRIORITY": VrrpState.BACKUP,
    "FAULT": VrrpState.FAULT,
    "STOP": VrrpState.STOP,
    # The instance was removed by a reload: it no longer holds anything.
    "DELETED": VrrpState.STOP,
}

# A name is whatever keepalived accepts in `vrrp_instance NAME {`: no blanks, no quotes.
_NAME = r"[^\s\"]+"
_LINE = re.compile(rf'^(INSTANCE|GROUP) "({_NAME})" ([A-Z_]+) (\d{{1,3}})$')


@dataclass(frozen=True)
class KeepalivedEvent:
    """One state report from keepalived, as it wrote it."""

    kind: Kind
    name: str
    raw_state: str
    priority: int

    @property
    def state(self) -> VrrpState:
        return PLATFORM_STATE[self.raw_state]

    @property
    def key(self) -> NameKey:
        return NameKey(self.kind, self.name)

    def __str__(self) -> str:
        return f'{self.kind} "{self.name}" {self.raw_state} {self.priority}'


@dataclass(frozen=True, order=True)
class NameKey:
    """A vrrp_instance or a vrrp_sync_group: the two live in separate namespaces."""

    kind: Kind
    name: str

    def __str__(self) -> str:
        return f'{self.kind} "{self.name}"'


def parse_line(text: str) -> KeepalivedEvent | None:
    """The event a FIFO line reports, or None for anything else (blank, malformed, unknown state)."""
    match = _LINE.match(text.strip())
    if match is None:
        return None
    kind, name, raw_state, priority = match.groups()
    return event_from_fields(kind, name, raw_state, priority)


def event_from_fields(kind: str, name: str, raw_state: str, priority: str) -> KeepalivedEvent | None:
    """The event a notify script's four arguments report, or None when they are not one."""
    if kind not in Kind.__members__ or raw_state not in PLATFORM_STATE:
        return None
    if not re.fullmatch(_NAME, name) or not priority.isdigit():
        return None
    value = int(priority)
    if value > 255:
        return None
    return KeepalivedEvent(Kind(kind), name, raw_state, value)
