"""`havip agent --check`: what the agent would do with a configuration, without touching the network."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from services.agent.claims import LastState, lease_for
from services.agent.config import AgentConfig
from services.agent.keepalived import KeepalivedEvent, Kind
from services.agent.reports import Origin, ReportDraft


def plan(config: AgentConfig, config_path: Path) -> list[str]:
    """Lines for a human: settings (never the token), then the report each configured name's MASTER would make."""
    lines = [
        f"config {config_path}: valid",
        f"gateway: {config.gateway_url}/v1/vrrp-events (timeout {config.request_timeout_seconds:g}s)",
        f"token: from {config.token_source}",
        f"fifo: {config.fifo} (keepalived global_defs: vrrp_notify_fifo {config.fifo})",
        f"spool: {config.spool_path} (sequence {config.sequence_path})",
        f"lease: {config.lease_seconds:g}s, renewed every {config.renew_interval_seconds:g}s"
        " while keepalived says MASTER and stays connected to the FIFO",
    ]
    if config.lease_seconds < 2 * config.renew_interval_seconds:
        lines.append("warning: the lease is shorter than two renewal intervals; one lost renewal lets a claim lapse")
    for key, havip_id in config.targets().items():
        # keepalived writes a sync group's priority as 0.
        event = KeepalivedEvent(key.kind, key.name, "MASTER", 100 if key.kind is Kind.INSTANCE else 0)
        draft = ReportDraft(havip_id, event.state, event.priority, datetime.now(UTC), Origin.FIFO, key)
        report = draft.numbered(0)
        # As if keepalived had just written the line: it is the latest word and the writer is there.
        latest = {key: LastState(report.state, report.priority, havip_id, report.seq)}
        lease = lease_for(report, latest, writer_connected=True, lease=config.lease_seconds)
        lines.append(f"{event} -> {havip_id} {report.state} priority {report.priority} lease {lease:g}s")
    if config.groups:
        lines.append("note: sync group reports carry priority 0, so a split brain between groups is settled by IP")
    lines.append(
        "note: a restarted agent renews nothing until keepalived's next state change (keepalived 2.2.7 does not"
        " repeat its states on reload); meanwhile the owner keeps the HAVIP unless another instance claims it"
    )
    return lines
