"""`havip notify`: one report from keepalived's notify script.

keepalived runs `notify "<command>"` with TYPE NAME STATE PRIORITY appended,
e.g. `havip notify --config /etc/havip/agent.toml INSTANCE VI_1 MASTER 100`.
The report is numbered and spooled like the agent's (same sequence file and
spool, safe while other runs or the agent use them), then the whole spool is
delivered for a bounded time; what is left waits for the next run or the
agent. A notify script cannot renew, so its MASTER claim carries no lease:
the platform keeps it live until this instance reports another state.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path

import httpx

from services.agent.claims import lease_for
from services.agent.config import AgentConfig, ConfigError, load_config
from services.agent.delivery import Backoff, Drain, Gateway, drain
from services.agent.keepalived import event_from_fields
from services.agent.reports import Origin, ReportDraft, SpooledReport
from services.agent.sequence import SequenceFile
from services.agent.spool import Spool

log = logging.getLogger(__name__)

DELIVERY_SECONDS = 10.0


def run(
    config_path: Path,
    fields: list[str],
    deliver_seconds: float = DELIVERY_SECONDS,
    transport: httpx.AsyncBaseTransport | None = None,
) -> int:
    """0 once the report is spooled (delivered or not); 2 for a bad configuration or bad arguments."""
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        print(f"havip notify: {exc}", file=sys.stderr)
        return 2
    event = event_from_fields(*fields) if len(fields) == 4 else None
    if event is None:
        print(
            f"havip notify: expected TYPE NAME STATE PRIORITY as keepalived passes them"
            f" (e.g. INSTANCE VI_1 MASTER 100), got {' '.join(fields)!r}",
            file=sys.stderr,
        )
        return 2
    havip_id = config.targets().get(event.key)
    if havip_id is None:
        print(f"havip notify: no HAVIP configured for {event.key}; nothing to report", file=sys.stderr)
        return 0
    from services.runtime.logs import setup_logging

    setup_logging("notify")
    spool = Spool(config.spool_path, SequenceFile(config.sequence_path))
    draft = ReportDraft(havip_id, event.state, event.priority, datetime.now(UTC), Origin.NOTIFY, event.key)
    try:
        report = spool.append(draft)
    except OSError as exc:
        print(f"havip notify: cannot spool the report in {config.spool_path}: {exc}", file=sys.stderr)
        return 1
    log.info("report spooled %s keepalived=%s", report.describe(), event.raw_state)
    delivered = asyncio.run(deliver_spool(config, spool, deliver_seconds, transport))
    if not delivered:
        log.warning(
            "spool not delivered within %gs pending=%d; the next run or the agent sends it",
            deliver_seconds,
            len(spool),
        )
    return 0


def notify_lease(report: SpooledReport, lease: float) -> float | None:
    """This process knows nothing of keepalived's present state: the agent's claims it sends are history (0)."""
    return lease_for(report, {}, writer_connected=False, lease=lease)


async def deliver_spool(
    config: AgentConfig, spool: Spool, seconds: float, transport: httpx.AsyncBaseTransport | None = None
) -> bool:
    """Drain the spool for at most `seconds`; True when it is empty."""
    backoff = Backoff()
    async with httpx.AsyncClient(
        base_url=config.gateway_url, timeout=config.request_timeout_seconds, transport=transport
    ) as client:
        gateway = Gateway(client, config.bearer_token)
        try:
            async with asyncio.timeout(seconds):
                while True:
                    outcome, delay = await drain(
                        spool, gateway, lambda r: notify_lease(r, config.lease_seconds), backoff
                    )
                    if outcome is Drain.EMPTY:
                        return True
                    await asyncio.sleep(delay)
        except TimeoutError:
            # Reports sent but not yet answered stay spooled; resending is safe, the gateway skips a known seq.
            return False
