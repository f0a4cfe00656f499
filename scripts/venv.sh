# Sourced by run.sh and test.sh: a virtualenv with exactly the locked dependencies (the project's,
# its dev and test extras and the bench extra, so `havip bench` draws its plots), then the project
# itself, editable. Rebuilt when pyproject.toml or the lock changes; scripts/lock.sh refreshes the lock.
PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "Python 3.11 or newer is needed (found $("$PYTHON" --version 2>&1)); set PYTHON=..." >&2
    exit 1
fi
stamp=".venv/.installed-$(cat pyproject.toml requirements-dev.lock | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
    [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
    .venv/bin/python -m pip install --quiet --upgrade pip
    # Hashes in the lock: pip checks every download against them.
    .venv/bin/python -m pip install --quiet -r requirements-dev.lock
    # The build backend is in the lock too, so nothing unpinned is fetched to build the project.
    .venv/bin/python -m pip install --quiet --no-deps --no-build-isolation -e .
    rm -f .venv/.installed-*
    touch "$stamp"
fi
