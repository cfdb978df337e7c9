"""Zero-shot (training-free) accuracy proxies of subnets, behind the accuracy interface.

A proxy scores a network from one batch of images without training it, so subnets can
be ranked before a supernet is trained (weights at initialisation) or more cheaply than
by BN-recalibrated evaluation (weights after training). Each proxy runs on the static
subnet extracted from a supernet, on one real training batch at the subnet's resolution:

- `naswot` (Mellor et al. 2021, "NAS without training"): the binary activation codes of
  every activation layer's input (x > 0) over the batch give a Hamming-similarity
  kernel K = C C^T + (1 - C)(1 - C)^T; the score is log|det K|. Networks that keep
  images apart score higher.
- `synflow` (Tanaka et al. 2020, as a NAS proxy in Abdelfattah et al. 2021): with every
  weight replaced by its absolute value and an all-ones input in float64, the sum of
  |theta * dR/dtheta| over conv and linear weights, R the summed output. Data-free;
  BN layers act as identity (running statistics reset, eval mode), the papers' variant
  without BN. Reported as its natural log (it spans tens of orders of magnitude).
- `gradnorm` (Abdelfattah et al. 2021): the sum of the L2 norms of the cross-entropy
  gradients of the conv and linear weights on the batch.

BN uses batch statistics (train mode) for naswot and gradnorm: a supernet's running
statistics are not any one subnet's, and recalibrating them is the cost a proxy avoids.
Scores are memoised in a JSON-lines file per (proxy, weights digest, batch digest) and
subnet id, so a re-run or a resumed search recomputes nothing.
"""
from __future__ import annotations

import copy
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from pipeline.errors import ConfigError
from pipeline.paths import cache_dir
from pipeline.search.accuracy import SupernetAccuracy
from pipeline.space import SubnetConfig

log = logging.getLogger(__name__)

#: An activation layer's input decides the NASWOT code (x > 0 is "on" for ReLU and swish alike).
_ACTIVATIONS = ("ReLU", "ReLU6", "SiLU", "Hardswish")


@dataclass(frozen=True)
class ProxyBatch:
    """One batch of training images with labels, and a digest of its contents (cache key)."""

    images: Any  # torch.Tensor (N, 3, H, W)
    labels: Any  # torch.Tensor (N,)
    digest: str

    @classmethod
    def of(cls, images: Any, labels: Any) -> "ProxyBatch":
        blob = hashlib.sha1(images.detach().cpu().numpy().tobytes())
        blob.update(labels.detach().cpu().numpy().tobytes())
        return cls(images, labels, blob.hexdigest()[:16])

    @classmethod
    def from_root(cls, root: str | Path, image_size: int, batch_size: int = 64, seed: int = 0) -> "ProxyBatch":
        """The first shuffled batch of the training split (evaluation transform), as
        recalibration reads it."""
        from pipeline.train.data import EpochBatches, FolderDataset, load_splits, make_loader

        train, _ = load_splits(root)
        batches = EpochBatches(len(train), batch_size, epoch=0, seed=seed, drop_last=len(train) >= batch_size)
        loader = make_loader(FolderDataset(train, image_size, train=False), batches.batches[:1])
        images, labels = next(iter(loader))
        return cls.of(images, labels)


def _conv_linear_weights(model: Any) -> list[Any]:
    from torch import nn

    return [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def naswot(model: Any, images: Any, labels: Any) -> float:
    """log|det K| of the activation-pattern Hamming kernel over the batch (see module doc)."""
    import torch

    codes: list[torch.Tensor] = []
    hooks = [m.register_forward_hook(lambda _m, inp, _out: codes.append((inp[0] > 0).flatten(1).double()))
             for m in model.modules() if type(m).__name__ in _ACTIVATIONS]
    try:
        model.train()
        with torch.no_grad():
            model(images)
    finally:
        for h in hooks:
            h.remove()
    if not codes:
        raise ConfigError("NASWOT needs activation layers (ReLU, ReLU6, SiLU, Hardswish); the model has none")
    c = torch.cat(codes, dim=1)
    kernel = c @ c.T + (1 - c) @ (1 - c).T
    sign, logdet = torch.linalg.slogdet(kernel)
    return float(logdet) if sign > 0 else float("-inf")


def synflow(model: Any, images: Any, labels: Any) -> float:
    """log of sum |theta * dR/dtheta| with |theta| weights and an all-ones input (see module doc)."""
    import torch
    from torch import nn

    net = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        for p in net.parameters():
            p.abs_()
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.reset_running_stats()
    net.zero_grad()
    torch.sum(net(torch.ones((1, *images.shape[1:]), dtype=torch.float64))).backward()
    total = sum(float((w.detach() * w.grad).abs().sum()) for w in _conv_linear_weights(net) if w.grad is not None)
    return float(np.log(total)) if total > 0 else float("-inf")


def grad_norm(model: Any, images: Any, labels: Any) -> float:
    """Sum of the L2 norms of the loss gradients of conv and linear weights on the batch."""
    import torch.nn.functional as F

    model.train()
    model.zero_grad()
    F.cross_entropy(model(images), labels).backward()
    return float(sum(float(w.grad.norm()) for w in _conv_linear_weights(model) if w.grad is not None))


PROXIES: dict[str, Callable[[Any, Any, Any], float]] = {"naswot": naswot, "synflow": synflow, "gradnorm": grad_norm}


def weights_digest(module: Any) -> str:
    """A digest of a module's parameters and buffers (what its proxy scores depend on)."""
    digest = hashlib.sha1()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def proxy_cache_path(proxy: str, weights: str, batch: ProxyBatch) -> Path:
    return cache_dir() / "proxies" / f"{proxy}-{weights}-{batch.digest}.jsonl"


class ProxyAccuracy:
    """An `AccuracySource` whose 'accuracy' is a zero-shot score of each subnet.

    Higher is better as for top-1, but the values are the proxy's own units, not
    percent. Subnets are extracted from `supernet` (trained, or just initialised) and
    scored on `batch`; scores are memoised on disk (see module doc). `threads`: torch
    threads while scoring (one by default: on these small nets more only spin, as in the
    demo training).
    """

    def __init__(self, supernet: Any, proxy: str, batch: ProxyBatch, cache_path: str | Path | None = None,
                 threads: int = 1) -> None:
        if proxy not in PROXIES:
            raise ConfigError(f"unknown proxy {proxy!r}; one of {sorted(PROXIES)}")
        self.proxy, self._supernet, self._batch, self._threads = proxy, supernet, batch, threads
        self.weights = weights_digest(supernet)
        path = cache_path if cache_path is not None else proxy_cache_path(proxy, self.weights, batch)
        self._memo = SupernetAccuracy(self._score, path, batch_size=8)

    @property
    def scored(self) -> dict[str, float]:
        return self._memo.evaluated

    def predict(self, configs: Sequence[SubnetConfig]) -> np.ndarray:
        return self._memo.predict(configs)

    def _score(self, configs: Sequence[SubnetConfig]) -> list[float]:
        import torch

        from pipeline.train.evaluate import to_resolution

        fn = PROXIES[self.proxy]
        previous = torch.get_num_threads()
        torch.set_num_threads(self._threads)
        try:
            out = []
            for config in configs:
                torch.manual_seed(0)  # dropout-free nets, but keep any stochastic layer repeatable
                subnet = self._supernet.extract(config)
                images = to_resolution(self._batch.images, config.resolution)
                out.append(fn(subnet, images, self._batch.labels))
            return out
        finally:
            torch.set_num_threads(previous)


def initialised_supernet(space: Any, num_classes: int, seed: int = 0) -> Any:
    """A supernet of `space` at initialisation (seeded): what 'zero-shot at init' scores."""
    import torch

    from pipeline.model import Supernet

    torch.manual_seed(seed)
    return Supernet(space, num_classes).eval()


def parse_proxy(spec: str) -> tuple[str, bool]:
    """'proxy:naswot' -> ('naswot', False); 'proxy:naswot@init' -> ('naswot', True)."""
    if not spec.startswith("proxy:"):
        raise ConfigError(f"--accuracy {spec!r}: expected supernet or proxy:NAME[@init] with NAME in "
                          f"{sorted(PROXIES)}")
    name, _, where = spec[len("proxy:"):].partition("@")
    if name not in PROXIES or where not in ("", "init"):
        raise ConfigError(f"--accuracy {spec!r}: use proxy:NAME or proxy:NAME@init with NAME in {sorted(PROXIES)}")
    return name, where == "init"


def proxy_accuracy(spec: str, supernet: Any, data_root: str | Path, batch_size: int = 64,
                   seed: int = 0) -> ProxyAccuracy:
    """The source `--accuracy proxy:NAME[@init]` names: NAME on `supernet`'s subnets (or
    on a seeded initialisation of the same space), one training batch of `data_root`."""
    name, at_init = parse_proxy(spec)
    net = initialised_supernet(supernet.space, supernet.num_classes, seed) if at_init else supernet
    batch = ProxyBatch.from_root(data_root, max(supernet.space.resolutions), batch_size, seed)
    return ProxyAccuracy(net, name, batch)
