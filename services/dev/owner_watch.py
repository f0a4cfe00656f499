"""The benches' eye on the forwarder: its watch stream for one VPC, followed in the background.

A failover is over when the forwarder answers the new owner. Asking it again and again (a
lookup every half millisecond) costs the measuring process and the forwarder a core between
them on a two-core machine, and that CPU is taken from the very path being measured. The
forwarder pushes every change it applies to its watchers instead (`GET /v1/routes:watch`,
README "The forwarder"), the moment it applies it: the bench keeps one such stream open and
notes when each change arrived.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import httpx

from services.dev.walkthrough import Tenant, WalkthroughError
from services.runtime.tasks import cancel_and_wait


class OwnerWatch:
    def __init__(
        self, forwarder: httpx.AsyncClient, vpc_id: str, clock: Callable[[], float] = time.perf_counter
    ) -> None:
        self._forwarder = forwarder
        self._vpc_id = vpc_id
        self._clock = clock
        # Per address, every owner it was said to have, with when the line arrived (`clock`).
        self._changes: dict[str, list[tuple[str | None, float]]] = {}
        self._changed = asyncio.Condition()
        self._synced = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> OwnerWatch:
        self._task = asyncio.get_running_loop().create_task(self._follow(), name="owner-watch")
        await asyncio.wait_for(self._synced.wait(), 60)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await cancel_and_wait(self._task)

    def history(self, ip: str) -> list[tuple[str | None, float]]:
        """The latest owners the forwarder said `ip` has, oldest first, each with when it said so."""
        return list(self._changes.get(ip, []))

    async def wait_owner(self, ip: str, instance_id: str | None, after: float, timeout: float) -> float:
        """When the forwarder first said `instance_id` owns `ip` at or after `after` (`clock`)."""
        deadline = time.perf_counter() + timeout
        async with self._changed:
            while True:
                for owner, at in self._changes.get(ip, []):
                    if owner == instance_id and at >= after:
                        return at
                left = deadline - time.perf_counter()
                if left <= 0:
                    raise TimeoutError(f"the forwarder never said {instance_id} owns {ip}")
                try:
                    await asyncio.wait_for(self._changed.wait(), left)
                except TimeoutError:
                    continue

    async def _follow(self) -> None:
        while True:  # a stream that ends (the forwarder restarted, or we fell behind) is opened again
            params = {"vpc_id": self._vpc_id}
            async with self._forwarder.stream("GET", "/v1/routes:watch", params=params, timeout=None) as answer:
                async for line in answer.aiter_lines():
                    if line:
                        await self._saw(json.loads(line))
            await asyncio.sleep(0.2)

    async def _saw(self, line: dict[str, Any]) -> None:
        kind = line.get("type")
        if kind == "synced":
            self._synced.set()
            return
        if kind not in ("route", "removed"):
            return
        ip = line.get("ip")
        if ip is None:
            return
        owner = line.get("instance_id") if kind == "route" else None
        async with self._changed:
            self._changes.setdefault(ip, []).append((owner, self._clock()))
            del self._changes[ip][:-64]  # only the latest matter
            self._changed.notify_all()


async def failover(
    tenant: Tenant, watch: OwnerWatch, havip: dict[str, Any], old: str, new: str, timeout: float
) -> float:
    """One clean keepalived failover of `havip` from `old` to `new`; milliseconds from the new master's
    MASTER report to the forwarder saying so. The old master's BACKUP first (not timed: no owner
    for a moment). WalkthroughError when a step does not show within `timeout`."""
    havip_id, ip = havip["havip_id"], havip["ip_address"]
    try:
        mark = time.perf_counter()
        await tenant.report(havip_id, old, "BACKUP")
        await watch.wait_owner(ip, None, mark, timeout)
        started = time.perf_counter()
        await tenant.report(havip_id, new, "MASTER")
        return (await watch.wait_owner(ip, new, started, timeout) - started) * 1000
    except TimeoutError as exc:
        raise WalkthroughError(str(exc)) from exc
