"""Which subnets a training step trains: the sandwich rule with attentive sampling.

A step trains the largest subnet, `num_arch_training - 2` sampled ones and the smallest.
The sampled ones are uniform (baseline) or attentive (AttentiveNAS): a FLOPs target is
drawn from the prior, i.e. the histogram of FLOPs over many uniformly sampled configs
(so targets are as frequent as the space makes them), `num_candidates` configs in the
target's bin are drawn, and the estimator's best (BestUp) or worst (WorstUp) is kept.
The sampler owns its RNG and exposes its state, so a resumed run draws the same subnets.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from pipeline.errors import ConfigError
from pipeline.space import SearchSpace, SubnetConfig
from pipeline.space.arch import count_flops
from pipeline.space.forest import TreeForest
from pipeline.train.config import SamplerConfig

#: Ranks candidates; lower is better (a loss, or a negated predicted accuracy).
Scorer = Callable[[Sequence[SubnetConfig]], Sequence[float]]
#: Uniform draws tried per candidate before settling for the nearest FLOPs seen.
TRIES_PER_CANDIDATE = 200


@dataclass(frozen=True)
class FlopsPrior:
    """Histogram of FLOPs over uniformly sampled configs: bin edges and their probabilities."""

    edges: np.ndarray
    probs: np.ndarray

    @classmethod
    def build(cls, flops: Sequence[float], bin_width: float) -> "FlopsPrior":
        lo = np.floor(min(flops) / bin_width) * bin_width
        n_bins = max(1, int(np.ceil((max(flops) - lo) / bin_width + 1e-9)))
        edges = lo + bin_width * np.arange(n_bins + 1)
        counts, _ = np.histogram(flops, bins=edges)
        return cls(edges, counts / counts.sum())

    def draw(self, rng: random.Random) -> tuple[float, float]:
        """A target bin [lo, hi) drawn with the histogram's probabilities."""
        i = rng.choices(range(len(self.probs)), weights=self.probs.tolist())[0]
        return float(self.edges[i]), float(self.edges[i + 1])


class ArchSampler:
    """Draws the sandwich of each step; `state()` / `set_state()` make resuming exact."""

    def __init__(self, space: SearchSpace, cfg: SamplerConfig, num_classes: int, seed: int) -> None:
        self.space, self.cfg, self.num_classes = space, cfg, num_classes
        self.rng = random.Random(seed)
        self._flops: dict[SubnetConfig, float] = {}
        self.predictor = TreeForest.load(cfg.predictor) if cfg.estimator == "predictor" else None
        self.prior: FlopsPrior | None = None
        if cfg.method != "uniform":
            prior_rng = random.Random(seed + 1)  # own stream: the prior does not depend on resume
            table = [self.mflops(space.sample(prior_rng)) for _ in range(cfg.prior_samples)]
            self.prior = FlopsPrior.build(table, cfg.flops_bin_mflops)

    def mflops(self, config: SubnetConfig) -> float:
        """Analytic MFLOPs (cached: the same configs recur)."""
        if config not in self._flops:
            self._flops[config] = count_flops(self.space, config, self.num_classes) / 1e6
        return self._flops[config]

    def sandwich(self, n: int, loss_scorer: Scorer | None = None) -> list[SubnetConfig]:
        """[largest, n-2 sampled, smallest]. `loss_scorer` ranks candidates for estimator=loss."""
        middle = [self.draw(loss_scorer) for _ in range(n - 2)]
        return [self.space.largest(), *middle, self.space.smallest()]

    def draw(self, loss_scorer: Scorer | None = None) -> SubnetConfig:
        """One sampled subnet by the configured method."""
        if self.prior is None:
            return self.space.sample(self.rng)
        candidates = self.candidates(*self.prior.draw(self.rng))
        if len(candidates) == 1:
            return candidates[0]
        if self.predictor is not None:
            scores = -self.predictor.predict(candidates)
        elif loss_scorer is not None:
            scores = np.asarray(loss_scorer(candidates), dtype=np.float64)
        else:
            raise ConfigError("sampler estimator 'loss' needs a minibatch loss scorer (train loop bug)")
        pick = int(np.argmin(scores)) if self.cfg.method == "bestup" else int(np.argmax(scores))
        return candidates[pick]

    def candidates(self, lo: float, hi: float) -> list[SubnetConfig]:
        """`num_candidates` uniform draws with MFLOPs in [lo, hi); if the bin is too rare to
        fill in the allowed tries, the draws nearest to it make up the rest."""
        k = self.cfg.num_candidates
        inside: list[SubnetConfig] = []
        outside: list[SubnetConfig] = []
        for _ in range(TRIES_PER_CANDIDATE * k):
            cfg = self.space.sample(self.rng)
            (inside if lo <= self.mflops(cfg) < hi else outside).append(cfg)
            if len(inside) == k:
                return inside
        centre = (lo + hi) / 2
        outside.sort(key=lambda c: abs(self.mflops(c) - centre))
        return inside + outside[:k - len(inside)]

    def state(self) -> list:
        """JSON-able RNG state."""
        version, internal, gauss = self.rng.getstate()
        return [version, list(internal), gauss]

    def set_state(self, state: list) -> None:
        version, internal, gauss = state
        self.rng.setstate((version, tuple(internal), gauss))
