"""Quota's decisions as stored and sent: one per command id, replayed for a redelivered command."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from schemas.errors import ErrorCode
from schemas.messages import (
    Accepted,
    AttachmentAccepted,
    CommandRejected,
    DetachmentAccepted,
    EipAssociationAccepted,
    EipUnassociationAccepted,
    HaVipCreationAccepted,
    HaVipDeletionAccepted,
    TenantCommand,
)

Command = TenantCommand
Decision = Accepted | CommandRejected


def command_digest(command: Command) -> str:
    """What makes two commands the same command: every field but the envelope's own id and time."""
    body = command.model_dump(mode="json", exclude={"message_id", "occurred_at"})
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def rejection(command: Command, code: ErrorCode, reason: str) -> CommandRejected:
    return CommandRejected(
        command_id=command.command_id,
        tenant_id=command.tenant_id,
        havip_id=command.havip_id,
        command_type=command.type,
        stage="quota",
        code=code,
        reason=reason,
    )


@dataclass(frozen=True)
class StoredDecision:
    decision: Decision
    digest: str | None  # None: stored before digests were kept


def replayed(command: Command, digest: str, earlier: StoredDecision) -> Decision:
    """The answer to a command id already decided.

    The same command again (a redelivery, or a producer's retry) gets the stored decision;
    another command reusing the id is refused with IdempotentParameterMismatch, which is not
    stored and settles nothing.
    """
    if earlier.digest not in (None, digest):
        return rejection(
            command,
            ErrorCode.IDEMPOTENT_MISMATCH,
            f"command_id {command.command_id} was already used by a different command",
        )
    return earlier.decision


def decision_to_json(decision: Decision) -> str:
    return json.dumps({"type": decision.type, "message": decision.model_dump(mode="json")})


_DECISION_TYPES: dict[str, type[Decision]] = {
    cls.model_fields["type"].default: cls
    for cls in (
        HaVipCreationAccepted,
        AttachmentAccepted,
        DetachmentAccepted,
        HaVipDeletionAccepted,
        EipAssociationAccepted,
        EipUnassociationAccepted,
        CommandRejected,
    )
}


def decision_from_json(text: str) -> Decision:
    stored = json.loads(text)
    return _DECISION_TYPES[stored["type"]].model_validate(stored["message"])
