#!/usr/bin/env bash
# Idempotent set-up on a fresh Debian machine of this kind: Debian packages the
# emulated arm64 device, cross-compilation and the SSH tests need, then `.venv` at
# the repo root with the pinned Python packages. Re-runs are cheap: each step checks
# first and does nothing when its work is already there.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

DEB_PACKAGES=(qemu-user-static debootstrap gcc-aarch64-linux-gnu g++-aarch64-linux-gnu
              openssh-server binfmt-support)
missing=()
for p in "${DEB_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "[setup] installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null || PY=python3
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
stamp=".venv/.pipeline-installed"
want="$(sha256sum setup.py | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[setup] installing Python packages into .venv (pinned torch CPU, TVM 0.27)"
  # --no-compile: byte-compiling every module of torch and TVM at install time took half
  # of the install (torch alone: 61 s vs 28 s on a loaded 2-core machine); Python
  # compiles the modules actually imported on first use instead.
  .venv/bin/pip install -q --disable-pip-version-check --no-compile -e ".[test]"
  echo "$want" > "$stamp"
fi
