"""Stopping a background task ends it, even when a cancellation gets lost on the way."""

from __future__ import annotations

import asyncio

import pytest

from services.runtime.tasks import cancel_and_wait, until_one_ends


async def test_a_task_that_loses_a_cancellation_is_cancelled_again_until_it_ends() -> None:
    lost = 0

    async def loop_that_loses_one_cancellation() -> None:
        nonlocal lost
        while True:
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                if lost == 0:  # what Python 3.11's wait_for does to a cancellation that lands late
                    lost += 1
                    continue
                raise

    task = asyncio.get_running_loop().create_task(loop_that_loses_one_cancellation())
    await asyncio.sleep(0)
    await asyncio.wait_for(cancel_and_wait(task), timeout=10)
    assert task.cancelled() and lost == 1


async def test_a_task_that_failed_says_why_when_stopped() -> None:
    async def fails() -> None:
        raise RuntimeError("broken")

    task = asyncio.get_running_loop().create_task(fails())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="broken"):
        await cancel_and_wait(task)


async def test_nothing_to_stop() -> None:
    await cancel_and_wait(None)


async def test_until_one_ends_stops_the_others_and_raises_what_ended_it() -> None:
    stopped: list[str] = []

    async def forever(name: str) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            stopped.append(name)

    async def fails() -> None:
        await asyncio.sleep(0)
        raise RuntimeError("broken")

    with pytest.raises(RuntimeError, match="broken"):
        await until_one_ends({"a": forever("a"), "b": fails(), "c": forever("c")})
    assert sorted(stopped) == ["a", "c"]


async def test_until_one_ends_returns_when_one_is_done() -> None:
    async def done() -> None:
        return None

    async def forever() -> None:
        await asyncio.Event().wait()

    await asyncio.wait_for(until_one_ends({"stop": done(), "work": forever()}), timeout=5)
