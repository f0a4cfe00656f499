"""The one settings loader. Every value can come from a `HAVIP_*` environment variable."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HAVIP_", extra="ignore")

    kafka_bootstrap: str = "127.0.0.1:9092"
    database_url: str = "postgresql://postgres@127.0.0.1:5432/havip"
    # Lets several stacks (or test modules) share one broker without seeing each other.
    topic_prefix: str = ""
    partitions: int = Field(default=4, ge=1)

    http_host: str = "127.0.0.1"
    gateway_port: int = 8080
    forwarder_port: int = 8081
    quota_port: int = 8082
    mapping_port: int = 8083

    # Limits from the product page; each is configurable per cloud.
    max_attachments_per_havip: int = Field(default=10, ge=1)
    max_havips_per_instance: int = Field(default=5, ge=1)
    max_eips_per_havip: int = Field(default=1, ge=0)
    # HAVIPs one tenant may hold; like the three above, overridable per tenant (`havip admin tenant`).
    max_havips_per_tenant: int = Field(default=100, ge=0)

    # How often a mapping worker looks for owners whose lease ran out while another
    # instance holds a live claim (and for state committed but not yet published).
    lease_sweep_interval_seconds: float = Field(default=0.2, gt=0)

    # Consumer group timing: short enough that a restarted worker takes its
    # partitions back within seconds.
    session_timeout_seconds: float = 6.0
    log_level: str = "INFO"


@lru_cache(maxsize=1)
def load_settings() -> Settings:
    return Settings()
