"""The one settings loader. Every value can come from a `HAVIP_*` environment variable."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HAVIP_", extra="ignore")

    kafka_bootstrap: str = "127.0.0.1:9092"
    # A real cluster (Strimzi: SCRAM-SHA-512 over TLS) wants SASL_SSL; the embedded broker PLAINTEXT.
    # Every client gets these through services.runtime.kafka.
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "SCRAM-SHA-512"
    kafka_sasl_username: str = ""
    kafka_sasl_password: SecretStr = SecretStr("")
    # PEM files: the CA that signed the brokers' certificates (Strimzi: `ca.crt` of the
    # <cluster>-cluster-ca-cert Secret; empty: the system's CAs), and a client certificate and
    # key for mutual TLS (Strimzi's `tls` authentication).
    kafka_ssl_cafile: str = ""
    kafka_ssl_certfile: str = ""
    kafka_ssl_keyfile: str = ""
    # How long a consumer's fetch may wait at the broker for records. Apache Kafka answers a
    # waiting fetch as soon as a record arrives, so there 500 costs no latency and spares idle
    # polling; the embedded broker (Tansu 0.6) holds every fetch for the whole wait, so each
    # hop of a failover (gateway -> mapping -> forwarder) waits half of it on average, and
    # every idle consumer polls it that often. Measured on the embedded stack (2 cores):
    # 10 ms gives failover p50 17.3 / p99 25.7 ms and an idle stack at 43% of a core; 5 ms
    # gives 14.7 / 23.9 ms and 69%.
    kafka_fetch_max_wait_ms: int = Field(default=10, ge=1, le=30_000)
    # The same for the consumers off the failover path: quota, and the gateway following command
    # results. A tenant's operation takes tens of milliseconds whatever this is, and on the embedded
    # broker each poll costs CPU that the failover path shares: on a 2-core machine carrying 200
    # state changes and 1,000 renewals a second, the broker spent about half a core, most of it
    # answering polls.
    kafka_operations_fetch_max_wait_ms: int = Field(default=100, ge=1, le=30_000)
    database_url: str = "postgresql://postgres@127.0.0.1:5432/havip"
    # Lets several stacks (or test modules) share one broker without seeing each other.
    topic_prefix: str = ""
    partitions: int = Field(default=4, ge=1)
    # A service that finds a topic missing (a new cluster, or a broker that lost its topics)
    # creates it. Turn off where topics are managed elsewhere (Strimzi KafkaTopic objects).
    create_topics: bool = True
    # How often each service also reads where every partition ends, to notice a log lost in place
    # (its topic kept its id). A topic made again is noticed every second by its id; this check
    # costs the embedded broker a walk over every batch of every partition, so it is rare.
    broker_log_check_seconds: float = Field(default=60.0, gt=0)

    http_host: str = "127.0.0.1"
    gateway_port: int = 8080
    forwarder_port: int = 8081
    quota_port: int = 8082
    mapping_port: int = 8083
    # Bigger request bodies answer 413 PayloadTooLarge before they are read.
    max_request_body_bytes: int = Field(default=65536, ge=1)

    # Limits from the product page; each is configurable per cloud.
    max_attachments_per_havip: int = Field(default=10, ge=1)
    max_havips_per_instance: int = Field(default=5, ge=1)
    max_eips_per_havip: int = Field(default=1, ge=0)
    # HAVIPs one tenant may hold; like the three above, overridable per tenant (`havip admin tenant`).
    max_havips_per_tenant: int = Field(default=100, ge=0)

    # Request rates per token, counted by each gateway replica on its own. A tenant's
    # `requests_per_second` (`havip admin tenant set-limits`) replaces the tenant default.
    tenant_requests_per_second: float = Field(default=20, gt=0)
    tenant_request_burst: int = Field(default=40, ge=1)
    # An agent renews each MASTER claim every second and holds at most 5 HAVIPs:
    # this never throttles a healthy agent, only a runaway one.
    agent_requests_per_second: float = Field(default=50, gt=0)
    agent_request_burst: int = Field(default=100, ge=1)

    # How often a mapping worker looks for owners whose lease ran out while another
    # instance holds a live claim (and for state committed but not yet published).
    lease_sweep_interval_seconds: float = Field(default=0.2, gt=0)
    # A mapping worker applies the VRRP reports that arrived while it applied the last batch
    # together, up to this many (it never waits for a batch to fill).
    report_batch_max: int = Field(default=500, ge=1)

    # The longest a request waits for the broker to take a message; then 503 with Retry-After.
    publish_timeout_seconds: float = Field(default=5.0, gt=0)
    # The longest a gateway request waits for one database statement; then 503 with Retry-After.
    database_timeout_seconds: float = Field(default=5.0, gt=0)

    # Consumer group timing: short enough that a restarted worker takes its
    # partitions back within seconds.
    session_timeout_seconds: float = 6.0
    # The stream workers' (quota, mapping) consumer group. A worker that dies holds its
    # partitions until the broker expires its session, so the session is short, with four
    # heartbeats in it so a busy worker is not taken for dead. The embedded broker also holds
    # every JoinGroup for max(1 s, half the session): 2 s is the longest session that costs
    # no more. Measured with `havip bench rebalance` (README). Apache Kafka refuses a session
    # below its brokers' group.min.session.timeout.ms (6 s unless they are told otherwise).
    worker_session_timeout_seconds: float = Field(default=2.0, gt=0)
    worker_heartbeat_interval_seconds: float = Field(default=0.5, gt=0)
    # Static membership (Kafka's group.instance.id), unique per worker; empty: dynamic. Not on
    # the embedded broker: there two static workers never settle (`havip bench rebalance --static`).
    worker_group_instance_id: str = ""

    # `havip observe`, one per hypervisor host. Its health and metrics listen here.
    observe_port: int = 8084
    # The host whose instances' ports it watches (the inventory's host_id; Kubernetes: the node name).
    observe_host_id: str = ""
    # The network namespace (a name under /run/netns) the ports live in; empty: the observer's own.
    # Production watches the host's namespace; the keepalived lab a namespace playing the host.
    observe_netns: str = ""
    # How long an observed claim stays live without a renewal, and how often live ones are renewed
    # (together, one record per partition). The observer itself ends a claim whose adverts stop
    # (three advert intervals), so the lease only matters when the observer is gone.
    observe_lease_seconds: float = Field(default=15.0, gt=0, le=60.0)
    observe_renew_seconds: float = Field(default=5.0, gt=0)
    log_level: str = "INFO"


@lru_cache(maxsize=1)
def load_settings() -> Settings:
    return Settings()
