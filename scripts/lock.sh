#!/usr/bin/env bash
# Refreshes the lock files from pyproject.toml, so every install is the same:
#   requirements-dev.lock  the dependencies with the dev, test and bench extras: what .venv holds
#                          (scripts/venv.sh, so scripts/run.sh, scripts/test.sh and CI)
#   requirements.lock      the project's own dependencies alone, at the same versions: the image
# Each pins every package of the tree with its hashes, for Python 3.11 and newer on any
# platform, and the build backend too (the project is installed without build isolation).
#
#   scripts/lock.sh                              after editing pyproject.toml: keeps what pins it can
#   scripts/lock.sh --upgrade                    the newest versions pyproject.toml allows
#   scripts/lock.sh --upgrade-package fastapi    one package (any `uv pip compile` option passes on)
#
# Needs Python and pip only: uv, which resolves, comes from PyPI into a temporary directory.
# tests/unit/test_build.py checks that the locks agree with pyproject.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
UV_VERSION="0.9.30"

tools="$(mktemp -d)"
trap 'rm -rf "$tools"' EXIT
"$PYTHON" -m pip install --quiet --disable-pip-version-check --target "$tools" "uv==$UV_VERSION"

compile() {
    "$tools/bin/uv" pip compile --quiet --universal --python-version 3.11 --generate-hashes \
        --custom-compile-command scripts/lock.sh "$@"
}
# The build-system requirements come in on standard input.
"$PYTHON" -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"]))' |
    compile pyproject.toml - --extra dev --extra test --extra bench -o requirements-dev.lock "$@"
"$PYTHON" -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"]))' |
    compile pyproject.toml - -c requirements-dev.lock -o requirements.lock "$@"
echo "requirements-dev.lock: $(grep -c '^[a-z0-9]' requirements-dev.lock) packages; requirements.lock: $(grep -c '^[a-z0-9]' requirements.lock)"
