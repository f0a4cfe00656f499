#!/usr/bin/env bash
# The one command that runs the tests: unit, integration (real broker and
# PostgreSQL) and end-to-end (the four services as processes).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
exec .venv/bin/python -m pytest "$@"
