"""The published state of a HAVIP, read from the mapping tables (a read model).

The mapping service publishes it to `havip.mappings` after every change; a
forwarder reads all of it once at start as its snapshot. The same joins for
both, so the two can never disagree on what a HAVIP's state is; the
forwarder's read (`stream_route_rows`) leaves out what routes do not need.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import asyncpg

from schemas.messages import HaVipMappingChanged, HaVipStatus, MappedAttachment, MappedEip, Route

_HAVIPS = """
SELECT h.havip_id, h.tenant_id, h.vpc_id, h.vswitch_id, host(h.ip_address) AS ip_address,
       h.status, h.version,
       a.instance_id AS owner_instance_id, a.eni_id AS owner_eni_id,
       host(coalesce(e.private_ip, i.private_ip)) AS owner_private_ip, i.host_id AS owner_host_id
  FROM havips h
  LEFT JOIN attachments a ON a.havip_id = h.havip_id AND a.target_id = h.owner_target_id
  LEFT JOIN instances i ON i.instance_id = a.instance_id
  LEFT JOIN enis e ON e.eni_id = a.eni_id
"""

_EIPS = """
SELECT havip_id, eip_id, host(ip_address) AS ip_address FROM havip_eips h
"""

_ATTACHMENTS = """
SELECT havip_id, target_id, instance_id, eni_id FROM attachments h
"""
# Some HAVIPs (a publish, a page of the API) or all of them (a check): two plans, each with its
# index. One statement for both (`$1 IS NULL OR ...`) is planned anew at every call, and its
# generic plan could use no index at all.
_SOME = " WHERE h.havip_id = ANY($1::text[])"


def _query(select: str, ids: list[str] | None, order: str = "") -> tuple[object, ...]:
    """The statement and its argument, for some HAVIPs or all (each query above names its table h)."""
    if ids is None:
        return (select + order,)
    return (select + _SOME + order, ids)


async def load_mappings(
    conn: asyncpg.Connection | asyncpg.Pool, havip_ids: Sequence[str] | None = None
) -> list[HaVipMappingChanged]:
    if isinstance(conn, asyncpg.Pool):
        async with conn.acquire() as held:  # one connection for the three reads, not three
            return await load_mappings(held, havip_ids)
    ids = list(havip_ids) if havip_ids is not None else None
    attachments: dict[str, list[MappedAttachment]] = {}
    for row in await conn.fetch(*_query(_ATTACHMENTS, ids, " ORDER BY havip_id, target_id")):
        attachments.setdefault(row["havip_id"], []).append(
            MappedAttachment(target_id=row["target_id"], instance_id=row["instance_id"], eni_id=row["eni_id"])
        )
    eips: dict[str, list[MappedEip]] = {}
    for row in await conn.fetch(*_query(_EIPS, ids, " ORDER BY havip_id, eip_id")):
        eips.setdefault(row["havip_id"], []).append(MappedEip(eip_id=row["eip_id"], ip_address=row["ip_address"]))
    found = []
    for row in await conn.fetch(*_query(_HAVIPS, ids)):
        owner = None
        if row["owner_instance_id"] is not None and row["owner_private_ip"] is not None:
            owner = Route(
                instance_id=row["owner_instance_id"],
                eni_id=row["owner_eni_id"],
                private_ip=row["owner_private_ip"],
                host_id=row["owner_host_id"],
            )
        found.append(
            HaVipMappingChanged(
                havip_id=row["havip_id"],
                tenant_id=row["tenant_id"],
                vpc_id=row["vpc_id"],
                vswitch_id=row["vswitch_id"],
                ip_address=row["ip_address"],
                eips=eips.get(row["havip_id"], []),
                status=HaVipStatus(row["status"]),
                owner=owner,
                attachments=attachments.get(row["havip_id"], []),
                version=row["version"],
            )
        )
    return found


# The forwarder's snapshot: per HAVIP only what routes need, every EIP's address in one array,
# in the field order of services.forwarder.routes.RouteState. The owner's columns follow
# `_HAVIPS` above, so the snapshot and a published record agree on who owns a HAVIP.
_ROUTES = """
SELECT h.havip_id, h.version, h.vpc_id, host(h.ip_address),
       coalesce(e.addresses, '{}'::text[]), h.status = 'Deleted',
       a.instance_id, a.eni_id, host(coalesce(ei.private_ip, i.private_ip)), i.host_id
  FROM havips h
  LEFT JOIN attachments a ON a.havip_id = h.havip_id AND a.target_id = h.owner_target_id
  LEFT JOIN instances i ON i.instance_id = a.instance_id
  LEFT JOIN enis ei ON ei.eni_id = a.eni_id
  LEFT JOIN (SELECT havip_id, array_agg(host(ip_address) ORDER BY eip_id) AS addresses
               FROM havip_eips GROUP BY havip_id) e ON e.havip_id = h.havip_id
"""


async def stream_route_rows(pool: asyncpg.Pool, chunk: int = 5000) -> AsyncIterator[list[asyncpg.Record]]:
    """Every HAVIP's route, a chunk of rows at a time, all from one consistent read.

    Rows, not messages, and in chunks: a forwarder loads hundreds of thousands at
    start, and neither a pydantic model per HAVIP nor all rows at once should
    set its memory for the rest of its life.
    """
    async with pool.acquire() as conn, conn.transaction(readonly=True):
        cursor = await conn.cursor(_ROUTES)
        while rows := await cursor.fetch(chunk):
            yield rows
