"""The mapping tables in PostgreSQL: `store.MappingStore` with the statements it takes.

Every change to a HAVIP happens under `FOR UPDATE` on its `havips` row, so
commands, VRRP reports, lease expiries and inventory changes for one HAVIP
apply one at a time, whichever worker or agent handles them. A batch of VRRP
reports locks all its HAVIPs at once, in havip_id order, as every statement
that locks several does, so two of them never wait on each other in a cycle.
Statements here only load and store; the rules are the callers'.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from ipaddress import IPv4Address

import asyncpg

from schemas.errors import ErrorCode
from schemas.messages import (
    AttachmentAccepted,
    EipAssociationAccepted,
    HaVipCreationAccepted,
    HaVipMappingChanged,
    HaVipStatus,
    InstanceStatus,
    ReportSource,
    VrrpState,
)
from services.mapping.election import Candidate, Contest, VrrpReport
from services.mapping.report_batch import HavipAfter, IncomingReport, LockedHavip, OwnerOutcome, claim_renewal
from services.mapping.store import CannotHold, CommandAnswer, HavipRow
from services.readmodel.mappings import load_mappings
from services.runtime.inventory import InventoryChange, record_inventory

_HAVIP_COLUMNS = "havip_id, tenant_id, owner_target_id, status, version, published_version"

_CANDIDATES = """
SELECT a.havip_id, a.target_id, a.instance_id, coalesce(e.private_ip, i.private_ip) - '0.0.0.0'::inet AS ip,
       coalesce(i.status, $2) AS status
  FROM attachments a LEFT JOIN instances i ON i.instance_id = a.instance_id
  LEFT JOIN enis e ON e.eni_id = a.eni_id
 WHERE a.havip_id = ANY($1::text[]) ORDER BY a.havip_id, a.target_id
"""


# A batch's whole outcome in one statement (one round trip, however much changed): the last
# report of each instance, each changed HAVIP's owner at the version the batch counted to, and
# why each owner changed. The three touch different tables, so they cannot see or undo each other.
_SAVE_BATCH = """
WITH saved_reports AS (
    INSERT INTO vrrp_reports (havip_id, instance_id, state, priority, seq, reported_at, received_at, expires_at,
                              source)
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::integer[], $5::bigint[],
                         $6::timestamptz[], $7::timestamptz[], $8::timestamptz[], $9::text[])
    ON CONFLICT (havip_id, instance_id) DO UPDATE SET state = excluded.state, priority = excluded.priority,
        seq = excluded.seq, reported_at = excluded.reported_at, received_at = excluded.received_at,
        expires_at = excluded.expires_at, source = excluded.source
), saved_owners AS (
    UPDATE havips h SET owner_target_id = o.owner_target_id, status = o.status, version = o.version,
           updated_at = now()
      FROM unnest($10::text[], $11::text[], $12::text[], $13::bigint[])
           AS o(havip_id, owner_target_id, status, version)
     WHERE h.havip_id = o.havip_id
)
INSERT INTO owner_changes (havip_id, version, previous_instance_id, instance_id, cause, detail,
                           trigger_kind, trigger_message_id, trigger_instance_id, trigger_seq, lease_expired_at)
SELECT * FROM unnest($14::text[], $15::bigint[], $16::text[], $17::text[], $18::text[], $19::text[],
                     $20::text[], $21::text[], $22::text[], $23::bigint[], $24::timestamptz[])
"""


class PostgresMappingStore:
    """The mapping tables in PostgreSQL (a `store.MappingStore`)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[PostgresMappingTransaction]:
        async with self._pool.acquire() as conn, conn.transaction():
            yield PostgresMappingTransaction(conn)

    async def states(self, havip_ids: Collection[str]) -> list[HaVipMappingChanged]:
        return await load_mappings(self._pool, sorted(havip_ids)) if havip_ids else []

    async def mark_published(self, versions: Mapping[str, int]) -> None:
        if not versions:
            return
        await self._pool.execute(
            "UPDATE havips h SET published_version = p.version"
            " FROM unnest($1::text[], $2::bigint[]) AS p(havip_id, version)"
            " WHERE h.havip_id = p.havip_id AND h.published_version < p.version",
            list(versions),
            list(versions.values()),
        )

    async def unpublished_havips(self, older_than: timedelta, limit: int) -> list[str]:
        rows = await self._pool.fetch(
            "SELECT havip_id FROM havips WHERE published_version < version AND updated_at < now() - $1::interval"
            " ORDER BY havip_id LIMIT $2",
            older_than,
            limit,
        )
        return [row["havip_id"] for row in rows]

    async def forget_published(self) -> int:
        status = await self._pool.execute("UPDATE havips SET published_version = 0 WHERE published_version > 0")
        return int(status.split()[-1])

    async def forget_renewals(self, older_than: timedelta) -> int:
        status = await self._pool.execute(
            "DELETE FROM claim_renewals WHERE taken AND received_at < now() - $1::interval", older_than
        )
        return int(status.split()[-1])

    async def lapse_candidates(self, at: datetime, after: str, limit: int) -> list[str]:
        rows = await self._pool.fetch(_LAPSE_CANDIDATES, at, after, limit)
        return [row["havip_id"] for row in rows]


# Where a lapse may be due (store.MappingStore.lapse_candidates): times and states only.
_LAPSE_CANDIDATES = """
SELECT h.havip_id
  FROM havips h
  JOIN attachments a ON a.havip_id = h.havip_id AND a.target_id = h.owner_target_id
  JOIN vrrp_reports o ON o.havip_id = h.havip_id AND o.instance_id = a.instance_id
 WHERE h.havip_id > $2 AND o.state = 'MASTER' AND o.expires_at <= $1
   AND EXISTS (
        SELECT 1 FROM vrrp_reports c
         WHERE c.havip_id = h.havip_id AND c.instance_id <> o.instance_id AND c.state = 'MASTER'
           AND (c.expires_at IS NULL OR c.expires_at > $1))
 ORDER BY h.havip_id
 LIMIT $3
"""


class PostgresMappingTransaction:
    """One transaction on one connection (a `store.MappingTransaction`)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    @asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        try:
            async with self._conn.transaction():
                yield
        except asyncpg.DataError as exc:
            raise CannotHold(str(exc)) from exc

    async def command_answer(self, command_id: str) -> CommandAnswer | None:
        row = await self._conn.fetchrow(
            "SELECT rejected_code, rejected_reason FROM applied_commands WHERE command_id = $1", command_id
        )
        if row is None:
            return None
        code = row["rejected_code"]
        return CommandAnswer(None if code is None else ErrorCode(code), row["rejected_reason"])

    async def record_command(self, command_id: str, havip_id: str, answer: CommandAnswer) -> None:
        await self._conn.execute(
            "INSERT INTO applied_commands (command_id, havip_id, rejected_code, rejected_reason)"
            " VALUES ($1, $2, $3, $4)",
            command_id,
            havip_id,
            answer.code,
            answer.reason,
        )

    async def create_havip(self, command: HaVipCreationAccepted) -> None:
        await self._conn.execute(
            "INSERT INTO havips (havip_id, tenant_id, vpc_id, vswitch_id, ip_address, name, description,"
            " status, version) VALUES ($1, $2, $3, $4, $5::inet, $6, $7, $8, 1)"
            " ON CONFLICT (havip_id) DO NOTHING",
            command.havip_id,
            command.tenant_id,
            command.vpc_id,
            command.vswitch_id,
            command.ip_address,
            command.name,
            command.description,
            HaVipStatus.AVAILABLE.value,
        )

    async def lock_havip(self, havip_id: str) -> HavipRow | None:
        row = await self._conn.fetchrow(f"SELECT {_HAVIP_COLUMNS} FROM havips WHERE havip_id = $1 FOR UPDATE", havip_id)
        return None if row is None else _havip_row(row)

    async def lock_havips(self, havip_ids: Collection[str]) -> list[LockedHavip]:
        # Sorted, so two transactions locking several HAVIPs take them in the same order.
        rows = await self._conn.fetch(
            f"SELECT {_HAVIP_COLUMNS} FROM havips WHERE havip_id = ANY($1::text[]) ORDER BY havip_id FOR UPDATE",
            sorted(havip_ids),
        )
        contests = await self._load_contests({row["havip_id"]: row["owner_target_id"] for row in rows})
        return [
            LockedHavip(
                havip_id=row["havip_id"],
                tenant_id=row["tenant_id"],
                version=row["version"],
                published_version=row["published_version"],
                contest=contests[row["havip_id"]],
            )
            for row in rows
        ]

    async def lock_havips_of_instance(self, instance_id: str) -> list[HavipRow]:
        rows = await self._conn.fetch(
            f"SELECT {_HAVIP_COLUMNS} FROM havips"
            " WHERE havip_id IN (SELECT havip_id FROM attachments WHERE instance_id = $1)"
            " ORDER BY havip_id FOR UPDATE",
            instance_id,
        )
        return [_havip_row(row) for row in rows]

    async def load_contest(self, havip_id: str, owner_target_id: str | None) -> Contest:
        return (await self._load_contests({havip_id: owner_target_id}))[havip_id]

    async def _load_contests(self, owners: Mapping[str, str | None]) -> dict[str, Contest]:
        """The contest of each HAVIP in `owners` (havip_id -> its owner_target_id): two queries for all."""
        ids = list(owners)
        candidates: dict[str, list[Candidate]] = {havip_id: [] for havip_id in ids}
        for row in await self._conn.fetch(_CANDIDATES, ids, InstanceStatus.DELETED.value):
            candidates[row["havip_id"]].append(
                Candidate(
                    target_id=row["target_id"],
                    instance_id=row["instance_id"],
                    # As a number: the tables hold IPv4 only (the gateway parsed it), and building an
                    # address from its integer is a tenth of parsing its text, per candidate per batch.
                    primary_ip=IPv4Address(row["ip"] or 0),
                    instance_status=InstanceStatus(row["status"]),
                )
            )
        reports: dict[str, dict[str, VrrpReport]] = {havip_id: {} for havip_id in ids}
        for row in await self._conn.fetch("SELECT * FROM vrrp_reports WHERE havip_id = ANY($1::text[])", ids):
            reports[row["havip_id"]][row["instance_id"]] = _report(row)
        return {
            havip_id: Contest(
                owner_target_id=owner_target_id, candidates=tuple(candidates[havip_id]), reports=reports[havip_id]
            )
            for havip_id, owner_target_id in owners.items()
        }

    async def instance_status(self, instance_id: str) -> InstanceStatus | None:
        status = await self._conn.fetchval("SELECT status FROM instances WHERE instance_id = $1", instance_id)
        return None if status is None else InstanceStatus(status)

    async def add_attachment(self, command: AttachmentAccepted) -> None:
        await self._conn.execute(
            "INSERT INTO attachments (havip_id, target_id, instance_id, eni_id) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT DO NOTHING",
            command.havip_id,
            command.target_id,
            command.instance_id,
            command.eni_id,
        )

    async def remove_attachment(self, havip_id: str, target_id: str) -> None:
        await self._conn.execute("DELETE FROM attachments WHERE havip_id = $1 AND target_id = $2", havip_id, target_id)

    async def eip_holder(self, eip_id: str) -> str | None:
        holder: str | None = await self._conn.fetchval("SELECT havip_id FROM havip_eips WHERE eip_id = $1", eip_id)
        return holder

    async def associate_eip(self, command: EipAssociationAccepted) -> None:
        await self._conn.execute(
            "INSERT INTO havip_eips (eip_id, havip_id, ip_address) VALUES ($1, $2, $3::inet)"
            " ON CONFLICT (eip_id) DO NOTHING",
            command.eip_id,
            command.havip_id,
            command.eip_address,
        )

    async def unassociate_eip(self, havip_id: str, eip_id: str) -> None:
        await self._conn.execute("DELETE FROM havip_eips WHERE eip_id = $1 AND havip_id = $2", eip_id, havip_id)

    async def dependants(self, havip_id: str) -> tuple[int, int]:
        row = await self._conn.fetchrow(
            "SELECT (SELECT count(*) FROM attachments WHERE havip_id = $1) AS attachments,"
            " (SELECT count(*) FROM havip_eips WHERE havip_id = $1) AS eips",
            havip_id,
        )
        return row["attachments"], row["eips"]

    async def mark_deleted(self, havip_id: str) -> None:
        await self._conn.execute(
            "UPDATE havips SET status = $2, owner_target_id = NULL, version = version + 1, updated_at = now()"
            " WHERE havip_id = $1",
            havip_id,
            HaVipStatus.DELETED.value,
        )

    async def save_reports(self, reports: Mapping[tuple[str, str], VrrpReport]) -> None:
        await self.save_batch(reports, {}, [])

    async def save_owner(self, havip_id: str, owner_target_id: str | None, status: HaVipStatus) -> int:
        version: int = await self._conn.fetchval(
            "UPDATE havips SET owner_target_id = $2, status = $3, version = version + 1, updated_at = now()"
            " WHERE havip_id = $1 RETURNING version",
            havip_id,
            owner_target_id,
            status.value,
        )
        return version

    async def save_batch(
        self,
        reports: Mapping[tuple[str, str], VrrpReport],
        havips: Mapping[str, HavipAfter],
        outcomes: Sequence[OwnerOutcome],
    ) -> None:
        # One statement (see _SAVE_BATCH); none when the batch decided nothing.
        if reports or havips or outcomes:
            await self._conn.fetchval(
                _SAVE_BATCH, *_report_columns(reports), *_owner_columns(havips), *_change_columns(outcomes)
            )

    async def take_renewals(self, limit: int, havip_ids: Collection[str] | None = None) -> list[IncomingReport]:
        rows = (
            await self._conn.fetch(_TAKE_RENEWALS, limit)
            if havip_ids is None
            else await self._conn.fetch(_TAKE_RENEWALS_OF, sorted(havip_ids))
        )
        return [
            claim_renewal(
                row["havip_id"],
                row["tenant_id"],
                row["message_id"],
                row["instance_id"],
                priority=row["priority"],
                seq=row["seq"],
                reported_at=row["reported_at"],
                received_at=row["received_at"],
                lease_seconds=row["lease_seconds"],
            )
            for row in rows
        ]

    async def load_reports(self, claims: Collection[tuple[str, str]]) -> dict[tuple[str, str], VrrpReport]:
        rows = await self._conn.fetch(
            "SELECT r.* FROM vrrp_reports r JOIN unnest($1::text[], $2::text[]) AS c(havip_id, instance_id)"
            " ON r.havip_id = c.havip_id AND r.instance_id = c.instance_id",
            [havip_id for havip_id, _ in claims],
            [instance_id for _, instance_id in claims],
        )
        return {(row["havip_id"], row["instance_id"]): _report(row) for row in rows}

    async def extend_claims(
        self, renewed: Mapping[tuple[str, str], VrrpReport], judged: Mapping[tuple[str, str], VrrpReport]
    ) -> set[tuple[str, str]]:
        if not renewed:
            return set()
        keys, reports = list(renewed), list(renewed.values())
        rows = await self._conn.fetch(
            _EXTEND,
            [havip_id for havip_id, _ in keys],
            [instance_id for _, instance_id in keys],
            [report.seq for report in reports],
            [report.reported_at for report in reports],
            [report.received_at for report in reports],
            [report.expires_at for report in reports],
            [report.source.value for report in reports],
            [judged[key].seq for key in keys],
            [judged[key].reported_at for key in keys],
        )
        return {(row["havip_id"], row["instance_id"]) for row in rows}

    async def record_inventory(self, change: InventoryChange) -> bool:
        return await record_inventory(self._conn, change, "mapping")

    async def states(self, havip_ids: Collection[str]) -> list[HaVipMappingChanged]:
        # On this connection: what is about to be committed, without another connection and its
        # round trips on the failover path.
        return await load_mappings(self._conn, sorted(havip_ids)) if havip_ids else []


def _havip_row(row: asyncpg.Record) -> HavipRow:
    return HavipRow(
        havip_id=row["havip_id"],
        tenant_id=row["tenant_id"],
        owner_target_id=row["owner_target_id"],
        status=HaVipStatus(row["status"]),
        version=row["version"],
        published_version=row["published_version"],
    )


def _report_columns(reports: Mapping[tuple[str, str], VrrpReport]) -> tuple[list[object], ...]:
    rows = list(reports.items())
    return (
        [havip_id for (havip_id, _), _ in rows],
        [instance_id for (_, instance_id), _ in rows],
        [r.state.value for _, r in rows],
        [r.priority for _, r in rows],
        [r.seq for _, r in rows],
        [r.reported_at for _, r in rows],
        [r.received_at for _, r in rows],
        [r.expires_at for _, r in rows],
        [r.source.value for _, r in rows],
    )


def _owner_columns(havips: Mapping[str, HavipAfter]) -> tuple[list[object], ...]:
    return (
        list(havips),
        [after.owner_target_id for after in havips.values()],
        [after.status.value for after in havips.values()],
        [after.version for after in havips.values()],
    )


def _change_columns(outcomes: Sequence[OwnerOutcome]) -> tuple[list[object], ...]:
    changes = [o.change for o in outcomes]
    triggers = [o.trigger for o in outcomes]
    return (
        [o.havip_id for o in outcomes],
        [o.version for o in outcomes],
        [c.previous.instance_id if c.previous else None for c in changes],
        [c.owner.instance_id if c.owner else None for c in changes],
        [c.cause.value for c in changes],
        [c.detail for c in changes],
        [t.kind.value for t in triggers],
        [t.message_id for t in triggers],
        [t.instance_id for t in triggers],
        [t.seq for t in triggers],
        [t.lease_expired_at for t in triggers],
    )


# The renewals gateways left since the last look, marked taken in the same transaction that applies
# them (a worker that dies first leaves them for the next look). SKIP LOCKED: two workers share them.
_RENEWAL_COLUMNS = (
    "r.havip_id, r.instance_id, r.tenant_id, r.message_id, r.priority, r.seq, r.reported_at, r.received_at,"
    " r.lease_seconds"
)
_TAKE_RENEWALS = f"""
UPDATE claim_renewals r SET taken = true
  FROM (SELECT havip_id, instance_id FROM claim_renewals WHERE NOT taken LIMIT $1 FOR UPDATE SKIP LOCKED) t
 WHERE r.havip_id = t.havip_id AND r.instance_id = t.instance_id
RETURNING {_RENEWAL_COLUMNS}
"""
_TAKE_RENEWALS_OF = f"""
UPDATE claim_renewals r SET taken = true
  FROM (SELECT havip_id, instance_id FROM claim_renewals WHERE havip_id = ANY($1::text[]) AND NOT taken
           FOR UPDATE SKIP LOCKED) t
 WHERE r.havip_id = t.havip_id AND r.instance_id = t.instance_id
RETURNING {_RENEWAL_COLUMNS}
"""


# Each renewal replaces the report it was judged against, only if that is still the stored one
# (its seq and clock): a report applied meanwhile by anyone sends the renewal the long way.
_EXTEND = """
UPDATE vrrp_reports r SET seq = n.seq, reported_at = n.reported_at, received_at = n.received_at,
       expires_at = n.expires_at, source = n.source
  FROM unnest($1::text[], $2::text[], $3::bigint[], $4::timestamptz[], $5::timestamptz[], $6::timestamptz[],
              $7::text[], $8::bigint[], $9::timestamptz[])
       AS n(havip_id, instance_id, seq, reported_at, received_at, expires_at, source, judged_seq,
            judged_reported_at)
 WHERE r.havip_id = n.havip_id AND r.instance_id = n.instance_id
   AND r.seq = n.judged_seq AND r.reported_at = n.judged_reported_at
RETURNING r.havip_id, r.instance_id
"""


def _report(row: asyncpg.Record) -> VrrpReport:
    return VrrpReport(
        instance_id=row["instance_id"],
        state=VrrpState(row["state"]),
        priority=row["priority"],
        seq=row["seq"],
        reported_at=row["reported_at"],
        received_at=row["received_at"],
        expires_at=row["expires_at"],
        source=ReportSource(row["source"]),
    )


async def restamp_versions(conn: asyncpg.Connection) -> int:
    """Move every HAVIP's version past anything published before this database run; publish them all.

    The database may have lost commits whose versions reached havip.mappings, and a forwarder
    keeps only newer versions: without this it would hold a lost state for good. The server's
    clock in microseconds is above any version published before the restart (a version grows
    by one per change, and was itself either small or such a clock reading, earlier); a HAVIP
    that changes faster than once a microsecond keeps counting from its own. The lease sweep
    then publishes every HAVIP again, at its new version.
    """
    status = await conn.execute(
        "UPDATE havips SET version = greatest(version + 1, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint)"
    )
    return int(status.split()[-1])
