"""Background tasks that a service owns and must stop before it closes what they use."""

from __future__ import annotations

import asyncio

# How long to wait for a cancelled task before cancelling it again.
RECANCEL_SECONDS = 0.5


async def cancel_and_wait(task: asyncio.Task[None] | None) -> None:
    """Cancel `task` and return once it has ended (re-raising what it failed with, if not cancelled).

    The cancellation is repeated until the task ends: on Python 3.11, `asyncio.wait_for` loses
    a cancellation that lands just as the call it waits for completes (fixed in 3.12), and a
    loop around it then carries on as if never cancelled. A gateway's shutdown once hung
    forever on its broker watch that way.
    """
    if task is None:
        return
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=RECANCEL_SECONDS)
    if not task.cancelled():
        task.result()
