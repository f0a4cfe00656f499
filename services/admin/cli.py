"""`havip admin`: create tenants, set their limits and rates, issue and revoke their tokens.

    havip admin tenant create NAME [--tenant-id ID] [limit flags] [--requests-per-second R]
    havip admin tenant list
    havip admin tenant set-limits TENANT_ID [limit flags; "default" resets one]
    havip admin token create TENANT_ID [--description TEXT]
    havip admin token revoke TOKEN_ID
    havip admin token list TENANT_ID

A token's secret is printed once, when it is created; only its hash is kept.
Exit status: 0 done, 1 refused (unknown tenant or token, a taken name, the
database unreachable) with one line on stderr, 2 a usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any

import asyncpg

from services.gateway import tenants, tokens
from services.quota.tenant_limits import default_limits, limits_for, set_limits
from services.runtime.db import connect_pool
from services.runtime.settings import Settings, load_settings

# --flag (argparse dest) -> quota's limit name
LIMIT_FLAGS = {
    "max_havips": "havips",
    "max_attachments_per_havip": "attachments_per_havip",
    "max_havips_per_instance": "havips_per_instance",
    "max_eips_per_havip": "eips_per_havip",
}
RESET = "default"


class Refused(Exception):
    """An action an operator asked for that cannot be done (exit status 1)."""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `admin` to the `havip` command line's subcommands."""
    admin = sub.add_parser("admin", help="tenants, their limits and their tokens (operators)")
    admin_sub = admin.add_subparsers(dest="admin_command", required=True)

    tenant = admin_sub.add_parser("tenant", help="create, list and limit tenants")
    tenant_sub = tenant.add_subparsers(dest="tenant_command", required=True)
    create = tenant_sub.add_parser("create", help="a new tenant, its limits and a first tenant token")
    create.add_argument("name", help="unique, 1 to 128 characters")
    create.add_argument("--tenant-id", help="default: tenant-<random hex>")
    _limit_flags(create, allow_reset=False)
    _output_flag(create)
    create.set_defaults(func=_tenant_create)

    listing = tenant_sub.add_parser("list", help="every tenant with its rate")
    _output_flag(listing)
    listing.set_defaults(func=_tenant_list)

    limits = tenant_sub.add_parser("set-limits", help=f"change limits; {RESET!r} goes back to the default")
    limits.add_argument("tenant_id")
    _limit_flags(limits, allow_reset=True)
    _output_flag(limits)
    limits.set_defaults(func=_tenant_set_limits)

    token = admin_sub.add_parser("token", help="a tenant's tokens")
    token_sub = token.add_subparsers(dest="token_command", required=True)
    token_create = token_sub.add_parser("create", help="another tenant token (the secret is printed once)")
    token_create.add_argument("tenant_id")
    token_create.add_argument("--description", default="", help="up to 128 characters")
    _output_flag(token_create)
    token_create.set_defaults(func=_token_create)

    revoke = token_sub.add_parser("revoke", help="revoke a token (tenant or agent) at once, by its tok-... id")
    revoke.add_argument("token_id")
    _output_flag(revoke)
    revoke.set_defaults(func=_token_revoke)

    token_list = token_sub.add_parser("list", help="a tenant's tokens, agents' included (never the secrets)")
    token_list.add_argument("tenant_id")
    _output_flag(token_list)
    token_list.set_defaults(func=_token_list)


def _limit_flags(parser: argparse.ArgumentParser, *, allow_reset: bool) -> None:
    count = _count_or_reset if allow_reset else _count
    rate = _rate_or_reset if allow_reset else _rate
    value = "N|default" if allow_reset else "N"
    parser.add_argument("--max-havips", type=count, metavar=value, help="HAVIPs the tenant may hold")
    parser.add_argument("--max-attachments-per-havip", type=count, metavar=value, help="instances or ENIs per HAVIP")
    parser.add_argument("--max-havips-per-instance", type=count, metavar=value, help="HAVIPs per instance")
    parser.add_argument("--max-eips-per-havip", type=count, metavar=value, help="EIPs per HAVIP")
    parser.add_argument(
        "--requests-per-second",
        type=rate,
        metavar="R|default" if allow_reset else "R",
        help="per token of this tenant, on each gateway replica",
    )


def _output_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", choices=("text", "json"), default="text")


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError("a limit cannot be negative")
    return value


def _count_or_reset(text: str) -> int | str:
    return RESET if text == RESET else _count(text)


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError("requests per second must be above 0")
    return value


def _rate_or_reset(text: str) -> float | str:
    return RESET if text == RESET else _rate(text)


def _overrides(args: argparse.Namespace) -> dict[str, int | None]:
    given = {column: getattr(args, flag) for flag, column in LIMIT_FLAGS.items() if getattr(args, flag) is not None}
    return {column: None if value == RESET else value for column, value in given.items()}


# --- the commands: each prints its answer and returns the exit status ------------------------------

Work = Callable[[asyncpg.Pool, Settings], Awaitable[dict[str, Any]]]


def _run(args: argparse.Namespace, work: Work, as_text: Callable[[dict[str, Any]], list[str]]) -> int:
    settings = load_settings()

    async def go() -> dict[str, Any]:
        try:
            pool = await connect_pool(settings.database_url, max_size=2, timeout=10)
        except (OSError, asyncpg.PostgresError) as exc:
            raise Refused(f"cannot reach the database: {exc}") from exc
        try:
            return await work(pool, settings)
        finally:
            await pool.close()

    try:
        answer = asyncio.run(go())
    except (Refused, tenants.TenantRefused) as exc:
        print(f"havip admin: {exc}", file=sys.stderr)
        return 1
    if args.output == "json":
        print(json.dumps(answer, indent=2, default=str))
    else:
        print("\n".join(as_text(answer)))
    return 0


async def _require_tenant(db: asyncpg.Pool | asyncpg.Connection, tenant_id: str) -> tenants.Tenant:
    found = await tenants.get_tenant(db, tenant_id)
    if found is None:
        raise Refused(f"tenant {tenant_id} does not exist")
    return found


def _token_answer(info: tokens.TokenInfo, secret: str | None = None) -> dict[str, Any]:
    answer = asdict(info)
    if secret is not None:
        answer["token"] = secret
    return answer


def _tenant_create(args: argparse.Namespace) -> int:
    async def work(db: asyncpg.Pool, settings: Settings) -> dict[str, Any]:
        # One transaction: no tenant without its limits and its first token.
        async with db.acquire() as conn, conn.transaction():
            tenant = await tenants.create_tenant(
                conn, args.name, tenant_id=args.tenant_id, requests_per_second=args.requests_per_second
            )
            overrides = _overrides(args)
            if overrides:
                await set_limits(conn, tenant.tenant_id, overrides)
            issued = await tokens.issue_token(conn, "tenant", tenant.tenant_id, description="created with the tenant")
            limits = await limits_for(conn, tenant.tenant_id, default_limits(settings))
        return {"tenant": asdict(tenant), "limits": asdict(limits), "token": _token_answer(issued.info, issued.token)}

    def as_text(answer: dict[str, Any]) -> list[str]:
        return [
            f"tenant_id: {answer['tenant']['tenant_id']}",
            f"name: {answer['tenant']['name']}",
            *_rate_line(answer["tenant"]),
            *_limit_lines(answer["limits"]),
            f"token_id: {answer['token']['token_id']}",
            f"token: {answer['token']['token']}",
            "(the token is shown only now: store it)",
        ]

    return _run(args, work, as_text)


def _tenant_list(args: argparse.Namespace) -> int:
    async def work(db: asyncpg.Pool, _: Settings) -> dict[str, Any]:
        return {"tenants": [asdict(tenant) for tenant in await tenants.list_tenants(db)]}

    def as_text(answer: dict[str, Any]) -> list[str]:
        lines = [f"{'TENANT_ID':<24} {'REQUESTS/S':<10} NAME"]
        for tenant in answer["tenants"]:
            rate = "default" if tenant["requests_per_second"] is None else f"{tenant['requests_per_second']:g}"
            lines.append(f"{tenant['tenant_id']:<24} {rate:<10} {tenant['name']}")
        return lines

    return _run(args, work, as_text)


def _tenant_set_limits(args: argparse.Namespace) -> int:
    async def work(db: asyncpg.Pool, settings: Settings) -> dict[str, Any]:
        async with db.acquire() as conn, conn.transaction():
            tenant = await _require_tenant(conn, args.tenant_id)
            if args.requests_per_second is not None:
                rate = None if args.requests_per_second == RESET else args.requests_per_second
                tenant = await tenants.set_request_rate(conn, args.tenant_id, rate) or tenant
            overrides = _overrides(args)
            if overrides:
                await set_limits(conn, args.tenant_id, overrides)
            limits = await limits_for(conn, args.tenant_id, default_limits(settings))
        return {"tenant": asdict(tenant), "limits": asdict(limits)}

    def as_text(answer: dict[str, Any]) -> list[str]:
        return [
            f"tenant_id: {answer['tenant']['tenant_id']}",
            *_rate_line(answer["tenant"]),
            *_limit_lines(answer["limits"]),
        ]

    return _run(args, work, as_text)


def _token_create(args: argparse.Namespace) -> int:
    if len(args.description) > 128:
        print("havip admin: a description has at most 128 characters", file=sys.stderr)
        return 2

    async def work(db: asyncpg.Pool, _: Settings) -> dict[str, Any]:
        async with db.acquire() as conn, conn.transaction():
            await _require_tenant(conn, args.tenant_id)
            issued = await tokens.issue_token(conn, "tenant", args.tenant_id, description=args.description)
        return _token_answer(issued.info, issued.token)

    def as_text(answer: dict[str, Any]) -> list[str]:
        return [
            f"token_id: {answer['token_id']}",
            f"token: {answer['token']}",
            "(the token is shown only now: store it)",
        ]

    return _run(args, work, as_text)


def _token_revoke(args: argparse.Namespace) -> int:
    async def work(db: asyncpg.Pool, _: Settings) -> dict[str, Any]:
        revoked = await tokens.revoke_token(db, args.token_id)
        if revoked is None:
            raise Refused(f"token {args.token_id} does not exist")
        return _token_answer(revoked)

    def as_text(answer: dict[str, Any]) -> list[str]:
        return [f"revoked {answer['token_id']} at {answer['revoked_at']}"]

    return _run(args, work, as_text)


def _token_list(args: argparse.Namespace) -> int:
    async def work(db: asyncpg.Pool, _: Settings) -> dict[str, Any]:
        await _require_tenant(db, args.tenant_id)
        return {"tokens": [_token_answer(info) for info in await tokens.list_tokens(db, args.tenant_id)]}

    def as_text(answer: dict[str, Any]) -> list[str]:
        lines = [f"{'TOKEN_ID':<26} {'KIND':<7} {'INSTANCE':<20} {'CREATED':<26} {'REVOKED':<26} DESCRIPTION"]
        for token in answer["tokens"]:
            created, revoked = str(token["created_at"])[:25], str(token["revoked_at"] or "-")[:25]
            lines.append(
                f"{token['token_id']:<26} {token['kind']:<7} {token['instance_id'] or '-':<20}"
                f" {created:<26} {revoked:<26} {token['description']}"
            )
        return lines

    return _run(args, work, as_text)


def _rate_line(tenant: dict[str, Any]) -> list[str]:
    rate = tenant["requests_per_second"]
    return [f"requests_per_second: {'default' if rate is None else f'{rate:g}'}"]


def _limit_lines(limits: dict[str, Any]) -> list[str]:
    return [f"max_{name}: {value}" for name, value in limits.items()]
