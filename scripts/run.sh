#!/usr/bin/env bash
# The one command that runs the system: broker, database and the four services
# on embedded defaults. Creates .venv on first use. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
exec .venv/bin/havip dev up "$@"
