"""Latency models the search constrains on: a protocol, plus two analytic fallbacks.

The search takes any object with `predict(configs) -> ms` (the fitted per-device
`pipeline.predict.LatencyPredictor` is one), so it can be tested and benchmarked with
any model. The analytic models here are not measurements:
- `FlopsModel` returns MFLOPs; it turns latency-constrained search into the seed's
  FLOPs-constrained search. `ParamsModel` returns millions of parameters (model size,
  an objective of the multi-objective search).
- `ShapeLatencyModel` is a roofline-style estimate from layer shapes (dense convs at
  one throughput, depthwise convs at a lower one, memory traffic, a cost per layer),
  for when no device predictor has been fitted yet; its constants are stated, not fitted.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol, Sequence

import numpy as np

from pipeline.space import SearchSpace, SubnetConfig
from pipeline.space.arch import block_specs, count_flops, count_params, head_spec


class LatencyModel(Protocol):
    """Predicted latency (ms, or any cost unit the budgets use) per config."""

    def predict(self, configs: Sequence[SubnetConfig]) -> np.ndarray:
        """One value per config, in order."""


@dataclass(frozen=True)
class FlopsModel:
    """MFLOPs (official count) as the cost: the FLOPs-constrained baseline's 'latency'."""

    space: SearchSpace

    def predict(self, configs: Sequence[SubnetConfig]) -> np.ndarray:
        return np.array([_mflops(self.space, c) for c in configs], dtype=np.float64)


@lru_cache(maxsize=200_000)
def _mflops(space: SearchSpace, config: SubnetConfig) -> float:
    return count_flops(space, config) / 1e6


@dataclass(frozen=True)
class ParamsModel:
    """Millions of parameters (BN affine included): model size as a search objective."""

    space: SearchSpace
    num_classes: int = 1000

    def predict(self, configs: Sequence[SubnetConfig]) -> np.ndarray:
        return np.array([_mparams(self.space, c, self.num_classes) for c in configs], dtype=np.float64)


@lru_cache(maxsize=200_000)
def _mparams(space: SearchSpace, config: SubnetConfig, num_classes: int) -> float:
    return count_params(space, config, num_classes) / 1e6


@dataclass(frozen=True)
class ShapeLatencyModel:
    """Roofline-style analytic latency from layer shapes (no measurement behind it).

    ms = dense MACs / dense_gmacs + depthwise MACs / depthwise_gmacs
         + activation bytes / bandwidth + layers * per_layer_ms + base_ms.
    Defaults are rough for one 2-core AVX-512 x86 host running tuned kernels.
    """

    space: SearchSpace
    dense_gmacs: float = 40.0
    depthwise_gmacs: float = 4.0
    bandwidth_gbs: float = 20.0
    per_layer_ms: float = 0.004
    base_ms: float = 0.05

    def predict(self, configs: Sequence[SubnetConfig]) -> np.ndarray:
        return np.array([self._one(c) for c in configs], dtype=np.float64)

    def _one(self, config: SubnetConfig) -> float:
        dense = depthwise = act_bytes = 0.0
        layers = 0
        for b in block_specs(self.space, config):
            dw = b.mid_channels * b.kernel_size**2 * b.out_size**2
            depthwise += dw
            dense += b.flops() - dw
            act_bytes += 4 * (b.in_channels * b.in_size**2 + 2 * b.mid_channels * b.out_size**2
                              + b.out_channels * b.out_size**2)
            layers += 2 + b.has_expand + 2 * b.use_se + b.shortcut_conv
        head = head_spec(self.space, config)
        dense += head.stem_flops() + head.head_flops()
        act_bytes += 4 * (3 * config.resolution**2 + head.stem_channels * head.stem_out_size**2)
        layers += 4
        return (dense / self.dense_gmacs / 1e6 + depthwise / self.depthwise_gmacs / 1e6
                + act_bytes / self.bandwidth_gbs / 1e6 + layers * self.per_layer_ms + self.base_ms)
