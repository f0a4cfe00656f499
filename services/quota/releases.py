"""What the mapping service's answer to an accepted command frees in quota's ledger.

Quota reserves when it accepts (a HAVIP's address and count, an attachment, an
EIP association) and frees a detachment or an EIP's release at once, since the
mapping tables no longer hold them either way. A HAVIP being deleted keeps its
address and its count until the mapping service has applied the delete. When
the mapping service refuses a command quota accepted, what that command
reserved is freed again, and only that: every release names the command that
made the reservation, so a redelivered answer, or one for a reservation
already freed, frees nothing more.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.messages import (
    AttachmentAccepted,
    CommandRejected,
    CommandSucceeded,
    EipAssociationAccepted,
    HaVipCreationAccepted,
    HaVipDeletionAccepted,
)
from services.quota.decisions import Decision


@dataclass(frozen=True)
class FreeDeletedHaVip:
    """The delete was applied: the HAVIP it marked stops counting and its address is free."""

    havip_id: str
    command_id: str


@dataclass(frozen=True)
class KeepHaVip:
    """The delete was refused: the HAVIP it marked is no longer being deleted."""

    command_id: str


@dataclass(frozen=True)
class FreeCreatedHaVip:
    """The create was refused: the HAVIP, if this command still holds it, and whatever was reserved on it.

    Attachments and EIPs accepted on a HAVIP the mapping service never created fail there too.
    """

    havip_id: str
    command_id: str


@dataclass(frozen=True)
class FreeAttachment:
    command_id: str


@dataclass(frozen=True)
class FreeEipAssociation:
    command_id: str


Release = FreeDeletedHaVip | KeepHaVip | FreeCreatedHaVip | FreeAttachment | FreeEipAssociation


def release_on(decision: Decision, *, applied: bool) -> Release | None:
    """What the mapping service applying (or refusing) an accepted command frees; None: nothing."""
    match decision, applied:
        case HaVipDeletionAccepted(), True:
            return FreeDeletedHaVip(decision.havip_id, decision.command_id)
        case HaVipDeletionAccepted(), False:
            return KeepHaVip(decision.command_id)
        case HaVipCreationAccepted(), False:
            return FreeCreatedHaVip(decision.havip_id, decision.command_id)
        case AttachmentAccepted(), False:
            return FreeAttachment(decision.command_id)
        case EipAssociationAccepted(), False:
            return FreeEipAssociation(decision.command_id)
        case _:
            # An applied create, attach or association keeps its reservation; detaching and
            # releasing an EIP freed theirs when accepted; quota's own rejections reserved nothing.
            return None


def mapping_outcome(result: CommandSucceeded | CommandRejected) -> bool | None:
    """Whether the mapping service applied the command (True) or refused it (False); None: settles nothing.

    Only the mapping service's outcomes settle a reservation: quota's own rejections reserved
    nothing, and a mismatch notice answers another command that reused the id.
    """
    if result.stage != "mapping":
        return None
    if isinstance(result, CommandRejected):
        return False if result.settles_command else None
    return True
