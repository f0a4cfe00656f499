"""What status a tenant is shown for its HAVIP (services/readmodel/status.py)."""

from __future__ import annotations

import pytest

from schemas.messages import HaVipStatus
from services.readmodel.status import CREATE, DELETE, listed_statuses, may_act_on, shown_status

STORED = [HaVipStatus.AVAILABLE, HaVipStatus.IN_USE, HaVipStatus.DELETED]


def test_a_create_not_applied_yet_is_creating() -> None:
    assert shown_status(None, [CREATE]) is HaVipStatus.CREATING


def test_no_row_and_no_pending_create_is_nothing() -> None:
    assert shown_status(None, []) is None
    # An attach or a delete alone does not make a HAVIP exist.
    assert shown_status(None, ["AttachHaVip", DELETE]) is None


@pytest.mark.parametrize("stored", [HaVipStatus.AVAILABLE, HaVipStatus.IN_USE])
def test_a_pending_delete_shows_deleting(stored: HaVipStatus) -> None:
    assert shown_status(stored, [DELETE]) is HaVipStatus.DELETING
    assert shown_status(stored, ["AttachHaVip", DELETE]) is HaVipStatus.DELETING


def test_a_deleted_havip_stays_deleted_while_its_delete_is_pending() -> None:
    assert shown_status(HaVipStatus.DELETED, [DELETE]) is HaVipStatus.DELETED


def test_an_applied_create_shows_its_stored_status() -> None:
    # The row is there while the create's operation is still Pending (its result not read yet).
    assert shown_status(HaVipStatus.AVAILABLE, [CREATE]) is HaVipStatus.AVAILABLE


@pytest.mark.parametrize("stored", STORED)
def test_without_a_pending_operation_the_stored_status_is_shown(stored: HaVipStatus) -> None:
    # The list query relies on this: it narrows a status filter to "stored status wanted, or an
    # operation Pending" (services/readmodel/havips.py), which is right only while it holds.
    assert shown_status(stored, []) is stored
    assert shown_status(stored, ["AttachHaVip", "AssociateEip"]) is stored


def test_lists_leave_deleted_havips_out_unless_asked_for() -> None:
    assert HaVipStatus.DELETED not in listed_statuses(None)
    assert listed_statuses(None) == frozenset(HaVipStatus) - {HaVipStatus.DELETED}
    assert listed_statuses(HaVipStatus.DELETED) == {HaVipStatus.DELETED}
    assert listed_statuses(HaVipStatus.CREATING) == {HaVipStatus.CREATING}


def test_a_tenant_may_act_on_what_is_there_and_not_deleted() -> None:
    assert may_act_on(HaVipStatus.CREATING)
    assert may_act_on(HaVipStatus.DELETING)
    assert may_act_on(HaVipStatus.IN_USE)
    assert not may_act_on(HaVipStatus.DELETED)
    assert not may_act_on(None)
