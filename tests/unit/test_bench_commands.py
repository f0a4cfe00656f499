"""`havip dev` and `havip bench` take their subcommands from services.dev.commands."""

from __future__ import annotations

import argparse

import pytest

from services import cli
from services.dev import commands

BENCHES = (
    "failover", "soak", "renewals", "mapping", "keepalived", "recovery", "rebalance",
    "lookups", "coldstart", "intake", "watch", "observe", "all",
)  # fmt: skip


@pytest.mark.parametrize("name", BENCHES)
def test_each_bench_parses_with_its_defaults_and_runs_from_the_dev_package(name: str) -> None:
    args = cli.build_parser().parse_args(["bench", name])
    assert args.func.__module__ == commands.__name__
    assert args.bench_command == name


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
