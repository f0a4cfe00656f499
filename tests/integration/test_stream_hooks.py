"""faust-streaming is used through private hooks (services/runtime/stream.py).

A new faust or aiokafka release can move them without an error: the worker
would still run, with faust's hard-coded 1.5 s long-poll holding every VRRP
report, or its one-second sleep before a (re)started worker joins its group.
pyproject.toml pins an upper bound we have tested; these tests fail if a hook
no longer reaches what it replaces.
"""

from __future__ import annotations

import inspect

import pytest
from faust.tables import TableManager

from services.runtime.settings import Settings
from services.runtime.stream import new_stream_app

pytestmark = pytest.mark.integration


async def test_the_prompt_long_poll_reaches_the_running_fetcher(settings: Settings) -> None:
    app = new_stream_app(settings.model_copy(update={"kafka_fetch_max_wait_ms": 7}), "hook-check")
    thread = app.consumer._new_consumer_thread()
    consumer = thread._create_worker_consumer(app.transport)
    await consumer.start()
    try:
        # The value the Fetcher actually polls with, read when the consumer started.
        assert consumer._fetcher._fetch_max_wait_ms == 7
    finally:
        await consumer.stop()


def test_the_stream_app_builds_its_consumers_through_the_hook(settings: Settings) -> None:
    app = new_stream_app(settings, "hook-check")
    assert type(app.transport).__name__ == "_PromptTransport"
    assert type(app.consumer._new_consumer_thread()).__name__ == "_PromptConsumerThread"


def test_the_table_manager_starts_as_faust_s_does_but_without_its_sleep(settings: Settings) -> None:
    app = new_stream_app(settings, "hook-check")
    assert type(app.tables).__name__ == "_PromptTableManager"
    # Ours repeats faust's on_start minus the sleep: faust's must still be exactly that.
    faust_steps = [line.strip() for line in inspect.getsource(TableManager.on_start).splitlines()[2:]]
    ours = [line.strip() for line in inspect.getsource(type(app.tables).on_start).splitlines()]
    assert faust_steps == [
        "await self.sleep(1.0)",
        "if not self.should_stop:",
        "await self._update_channels()",
        "await self.recovery.start()",
    ]
    assert faust_steps[1:] == [line for line in ours if line and not line.startswith(("#", "async def"))]
