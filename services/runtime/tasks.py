"""Background tasks that a service owns and must stop before it closes what they use."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any

# How long to wait for a cancelled task before cancelling it again.
RECANCEL_SECONDS = 0.5


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
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


async def until_one_ends(coroutines: dict[str, Coroutine[Any, Any, None]]) -> None:
    """Run these as tasks (named by their keys) until one of them ends; then stop the others.

    What the first one raised is raised here; the rest are cancelled and waited for, so nothing
    they use is closed under them.
    """
    tasks = [asyncio.create_task(coroutine, name=name) for name, coroutine in coroutines.items()]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()
    finally:
        for task in tasks:
            with contextlib.suppress(Exception):  # the first one's failure is the one raised
                await cancel_and_wait(task)
