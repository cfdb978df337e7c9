"""Where the pipeline keeps things.

The repo ships data (`device_profiles/`, `kernels/`); generated state (compile cache,
emulated device root, measurement store, demo supernet) lives in a cache folder that
survives between runs so that a second run is warm. `PIPELINE_CACHE` overrides it
(tests point it at a temporary folder).
"""
from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent
DATA_DIR = PACKAGE_DIR / "data"


def cache_dir() -> Path:
    """Root of generated state; created on first use."""
    root = Path(os.environ.get("PIPELINE_CACHE", REPO_ROOT / ".cache"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def profiles_dir() -> Path:
    """Device profiles: one YAML file per device (`PIPELINE_PROFILES` overrides)."""
    return Path(os.environ.get("PIPELINE_PROFILES", REPO_ROOT / "device_profiles"))


def kernels_dir() -> Path:
    """Tuning databases and schedules, one folder per device (`PIPELINE_KERNELS` overrides)."""
    return Path(os.environ.get("PIPELINE_KERNELS", REPO_ROOT / "kernels"))
