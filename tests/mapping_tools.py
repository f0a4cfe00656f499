"""HAVIPs built through quota and mapping, VRRP reports, and the forwarder's answers, for mapping tests."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx

from schemas import topics
from schemas.messages import AttachHaVip, CreateHaVip, VrrpReported, VrrpState
from services.runtime.settings import Settings
from tests.inventory_tools import TENANT, Publisher, inventory
from tests.kafka_tools import read_topic


def report(
    havip: str, instance: str, state: VrrpState, seq: int, priority: int = 100, lease: float | None = None
) -> VrrpReported:
    now = datetime.now(UTC)
    return VrrpReported(
        havip_id=havip,
        tenant_id=TENANT,
        instance_id=instance,
        state=state,
        priority=priority,
        seq=seq,
        reported_at=now,
        received_at=now,
        lease_seconds=lease,
    )


def member(havip: int, k: int, per_havip: int) -> str:
    """Each HAVIP gets its own instances, so no instance meets its HAVIP limit."""
    return f"i-{havip * per_havip + k}"


async def build_havips(publish: Publisher, settings: Settings, havips: int, per_havip: int) -> None:
    """havip-0 .. havip-N in vsw-a, each with its own `per_havip` instances attached (needs quota and mapping)."""
    await publish.inventory(inventory(instances=havips * per_havip))
    for h in range(havips):
        await publish.send(
            topics.COMMANDS,
            f"havip-{h}",
            CreateHaVip(command_id=f"create-{h}", tenant_id=TENANT, havip_id=f"havip-{h}", vswitch_id="vsw-a"),
        )
        for i in range(per_havip):
            await publish.send(
                topics.COMMANDS,
                f"havip-{h}",
                AttachHaVip(
                    command_id=f"attach-{h}-{i}",
                    tenant_id=TENANT,
                    havip_id=f"havip-{h}",
                    target_id=member(h, i, per_havip),
                ),
            )
    results = await read_topic(settings, topics.RESULTS, until=havips * (1 + per_havip), timeout=90)
    assert {r.type for r in results} == {"CommandSucceeded"}, results


async def route(client: httpx.AsyncClient, ip: str) -> tuple[str | None, int]:
    """The forwarder's answer for an address in vpc-t: (instance, version)."""
    body = (await client.get("/v1/routes", params={"vpc_id": "vpc-t", "ip": ip})).json()
    return body["instance_id"], body["version"]
