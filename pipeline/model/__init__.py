"""Dynamic AttentiveNAS supernet, static subnets, checkpoints and a hook-based cost counter."""
from pipeline.model.hooks import ModuleCost, count_module
from pipeline.model.static import StaticSubnet, build_static
from pipeline.model.supernet import Supernet

__all__ = ["ModuleCost", "StaticSubnet", "Supernet", "build_static", "count_module"]
