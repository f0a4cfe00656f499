"""Where the client finds the gateway URL and the tenant token.

Each value is taken from the first place that has it, the way cloud CLIs do:

    1. flags             --gateway URL, --token TOKEN
    2. environment       HAVIP_GATEWAY_URL, HAVIP_TOKEN
    3. a TOML file       HAVIP_CONFIG, else ~/.config/havip/config.toml:

           [default]
           gateway_url = "http://127.0.0.1:8080"
           token = "..."

           [profiles.prod]
           gateway_url = "https://havip.example.com"
           token = "..."

The profile is `--profile NAME`, else HAVIP_PROFILE, else `[default]`.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

ENV_GATEWAY = "HAVIP_GATEWAY_URL"
ENV_TOKEN = "HAVIP_TOKEN"
ENV_CONFIG = "HAVIP_CONFIG"
ENV_PROFILE = "HAVIP_PROFILE"
_KEYS = ("gateway_url", "token")


class ConfigError(Exception):
    """The client cannot be configured; the message says what is missing and how to set it."""


@dataclass(frozen=True)
class ClientConfig:
    """Where to send requests and as whom."""

    gateway_url: str
    # repr=False: a traceback or a debug print must never show the credential.
    token: str = field(repr=False)


def config_path(env: Mapping[str, str]) -> Path:
    """The TOML file to read: HAVIP_CONFIG when set, else the per-user default."""
    if env.get(ENV_CONFIG):
        return Path(env[ENV_CONFIG]).expanduser()
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME", str(Path.home()))) / ".config")
    return Path(base) / "havip" / "config.toml"


def load_profile(path: Path, profile: str | None) -> dict[str, str]:
    """The `[default]` table, or `[profiles.NAME]`, of the file; {} when the file is absent and no profile is named."""
    try:
        with open(path, "rb") as source:
            document = tomllib.load(source)
    except FileNotFoundError:
        if profile is not None:
            raise ConfigError(f"profile {profile!r} not found: there is no config file at {path}") from None
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read the config file {path}: {exc}") from exc
    if profile is None:
        table = document.get("default", {})
        where = "[default]"
    else:
        profiles = document.get("profiles", {})
        if not isinstance(profiles, dict) or profile not in profiles:
            known = ", ".join(sorted(profiles)) if isinstance(profiles, dict) and profiles else "none"
            raise ConfigError(f"profile {profile!r} not found in {path} (profiles: {known})")
        table = profiles[profile]
        where = f"[profiles.{profile}]"
    if not isinstance(table, dict):
        raise ConfigError(f"{where} in {path} must be a table")
    result: dict[str, str] = {}
    for key in _KEYS:
        value = table.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise ConfigError(f"{key} in {where} of {path} must be a string")
        result[key] = value
    return result


def resolve_config(
    *,
    gateway: str | None = None,
    token: str | None = None,
    profile: str | None = None,
    env: Mapping[str, str] | None = None,
) -> ClientConfig:
    """The gateway URL and token, each from flags, else the environment, else the config file."""
    env = os.environ if env is None else env
    profile = profile or env.get(ENV_PROFILE) or None
    path = config_path(env)
    gateway = _given(gateway) or _given(env.get(ENV_GATEWAY))
    token = _given(token) or _given(env.get(ENV_TOKEN))
    # The file is read only when a flag or variable leaves something open, or a
    # profile is asked for by name (a misspelt profile must not pass silently).
    if gateway is None or token is None or profile is not None:
        stored = load_profile(path, profile)
        gateway = gateway or _given(stored.get("gateway_url"))
        token = token or _given(stored.get("token"))
    table = f"[profiles.{profile}]" if profile else "[default]"
    if gateway is None:
        raise ConfigError(
            f"no gateway URL: pass --gateway URL, set {ENV_GATEWAY}, or put gateway_url in {table} of {path}"
        )
    if token is None:
        raise ConfigError(f"no token: pass --token TOKEN, set {ENV_TOKEN}, or put token in {table} of {path}")
    return ClientConfig(gateway_url=_check_url(gateway), token=token)


def _given(value: str | None) -> str | None:
    # An empty or blank value (`HAVIP_TOKEN=` in a script) counts as unset, so the next source is asked.
    return value.strip() if value and value.strip() else None


def _check_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"gateway URL {value!r} must be http:// or https:// with a host, e.g. http://127.0.0.1:8080")
    return value.rstrip("/")
