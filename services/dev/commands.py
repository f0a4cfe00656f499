"""`havip dev` and `havip bench`: their subcommands, options and what each runs.

services/cli.py makes the two commands and hands them here when the dev
tooling is installed. This module imports only argparse at load time: every
`havip` call builds the parser, so a bench's own modules (and the broker,
database and HTTP clients they pull in) are imported only when it runs.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.runtime.settings import load_settings

Run = Callable[[argparse.Namespace], int]


def register(dev: argparse.ArgumentParser, bench: argparse.ArgumentParser) -> None:
    """Add the subcommands of `havip dev` and `havip bench`, each with the function that runs it."""
    _register_dev(dev.add_subparsers(dest="dev_command", required=True))
    _register_benches(bench.add_subparsers(dest="bench_command", required=True))


def _register_dev(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    up = sub.add_parser("up", help="start broker, database and the four services")
    up.add_argument("--workdir", default=".havip-dev", help="logs and the database's files (default: .havip-dev)")
    up.add_argument("--fresh", action="store_true", help="delete the embedded database's data and start over")
    up.set_defaults(func=_dev_up)
    sub.add_parser("seed", help="publish the demo inventory and tokens").set_defaults(func=_dev_seed)


def _dev_up(args: argparse.Namespace) -> int:
    from services.dev.stack import run_dev_stack

    return run_dev_stack(load_settings(), workdir=args.workdir, fresh=args.fresh)


def _dev_seed(_: argparse.Namespace) -> int:
    from services.dev.stack import seed

    asyncio.run(seed(load_settings()))
    return 0


def _register_benches(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    failover = _bench(
        sub,
        "failover",
        "VRRP report to forwarder answer over many failovers, idle and under background load",
        "services.dev.bench.run_failover_bench",
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

    soak = _bench(
        sub,
        "soak",
        "a failover every second for half an hour under a fleet's load through the gateway",
        "services.dev.bench_soak.run_soak_bench",
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

    renewals = _bench(
        sub,
        "renewals",
        "lease renewals and state changes one mapping worker applies",
        "services.dev.bench_renewals.run_renewal_bench",
    )
    renewals.add_argument("--havips", type=int, default=10_000)
    renewals.add_argument("--renewals", type=int, default=30_000)
    renewals.add_argument("--changes", type=int, default=3_000)
    _out_option(renewals, "renewals")

    mapping = _bench(
        sub,
        "mapping",
        "VRRP reports one mapping worker applies per second, sustained",
        "services.dev.bench_mapping.run_mapping_bench",
    )
    mapping.add_argument("--havips", type=int, default=10_000)
    mapping.add_argument("--seconds", type=float, default=60.0, help="measured per kind of report, after a warm-up")
    _out_option(mapping, "mapping")

    keepalived = _bench(
        sub,
        "keepalived",
        "real keepalived failovers, notify to forwarder (root)",
        "services.dev.bench_keepalived.run_keepalived_bench",
    )
    keepalived.add_argument("--rounds", type=int, default=10)
    keepalived.add_argument(
        "--source",
        choices=("agent", "observer", "both"),
        default="agent",
        help="how the platform learns: havip agent beside keepalived (default), havip observe on the host"
        " (keepalived alone: adds the graceful stop, the split brain, three nodes and an intruder), or both",
    )
    _out_option(keepalived, "keepalived")

    recovery = _bench(
        sub,
        "recovery",
        "gateway restart, PostgreSQL and broker outages, a broker that lost its topics",
        "services.dev.bench_recovery.run_recovery_bench",
    )
    recovery.add_argument("--rounds", type=int, default=3)
    _out_option(recovery, "recovery", "results JSON")

    rebalance = _bench(
        sub,
        "rebalance",
        "a mapping worker SIGKILLed: until its partitions move on",
        "services.dev.bench_rebalance.run_rebalance_bench",
    )
    rebalance.add_argument("--rounds", type=int, default=5)
    rebalance.add_argument("--static", action="store_true", help="also measure static group membership")
    _out_option(rebalance, "rebalance", "results JSON")

    lookups = _bench(
        sub,
        "lookups",
        "forwarder lookups (in process, HTTP single and batch) against PostgreSQL, side by side",
        "services.dev.bench_lookups.run_lookups_bench",
    )
    lookups.add_argument("--havips", type=int, default=10_000, help="HAVIPs the stack holds (default 10,000)")
    lookups.add_argument("--seconds", type=float, default=10.0, help="load on each side (default 10)")
    _out_option(lookups, "lookups")

    coldstart = _bench(
        sub,
        "coldstart",
        "forwarder start to ready, and its memory, per fleet size",
        "services.dev.bench_coldstart.run_coldstart_bench",
    )
    coldstart.add_argument(
        "--sizes", type=_sizes, default=[100_000, 1_000_000], help="HAVIP counts (default 100000,1000000)"
    )
    coldstart.add_argument("--starts", type=int, default=3, help="forwarder starts per size; the median is shown (3)")
    _out_option(coldstart, "coldstart")

    intake = _bench(
        sub,
        "intake",
        "VRRP reports a gateway accepts per second over HTTP (wrk)",
        "services.dev.bench_intake.run_intake_bench",
    )
    intake.add_argument("--agents", type=int, default=500, help="agent tokens the load is spread over (default 500)")
    intake.add_argument("--seconds", type=float, default=15.0, help="length of the load (default 15)")
    intake.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    _out_option(intake, "intake")

    watch = _bench(
        sub,
        "watch",
        "from the forwarder applying a change to every one of many watchers having it, p50/p99",
        "services.dev.bench_watch.run_watch_bench",
    )
    watch.add_argument("--havips", type=int, default=10_000, help="HAVIPs the forwarder holds (default 10,000)")
    watch.add_argument("--watchers", type=int, default=1000, help="watch streams on the forwarder (default 1,000)")
    watch.add_argument("--changes", type=int, default=200, help="changes produced to havip.mappings (default 200)")
    watch.add_argument("--per-second", type=float, default=20.0, help="pace of the changes (default 20)")
    watch.add_argument(
        "--client-processes",
        type=int,
        default=2,
        dest="processes",
        metavar="CLIENT_PROCESSES",
        help="processes the watch streams are spread over (default 2)",
    )
    _out_option(watch, "watch")

    observe = _bench(
        sub,
        "observe",
        "one havip observe, many HAVIPs advertising once a second on its host: CPU, drops (root)",
        "services.dev.bench_observe.run_observe_bench",
    )
    observe.add_argument("--havips", type=int, default=1000, help="HAVIPs advertising (default 1,000)")
    observe.add_argument("--per-instance", type=int, default=5, help="HAVIPs per instance, one port each (default 5)")
    observe.add_argument("--seconds", type=float, default=60.0, help="measured window (default 60)")
    observe.add_argument("--warmup", type=float, default=10.0, help="seconds before the window (default 10)")
    _out_option(observe, "observe")

    every = sub.add_parser(
        "all", help="failover, mapping, lookups, watch, coldstart and intake in turn, and one table against the targets"
    )
    every.add_argument(
        "--quick", action="store_true", help="tiny parameters: a smoke run of a few minutes, not figures to quote"
    )
    every.add_argument(
        "--out",
        metavar="DIR",
        help="each bench's folder, summary.json and summary.md (default: bench-results/all-<timestamp>)",
    )
    every.set_defaults(func=_all)


def _bench(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str, help: str, runs: str
) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=help)
    parser.set_defaults(func=Bench(name, runs))
    return parser


# What a bench's parsed arguments hold beside its own options.
NOT_OPTIONS = frozenset({"command", "bench_command", "func", "out"})


@dataclass(frozen=True)
class Bench:
    """A `havip bench` subcommand: `runs` (module.function) is called with the settings, `out_dir`,
    and each option by its name; the module is imported only then."""

    name: str
    runs: str

    def function(self) -> Callable[..., int]:
        module, function = self.runs.rsplit(".", 1)
        found: Callable[..., int] = getattr(importlib.import_module(module), function)
        return found

    def options(self, args: argparse.Namespace) -> dict[str, Any]:
        return {key: value for key, value in vars(args).items() if key not in NOT_OPTIONS}

    def __call__(self, args: argparse.Namespace) -> int:
        return self.function()(load_settings(), out_dir=_out(args, self.name), **self.options(args))


def _out_option(parser: argparse.ArgumentParser, name: str, what: str = "results JSON and PNGs") -> None:
    parser.add_argument("--out", metavar="DIR", help=f"{what} (default: bench-results/{name}-<timestamp>)")


def _out(args: argparse.Namespace, name: str) -> Path:
    from services.dev.benchkit import default_out_dir

    return Path(args.out) if args.out else default_out_dir(name)


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(part.replace("_", "")) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of counts: {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError("give one or more positive counts, e.g. 100000,1000000")
    return sizes


def _all(args: argparse.Namespace) -> int:
    from services.dev.bench_all import run_all_benches

    return run_all_benches(_out(args, "all"), quick=args.quick)
