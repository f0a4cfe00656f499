"""The gateway's own metrics; request metrics are in services.runtime.http."""

from __future__ import annotations

from prometheus_client import Counter

VRRP_REPORTS_ACCEPTED = Counter(
    "havip_gateway_vrrp_reports_accepted_total", "VRRP reports published to vrrp.events", ["state"]
)
COMMAND_RESULTS = Counter(
    "havip_gateway_command_results_total", "Command results read from havip.command-results", ["outcome"]
)
