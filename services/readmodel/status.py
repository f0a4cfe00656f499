"""A HAVIP's status as its tenant is shown it: the stored status, while no operation says otherwise.

The `havips` table holds what the mapping service has applied. Until it has
applied a create, the HAVIP exists only as the tenant's Pending create and is
shown `Creating`; while a delete is Pending it is shown `Deleting`, until the
mapping service marks it `Deleted` (a Pending delete of a deleted HAVIP changes
nothing). Only a Pending operation ever makes the shown status differ from the
stored one: the SQL in `havips.py` relies on that to load a page of candidates
(stored status wanted, or some operation Pending) and leaves the decision here.
"""

from __future__ import annotations

from collections.abc import Collection

from schemas.messages import CommandType, HaVipStatus

# An operation's kind is the type of the command that started it.
CREATE: CommandType = "CreateHaVip"
DELETE: CommandType = "DeleteHaVip"


def shown_status(stored: HaVipStatus | None, pending: Collection[str]) -> HaVipStatus | None:
    """What the tenant sees, from the stored status (None: no row yet) and the kinds of its Pending operations.

    None: nothing to show (no row, and no create Pending).
    """
    if stored is None:
        return HaVipStatus.CREATING if CREATE in pending else None
    if stored is not HaVipStatus.DELETED and DELETE in pending:
        return HaVipStatus.DELETING
    return stored


def listed_statuses(asked: HaVipStatus | None) -> frozenset[HaVipStatus]:
    """The shown statuses a list answers: the one asked for, else every one but Deleted.

    Deleted HAVIPs are listed only when asked for by status, as ENS's DescribeHaVips does.
    """
    if asked is not None:
        return frozenset({asked})
    return frozenset(HaVipStatus) - {HaVipStatus.DELETED}


def may_act_on(shown: HaVipStatus | None) -> bool:
    """Whether the tenant may act on a HAVIP shown so: it is there and not deleted (a Pending create counts)."""
    return shown is not None and shown is not HaVipStatus.DELETED
