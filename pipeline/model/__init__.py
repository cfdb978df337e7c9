"""Dynamic AttentiveNAS supernet, static subnets, checkpoints and a hook-based cost counter."""
from pipeline.model.checkpoint import (
    LoadedCheckpoint,
    load_checkpoint,
    load_official_state_dict,
    load_supernet,
    save_checkpoint,
)
from pipeline.model.hooks import ModuleCost, count_module
from pipeline.model.static import StaticSubnet, build_static
from pipeline.model.supernet import Supernet

__all__ = [
    "LoadedCheckpoint",
    "ModuleCost",
    "StaticSubnet",
    "Supernet",
    "build_static",
    "count_module",
    "load_checkpoint",
    "load_official_state_dict",
    "load_supernet",
    "save_checkpoint",
]
