"""`havip agent --config PATH`: the daemon's process: logging, signals, exit codes."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from pathlib import Path

from services.agent.agent import Agent
from services.agent.config import ConfigError, load_config
from services.runtime.logs import setup_logging

log = logging.getLogger(__name__)


def run(config_path: Path) -> int:
    """The daemon: until SIGTERM or SIGINT; SIGHUP reloads the configuration. 2 for a bad configuration."""
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        print(f"havip agent: {exc}", file=sys.stderr)
        return 2
    setup_logging("agent")
    return asyncio.run(_serve(Agent(config_path, config)))


async def _serve(agent: Agent) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, agent.request_reload)
    running = asyncio.create_task(agent.run())
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
    # Cancelling abandons a request in flight; its reports stay spooled and go again next
    # time, which is harmless: the gateway ignores a seq it has already applied.
    running.cancel()
    stopping.cancel()
    try:
        await running
    except asyncio.CancelledError:
        pass
    except Exception as exc:  # the FIFO cannot be opened, ...
        causes = exc.exceptions if isinstance(exc, ExceptionGroup) else (exc,)
        log.error("agent failed error=%s", "; ".join(repr(cause) for cause in causes))
        return 1
    log.info("agent stopped pending=%d", len(agent.spool))
    return 0
