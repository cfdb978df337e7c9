#!/usr/bin/env bash
# The whole test suite: sets up (see setup.sh), then runs pytest. CI calls exactly this.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
exec .venv/bin/python -m pytest tests "$@"
