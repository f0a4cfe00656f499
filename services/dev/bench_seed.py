"""HAVIPs for the benches, written straight into the mapping service's tables.

Going through the API would take minutes per 10,000 HAVIPs (quota, mapping,
one operation each) and measure that path instead of the one a bench is
about. Rows are generated inside PostgreSQL (`generate_series`), in chunks so
a million shows progress, and nothing crosses the wire per row.

HAVIP n is `havip-n` at 10.128.0.0 + n in `vpc-bench`, with instances
`i-2n` and `i-2n+1` attached; `i-2n` owns it with a live MASTER claim (seq 1,
an hour's lease), so a report from either instance is valid.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from datetime import UTC, datetime

import asyncpg

from schemas import topics
from services.dev.benchkit import Progress
from services.gateway.tokens import Principal, store_token
from services.readmodel.mappings import load_mappings
from services.runtime.kafka import new_producer, topic_name
from services.runtime.settings import Settings

TENANT = "tenant-bench"
VPC = "vpc-bench"
_FIRST_HAVIP_IP = ipaddress.IPv4Address("10.128.0.0")
_CHUNK = 100_000


def havip_address(n: int) -> str:
    """The private address of HAVIP n, as the forwarder indexes it."""
    return str(_FIRST_HAVIP_IP + n)


def owner_of(n: int) -> str:
    return f"i-{2 * n}"


def standby_of(n: int) -> str:
    return f"i-{2 * n + 1}"


async def ensure_havips(pool: asyncpg.Pool, count: int, *, live_claims: bool = True) -> int:
    """At least `count` bench HAVIPs: seeds only what an earlier run (a database given by the
    environment, a smaller size first) did not. Answers how many were seeded now."""
    held = await pool.fetchval("SELECT count(*) FROM havips WHERE tenant_id = $1", TENANT)
    if held < count:
        await seed_havips(pool, count - held, first=held, live_claims=live_claims)
        # Fresh statistics, so the planner sees the table as it is (an index scan, not a guess).
        await pool.execute("ANALYZE havips, attachments, instances")
    return max(0, count - held)


async def seed_havips(
    pool: asyncpg.Pool, count: int, *, first: int = 0, live_claims: bool = True, published: bool = True
) -> None:
    """HAVIPs first .. first+count-1 (see the module docstring), committed chunk by chunk.

    `published`: whether the mapping service should take them as already on `havip.mappings`;
    False leaves them to its sweep, which publishes what is committed but not published.
    """
    progress = Progress(f"seeding {count:,} HAVIPs", count)
    done = 0
    while done < count:
        start, size = first + done, min(_CHUNK, count - done)
        async with pool.acquire() as conn, conn.transaction():
            await _seed_chunk(conn, start, size, live_claims=live_claims, published=published)
        done += size
        progress.update(done)
    progress.finish(done)


async def _seed_chunk(conn: asyncpg.Connection, start: int, size: int, *, live_claims: bool, published: bool) -> None:
    await conn.execute(
        "INSERT INTO instances (instance_id, tenant_id, vpc_id, vswitch_id, private_ip, status, host_id, revision)"
        " SELECT 'i-' || n, $1, $2, 'vsw-bench', ('10.0.0.0'::inet + n), 'Running', 'host-' || (n % 64), 1"
        " FROM generate_series($3::bigint, $3::bigint + $4 - 1) AS n",
        TENANT,
        VPC,
        2 * start,
        2 * size,
    )
    await conn.execute(
        "INSERT INTO havips (havip_id, tenant_id, vpc_id, vswitch_id, ip_address, status, owner_target_id,"
        " version, published_version)"
        " SELECT 'havip-' || n, $1, $2, 'vsw-bench', ($3::inet + n), 'InUse', 'i-' || (2 * n), 2, $6"
        " FROM generate_series($4::bigint, $4::bigint + $5 - 1) AS n",
        TENANT,
        VPC,
        str(_FIRST_HAVIP_IP),
        start,
        size,
        2 if published else 0,
    )
    await conn.execute(
        "INSERT INTO attachments (havip_id, target_id, instance_id)"
        " SELECT 'havip-' || n, 'i-' || (2 * n + k), 'i-' || (2 * n + k)"
        " FROM generate_series($1::bigint, $1::bigint + $2 - 1) AS n, generate_series(0, 1) AS k",
        start,
        size,
    )
    if live_claims:
        now = datetime.now(UTC)
        await conn.execute(
            "INSERT INTO vrrp_reports (havip_id, instance_id, state, priority, seq, reported_at, received_at,"
            " expires_at) SELECT 'havip-' || n, 'i-' || (2 * n), 'MASTER', 100, 1, $3::timestamptz,"
            " $3::timestamptz, $3::timestamptz + interval '1 hour'"
            " FROM generate_series($1::bigint, $1::bigint + $2 - 1) AS n",
            start,
            size,
            now,
        )


async def publish_mappings(settings: Settings, pool: asyncpg.Pool) -> int:
    """Put every HAVIP's state on `havip.mappings`, as the mapping service would after a change.

    For a forwarder already running: it follows the topic, and holds them once it read them.
    """
    mappings = await load_mappings(pool)
    producer = new_producer(settings)
    await producer.start()
    try:
        topic = topic_name(settings, topics.MAPPINGS)
        pending = []
        for mapping in mappings:
            pending.append(await producer.send(topic, key=mapping.havip_id.encode(), value=topics.encode(mapping)))
            if len(pending) >= 1000:
                for future in pending:
                    await future
                pending.clear()
        for future in pending:
            await future
    finally:
        await producer.stop()
    return len(mappings)


def agent_token(instance_id: str) -> str:
    return f"bench-agent-{instance_id}"


async def seed_agent_tokens(pool: asyncpg.Pool, instance_ids: Iterable[str]) -> dict[str, str]:
    """An agent token for each instance (stored once; seeding again changes nothing)."""
    tokens = {iid: agent_token(iid) for iid in instance_ids}
    async with pool.acquire() as conn, conn.transaction():
        for iid, token in tokens.items():
            await store_token(conn, token, Principal("agent", TENANT, iid), description="havip bench")
    return tokens
