#!/usr/bin/env bash
# The main job: sets up (see setup.sh), then the default build for arm64 (the shipped
# demo supernet, the emulated arm64 device on this machine, brought up while the build
# evaluates the supernet). README's "What the main job does" has the measured times.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
start=$SECONDS
bash "$ROOT/scripts/setup.sh"
echo "[main] set-up done in $((SECONDS - start)) s; running: pipeline build --target arm64 $*" >&2
cd "$ROOT"
exec .venv/bin/pipeline build --target arm64 "$@"
