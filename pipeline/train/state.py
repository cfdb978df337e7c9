"""Atomic files: the resumable training state and the supernet checkpoint.

The training state (model weights, optimizer, scheduler, every process's torch RNG, the
sampler's RNG, the step) is one file replaced through `pipeline.atomic`, so a kill at
any moment leaves either the previous state or the new one, never a torn mix. The
supernet itself is saved in the model package's checkpoint format (`save_checkpoint`),
also via rename, so `load_supernet` reads it like any other.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from pipeline.atomic import atomic_path
from pipeline.errors import CheckpointError

STATE_FILE = "train_state.pt"
SUPERNET_FILE = "supernet.pt"


def save_state(path: Path, state: dict[str, Any]) -> Path:
    """Write the training state atomically (tensors and plain Python values only)."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def load_state(path: Path) -> dict[str, Any]:
    """Read a training state written by `save_state`; a clear error if absent or corrupt."""
    if not path.is_file():
        raise CheckpointError(f"no training state at {path} to resume from; run without --resume first")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for a damaged file
        raise CheckpointError(f"training state {path} is unreadable ({err}); delete it and start afresh") from err
