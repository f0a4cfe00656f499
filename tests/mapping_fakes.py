"""The mapping tables in memory: `services.mapping.store.MappingStore` without PostgreSQL.

For unit tests of the mapping handlers at memory speed. It keeps what the
PostgreSQL tables keep and answers as they do; tests/contract/mapping_store.py
runs one suite against both, so a difference is a failing test, not a surprise.
Transactions run one at a time (a lock over the whole store: every HAVIP's row lock
at once) and roll back by restoring a copy taken when they began.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from ipaddress import IPv4Address, ip_address

from schemas.messages import (
    AttachmentAccepted,
    EipAssociationAccepted,
    EipChanged,
    EniChanged,
    HaVipCreationAccepted,
    HaVipMappingChanged,
    HaVipStatus,
    InstanceChanged,
    InstanceStatus,
    MappedAttachment,
    MappedEip,
    Route,
    VrrpReported,
    VrrpState,
    VSwitchChanged,
    utcnow,
)
from services.mapping.election import Candidate, Contest, VrrpReport
from services.mapping.report_batch import HavipAfter, IncomingReport, LockedHavip, OwnerOutcome, claim_renewal
from services.mapping.store import CannotHold, CommandAnswer, HavipRow
from services.runtime.inventory import InventoryChange


@dataclass
class StoredHavip:
    havip_id: str
    tenant_id: str
    vpc_id: str
    vswitch_id: str
    ip_address: str
    name: str
    description: str
    status: HaVipStatus
    owner_target_id: str | None
    version: int
    published_version: int
    updated_at: datetime


@dataclass(frozen=True)
class StoredRenewal:
    """A row of claim_renewals: the newest renewal of one claim a gateway left."""

    havip_id: str
    instance_id: str
    tenant_id: str
    message_id: str
    priority: int
    seq: int
    reported_at: datetime
    received_at: datetime
    lease_seconds: float
    taken: bool = False


@dataclass
class MappingTablesInMemory:
    """Every table the mapping service keeps, as plain values."""

    havips: dict[str, StoredHavip] = field(default_factory=dict)
    attachments: dict[tuple[str, str], AttachmentAccepted] = field(default_factory=dict)  # (havip, target)
    havip_eips: dict[str, tuple[str, str]] = field(default_factory=dict)  # eip -> (havip, address)
    reports: dict[tuple[str, str], VrrpReport] = field(default_factory=dict)  # (havip, instance)
    owner_changes: list[OwnerOutcome] = field(default_factory=list)
    commands: dict[str, tuple[str, CommandAnswer]] = field(default_factory=dict)
    renewals: dict[tuple[str, str], StoredRenewal] = field(default_factory=dict)
    inventory: dict[tuple[str, str], InventoryChange] = field(default_factory=dict)  # (kind, id)


def _inet(text: str) -> str:
    try:
        return str(ip_address(text))
    except ValueError as exc:
        raise CannotHold(f'invalid input syntax for type inet: "{text}"') from exc


def _inventory_key(change: InventoryChange) -> tuple[str, str]:
    match change:
        case VSwitchChanged():
            return ("vswitch", change.vswitch_id)
        case InstanceChanged():
            return ("instance", change.instance_id)
        case EniChanged():
            return ("eni", change.eni_id)
        case EipChanged():
            return ("eip", change.eip_id)


class MemoryMappingTransaction:
    """One transaction on the tables in memory (a `store.MappingTransaction`)."""

    def __init__(self, store: MemoryMappingStore) -> None:
        self._store = store

    @property
    def _t(self) -> MappingTablesInMemory:
        return self._store.tables

    @asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        before = copy.deepcopy(self._t)
        try:
            yield
        except BaseException:
            self._store.tables = before
            raise

    async def command_answer(self, command_id: str) -> CommandAnswer | None:
        found = self._t.commands.get(command_id)
        return None if found is None else found[1]

    async def record_command(self, command_id: str, havip_id: str, answer: CommandAnswer) -> None:
        if command_id in self._t.commands:
            raise KeyError(f"duplicate key: command {command_id} is already recorded")
        self._t.commands[command_id] = (havip_id, answer)

    async def create_havip(self, command: HaVipCreationAccepted) -> None:
        address = _inet(command.ip_address)
        if command.havip_id in self._t.havips:
            return
        self._t.havips[command.havip_id] = StoredHavip(
            havip_id=command.havip_id,
            tenant_id=command.tenant_id,
            vpc_id=command.vpc_id,
            vswitch_id=command.vswitch_id,
            ip_address=address,
            name=command.name,
            description=command.description,
            status=HaVipStatus.AVAILABLE,
            owner_target_id=None,
            version=1,
            published_version=0,
            updated_at=self._store.now(),
        )

    async def lock_havip(self, havip_id: str) -> HavipRow | None:
        havip = self._t.havips.get(havip_id)
        return None if havip is None else _row(havip)

    async def lock_havips(self, havip_ids: Collection[str]) -> list[LockedHavip]:
        found = [self._t.havips[h] for h in sorted(havip_ids) if h in self._t.havips]
        return [
            LockedHavip(
                havip_id=h.havip_id,
                tenant_id=h.tenant_id,
                version=h.version,
                published_version=h.published_version,
                contest=await self.load_contest(h.havip_id, h.owner_target_id),
            )
            for h in found
        ]

    async def lock_havips_of_instance(self, instance_id: str) -> list[HavipRow]:
        havip_ids = {a.havip_id for a in self._t.attachments.values() if a.instance_id == instance_id}
        return [_row(self._t.havips[h]) for h in sorted(havip_ids)]

    async def load_contest(self, havip_id: str, owner_target_id: str | None) -> Contest:
        candidates = []
        for (h, target_id), attachment in sorted(self._t.attachments.items()):
            if h != havip_id:
                continue
            instance, ip = self._store.placed(attachment)
            status = instance.status if instance is not None else InstanceStatus.DELETED
            candidates.append(
                Candidate(
                    target_id=target_id,
                    instance_id=attachment.instance_id,
                    primary_ip=IPv4Address(ip or 0),
                    instance_status=status,
                )
            )
        reports = {i: r for (h, i), r in self._t.reports.items() if h == havip_id}
        return Contest(owner_target_id=owner_target_id, candidates=tuple(candidates), reports=reports)

    async def instance_status(self, instance_id: str) -> InstanceStatus | None:
        instance = self._t.inventory.get(("instance", instance_id))
        return instance.status if isinstance(instance, InstanceChanged) else None

    async def add_attachment(self, command: AttachmentAccepted) -> None:
        self._t.attachments.setdefault((command.havip_id, command.target_id), command)

    async def remove_attachment(self, havip_id: str, target_id: str) -> None:
        self._t.attachments.pop((havip_id, target_id), None)

    async def eip_holder(self, eip_id: str) -> str | None:
        held = self._t.havip_eips.get(eip_id)
        return None if held is None else held[0]

    async def associate_eip(self, command: EipAssociationAccepted) -> None:
        address = _inet(command.eip_address)
        self._t.havip_eips.setdefault(command.eip_id, (command.havip_id, address))

    async def unassociate_eip(self, havip_id: str, eip_id: str) -> None:
        if self._t.havip_eips.get(eip_id, ("", ""))[0] == havip_id:
            del self._t.havip_eips[eip_id]

    async def dependants(self, havip_id: str) -> tuple[int, int]:
        attachments = sum(1 for h, _ in self._t.attachments if h == havip_id)
        eips = sum(1 for h, _ in self._t.havip_eips.values() if h == havip_id)
        return attachments, eips

    async def mark_deleted(self, havip_id: str) -> None:
        havip = self._t.havips.get(havip_id)
        if havip is not None:
            havip.status, havip.owner_target_id = HaVipStatus.DELETED, None
            self._changed(havip)

    async def save_reports(self, reports: Mapping[tuple[str, str], VrrpReport]) -> None:
        await self.save_batch(reports, {}, [])

    async def save_owner(self, havip_id: str, owner_target_id: str | None, status: HaVipStatus) -> int:
        havip = self._t.havips[havip_id]
        havip.owner_target_id, havip.status = owner_target_id, status
        self._changed(havip)
        return havip.version

    async def save_batch(
        self,
        reports: Mapping[tuple[str, str], VrrpReport],
        havips: Mapping[str, HavipAfter],
        outcomes: Sequence[OwnerOutcome],
    ) -> None:
        for key in reports:
            if key[0] not in self._t.havips:
                raise KeyError(f"foreign key: no HAVIP {key[0]} for a report")
        self._t.reports.update(reports)
        for havip_id, after in havips.items():
            havip = self._t.havips[havip_id]
            havip.owner_target_id, havip.status, havip.version = after.owner_target_id, after.status, after.version
            havip.updated_at = self._store.now()
        self._t.owner_changes.extend(outcomes)

    async def take_renewals(self, limit: int, havip_ids: Collection[str] | None = None) -> list[IncomingReport]:
        waiting = [
            key for key, row in self._t.renewals.items() if not row.taken and (havip_ids is None or key[0] in havip_ids)
        ]
        if havip_ids is None:
            waiting = waiting[:limit]
        taken = []
        for key in waiting:
            row = self._t.renewals[key] = replace(self._t.renewals[key], taken=True)
            taken.append(
                claim_renewal(
                    row.havip_id,
                    row.tenant_id,
                    row.message_id,
                    row.instance_id,
                    priority=row.priority,
                    seq=row.seq,
                    reported_at=row.reported_at,
                    received_at=row.received_at,
                    lease_seconds=row.lease_seconds,
                )
            )
        return taken

    async def load_reports(self, claims: Collection[tuple[str, str]]) -> dict[tuple[str, str], VrrpReport]:
        return {key: self._t.reports[key] for key in claims if key in self._t.reports}

    async def extend_claims(
        self, renewed: Mapping[tuple[str, str], VrrpReport], judged: Mapping[tuple[str, str], VrrpReport]
    ) -> set[tuple[str, str]]:
        extended = set()
        for key, report in renewed.items():
            now, then = self._t.reports.get(key), judged[key]
            if now is None or (now.seq, now.reported_at) != (then.seq, then.reported_at):
                continue
            # Only the claim's place and lease move; its state and priority stay as stored.
            self._t.reports[key] = replace(
                now,
                seq=report.seq,
                reported_at=report.reported_at,
                received_at=report.received_at,
                expires_at=report.expires_at,
                source=report.source,
            )
            extended.add(key)
        return extended

    async def record_inventory(self, change: InventoryChange) -> bool:
        key = _inventory_key(change)
        held = self._t.inventory.get(key)
        if held is not None and held.revision >= change.revision:
            return False
        self._t.inventory[key] = change
        return True

    async def states(self, havip_ids: Collection[str]) -> list[HaVipMappingChanged]:
        return self._store.states_now(havip_ids)

    def _changed(self, havip: StoredHavip) -> None:
        havip.version += 1
        havip.updated_at = self._store.now()


def _row(havip: StoredHavip) -> HavipRow:
    return HavipRow(
        havip_id=havip.havip_id,
        tenant_id=havip.tenant_id,
        owner_target_id=havip.owner_target_id,
        status=havip.status,
        version=havip.version,
        published_version=havip.published_version,
    )


class MemoryMappingStore:
    """The mapping tables in memory (a `store.MappingStore`); `now` is the database's clock."""

    def __init__(self, now: Callable[[], datetime] = utcnow) -> None:
        self.tables = MappingTablesInMemory()
        self.now = now
        self._lock = asyncio.Lock()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[MemoryMappingTransaction]:
        async with self._lock:
            before = copy.deepcopy(self.tables)
            try:
                yield MemoryMappingTransaction(self)
            except BaseException:
                self.tables = before
                raise

    def leave_renewal(self, reported: VrrpReported) -> None:
        """What a gateway does with a renewal (services.gateway.renewals.write_renewals): keep the
        newest of each claim, not taken yet."""
        assert reported.lease_seconds is not None, "a renewal has a lease"
        key = (reported.havip_id, reported.instance_id)
        held = self.tables.renewals.get(key)
        if held is None or held.seq < reported.seq:
            self.tables.renewals[key] = StoredRenewal(
                havip_id=reported.havip_id,
                instance_id=reported.instance_id,
                tenant_id=reported.tenant_id,
                message_id=reported.message_id,
                priority=reported.priority,
                seq=reported.seq,
                reported_at=reported.reported_at,
                received_at=reported.received_at,
                lease_seconds=reported.lease_seconds,
            )

    def placed(self, attachment: AttachmentAccepted) -> tuple[InstanceChanged | None, str | None]:
        """The attached instance as the inventory copy holds it, and the address traffic goes to
        (the ENI's when attached by ENI, else the instance's; None while the copy knows neither)."""
        instance = self.tables.inventory.get(("instance", attachment.instance_id))
        eni = self.tables.inventory.get(("eni", attachment.eni_id)) if attachment.eni_id else None
        held = instance if isinstance(instance, InstanceChanged) else None
        if isinstance(eni, EniChanged):
            return held, eni.private_ip
        return held, held.private_ip if held else None

    async def states(self, havip_ids: Collection[str]) -> list[HaVipMappingChanged]:
        return self.states_now(havip_ids)

    def states_now(self, havip_ids: Collection[str]) -> list[HaVipMappingChanged]:
        t = self.tables
        found = []
        for havip_id in sorted(havip_ids):
            havip = t.havips.get(havip_id)
            if havip is None:
                continue
            owner = None
            attachment = t.attachments.get((havip_id, havip.owner_target_id or ""))
            if attachment is not None:
                instance, ip = self.placed(attachment)
                if ip is not None and instance is not None:
                    owner = Route(
                        instance_id=attachment.instance_id,
                        eni_id=attachment.eni_id,
                        private_ip=str(ip_address(ip)),
                        host_id=instance.host_id,
                    )
            found.append(
                HaVipMappingChanged(
                    havip_id=havip_id,
                    tenant_id=havip.tenant_id,
                    vpc_id=havip.vpc_id,
                    vswitch_id=havip.vswitch_id,
                    ip_address=havip.ip_address,
                    eips=[
                        MappedEip(eip_id=eip_id, ip_address=address)
                        for eip_id, (h, address) in sorted(t.havip_eips.items())
                        if h == havip_id
                    ],
                    status=havip.status,
                    owner=owner,
                    attachments=[
                        MappedAttachment(target_id=a.target_id, instance_id=a.instance_id, eni_id=a.eni_id)
                        for (h, _), a in sorted(t.attachments.items())
                        if h == havip_id
                    ],
                    version=havip.version,
                )
            )
        return found

    async def mark_published(self, versions: Mapping[str, int]) -> None:
        for havip_id, version in versions.items():
            havip = self.tables.havips.get(havip_id)
            if havip is not None and havip.published_version < version:
                havip.published_version = version

    async def unpublished_havips(self, older_than: timedelta, limit: int) -> list[str]:
        cutoff = self.now() - older_than
        return sorted(
            h.havip_id for h in self.tables.havips.values() if h.published_version < h.version and h.updated_at < cutoff
        )[:limit]

    async def forget_published(self) -> int:
        published = [h for h in self.tables.havips.values() if h.published_version > 0]
        for havip in published:
            havip.published_version = 0
        return len(published)

    async def forget_renewals(self, older_than: timedelta) -> int:
        cutoff = self.now() - older_than
        old = [key for key, row in self.tables.renewals.items() if row.taken and row.received_at < cutoff]
        for key in old:
            del self.tables.renewals[key]
        return len(old)

    async def lapse_candidates(self, at: datetime, after: str, limit: int) -> list[str]:
        found = []
        for havip_id in sorted(h for h in self.tables.havips if h > after):
            havip = self.tables.havips[havip_id]
            attachment = self.tables.attachments.get((havip_id, havip.owner_target_id or ""))
            if attachment is None:
                continue
            own = self.tables.reports.get((havip_id, attachment.instance_id))
            if own is None or own.state is not VrrpState.MASTER or own.expires_at is None or own.expires_at > at:
                continue
            if any(
                h == havip_id
                and i != attachment.instance_id
                and r.state is VrrpState.MASTER
                and (r.expires_at is None or r.expires_at > at)
                for (h, i), r in self.tables.reports.items()
            ):
                found.append(havip_id)
        return found[:limit]
