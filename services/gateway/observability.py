"""The gateway's own metrics; request metrics are in services.runtime.http."""

from __future__ import annotations

from prometheus_client import Counter

VRRP_REPORTS_ACCEPTED = Counter(
    "havip_gateway_vrrp_reports_accepted_total", "VRRP reports published to vrrp.events", ["state"]
)
COMMAND_RESULTS = Counter(
    "havip_gateway_command_results_total", "Command results read from havip.command-results", ["outcome"]
)
# Where the failover path's two questions were answered: "directory" costs no database round trip.
AGENT_DIRECTORY_ANSWERS = Counter(
    "havip_gateway_agent_directory_answers_total",
    "Agent tokens and attachments decided from the in-memory directory or the database",
    ["question", "answered_by"],
)
