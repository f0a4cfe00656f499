"""The `havip` command line."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys

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


def _dev_up(args: argparse.Namespace) -> int:
    from services.dev.stack import run_dev_stack

    return run_dev_stack(load_settings(), workdir=args.workdir)


def _dev_seed(_: argparse.Namespace) -> int:
    from services.dev.stack import seed

    asyncio.run(seed(load_settings()))
    return 0


def _bench_failover(args: argparse.Namespace) -> int:
    from services.dev.bench import run_failover_bench

    return run_failover_bench(load_settings(), rounds=args.rounds)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="havip", description="Edge HAVIP control plane")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run one service")
    serve.add_argument("service", choices=SERVICES)
    serve.set_defaults(func=_serve)

    sub.add_parser("migrate", help="apply the SQL migrations").set_defaults(func=_migrate)
    sub.add_parser("topics", help="create the Kafka topics").set_defaults(func=_topics)

    dev = sub.add_parser("dev", help="everything on one machine, embedded defaults")
    dev_sub = dev.add_subparsers(dest="dev_command", required=True)
    up = dev_sub.add_parser("up", help="start broker, database and the four services")
    up.add_argument("--workdir", default=".havip-dev", help="logs and scratch files (default: .havip-dev)")
    up.set_defaults(func=_dev_up)
    dev_sub.add_parser("seed", help="publish the demo inventory and tokens").set_defaults(func=_dev_seed)

    bench = sub.add_parser("bench", help="measure the system on this machine")
    bench_sub = bench.add_subparsers(dest="bench_command", required=True)
    failover = bench_sub.add_parser("failover", help="VRRP report to forwarder answer, over many failovers")
    failover.add_argument("--rounds", type=int, default=100)
    failover.set_defaults(func=_bench_failover)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    sys.exit(args.func(args))


if __name__ == "__main__":
    main()
