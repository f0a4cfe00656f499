"""The README walk-through as code: a tenant's HAVIP with two instances, and failovers.

Used by `havip bench failover` and by the end-to-end test, so the numbers we
quote and the flow we test are the flow the README shows.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import httpx


class WalkthroughError(RuntimeError):
    pass


@dataclass
class Tenant:
    """Talks to the gateway as a tenant and as the instances' agents, and to the forwarder."""

    gateway: httpx.AsyncClient
    forwarder: httpx.AsyncClient
    tenant_token: str
    agent_tokens: dict[str, str]
    seq: dict[str, int] = field(default_factory=dict)

    def _tenant(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tenant_token}"}

    async def wait_operation(self, answer: httpx.Response, timeout: float = 60.0) -> dict[str, Any]:
        if answer.status_code != 202:
            raise WalkthroughError(f"{answer.request.method} {answer.request.url}: {answer.status_code} {answer.text}")
        operation_id = answer.json()["operation"]["operation_id"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # The gateway holds the answer until the operation is terminal (or 5 s): one request, not a poll loop
            # that would spend the tenant's request rate.
            answer = await self.gateway.get(
                f"/v1/operations/{operation_id}", params={"wait": "5s"}, headers=self._tenant()
            )
            if answer.status_code != 200:
                raise WalkthroughError(f"operation {operation_id}: {answer.status_code} {answer.text}")
            operation: dict[str, Any] = answer.json()
            if operation["status"] != "Pending":
                return operation
        raise WalkthroughError(f"operation {operation_id} still Pending after {timeout}s")

    async def create_havip(self, vswitch_id: str, ip_address: str | None = None, name: str = "") -> dict[str, Any]:
        body: dict[str, Any] = {"vswitch_id": vswitch_id, "name": name}
        if ip_address:
            body["ip_address"] = ip_address
        answer = await self.gateway.post("/v1/havips", json=body, headers=self._tenant())
        operation = await self.wait_operation(answer)
        if operation["status"] != "Succeeded":
            raise WalkthroughError(f"create failed: {operation}")
        return await self.havip(answer.json()["havip"]["havip_id"])

    async def havip(self, havip_id: str) -> dict[str, Any]:
        answer = await self.gateway.get(f"/v1/havips/{havip_id}", headers=self._tenant())
        answer.raise_for_status()
        result: dict[str, Any] = answer.json()
        return result

    async def attach(self, havip_id: str, instance_id: str) -> dict[str, Any]:
        answer = await self.gateway.post(
            f"/v1/havips/{havip_id}/associations", json={"instance_id": instance_id}, headers=self._tenant()
        )
        return await self.wait_operation(answer)

    async def detach(self, havip_id: str, target_id: str) -> dict[str, Any]:
        answer = await self.gateway.delete(f"/v1/havips/{havip_id}/associations/{target_id}", headers=self._tenant())
        return await self.wait_operation(answer)

    async def associate_eip(self, havip_id: str, eip_id: str) -> dict[str, Any]:
        answer = await self.gateway.put(f"/v1/havips/{havip_id}/eip", json={"eip_id": eip_id}, headers=self._tenant())
        return await self.wait_operation(answer)

    async def release_eip(self, havip_id: str, eip_id: str | None = None) -> dict[str, Any]:
        params = {"eip_id": eip_id} if eip_id else {}
        answer = await self.gateway.delete(f"/v1/havips/{havip_id}/eip", params=params, headers=self._tenant())
        return await self.wait_operation(answer)

    async def delete(self, havip_id: str) -> dict[str, Any]:
        answer = await self.gateway.delete(f"/v1/havips/{havip_id}", headers=self._tenant())
        return await self.wait_operation(answer)

    async def report(self, havip_id: str, instance_id: str, state: str, priority: int = 100) -> None:
        self.seq[instance_id] = self.seq.get(instance_id, 0) + 1
        answer = await self.gateway.post(
            "/v1/vrrp-events",
            json={"havip_id": havip_id, "state": state, "priority": priority, "seq": self.seq[instance_id]},
            headers={"Authorization": f"Bearer {self.agent_tokens[instance_id]}"},
        )
        if answer.status_code != 202:
            raise WalkthroughError(f"vrrp report refused: {answer.status_code} {answer.text}")

    async def route(self, vpc_id: str | None, ip: str) -> dict[str, Any] | None:
        """Who receives traffic for `ip` in `vpc_id`; with no VPC, `ip` is a public EIP."""
        params = {"vpc_id": vpc_id, "ip": ip} if vpc_id is not None else {"eip": ip}
        answer = await self.forwarder.get("/v1/routes", params=params)
        if answer.status_code == 404:
            return None
        answer.raise_for_status()
        result: dict[str, Any] = answer.json()
        return result

    async def wait_owner(self, vpc_id: str | None, ip: str, instance_id: str | None, timeout: float = 30.0) -> float:
        """Poll the forwarder until it answers `instance_id`; returns when it did (perf_counter)."""
        deadline = time.perf_counter() + timeout
        while True:
            route = await self.route(vpc_id, ip)
            now = time.perf_counter()
            if route is not None and route["instance_id"] == instance_id:
                return now
            if now > deadline:
                raise WalkthroughError(f"forwarder still answers {route} for {ip}, not {instance_id}")
            await asyncio.sleep(0.0005)


async def read_held_open(
    gateway: httpx.AsyncClient, headers: dict[str, str], vswitch_id: str, wait: str
) -> asyncio.Task[httpx.Response]:
    """A tenant request the gateway is still answering: with no quota worker running, a HAVIP's
    creation stays Pending, and a read of its operation that waits `wait` holds until then.
    Returned once under way (a second in, still unanswered), for a SIGTERM to arrive during it."""
    created = await gateway.post("/v1/havips", json={"vswitch_id": vswitch_id}, headers=headers)
    if created.status_code != 202:
        raise WalkthroughError(f"POST /v1/havips: {created.status_code} {created.text}")
    operation = created.json()["operation"]["operation_id"]
    in_flight = asyncio.create_task(gateway.get(f"/v1/operations/{operation}?wait={wait}", headers=headers))
    await asyncio.sleep(1.0)
    if in_flight.done():
        raise WalkthroughError(f"operation {operation} was answered before its wait: {in_flight.result().text}")
    return in_flight


async def master_then_failover(tenant: Tenant, havip_id: str) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """The README's steps 3 to 6 on the demo HAVIP (192.168.1.100 in vpc-demo): web1 becomes MASTER,
    then fails and web2 takes over. The forwarder's answer while web1 owned it, and the HAVIP after."""
    await tenant.report(havip_id, "i-demo-web1", "MASTER", priority=150)
    await tenant.wait_owner("vpc-demo", "192.168.1.100", "i-demo-web1")
    route = await tenant.route("vpc-demo", "192.168.1.100")
    await tenant.report(havip_id, "i-demo-web1", "FAULT", priority=150)
    await tenant.report(havip_id, "i-demo-web2", "MASTER", priority=100)
    await tenant.wait_owner("vpc-demo", "192.168.1.100", "i-demo-web2")
    return route, await tenant.havip(havip_id)


async def measure_failovers(tenant: Tenant, havip: dict[str, Any], a: str, b: str, rounds: int) -> list[float]:
    """Seconds from POSTing the new master's MASTER report to the forwarder answering it.

    Each round is a clean keepalived failover: the old master reports BACKUP
    (not timed; the HAVIP has no owner for a moment), then the new master
    reports MASTER, and the clock runs until the forwarder answers it.
    """
    vpc, ip, havip_id = havip["vpc_id"], havip["ip_address"], havip["havip_id"]
    await tenant.report(havip_id, a, "MASTER")
    await tenant.wait_owner(vpc, ip, a)
    samples = []
    old, new = a, b
    for _ in range(rounds):
        await tenant.report(havip_id, old, "BACKUP")
        await tenant.wait_owner(vpc, ip, None)
        started = time.perf_counter()
        await tenant.report(havip_id, new, "MASTER")
        samples.append(await tenant.wait_owner(vpc, ip, new) - started)
        old, new = new, old
    return samples
