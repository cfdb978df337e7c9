"""The math shared by the dynamic supernet and the static subnets.

Both sides call these functions so that a static subnet computes exactly what the
supernet computes with that subnet active (the same ops in the same order), which is
what makes `Supernet.extract` exact rather than approximately equal.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.errors import ConfigError

#: Activation names used by AttentiveNAS space files -> torch modules.
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "swish": nn.SiLU,  # x * sigmoid(x)
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "h_swish": nn.Hardswish,
}


def build_activation(name: str) -> nn.Module:
    """A fresh activation module for a space's `act_func` name."""
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ConfigError(
            f"act_func {name!r} is not supported; use one of {sorted(ACTIVATIONS)} in the space file"
        ) from None


def se_gate(x: torch.Tensor, reduce: Callable[[torch.Tensor], torch.Tensor],
            expand: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Squeeze-excitation gate: pool, 1x1 conv `reduce`, ReLU, 1x1 conv `expand`, hard-sigmoid.

    The convs are passed as callables so a static SE calls its own `nn.Conv2d` modules
    (visible to forward hooks, hence counted) and the dynamic SE its weight slices.
    """
    y = F.relu(reduce(F.adaptive_avg_pool2d(x, 1)))
    return F.hardsigmoid(expand(y))


def shortcut_pool(x: torch.Tensor, stride: int) -> torch.Tensor:
    """The official shortcut's down-sampling: `stride` x `stride` average pool, padding 1 on odd sizes."""
    return F.avg_pool2d(x, stride, padding=x.size(-1) % 2)


def drop_connect(x: torch.Tensor, rate: float) -> torch.Tensor:
    """Drop whole residual branches per sample (training only), rescaling the kept ones."""
    keep = 1.0 - rate
    mask = torch.floor(keep + torch.rand(x.size(0), 1, 1, 1, dtype=x.dtype, device=x.device))
    return x / keep * mask


def init_weights(module: nn.Module) -> None:
    """AttentiveNAS' `he_fout` init (normal, std sqrt(2 / (k*k*out))), BN at 1/0, Linear uniform.

    The owners then zero each residual block's last BN gamma (`zero_last_gamma`).
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            bound = 1.0 / math.sqrt(m.weight.size(1))
            nn.init.uniform_(m.weight, -bound, bound)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
