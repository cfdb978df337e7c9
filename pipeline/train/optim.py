"""SGD with Nesterov momentum and a warm-up + cosine learning-rate schedule (published recipe)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from pipeline.train.config import OptimizerConfig


def build_optimizer(model: nn.Module, cfg: OptimizerConfig, global_batch: int) -> torch.optim.SGD:
    """SGD whose lr is `cfg.lr` scaled by global_batch / lr_reference_batch; BN and bias
    parameters (1-d) get no weight decay, as in the official code."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    return torch.optim.SGD(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr * global_batch / cfg.lr_reference_batch, momentum=cfg.momentum, nesterov=cfg.nesterov,
    )


@dataclass(frozen=True)
class WarmupCosine:
    """lr factor at a step: linear up to 1 over `warmup_steps`, then cosine down to 0 at `total_steps`.

    A callable object rather than a closure so LambdaLR can save and restore it.
    """

    warmup_steps: int
    total_steps: int

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        span = max(1, self.total_steps - self.warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - self.warmup_steps) / span)))


def build_scheduler(optimizer: torch.optim.Optimizer, warmup_steps: int,
                    total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step scheduler (call `.step()` after every optimizer step)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(warmup_steps, total_steps))
