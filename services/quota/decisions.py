"""Quota's decisions as stored and sent: one per command id, replayed for a redelivered command."""

from __future__ import annotations

import hashlib
import json

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
