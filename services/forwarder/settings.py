"""The forwarder's own settings: the shared ones (services/runtime/settings.py) and the watch API's.

The same loader and the same `HAVIP_*` variables; the fields here matter to
the forwarder alone, so they live beside it.
"""

from __future__ import annotations

from pydantic import Field

from services.runtime.settings import Settings


class ForwarderSettings(Settings):
    # Changes one watcher may have waiting to be sent; past that it is told to resynchronise.
    forwarder_watch_buffer: int = Field(default=1000, ge=1)
    # Changes remembered for watchers that resume from a position; older positions get the whole table.
    forwarder_watch_log: int = Field(default=10_000, ge=1)
    # An idle watch stream gets a heartbeat line this often.
    forwarder_watch_heartbeat_seconds: float = Field(default=10.0, gt=0)


def forwarder_settings(settings: Settings) -> ForwarderSettings:
    """`settings` with the forwarder's own fields (from the environment unless `settings` has them)."""
    if isinstance(settings, ForwarderSettings):
        return settings
    return ForwarderSettings(**settings.model_dump())
