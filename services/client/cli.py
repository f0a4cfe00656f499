"""`havip havips ...`: argparse wiring and one function per command.

Exit status: 0 done; 1 the operation Failed (or was still Pending at
--wait-timeout); 2 usage, including a missing gateway URL or token; 3 the
gateway answered an error, or could not be reached.

With `--output json` a mutation prints the shape of its 202 answer with the
operation brought up to date: `{"operation": ...}`, and for create
`{"havip": ..., "operation": ...}` with the HAVIP fetched again once created
(null if the create failed). Lists print every item: `{"havips": [...]}`,
`{"changes": [...]}`.
"""

from __future__ import annotations

import argparse
import sys
import uuid
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import httpx

from services.client import render
from services.client.api import ClientError, Gateway, OperationTimeout, path
from services.client.config import ConfigError, resolve_config

Action = Callable[[Gateway, argparse.Namespace], int]
STATUSES = ("Creating", "Available", "InUse", "Deleting", "Deleted")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `havips` and its commands to the `havip` parser's subcommands."""
    common = _common_options()
    havips = sub.add_parser("havips", help="manage your HAVIPs (tenant API)", description="Manage your HAVIPs.")
    commands = havips.add_subparsers(dest="havips_command", required=True, metavar="COMMAND")

    def command(name: str, action: Action, help: str, parent: Any = commands) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = parent.add_parser(name, parents=[common], help=help, description=help)
        parser.set_defaults(func=partial(run, action), havips_action=action)
        return parser

    create = command("create", _create, "create a HAVIP in a vSwitch and wait until it is Available")
    create.add_argument("--vswitch-id", required=True)
    create.add_argument("--ip-address", help="an address in the vSwitch's CIDR (default: a free one)")
    create.add_argument("--name")
    create.add_argument("--description")

    listing = command("list", _list, "list your HAVIPs (every page)")
    listing.add_argument("--vswitch-id")
    listing.add_argument("--status", choices=STATUSES)
    listing.add_argument("--ip-address")
    listing.add_argument("--page-size", type=_bounded(1, 100), help="HAVIPs per request, 1..100")
    listing.add_argument("--max-items", type=_bounded(1, None), help="stop after this many")

    command("show", _show, "show one HAVIP with its owner and attachments").add_argument("havip_id", metavar="ID")

    attach = command("attach", _attach, "attach an instance or ENI to a HAVIP")
    attach.add_argument("havip_id", metavar="ID")
    target = attach.add_mutually_exclusive_group(required=True)
    target.add_argument("--instance-id")
    target.add_argument("--eni-id")

    detach = command("detach", _detach, "detach an instance or ENI from a HAVIP")
    detach.add_argument("havip_id", metavar="ID")
    detach.add_argument("target_id", metavar="TARGET_ID", help="the instance or ENI id")

    command("delete", _delete, "release a HAVIP").add_argument("havip_id", metavar="ID")

    eip = commands.add_parser("eip", help="associate or release a HAVIP's EIP", description="A HAVIP's EIP.")
    eip_commands = eip.add_subparsers(dest="eip_command", required=True, metavar="COMMAND")
    associate = command("associate", _eip_associate, "associate an EIP with a HAVIP", eip_commands)
    associate.add_argument("havip_id", metavar="ID")
    associate.add_argument("eip_id", metavar="EIP_ID")
    release = command("release", _eip_release, "release a HAVIP's EIP", eip_commands)
    release.add_argument("havip_id", metavar="ID")
    release.add_argument("eip_id", metavar="EIP_ID", nargs="?", help="needed only when the HAVIP has several")

    history = command("history", _history, "every change of a HAVIP's owner, newest first")
    history.add_argument("havip_id", metavar="ID")
    history.add_argument("--max-items", type=_bounded(1, None), help="stop after this many")


def _common_options() -> argparse.ArgumentParser:
    # A parent parser, so the options are accepted after every command (`havip havips list --output json`).
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("global options")
    group.add_argument("--gateway", metavar="URL", help="gateway URL (else HAVIP_GATEWAY_URL, else the config file)")
    group.add_argument("--token", metavar="TOKEN", help="tenant token (else HAVIP_TOKEN, else the config file)")
    group.add_argument("--profile", metavar="NAME", help="[profiles.NAME] of the config file (else [default])")
    group.add_argument("--output", choices=("table", "json"), default="table")
    group.add_argument("--no-wait", action="store_true", help="return once the gateway accepted the request")
    group.add_argument("--wait-timeout", type=_positive_seconds, default=120.0, metavar="SECONDS")
    group.add_argument("--idempotency-key", metavar="KEY", help="default: a fresh one per command")
    return common


def _bounded(low: int, high: int | None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{value} is not in {low}..{high if high is not None else ''}")
        return value

    return parse


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("must be more than 0 seconds")
    return value


def run(
    action: Action,
    args: argparse.Namespace,
    *,
    env: Mapping[str, str] | None = None,
    transport: httpx.BaseTransport | None = None,
) -> int:
    """Resolve the configuration, run one command, and turn its failures into exit statuses."""
    try:
        config = resolve_config(gateway=args.gateway, token=args.token, profile=args.profile, env=env)
    except ConfigError as exc:
        print(f"havip havips: {exc}", file=sys.stderr)
        return 2
    try:
        with Gateway(config, transport=transport) as gateway:
            return action(gateway, args)
    except ClientError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3


def _emit(args: argparse.Namespace, data: Any, table: str) -> None:
    print(render.to_json(data) if args.output == "json" else table)


def _send(gateway: Gateway, args: argparse.Namespace, method: str, url: str, **request: Any) -> dict[str, Any]:
    # One key per command, given or fresh: the client's own retries of this request reuse it.
    key = args.idempotency_key or str(uuid.uuid4())
    answer: dict[str, Any] = gateway.call(method, url, idempotency_key=key, **request)
    return answer


def _settle(gateway: Gateway, args: argparse.Namespace, operation: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """The operation once terminal (unless --no-wait), and the exit status it means."""
    if args.no_wait:
        return operation, 0
    try:
        operation = gateway.wait_operation(operation, args.wait_timeout)
    except OperationTimeout as exc:
        print(f"error: {exc}; follow it with `havip havips show {operation['havip_id']}`", file=sys.stderr)
        return exc.operation, 1
    except KeyboardInterrupt:
        # Ctrl-C stops the waiting, not the operation: say so rather than print a traceback.
        print(f"\ninterrupted: operation {operation['operation_id']} goes on without us", file=sys.stderr)
        return operation, 130
    if operation["status"] == "Failed":
        print(render.operation_failure(operation), file=sys.stderr)
        return operation, 1
    return operation, 0


def _operation_command(gateway: Gateway, args: argparse.Namespace, method: str, url: str, **request: Any) -> int:
    answer = _send(gateway, args, method, url, **request)
    operation, status = _settle(gateway, args, answer["operation"])
    _emit(args, {"operation": operation}, render.operation_detail(operation))
    return status


def _create(gateway: Gateway, args: argparse.Namespace) -> int:
    body = {"vswitch_id": args.vswitch_id}
    body |= {k: v for k in ("ip_address", "name", "description") if (v := getattr(args, k)) is not None}
    answer = _send(gateway, args, "POST", path("havips"), body=body)
    operation, status = _settle(gateway, args, answer["operation"])
    havip: dict[str, Any] | None = answer["havip"]
    if operation["status"] == "Succeeded":
        # The accepted view says Creating and may lack the address quota picked.
        havip = gateway.call("GET", path("havips", operation["havip_id"]))
    elif operation["status"] == "Failed":
        havip = None
    shown = render.operation_detail(operation)
    if havip is not None:
        shown = f"{render.havip_detail(havip)}\n\n{shown}"
    _emit(args, {"havip": havip, "operation": operation}, shown)
    return status


def _list(gateway: Gateway, args: argparse.Namespace) -> int:
    filters = {
        "vswitch_id": args.vswitch_id,
        "status": args.status,
        "ip_address": args.ip_address,
        "page_size": args.page_size,
    }
    havips = list(gateway.pages(path("havips"), "havips", filters, args.max_items))
    _emit(args, {"havips": havips}, render.havip_list(havips))
    return 0


def _show(gateway: Gateway, args: argparse.Namespace) -> int:
    havip = gateway.call("GET", path("havips", args.havip_id))
    _emit(args, havip, render.havip_detail(havip))
    return 0


def _attach(gateway: Gateway, args: argparse.Namespace) -> int:
    body = {"instance_id": args.instance_id} if args.instance_id else {"eni_id": args.eni_id}
    return _operation_command(gateway, args, "POST", path("havips", args.havip_id, "associations"), body=body)


def _detach(gateway: Gateway, args: argparse.Namespace) -> int:
    return _operation_command(gateway, args, "DELETE", path("havips", args.havip_id, "associations", args.target_id))


def _delete(gateway: Gateway, args: argparse.Namespace) -> int:
    return _operation_command(gateway, args, "DELETE", path("havips", args.havip_id))


def _eip_associate(gateway: Gateway, args: argparse.Namespace) -> int:
    body = {"eip_id": args.eip_id}
    return _operation_command(gateway, args, "PUT", path("havips", args.havip_id, "eip"), body=body)


def _eip_release(gateway: Gateway, args: argparse.Namespace) -> int:
    url = path("havips", args.havip_id, "eip")
    return _operation_command(gateway, args, "DELETE", url, params={"eip_id": args.eip_id})


def _history(gateway: Gateway, args: argparse.Namespace) -> int:
    changes = list(gateway.pages(path("havips", args.havip_id, "owner-history"), "changes", {}, args.max_items))
    _emit(args, {"changes": changes}, render.owner_history(changes))
    return 0
