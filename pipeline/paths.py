"""Where the pipeline finds what it ships and keeps what it makes.

Built-in data: device profiles and kernel databases live at the top of the repo
(`device_profiles/`, `kernels/`) and travel in the wheel as `pipeline/data/device_profiles/`
and `pipeline/data/kernels/` (setup.py maps them); spaces, recipes, the manifest schema
and the demo supernet are in `pipeline/data/` in both. "Checkout" means this package
runs from the source tree (an editable install or PYTHONPATH), so the repo's folders are
the built-in ones and generated state stays in the repo's `.cache/`, as before.

Lookup, first match wins (a user file shadows a built-in one of the same name):
- device profiles: `PIPELINE_PROFILES` alone when set, else the user folder
  (`$XDG_CONFIG_HOME/pipeline/device_profiles`, default `~/.config/...`), then built-in;
- kernel databases: `PIPELINE_KERNELS` alone when set, else the writable folder (the
  repo's `kernels/` in a checkout, `$XDG_DATA_HOME/pipeline/kernels`, default
  `~/.local/share/...`, when installed), then built-in. Tuning writes to the first.
- generated state: `PIPELINE_CACHE`, else the repo's `.cache/` in a checkout, else
  `$XDG_CACHE_HOME/pipeline` (default `~/.cache/pipeline`): an installed package never
  writes into site-packages.
"""
from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent
DATA_DIR = PACKAGE_DIR / "data"
#: Running from the source tree rather than from an installed wheel.
CHECKOUT = (REPO_ROOT / "setup.py").is_file() and (REPO_ROOT / "device_profiles").is_dir()
BUILTIN_PROFILES = REPO_ROOT / "device_profiles" if CHECKOUT else DATA_DIR / "device_profiles"
BUILTIN_KERNELS = REPO_ROOT / "kernels" if CHECKOUT else DATA_DIR / "kernels"


def _xdg(variable: str, default: str) -> Path:
    return Path(os.environ.get(variable) or Path.home() / default) / "pipeline"


def cache_dir() -> Path:
    """Root of generated state; created on first use."""
    env = os.environ.get("PIPELINE_CACHE")
    root = Path(env) if env else REPO_ROOT / ".cache" if CHECKOUT else _xdg("XDG_CACHE_HOME", ".cache")
    root.mkdir(parents=True, exist_ok=True)
    return root


def profile_dirs() -> tuple[Path, ...]:
    """Folders of device profiles (one YAML per device), searched in this order."""
    env = os.environ.get("PIPELINE_PROFILES")
    if env:
        return (Path(env),)
    return _xdg("XDG_CONFIG_HOME", ".config") / "device_profiles", BUILTIN_PROFILES


def kernels_dir() -> Path:
    """The writable folder of tuning databases (one folder per device): tuning publishes here."""
    env = os.environ.get("PIPELINE_KERNELS")
    if env:
        return Path(env)
    return BUILTIN_KERNELS if CHECKOUT else _xdg("XDG_DATA_HOME", ".local/share") / "kernels"


def kernel_dirs() -> tuple[Path, ...]:
    """Folders of tuning databases, searched in this order (`kernels_dir()` first)."""
    first = kernels_dir()
    return (first,) if os.environ.get("PIPELINE_KERNELS") or first == BUILTIN_KERNELS else (first, BUILTIN_KERNELS)
