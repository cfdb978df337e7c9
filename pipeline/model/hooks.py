"""FLOPs and parameters of a torch module by forward hooks (official AttentiveNAS convention).

An independent check of the analytic counts in `pipeline.space.arch`: it counts what a
module actually runs, so a mismatch exposes a wrong shape on either side.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ModuleCost:
    """Multiply-adds at batch 1 (divide by 1e6 for MFLOPs) and parameter count."""

    flops: int
    params: int


def _conv_flops(module: nn.Conv2d, output: torch.Tensor) -> int:
    kh, kw = module.kernel_size
    return module.in_channels // module.groups * kh * kw * output[0].numel()


def _linear_flops(module: nn.Linear, output: torch.Tensor) -> int:
    return module.in_features * module.out_features


def count_module(module: nn.Module, resolution: int) -> ModuleCost:
    """Run one 1 x 3 x r x r forward pass in eval mode, counting every Conv2d and Linear.

    Nothing is counted for BN, activations, pooling, SE's product or residual adds; all
    parameters count (BN affine included). The module's train/eval mode is restored.
    """
    total = [0]

    def hook(mod: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        total[0] += _conv_flops(mod, output) if isinstance(mod, nn.Conv2d) else _linear_flops(mod, output)

    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = module.training
    try:
        module.eval()
        with torch.no_grad():
            module(torch.zeros(1, 3, resolution, resolution))
    finally:
        for handle in handles:
            handle.remove()
        module.train(was_training)
    return ModuleCost(flops=total[0], params=sum(p.numel() for p in module.parameters()))
