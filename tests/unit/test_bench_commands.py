"""`havip dev` and `havip bench` take their subcommands from services.dev.commands."""

from __future__ import annotations

import argparse
import inspect
from pathlib import Path

import pytest

from services import cli
from services.dev import commands
from services.runtime.settings import load_settings

BENCHES = (
    "failover", "soak", "renewals", "mapping", "keepalived", "recovery", "rebalance",
    "lookups", "coldstart", "intake", "watch", "observe", "all",
)  # fmt: skip


@pytest.mark.parametrize("name", [name for name in BENCHES if name != "all"])
def test_each_bench_takes_its_options_by_name(name: str) -> None:
    """The options as parsed (defaults) bind to the bench's run function: a renamed option or parameter fails here."""
    args = cli.build_parser().parse_args(["bench", name])
    assert isinstance(args.func, commands.Bench)
    run = args.func.function()
    assert run.__name__.startswith("run_")
    bound = inspect.signature(run).bind(load_settings(), out_dir=Path("out"), **args.func.options(args))
    assert set(bound.arguments) == set(inspect.signature(run).parameters)  # no parameter left to its default


def test_all_runs_the_benches_in_turn() -> None:
    args = cli.build_parser().parse_args(["bench", "all", "--quick"])
    assert (args.func.__name__, args.quick) == ("_all", True)


def test_options_reach_the_bench() -> None:
    args = cli.build_parser().parse_args(["bench", "coldstart", "--sizes", "1_000,20", "--starts", "1", "--out", "x"])
    assert (args.sizes, args.starts, args.out) == ([1000, 20], 1, "x")


def test_a_bad_size_list_is_a_usage_error() -> None:
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["bench", "coldstart", "--sizes", "0"])


def test_dev_up_and_seed() -> None:
    up = cli.build_parser().parse_args(["dev", "up", "--fresh"])
    assert (up.workdir, up.fresh, up.func.__name__) == (".havip-dev", True, "_dev_up")
    assert cli.build_parser().parse_args(["dev", "seed"]).func.__name__ == "_dev_seed"


def test_the_bench_list_is_the_registered_one() -> None:
    bench = argparse.ArgumentParser()
    commands.register(argparse.ArgumentParser(), bench)
    (choices,) = (a.choices for a in bench._actions if isinstance(a, argparse._SubParsersAction))
    assert tuple(choices) == BENCHES
