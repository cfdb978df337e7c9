"""Search methods: evolutionary, random, and the seed's FLOPs-constrained search.

All three share one `Evaluator` (the archive) and return a `SearchResult`, so they are
compared on equal terms: `n_evaluated` counts accuracy evaluations (the costly part;
candidates over every budget are rejected on predicted latency first).

Evolution follows Once-for-All's latency-constrained search, run for several budgets at
once over a shared archive (as AlphaNet's per-bin archive): each generation, for each
budget, the `parents` most accurate archive members within the budget breed
`population` children, `mutation_share` of them by mutation (each choice resampled with
`mutate_prob`), the rest by uniform crossover (`crossover_prob`); children over the
budget or already scored are redrawn.
"""
from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import yaml

from pipeline.errors import ConfigError
from pipeline.progress import progress_bar
from pipeline.search.accuracy import AccuracySource
from pipeline.search.evaluator import Budget, Candidate, Evaluator
from pipeline.search.latency import FlopsModel, LatencyModel
from pipeline.space import SearchSpace, SubnetConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvolutionConfig:
    """Knobs of the evolutionary search (defaults: OFA's, with a shorter run)."""

    population: int = 100
    parents: int = 25
    mutation_share: float = 0.5
    mutate_prob: float = 0.1
    crossover_prob: float = 0.5
    generations: int = 20
    seed: int = 0
    #: rounds of redrawing before a generation settles for fewer feasible children
    max_draw_rounds: int = 20

    def __post_init__(self) -> None:
        checks = {
            "population": self.population >= 2,
            "parents": 2 <= self.parents <= self.population,
            "mutation_share": 0.0 <= self.mutation_share <= 1.0,
            "mutate_prob": 0.0 < self.mutate_prob <= 1.0,
            "crossover_prob": 0.0 < self.crossover_prob < 1.0,
            "generations": self.generations >= 0,
            "max_draw_rounds": self.max_draw_rounds >= 1,
        }
        for name, ok in checks.items():
            if not ok:
                raise ConfigError(
                    f"evolution {name} = {getattr(self, name)} is out of range; need population >= 2, "
                    "2 <= parents <= population, shares/probabilities in [0, 1], generations >= 0"
                )

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "EvolutionConfig":
        known = {f.name: f.type for f in fields(cls)}
        unknown = set(raw) - set(known)
        if unknown:
            raise ConfigError(f"unknown evolution settings {sorted(unknown)}; allowed: {sorted(known)}")
        try:
            return cls(**{k: (float(v) if "prob" in k or "share" in k else int(v)) for k, v in raw.items()})
        except (TypeError, ValueError) as err:
            raise ConfigError(f"evolution settings must be numbers: {err}") from err

    @classmethod
    def load(cls, path: str | Path) -> "EvolutionConfig":
        try:
            raw = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            raise ConfigError(f"cannot read evolution config {path}: {err}") from err
        if not isinstance(raw, dict):
            raise ConfigError(f"evolution config {path} must be a mapping of settings")
        return cls.from_dict(raw)


@dataclass(frozen=True)
class SearchResult:
    """Best candidate per budget (None when nothing meets it), Pareto front, cost."""

    method: str
    budgets: tuple[Budget, ...]
    best: tuple[Candidate | None, ...]
    front: tuple[Candidate, ...]
    n_evaluated: int
    seconds: float
    #: normalised hypervolume of the front, for methods that optimise it (NSGA-II)
    hypervolume: float | None = None

    @property
    def candidates_per_second(self) -> float:
        return self.n_evaluated / self.seconds if self.seconds > 0 else float("inf")

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "n_evaluated": self.n_evaluated,
            "seconds": round(self.seconds, 3),
            "candidates_per_second": round(self.candidates_per_second, 1),
            "best": [{"budget": b.to_dict(), "candidate": c.to_dict() if c else None}
                     for b, c in zip(self.budgets, self.best)],
            "front": [c.to_dict() for c in self.front],
            **({"hypervolume": self.hypervolume} if self.hypervolume is not None else {}),
        }


def _result(method: str, ev: Evaluator, budgets: Sequence[Budget], start: float) -> SearchResult:
    return SearchResult(method, tuple(budgets), tuple(ev.best(b) for b in budgets),
                        tuple(ev.pareto_front()), ev.n_scored, time.perf_counter() - start)


def _draw(ev: Evaluator, make: Callable[[], SubnetConfig], n: int, budget: Budget | None,
          rounds: int, taken: set[SubnetConfig]) -> list[SubnetConfig]:
    """Up to `n` new configs from `make()` that meet `budget` (None: any), latency checked in batches."""
    found: dict[SubnetConfig, None] = {}
    for _ in range(rounds):
        need = n - len(found)
        if need <= 0:
            break
        proposals = [make() for _ in range(2 * need)]
        ok = ev.feasible(ev.latency(proposals), budget) if budget else np.ones(len(proposals), dtype=bool)
        for config, good in zip(proposals, ok):
            if good and config not in found and config not in taken and not ev.is_scored(config):
                found[config] = None
                if len(found) == n:
                    break
    return list(found)


def evolve(space: SearchSpace, accuracy: AccuracySource, latency: Mapping[str, LatencyModel],
           budgets: Sequence[Budget], config: EvolutionConfig = EvolutionConfig(),
           evaluator: Evaluator | None = None, progress: bool = True) -> SearchResult:
    """Most accurate subnet per budget by evolution; pass `evaluator` to share an archive."""
    start = time.perf_counter()
    ev = evaluator or Evaluator(accuracy, latency)
    rng = random.Random(config.seed)
    budgets = list(budgets)

    def generation(make_children: Callable[[Budget, list[SubnetConfig]], list[SubnetConfig]]) -> None:
        batch: list[SubnetConfig] = []
        for budget in budgets:
            batch.extend(make_children(budget, batch))
        ev.score(batch)

    def initial(budget: Budget, batch: list[SubnetConfig]) -> list[SubnetConfig]:
        taken = set(batch)
        return _draw(ev, lambda: space.sample(rng), config.population, budget,
                     config.max_draw_rounds, taken)

    def children(budget: Budget, batch: list[SubnetConfig]) -> list[SubnetConfig]:
        configs, _, _ = ev.arrays()
        parents = [configs[i] for i in ev.top_feasible(budget, config.parents)]
        if not parents:
            return []
        taken = set(batch)
        n_mut = round(config.population * config.mutation_share)
        kids = _draw(ev, lambda: space.mutate(rng.choice(parents), config.mutate_prob, rng),
                     n_mut, budget, config.max_draw_rounds, taken)
        taken.update(kids)
        if len(parents) >= 2:
            kids += _draw(ev, lambda: space.crossover(*rng.sample(parents, 2), rng, config.crossover_prob),
                          config.population - n_mut, budget, config.max_draw_rounds, taken)
        return kids

    ev.score([space.smallest()])  # meets every budget that anything meets
    generation(initial)
    for _ in progress_bar(range(config.generations), desc="evolution", unit="gen", disable=not progress):
        generation(children)
    result = _result("evolution", ev, budgets, start)
    log.info("evolution: %d candidates scored in %.1f s", result.n_evaluated, result.seconds)
    return result


def random_search(space: SearchSpace, accuracy: AccuracySource, latency: Mapping[str, LatencyModel],
                  budgets: Sequence[Budget], samples: int, seed: int = 0) -> SearchResult:
    """Best of `samples` uniform random subnets per budget (all of them scored)."""
    start = time.perf_counter()
    ev = Evaluator(accuracy, latency)
    rng = random.Random(seed)
    ev.score([space.sample(rng) for _ in range(samples)])
    return _result("random", ev, budgets, start)


def flops_budgets(space: SearchSpace, latency: Mapping[str, LatencyModel], budgets: Sequence[Budget],
                  calibration: int = 1000, seed: int = 0) -> list[Budget]:
    """Each budget's ms limits converted to MFLOPs limits: a least-squares line
    MFLOPs ~ latency per device over random subnets, read at the limit."""
    rng = random.Random(seed)
    sample = [space.smallest(), space.largest()] + [space.sample(rng) for _ in range(calibration)]
    mflops = FlopsModel(space).predict(sample)
    lines = {}
    for device in {d for b in budgets for d in b.devices}:
        lines[device] = np.polyfit(np.asarray(latency[device].predict(sample)), mflops, 1)
    return [Budget(tuple((d, max(float(np.polyval(lines[d], ms)), float(mflops[0]))) for d, ms in b.limits))
            for b in budgets]


def flops_constrained_search(space: SearchSpace, accuracy: AccuracySource,
                             latency: Mapping[str, LatencyModel], budgets: Sequence[Budget],
                             config: EvolutionConfig = EvolutionConfig(),
                             progress: bool = True) -> SearchResult:
    """The seed's search: evolution under a FLOPs limit derived from each latency budget.

    Its picks are reported with their predicted latency on the real devices, so a pick
    that meets the FLOPs limit but not the latency budget shows as over budget.
    """
    start = time.perf_counter()
    converted = flops_budgets(space, latency, budgets, seed=config.seed)
    flops_models = {d: FlopsModel(space) for d in latency}
    inner = evolve(space, accuracy, flops_models, converted, config, progress=progress)
    real = Evaluator(accuracy, latency)

    def relabel(c: Candidate | None) -> Candidate | None:
        if c is None:
            return None
        row = real.latency([c.config])[0]
        return Candidate(c.config, c.accuracy, dict(zip(real.devices, map(float, row))))

    return SearchResult("flops", tuple(budgets), tuple(relabel(c) for c in inner.best),
                        tuple(relabel(c) for c in inner.front), inner.n_evaluated,
                        time.perf_counter() - start)
