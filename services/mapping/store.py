"""What the mapping service needs of its tables, and nothing of how they are kept.

`MappingStore` is the seam between the rules (election, report_batch, commands) and
PostgreSQL: `services.mapping.postgres_store` keeps the tables in PostgreSQL, and the tests keep
them in memory (tests/mapping_fakes.py) to run the handlers at memory speed. One contract
suite (tests/contract/mapping_store.py) runs against both, so they cannot drift.

A `MappingTransaction` is one unit of work: everything it changes commits together or not
at all. Locking a HAVIP holds it until the transaction ends, so commands, reports, lease
expiries and inventory changes of one HAVIP apply one at a time, whichever worker has them.
Loading and storing only: every decision is made by the caller, from what it loaded.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from schemas.errors import ErrorCode
from schemas.messages import (
    AttachmentAccepted,
    EipAssociationAccepted,
    HaVipCreationAccepted,
    HaVipMappingChanged,
    HaVipStatus,
    InstanceStatus,
)
from services.mapping.election import Contest, VrrpReport
from services.mapping.report_batch import HavipAfter, IncomingReport, LockedHavip, OwnerOutcome
from services.runtime.inventory import InventoryChange


class CannotHold(Exception):
    """The tables cannot hold this data (a number out of range, a text too long): it never will."""


@dataclass(frozen=True)
class CommandAnswer:
    """How an accepted command was applied: None code means it applied."""

    code: ErrorCode | None = None
    reason: str | None = None


@dataclass(frozen=True)
class HavipRow:
    """A HAVIP's own row, as locked: its owner, status and versions."""

    havip_id: str
    tenant_id: str
    owner_target_id: str | None
    status: HaVipStatus
    version: int
    published_version: int


class MappingTransaction(Protocol):
    """One unit of work on the mapping tables (see the module's docstring)."""

    def savepoint(self) -> AbstractAsyncContextManager[None]:
        """A nested unit: an exception inside undoes only what was done inside; CannotHold for data
        the tables refuse."""
        ...

    async def command_answer(self, command_id: str) -> CommandAnswer | None:
        """The answer given to this command before, or None if it was never applied."""
        ...

    async def record_command(self, command_id: str, havip_id: str, answer: CommandAnswer) -> None: ...

    async def create_havip(self, command: HaVipCreationAccepted) -> None:
        """Add the HAVIP (Available, version 1) unless it exists: a redelivery changes nothing."""
        ...

    async def lock_havip(self, havip_id: str) -> HavipRow | None: ...

    async def lock_havips(self, havip_ids: Collection[str]) -> list[LockedHavip]:
        """Lock these HAVIPs (in havip_id order, as every lock of several) and load their contests."""
        ...

    async def lock_havips_of_instance(self, instance_id: str) -> list[HavipRow]: ...

    async def load_contest(self, havip_id: str, owner_target_id: str | None) -> Contest: ...

    async def instance_status(self, instance_id: str) -> InstanceStatus | None: ...

    async def add_attachment(self, command: AttachmentAccepted) -> None: ...

    async def remove_attachment(self, havip_id: str, target_id: str) -> None: ...

    async def eip_holder(self, eip_id: str) -> str | None:
        """The HAVIP this EIP is associated with, if any."""
        ...

    async def associate_eip(self, command: EipAssociationAccepted) -> None: ...

    async def unassociate_eip(self, havip_id: str, eip_id: str) -> None: ...

    async def dependants(self, havip_id: str) -> tuple[int, int]:
        """How many attachments and EIPs the HAVIP has."""
        ...

    async def mark_deleted(self, havip_id: str) -> None:
        """Deleted, with no owner, at a new version; the row stays for its history."""
        ...

    async def save_reports(self, reports: Mapping[tuple[str, str], VrrpReport]) -> None: ...

    async def save_owner(self, havip_id: str, owner_target_id: str | None, status: HaVipStatus) -> int:
        """Store the owner and status at the HAVIP's next version; that version."""
        ...

    async def save_batch(
        self,
        reports: Mapping[tuple[str, str], VrrpReport],
        havips: Mapping[str, HavipAfter],
        outcomes: Sequence[OwnerOutcome],
    ) -> None:
        """Store what a batch of reports decided: last reports, owners at their versions, why each changed."""
        ...

    async def take_renewals(self, limit: int, havip_ids: Collection[str] | None = None) -> list[IncomingReport]:
        """Renewals gateways left and nobody took, marked taken: at most `limit`, or those of these HAVIPs.

        Rows another transaction is taking are skipped: it applies them.
        """
        ...

    async def load_reports(self, claims: Collection[tuple[str, str]]) -> dict[tuple[str, str], VrrpReport]: ...

    async def extend_claims(
        self, renewed: Mapping[tuple[str, str], VrrpReport], judged: Mapping[tuple[str, str], VrrpReport]
    ) -> set[tuple[str, str]]:
        """Store each renewed report's place and lease where the stored report is still the one it was
        judged against (its seq and clock); the claims stored."""
        ...

    async def record_inventory(self, change: InventoryChange) -> bool:
        """Keep the change if it is newer than the copy holds; True when it was."""
        ...

    async def states(self, havip_ids: Collection[str]) -> list[HaVipMappingChanged]:
        """The full state of these HAVIPs, as this transaction sees it (about to be committed)."""
        ...


class MappingStore(Protocol):
    def transaction(self) -> AbstractAsyncContextManager[MappingTransaction]: ...

    async def states(self, havip_ids: Collection[str]) -> list[HaVipMappingChanged]:
        """The committed full state of these HAVIPs."""
        ...

    async def mark_published(self, versions: Mapping[str, int]) -> None:
        """Record the version of each HAVIP now on `havip.mappings` (never lowered)."""
        ...

    async def unpublished_havips(self, older_than: timedelta, limit: int) -> list[str]:
        """HAVIPs changed more than `older_than` ago and not published at their version."""
        ...

    async def forget_published(self) -> int:
        """The mappings topic was lost: every HAVIP counts as unpublished; how many."""
        ...

    async def forget_renewals(self, older_than: timedelta) -> int:
        """Drop taken renewals last received before `older_than` ago; how many."""
        ...

    async def lapse_candidates(self, at: datetime, after: str, limit: int) -> list[str]:
        """HAVIPs past `after` (in havip_id order) where an owner's lapse may be due at `at`.

        Only what times and states say: the owner's last report is a MASTER claim whose lease
        ended by `at`, and another instance's report of the HAVIP is a MASTER claim not over at
        `at`. Whether the owner must change (who may own: attached, running) is
        `election.lapse_due`'s to decide, under the HAVIP's lock.
        """
        ...
