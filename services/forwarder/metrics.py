"""What the forwarder tells /metrics, besides the request metrics every service has."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

APPLIED = Counter("havip_forwarder_records_applied_total", "Mapping records that changed the route table", ["source"])
STALE = Counter(
    "havip_forwarder_records_stale_total", "Mapping records ignored: not newer than the table, or a tombstone"
)
TABLE_SIZE = Gauge("havip_forwarder_table_havips", "Live HAVIPs in the route table")
APPLY_LAG = Gauge(
    "havip_forwarder_apply_lag_seconds", "Time from a mapping record's occurred_at to its application, last record"
)
CAUGHT_UP = Gauge("havip_forwarder_caught_up", "1 once the route table reached the topic's end at start")
ERRORS = Counter("havip_forwarder_follow_errors_total", "Broker or database errors while following")
CONSUMER_LAG = Gauge(
    "havip_forwarder_consumer_lag_records",
    "Records of havip.mappings not applied yet: the partition's high watermark minus the next offset to apply",
    ["partition"],
)
CONVERGENCE = Histogram(
    "havip_forwarder_convergence_seconds",
    "From the gateway accepting a VRRP report to this forwarder applying the state it caused"
    " (records that carry report_received_at)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
WATCHERS = Gauge("havip_forwarder_watchers", "Open watch streams (GET /v1/routes:watch)")
