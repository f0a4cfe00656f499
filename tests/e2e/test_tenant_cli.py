"""`havip havips ...` as a tenant runs it: a process per command, against the four services as processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.dev.processes import ServiceProcess
from services.dev.stack import DEMO_TENANT_TOKEN, demo_agent_tokens, seed
from services.runtime.settings import Settings

pytestmark = pytest.mark.e2e


class Cli:
    """Runs `havip havips ARGS` in a clean environment: only what each test gives it."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.seen: list[str] = []

    def __call__(self, *argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "services.cli", "havips", *argv],
            env=env if env is not None else self.env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        self.seen += [done.stdout, done.stderr]
        return done

    def ok(self, *argv: str) -> str:
        done = self(*argv)
        assert done.returncode == 0, f"havips {' '.join(argv)}: {done.returncode}\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def json(self, *argv: str) -> Any:
        return json.loads(self.ok(*argv, "--output", "json"))


def _base_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HAVIP_")}
    # A developer's own ~/.config/havip must not leak into the test.
    env["HAVIP_CONFIG"] = str(tmp_path / "absent.toml")
    return env


def _eventually(check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.2)


@pytest.fixture
async def gateway_url(settings: Settings, start_service: Callable[..., ServiceProcess]) -> str:
    await seed(settings)  # the demo inventory, tenant token and agent tokens
    for name in ("quota", "mapping", "forwarder"):
        start_service(name)
    return start_service("gateway").url


def test_tenant_walks_a_havip_through_its_life(gateway_url: str, tmp_path: Path) -> None:
    cli = Cli(_base_env(tmp_path) | {"HAVIP_GATEWAY_URL": gateway_url, "HAVIP_TOKEN": DEMO_TENANT_TOKEN})

    created = cli.json("create", "--vswitch-id", "vsw-demo-a", "--ip-address", "192.168.1.100", "--name", "web")
    havip = created["havip"]
    havip_id = havip["havip_id"]
    assert created["operation"]["status"] == "Succeeded"
    assert (havip["status"], havip["ip_address"], havip["name"]) == ("Available", "192.168.1.100", "web")

    listed = cli.ok("list").splitlines()
    assert listed[0].split() == ["ID", "IP", "VSWITCH", "STATUS", "OWNER", "EIPS", "NAME"]
    assert [havip_id, "192.168.1.100", "vsw-demo-a", "Available", "-", "-", "web"] in [r.split() for r in listed]
    assert [h["havip_id"] for h in cli.json("list", "--status", "Available", "--page-size", "1")["havips"]] == [
        havip_id
    ]

    for instance in ("i-demo-web1", "i-demo-web2"):
        assert "Succeeded" in cli.ok("attach", havip_id, "--instance-id", instance)
    # An agent on web1 reports MASTER, so the HAVIP gains an owner and a history.
    answer = httpx.post(
        f"{gateway_url}/v1/vrrp-events",
        json={"havip_id": havip_id, "state": "MASTER", "priority": 150, "seq": 1},
        headers={"Authorization": f"Bearer {demo_agent_tokens()['i-demo-web1']}"},
    )
    assert answer.status_code == 202, answer.text
    _eventually(lambda: (cli.json("show", havip_id).get("owner") or {}).get("instance_id") == "i-demo-web1")
    shown = cli.json("show", havip_id)
    assert {a["instance_id"] for a in shown["attachments"]} == {"i-demo-web1", "i-demo-web2"}
    table = cli.ok("show", havip_id)
    assert "OWNER:" in table and "ATTACHMENTS" in table and "i-demo-web2" in table

    history = cli.ok("history", havip_id).splitlines()
    assert history[0].split() == ["VERSION", "CHANGED_AT", "FROM", "TO", "CAUSE"]
    assert history[1].split()[2:] == ["-", "i-demo-web1", "MasterReported"]
    assert len(cli.json("history", havip_id, "--max-items", "1")["changes"]) == 1

    # A rule downstream says no: the operation Fails, exit 1, its code on stderr.
    failed = cli("attach", havip_id, "--instance-id", "i-demo-nope")
    assert failed.returncode == 1, failed
    assert "NotFound.Instance" in failed.stderr

    assert cli.json("eip", "associate", havip_id, "eip-demo-1")["operation"]["status"] == "Succeeded"
    assert cli.json("show", havip_id)["eips"] == [{"eip_id": "eip-demo-1", "ip_address": "203.0.113.10"}]
    assert "203.0.113.10" in cli.ok("list")
    cli.ok("eip", "release", havip_id)  # the HAVIP's only EIP: no EIP_ID needed
    assert cli.json("show", havip_id)["eips"] == []

    for instance in ("i-demo-web1", "i-demo-web2"):
        assert "Succeeded" in cli.ok("detach", havip_id, instance)
    assert cli.json("show", havip_id)["attachments"] == []
    assert cli.json("delete", havip_id)["operation"]["status"] == "Succeeded"
    # The row stays, Deleted, so its owner history can still be read; plain lists leave it out.
    assert cli.json("show", havip_id)["status"] == "Deleted"
    assert cli.json("list")["havips"] == []
    assert [h["havip_id"] for h in cli.json("list", "--status", "Deleted")["havips"]] == [havip_id]

    assert all(DEMO_TENANT_TOKEN not in text for text in cli.seen), "the token was printed"


def test_errors_usage_and_profiles(gateway_url: str, tmp_path: Path) -> None:
    env = _base_env(tmp_path)
    cli = Cli(env | {"HAVIP_GATEWAY_URL": gateway_url})

    missing = cli("list")
    assert missing.returncode == 2 and all(w in missing.stderr for w in ("--token", "HAVIP_TOKEN", "absent.toml"))

    unknown = cli("show", "havip-0123456789abcdef", "--token", DEMO_TENANT_TOKEN)
    assert unknown.returncode == 3
    assert unknown.stderr.startswith("error: NotFound.HaVip: ") and "(request_id " in unknown.stderr

    refused = cli("list", "--token", "not-a-token")
    assert refused.returncode == 3 and "Unauthorized" in refused.stderr

    config = tmp_path / "config.toml"
    config.write_text(f'[profiles.demo]\ngateway_url = "{gateway_url}"\ntoken = "{DEMO_TENANT_TOKEN}"\n')
    from_file = cli("list", "--profile", "demo", "--output", "json", env=env | {"HAVIP_CONFIG": str(config)})
    assert from_file.returncode == 0, from_file.stderr
    assert json.loads(from_file.stdout) == {"havips": []}

    unreachable = cli("list", "--gateway", "http://127.0.0.1:9", "--token", "t")
    assert unreachable.returncode == 3 and "cannot reach the gateway" in unreachable.stderr
