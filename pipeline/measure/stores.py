"""Where block measurements are kept: apart from the subnets', in their own store file."""
from __future__ import annotations

from pathlib import Path

from pipeline.paths import cache_dir


def block_store_path() -> Path:
    """Block measurements live apart from subnet measurements: `cache_dir()/block_measurements.sqlite`."""
    return cache_dir() / "block_measurements.sqlite"
