"""faust-streaming is used through private hooks (services/runtime/stream.py).

A new faust or aiokafka release can move them without an error: the worker
would still run, with faust's hard-coded 1.5 s long-poll holding every VRRP
report. pyproject.toml pins an upper bound we have tested; this test fails if
the hook no longer reaches the running consumer's fetcher.
"""

from __future__ import annotations

import pytest

from services.runtime.settings import Settings
from services.runtime.stream import FETCH_MAX_WAIT_MS, new_stream_app

pytestmark = pytest.mark.integration


async def test_the_prompt_long_poll_reaches_the_running_fetcher(settings: Settings) -> None:
    app = new_stream_app(settings, "hook-check")
    thread = app.consumer._new_consumer_thread()
    consumer = thread._create_worker_consumer(app.transport)
    await consumer.start()
    try:
        # The value the Fetcher actually polls with, read when the consumer started.
        assert consumer._fetcher._fetch_max_wait_ms == FETCH_MAX_WAIT_MS
    finally:
        await consumer.stop()


def test_the_stream_app_builds_its_consumers_through_the_hook(settings: Settings) -> None:
    app = new_stream_app(settings, "hook-check")
    assert type(app.transport).__name__ == "_PromptTransport"
    assert type(app.consumer._new_consumer_thread()).__name__ == "_PromptConsumerThread"
