#!/usr/bin/env bash
# The main job: sets up (see setup.sh), then the default build for arm64
# (demo supernet, emulated arm64 device on this machine).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
exec .venv/bin/pipeline build --target arm64 "$@"
