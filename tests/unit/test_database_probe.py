"""The database probe behind readiness: a hung server is a failure, and a new server run is noticed."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from services.runtime.db import DatabaseProbe


class FakeServer:
    """Answers the probe's question (which run of the server this is), or never answers."""

    def __init__(self) -> None:
        self.started_at = "2026-12-06 10:00:00+00"
        self.hung = asyncio.Event()
        self.thawed = asyncio.Event()

    async def fetchval(self, query: str, *args: Any) -> str:
        if self.hung.is_set():
            try:
                await self.thawed.wait()
            except asyncio.CancelledError:
                # As asyncpg's pool does: the connection handed back is reset first, on the hung server.
                await self.thawed.wait()
                raise
        return self.started_at


async def until(condition: Callable[[], bool], tries: int = 1000) -> None:
    for _ in range(tries):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("not within 5 s")


async def test_a_server_that_stops_answering_is_a_failure_until_it_answers_again() -> None:
    server = FakeServer()
    probe = DatabaseProbe(server, every_seconds=0.01, timeout_seconds=0.05)
    probe.start()
    try:
        await asyncio.sleep(0.05)
        assert probe.problem is None
        server.hung.set()
        await until(lambda: probe.problem is not None)
        assert "no answer" in (probe.problem or "")
        server.hung.clear()
        server.thawed.set()
        await until(lambda: probe.problem is None)
    finally:
        await probe.stop()


async def test_a_new_server_run_is_told_once() -> None:
    server = FakeServer()
    told: list[str] = []
    probe = DatabaseProbe(
        server,
        every_seconds=0.01,
        incarnation=server.started_at,
        on_new_incarnation=told.append,
    )
    probe.start()
    try:
        await asyncio.sleep(0.05)
        assert told == []
        server.started_at = "2026-12-06 10:05:00+00"
        await until(lambda: bool(told))
        await asyncio.sleep(0.05)
        assert told == ["2026-12-06 10:05:00+00"]
    finally:
        await probe.stop()
