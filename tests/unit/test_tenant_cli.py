"""`havip havips`: configuration, rendering and the HTTP client's retries, without a network."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.client import render
from services.client.api import ApiError, Gateway, OperationTimeout, path
from services.client.cli import register, run
from services.client.config import ClientConfig, ConfigError, config_path, resolve_config

CONFIG = ClientConfig(gateway_url="http://gateway.test", token="secret-token")


# --- configuration -------------------------------------------------------------


def write_config(tmp_path: Path, text: str) -> dict[str, str]:
    file = tmp_path / "config.toml"
    file.write_text(text)
    return {"HAVIP_CONFIG": str(file)}


FILE = """
[default]
gateway_url = "http://file-default:8080"
token = "file-default-token"

[profiles.prod]
gateway_url = "https://file-prod"
token = "file-prod-token"
"""


def test_flags_win_over_environment_and_file(tmp_path: Path) -> None:
    env = write_config(tmp_path, FILE) | {"HAVIP_GATEWAY_URL": "http://env:1", "HAVIP_TOKEN": "env-token"}
    config = resolve_config(gateway="http://flag:2/", token="flag-token", env=env)
    assert config == ClientConfig("http://flag:2", "flag-token")


def test_environment_wins_over_file_value_by_value(tmp_path: Path) -> None:
    env = write_config(tmp_path, FILE) | {"HAVIP_TOKEN": "env-token"}
    assert resolve_config(env=env) == ClientConfig("http://file-default:8080", "env-token")
    assert resolve_config(gateway="http://flag:2", env=env) == ClientConfig("http://flag:2", "env-token")


def test_profile_from_flag_or_environment(tmp_path: Path) -> None:
    env = write_config(tmp_path, FILE)
    assert resolve_config(profile="prod", env=env) == ClientConfig("https://file-prod", "file-prod-token")
    assert resolve_config(env=env | {"HAVIP_PROFILE": "prod"}).token == "file-prod-token"
    assert resolve_config(profile="prod", env=env | {"HAVIP_TOKEN": "env-token"}).token == "env-token"


def test_unknown_profile_is_an_error_naming_the_known_ones(tmp_path: Path) -> None:
    env = write_config(tmp_path, FILE)
    with pytest.raises(ConfigError, match=r"profile 'stage' not found .*profiles: prod"):
        resolve_config(profile="stage", env=env)
    with pytest.raises(ConfigError, match="no config file"):
        resolve_config(profile="prod", env={"HAVIP_CONFIG": str(tmp_path / "absent.toml")})


def test_missing_token_names_the_three_ways_to_set_it(tmp_path: Path) -> None:
    env = write_config(tmp_path, '[default]\ngateway_url = "http://g:1"\n') | {"HAVIP_TOKEN": "  "}
    with pytest.raises(ConfigError) as raised:
        resolve_config(env=env)
    assert all(way in str(raised.value) for way in ("--token", "HAVIP_TOKEN", "[default]", str(tmp_path)))
    with pytest.raises(ConfigError, match="--gateway URL, set HAVIP_GATEWAY_URL"):
        resolve_config(token="t", env={"HAVIP_CONFIG": str(tmp_path / "absent.toml")})


def test_broken_file_and_url_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        resolve_config(env=write_config(tmp_path, "[default\n"))
    with pytest.raises(ConfigError, match="must be a string"):
        resolve_config(env=write_config(tmp_path, "[default]\ntoken = 5\n"))
    with pytest.raises(ConfigError, match="http:// or https://"):
        resolve_config(gateway="gateway:8080", token="t", env={})


def test_default_config_path_and_token_kept_out_of_repr() -> None:
    assert config_path({"HOME": "/home/u"}) == Path("/home/u/.config/havip/config.toml")
    assert config_path({"HAVIP_CONFIG": "/etc/h.toml", "HOME": "/home/u"}) == Path("/etc/h.toml")
    assert "secret-token" not in repr(CONFIG)


# --- rendering ------------------------------------------------------------------

HAVIP: dict[str, Any] = {
    "havip_id": "havip-1",
    "vpc_id": "vpc-demo",
    "vswitch_id": "vsw-demo-a",
    "ip_address": "192.168.1.100",
    "name": "web",
    "description": "",
    "status": "InUse",
    "eips": [{"eip_id": "eip-demo-1", "ip_address": "203.0.113.10"}],
    "owner": {"instance_id": "i-web1", "eni_id": None, "private_ip": "192.168.1.11", "host_id": "host-a"},
    "attachments": [
        {
            "target_id": "i-web1",
            "instance_id": "i-web1",
            "eni_id": None,
            "vrrp": {"state": "MASTER", "priority": 150, "seq": 3, "reported_at": "2025-01-01T00:00:00Z"},
        },
        {"target_id": "i-web2", "instance_id": "i-web2", "eni_id": None, "vrrp": None},
    ],
    "version": 7,
    "created_at": "2025-01-01T00:00:00Z",
}
OPERATION: dict[str, Any] = {
    "operation_id": "op-1",
    "kind": "AttachHaVip",
    "havip_id": "havip-1",
    "status": "Failed",
    "error": {"code": "NotFound.Instance", "message": "instance i-x does not exist"},
    "created_at": "2025-01-01T00:00:00Z",
    "updated_at": "2025-01-01T00:00:01Z",
}


def test_list_table_aligns_columns_and_marks_absent_values() -> None:
    creating = {"havip_id": "havip-22", "vswitch_id": "vsw-b", "ip_address": None, "status": "Creating", "name": ""}
    lines = render.havip_list([HAVIP, creating]).splitlines()
    assert lines[0].split() == ["ID", "IP", "VSWITCH", "STATUS", "OWNER", "EIPS", "NAME"]
    assert lines[1].split() == ["havip-1", "192.168.1.100", "vsw-demo-a", "InUse", "i-web1", "203.0.113.10", "web"]
    assert lines[2].split() == ["havip-22", "-", "vsw-b", "Creating", "-", "-", "-"]
    assert lines[0].index("STATUS") == lines[1].index("InUse") == lines[2].index("Creating")


def test_show_has_key_values_then_attachments() -> None:
    text = render.havip_detail(HAVIP)
    assert "OWNER:       i-web1 (192.168.1.11, host-a)" in text
    assert "EIPS:        eip-demo-1 (203.0.113.10)" in text
    attachments = text.split("ATTACHMENTS\n")[1].splitlines()
    assert attachments[0].split() == ["TARGET", "INSTANCE", "ENI", "VRRP_STATE", "PRIORITY", "REPORTED_AT"]
    assert attachments[1].split() == ["i-web1", "i-web1", "-", "MASTER", "150", "2025-01-01T00:00:00Z"]
    assert attachments[2].split() == ["i-web2", "i-web2", "-", "-", "-", "-"]
    bare = render.havip_detail({**HAVIP, "attachments": [], "owner": None, "eips": [], "eip_address": "203.0.113.9"})
    assert bare.endswith("no attachments") and "OWNER:       -" in bare and "203.0.113.9" in bare


def test_history_and_operation() -> None:
    change = {
        "version": 4,
        "previous_instance_id": None,
        "instance_id": "i-web1",
        "cause": "MasterReported",
        "changed_at": "2025-01-01T00:00:02Z",
    }
    lines = render.owner_history([change]).splitlines()
    assert lines[0].split() == ["VERSION", "CHANGED_AT", "FROM", "TO", "CAUSE"]
    assert lines[1].split() == ["4", "2025-01-01T00:00:02Z", "-", "i-web1", "MasterReported"]
    assert "ERROR:      NotFound.Instance: instance i-x does not exist" in render.operation_detail(OPERATION)
    assert "ERROR" not in render.operation_detail({**OPERATION, "status": "Succeeded", "error": None})
    assert render.operation_failure(OPERATION) == (
        "error: NotFound.Instance: instance i-x does not exist (operation op-1)"
    )


def test_tenant_text_cannot_drive_the_terminal_and_json_is_the_server_json() -> None:
    assert "\x1b" not in render.havip_list([{**HAVIP, "name": "evil\x1b[2Jname\n"}])
    assert json.loads(render.to_json(HAVIP)) == HAVIP


# --- the HTTP client ------------------------------------------------------------


class Recorder:
    """A MockTransport handler answering from a list, keeping every request."""

    def __init__(self, *answers: httpx.Response | Callable[[httpx.Request], httpx.Response]) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0)
        return answer(request) if callable(answer) else answer


def error(status: int, code: str, **headers: str) -> httpx.Response:
    return httpx.Response(status, json={"code": code, "message": "try later", "request_id": "req-1"}, headers=headers)


def gateway(recorder: Recorder, sleeps: list[float], **options: Any) -> Gateway:
    return Gateway(CONFIG, transport=httpx.MockTransport(recorder), sleep=sleeps.append, **options)


def test_throttled_request_is_retried_with_the_same_idempotency_key() -> None:
    accepted = httpx.Response(202, json={"operation": {"operation_id": "op-1"}})
    recorder = Recorder(error(429, "Throttling", **{"Retry-After": "2"}), error(503, "ServiceUnavailable"), accepted)
    sleeps: list[float] = []
    answer = gateway(recorder, sleeps).call("POST", "/v1/havips", body={"vswitch_id": "v"}, idempotency_key="k-1")
    assert answer == {"operation": {"operation_id": "op-1"}}
    assert sleeps == [2.0, 1.0]  # Retry-After honoured, then the backoff when there is none
    assert [r.headers["Idempotency-Key"] for r in recorder.requests] == ["k-1"] * 3
    assert {r.content for r in recorder.requests} == {b'{"vswitch_id":"v"}'}
    assert recorder.requests[0].headers["Authorization"] == "Bearer secret-token"


def test_retries_end_with_the_last_error_and_other_errors_are_not_retried() -> None:
    sleeps: list[float] = []
    recorder = Recorder(*(error(503, "ServiceUnavailable", **{"Retry-After": "900"}) for _ in range(3)))
    with pytest.raises(ApiError) as raised:
        gateway(recorder, sleeps, retries=2).call("GET", "/v1/havips")
    assert raised.value.status == 503 and sleeps == [30.0, 30.0]  # capped
    assert str(raised.value) == "ServiceUnavailable: try later (request_id req-1)"
    recorder = Recorder(error(409, "IdempotentParameterMismatch"))
    with pytest.raises(ApiError, match="IdempotentParameterMismatch"):
        gateway(recorder, sleeps).call("POST", "/v1/havips", body={}, idempotency_key="k")
    assert len(recorder.requests) == 1


def test_an_error_page_that_is_not_json_still_reads() -> None:
    recorder = Recorder(httpx.Response(502, text="<html>bad gateway</html>", headers={"x-request-id": "r-9"}))
    with pytest.raises(ApiError, match=r"HTTP502: Bad Gateway \(request_id r-9\)"):
        gateway(recorder, []).call("GET", "/v1/havips")


def test_pages_follow_the_token_and_stop_at_max_items() -> None:
    recorder = Recorder(
        httpx.Response(200, json={"havips": [{"havip_id": "a"}, {"havip_id": "b"}], "next_page_token": "t1"}),
        httpx.Response(200, json={"havips": [{"havip_id": "c"}], "next_page_token": None}),
        httpx.Response(200, json={"havips": [{"havip_id": "a"}, {"havip_id": "b"}], "next_page_token": "t1"}),
    )
    client = gateway(recorder, [])
    assert [h["havip_id"] for h in client.pages("/v1/havips", "havips", {"status": "InUse"})] == ["a", "b", "c"]
    assert recorder.requests[1].url.params["page_token"] == "t1"
    assert recorder.requests[1].url.params["status"] == "InUse"
    assert "page_token" not in recorder.requests[0].url.params
    assert len(list(client.pages("/v1/havips", "havips", {}, max_items=2))) == 2
    assert len(recorder.requests) == 3  # max_items reached: no third page asked for


def test_wait_operation_holds_on_the_server_and_times_out() -> None:
    now = [0.0]
    pending = {"operation_id": "op-1", "havip_id": "h", "status": "Pending"}

    def held(request: httpx.Request) -> httpx.Response:
        now[0] += 5.0
        return httpx.Response(200, json=pending)

    recorder = Recorder(held, httpx.Response(200, json={**pending, "status": "Succeeded"}))
    client = gateway(recorder, [], clock=lambda: now[0])
    assert client.wait_operation(pending, timeout=60)["status"] == "Succeeded"
    assert recorder.requests[0].url.path == "/v1/operations/op-1"
    assert recorder.requests[0].url.params["wait"] == "5s"
    recorder = Recorder(held, held)
    with pytest.raises(OperationTimeout, match="op-1 still Pending after 7s"):
        gateway(recorder, [], clock=lambda: now[0]).wait_operation(pending, timeout=7)
    assert [r.url.params["wait"] for r in recorder.requests] == ["5s", "2s"]


def test_ids_are_quoted_into_paths() -> None:
    assert path("havips", "../operations/x", "eip") == "/v1/havips/..%2Foperations%2Fx/eip"


# --- commands -------------------------------------------------------------------


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="havip")
    register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["havips", *argv, "--gateway", "http://gateway.test", "--token", "secret-token"])


def invoke(recorder: Recorder, *argv: str) -> int:
    args = parse(*argv)
    return run(args.havips_action, args, env={}, transport=httpx.MockTransport(recorder))


def test_failed_operation_exits_1_with_its_code_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    pending = {**OPERATION, "status": "Pending", "error": None}
    recorder = Recorder(
        error(429, "Throttling", **{"Retry-After": "0"}),
        httpx.Response(202, json={"operation": pending}),
        httpx.Response(200, json=OPERATION),
    )
    assert invoke(recorder, "attach", "havip-1", "--instance-id", "i-x", "--output", "json") == 1
    out, err = capsys.readouterr()
    assert json.loads(out) == {"operation": OPERATION}
    assert "NotFound.Instance: instance i-x does not exist" in err and "secret-token" not in out + err
    first, second = recorder.requests[0], recorder.requests[1]
    assert first.headers["Idempotency-Key"] == second.headers["Idempotency-Key"]
    assert json.loads(second.content) == {"instance_id": "i-x"}


def test_each_command_has_its_own_key_unless_given(capsys: pytest.CaptureFixture[str]) -> None:
    accepted = httpx.Response(202, json={"operation": {**OPERATION, "status": "Pending", "error": None}})
    recorder = Recorder(accepted, accepted, accepted)
    for _ in range(2):
        assert invoke(recorder, "detach", "havip-1", "i-web1", "--no-wait") == 0
    assert invoke(recorder, "delete", "havip-1", "--no-wait", "--idempotency-key", "mine") == 0
    keys = [r.headers["Idempotency-Key"] for r in recorder.requests]
    assert keys[0] != keys[1] and keys[2] == "mine"
    assert [(r.method, r.url.path) for r in recorder.requests][1:] == [
        ("DELETE", "/v1/havips/havip-1/associations/i-web1"),
        ("DELETE", "/v1/havips/havip-1"),
    ]


def test_create_waits_and_shows_the_havip_fetched_again(capsys: pytest.CaptureFixture[str]) -> None:
    operation = {**OPERATION, "kind": "CreateHaVip", "status": "Pending", "error": None}
    recorder = Recorder(
        httpx.Response(202, json={"havip": {**HAVIP, "status": "Creating"}, "operation": operation}),
        httpx.Response(200, json={**operation, "status": "Succeeded"}),
        httpx.Response(200, json=HAVIP),
    )
    assert invoke(recorder, "create", "--vswitch-id", "vsw-demo-a", "--name", "web", "--output", "json") == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["havip"] == HAVIP and shown["operation"]["status"] == "Succeeded"
    assert json.loads(recorder.requests[0].content) == {"vswitch_id": "vsw-demo-a", "name": "web"}


def test_http_errors_exit_3_and_missing_config_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert invoke(Recorder(error(404, "NotFound.HaVip")), "show", "havip-x") == 3
    assert capsys.readouterr().err == "error: NotFound.HaVip: try later (request_id req-1)\n"
    args = parse("list")
    args.gateway = None
    assert run(args.havips_action, args, env={"HAVIP_CONFIG": "/nonexistent/havip.toml"}) == 2
    assert "HAVIP_GATEWAY_URL" in capsys.readouterr().err


def test_eip_release_sends_the_eip_only_when_given(capsys: pytest.CaptureFixture[str]) -> None:
    accepted = httpx.Response(202, json={"operation": {**OPERATION, "status": "Pending", "error": None}})
    recorder = Recorder(accepted, accepted)
    assert invoke(recorder, "eip", "release", "havip-1", "--no-wait") == 0
    assert invoke(recorder, "eip", "release", "havip-1", "eip-2", "--no-wait") == 0
    assert [str(r.url) for r in recorder.requests] == [
        "http://gateway.test/v1/havips/havip-1/eip",
        "http://gateway.test/v1/havips/havip-1/eip?eip_id=eip-2",
    ]
