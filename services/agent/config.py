"""The agent's configuration: one TOML file, shared by `havip agent` and `havip notify`."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from schemas.messages import MAX_LEASE_SECONDS
from services.agent.keepalived import Kind, NameKey

# HAVIP ids are minted by the gateway as `havip-` and lowercase hex; a typo here
# would otherwise surface only as a stream of refused reports.
HaVipId = Annotated[str, Field(pattern=r"^havip-[0-9a-z]{1,64}$")]


class ConfigError(Exception):
    """The configuration cannot be used; the message says which field and why."""


class AgentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    gateway_url: str
    token: str | None = None
    token_file: Path | None = None
    spool_dir: Path = Path("/var/lib/havip-agent")
    fifo: Path = Path("/run/keepalived/havip.fifo")
    lease_seconds: float = Field(default=2.5, gt=0, le=MAX_LEASE_SECONDS)
    renew_interval_seconds: float = Field(default=1.0, gt=0)
    request_timeout_seconds: float = Field(default=2.0, gt=0, le=60)
    instances: dict[str, HaVipId] = Field(default_factory=dict, description="vrrp_instance name -> HAVIP id")
    groups: dict[str, HaVipId] = Field(default_factory=dict, description="vrrp_sync_group name -> HAVIP id")

    _bearer: str = PrivateAttr(default="")

    @field_validator("gateway_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host, e.g. http://10.0.0.5:8080")
        return value.rstrip("/")

    @field_validator("instances", "groups")
    @classmethod
    def _keepalived_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not name or any(c.isspace() or c == '"' for c in name):
                raise ValueError(f"{name!r} is not a keepalived name (no blanks or quotes)")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> AgentConfig:
        if (self.token is None) == (self.token_file is None):
            raise ValueError("give exactly one of token or token_file")
        if self.renew_interval_seconds >= self.lease_seconds:
            raise ValueError(
                f"renew_interval_seconds ({self.renew_interval_seconds}) must be less than lease_seconds"
                f" ({self.lease_seconds}), or every claim lapses between two renewals"
            )
        if not self.instances and not self.groups:
            raise ValueError("name at least one vrrp_instance in [instances] or vrrp_sync_group in [groups]")
        named: dict[str, NameKey] = {}
        for key, havip_id in self.targets().items():
            if havip_id in named:
                # Two names reporting one HAVIP would interleave two state machines in one claim.
                raise ValueError(f"{havip_id} is named twice ({named[havip_id]} and {key})")
            named[havip_id] = key
        self._bearer = self.token.strip() if self.token is not None else _read_token(self.token_file)
        if not self._bearer:
            raise ValueError("the agent token is empty")
        return self

    @property
    def bearer_token(self) -> str:
        return self._bearer

    @property
    def token_source(self) -> str:
        """Where the token comes from, for output that must never show the token itself."""
        return f"token_file {self.token_file}" if self.token_file is not None else "token (inline in the config)"

    @property
    def sequence_path(self) -> Path:
        return self.spool_dir / "sequence"

    @property
    def spool_path(self) -> Path:
        return self.spool_dir / "spool"

    def targets(self) -> dict[NameKey, str]:
        """Every configured keepalived name and the HAVIP it reports for."""
        found = {NameKey(Kind.INSTANCE, name): havip for name, havip in self.instances.items()}
        found.update({NameKey(Kind.GROUP, name): havip for name, havip in self.groups.items()})
        return found


def _read_token(path: Path | None) -> str:
    assert path is not None
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ValueError(f"token_file {path} cannot be read: {exc.strerror or exc}") from exc


def load_config(path: Path) -> AgentConfig:
    """Read and validate the file; every problem is a ConfigError naming the file and the field."""
    try:
        with path.open("rb") as handle:
            raw: dict[str, Any] = tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    for field in ("token_file", "spool_dir", "fifo"):
        # Relative paths mean "beside this file", not "wherever the service manager started us".
        if isinstance(raw.get(field), str) and not Path(raw[field]).is_absolute():
            raw[field] = str(path.absolute().parent / raw[field])
    try:
        return AgentConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{path}: " + "; ".join(_describe(error) for error in exc.errors())) from exc


def _describe(error: Any) -> str:
    where = ".".join(str(part) for part in error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "missing":
        message = "is required"
    elif error["type"] == "extra_forbidden":
        message = "is not a known setting"
    elif error["type"] == "string_pattern_mismatch":
        message = f"{error['input']!r} is not a HAVIP id (havip- and lowercase letters or digits)"
    return f"{where} {message}" if where else message
