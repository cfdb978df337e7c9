"""Subnet evaluation: BN recalibration, then top-1 and loss on the validation split.

Supernet training keeps no meaningful BN running statistics for any one subnet (the
recipe trains with BN momentum 0 and each subnet uses a slice of shared BN layers), so
every subnet is recalibrated first: running statistics are reset and re-estimated as a
plain average over K training batches with that subnet active, as the official code does.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.progress import progress_bar
from pipeline.space import SearchSpace, SubnetConfig
from pipeline.space.arch import count_flops
from pipeline.train.data import EpochBatches, FolderDataset, ImageFolder, eval_batches, load_splits, make_loader

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalResult:
    """Validation result of one subnet."""

    config: SubnetConfig
    top1: float  # percent
    loss: float  # mean cross-entropy
    mflops: float
    images: int

    def to_dict(self) -> dict:
        return {"id": self.config.id, "mflops": round(self.mflops, 3), "top1": round(self.top1, 3),
                "loss": round(self.loss, 5), "images": self.images, "config": self.config.to_dict()}


def to_resolution(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """Resize a batch to a subnet's resolution (the official dynamic model does this inside)."""
    if images.shape[-1] == resolution and images.shape[-2] == resolution:
        return images
    return F.interpolate(images, size=(resolution, resolution), mode="bilinear", align_corners=False)


def _bn_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def recalibrate_bn(supernet: nn.Module, config: SubnetConfig, batches: Iterable[torch.Tensor]) -> int:
    """Re-estimate BN running statistics of `config` as the average over `batches`.

    Momentum None makes torch keep a cumulative average; the active subnet's channels
    (the first ones of each shared BN) get their own statistics. Returns images seen.
    """
    layers = _bn_layers(supernet)
    saved = [m.momentum for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None
    supernet.set_active(config)
    supernet.train()
    seen = 0
    try:
        for images in batches:
            supernet(to_resolution(images, config.resolution))
            seen += len(images)
    finally:
        for m, momentum in zip(layers, saved):
            m.momentum = momentum
        supernet.eval()
    return seen


@torch.no_grad()
def validate(model: nn.Module, resolution: int, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]
             ) -> tuple[float, float, int]:
    """(top-1 %, mean cross-entropy, images) of `model` in eval mode."""
    model.eval()
    correct, loss_sum, n = 0, 0.0, 0
    for images, labels in batches:
        logits = model(to_resolution(images, resolution))
        loss_sum += F.cross_entropy(logits, labels, reduction="sum").item()
        correct += (logits.argmax(1) == labels).sum().item()
        n += len(labels)
    return 100.0 * correct / max(n, 1), loss_sum / max(n, 1), n


@dataclass(frozen=True)
class EvalData:
    """The two loaders evaluation needs: recalibration batches (train split) and validation."""

    train: ImageFolder
    val: ImageFolder
    image_size: int
    recalib_batches: int = 64
    batch_size: int = 256
    workers: int = 0
    seed: int = 0

    @classmethod
    def from_root(cls, root: str | Path, image_size: int, **kwargs) -> "EvalData":
        train, val = load_splits(root)
        return cls(train, val, image_size, **kwargs)

    def recalib_images(self) -> Iterable[torch.Tensor]:
        """The same K shuffled training batches (eval transform) for every subnet."""
        batches = EpochBatches(len(self.train), self.batch_size, epoch=0, seed=self.seed,
                               drop_last=len(self.train) >= self.batch_size)
        loader = make_loader(FolderDataset(self.train, self.image_size, train=False), batches.batches[
            :self.recalib_batches], self.workers)
        return (images for images, _ in loader)

    def val_batches(self) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        return eval_batches(FolderDataset(self.val, self.image_size, train=False), self.batch_size, self.workers)


def evaluate(supernet: nn.Module, configs: Sequence[SubnetConfig], data: EvalData,
             space: SearchSpace | None = None, progress: bool = True) -> list[EvalResult]:
    """Recalibrate BN and validate each config in turn; the supernet is left in eval mode
    with the last config active (its BN statistics are those of the last config)."""
    space = space or supernet.space
    num_classes = len(data.train.classes)
    results = []
    for config in progress_bar(configs, desc="evaluate", unit="subnet", disable=not progress or len(configs) < 2):
        space.validate(config)
        recalibrate_bn(supernet, config, data.recalib_images())
        top1, loss, n = validate(supernet, config.resolution, data.val_batches())
        result = EvalResult(config, top1, loss, count_flops(space, config, num_classes) / 1e6, n)
        log.info("subnet %s (%.2f MFLOPs): top-1 %.2f%%, loss %.4f", config.id, result.mflops, top1, loss)
        results.append(result)
    return results
