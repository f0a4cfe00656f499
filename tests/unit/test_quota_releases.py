"""What the mapping service's answer frees in quota's ledger, and which answers settle at all."""

from __future__ import annotations

from typing import Literal

from schemas.errors import ErrorCode
from schemas.messages import (
    AttachmentAccepted,
    CommandRejected,
    CommandSucceeded,
    CreateHaVip,
    DetachmentAccepted,
    EipAssociationAccepted,
    EipUnassociationAccepted,
    HaVipCreationAccepted,
    HaVipDeletionAccepted,
)
from services.quota import releases
from services.quota.decisions import Decision, StoredDecision, command_digest, rejection, replayed

T = "tenant-1"
CREATED = HaVipCreationAccepted(
    command_id="c", tenant_id=T, havip_id="h", vpc_id="vpc", vswitch_id="vsw", ip_address="10.0.0.2"
)
ATTACHED = AttachmentAccepted(command_id="a", tenant_id=T, havip_id="h", target_id="i", instance_id="i")
DETACHED = DetachmentAccepted(command_id="d", tenant_id=T, havip_id="h", target_id="i")
DELETING = HaVipDeletionAccepted(command_id="x", tenant_id=T, havip_id="h")
ASSOCIATED = EipAssociationAccepted(command_id="e", tenant_id=T, havip_id="h", eip_id="eip", eip_address="203.0.113.1")
UNASSOCIATED = EipUnassociationAccepted(command_id="u", tenant_id=T, havip_id="h", eip_id="eip")


def test_a_refusal_frees_what_the_command_reserved() -> None:
    def refused(decision: Decision) -> releases.Release | None:
        return releases.release_on(decision, applied=False)

    assert refused(CREATED) == releases.FreeCreatedHaVip("h", "c")
    assert refused(ATTACHED) == releases.FreeAttachment("a")
    assert refused(ASSOCIATED) == releases.FreeEipAssociation("e")
    assert refused(DELETING) == releases.KeepHaVip("x")
    assert refused(DETACHED) is None and refused(UNASSOCIATED) is None


def test_an_applied_command_keeps_its_reservation_but_a_delete_frees_the_havip() -> None:
    def applied(decision: Decision) -> releases.Release | None:
        return releases.release_on(decision, applied=True)

    assert applied(DELETING) == releases.FreeDeletedHaVip("h", "x")
    assert [applied(d) for d in (CREATED, ATTACHED, ASSOCIATED, DETACHED, UNASSOCIATED)] == [None] * 5
    quota_said_no = rejection(
        CreateHaVip(command_id="c", tenant_id=T, havip_id="h", vswitch_id="vsw"), ErrorCode.QUOTA_HAVIP, "no"
    )
    assert releases.release_on(quota_said_no, applied=False) is None


def result(stage: Literal["quota", "mapping"], code: str | None) -> CommandSucceeded | CommandRejected:
    if code is None:
        return CommandSucceeded(command_id="a", tenant_id=T, havip_id="h", command_type="AttachHaVip", stage=stage)
    return CommandRejected(
        command_id="a", tenant_id=T, havip_id="h", command_type="AttachHaVip", stage=stage, code=code, reason="r"
    )


def test_only_the_mapping_services_outcomes_settle() -> None:
    assert releases.mapping_outcome(result("mapping", None)) is True
    assert releases.mapping_outcome(result("mapping", ErrorCode.APPLY_FAILED)) is False
    assert releases.mapping_outcome(result("mapping", ErrorCode.IDEMPOTENT_MISMATCH)) is None
    assert releases.mapping_outcome(result("quota", ErrorCode.QUOTA_HAVIP)) is None
    assert releases.mapping_outcome(result("quota", None)) is None


def test_a_command_id_answers_its_own_command_again_and_refuses_another() -> None:
    create = CreateHaVip(command_id="c", tenant_id=T, havip_id="h", vswitch_id="vsw")
    other = create.model_copy(update={"havip_id": "h2"})
    digest = command_digest(create)
    assert command_digest(create.model_copy(update={"message_id": "another-envelope"})) == digest
    assert replayed(create, digest, StoredDecision(CREATED, digest)) is CREATED
    assert replayed(create, digest, StoredDecision(CREATED, None)) is CREATED  # stored before digests were kept
    mismatch = replayed(other, command_digest(other), StoredDecision(CREATED, digest))
    assert isinstance(mismatch, CommandRejected) and mismatch.code == ErrorCode.IDEMPOTENT_MISMATCH
    assert not mismatch.settles_command
